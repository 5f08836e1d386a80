//! A wire-level fake of the Kinesis Video Streams control plane (restJson1: `POST
//! /createStream`, `/describeStream`, ...), for what moto does not do: CREATING → ACTIVE after
//! some polls, Version checks (VersionMismatchException), throttling
//! (ClientLimitExceededException), UpdateStream, UpdateDataRetention, tags, NotAuthorized and
//! AccountStreamLimitExceeded on demand. It records every request with its time.
//!
//! Errors are answered as KVS does: an HTTP status, `x-amzn-ErrorType: <Code>`,
//! `x-amzn-RequestId`, and `{"Message": …}`. The SigV4 signature is not checked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// How an action is throttled.
#[derive(Clone, Copy, Debug)]
pub enum Throttle {
    /// The next N calls.
    Next(usize),
    /// Every call.
    Always,
}

/// A stream as the fake holds it.
#[derive(Clone, Debug)]
pub struct StreamView {
    /// The KVS version.
    pub version: String,
    /// DataRetentionInHours.
    pub retention: i64,
    /// DeviceName.
    pub device_name: Option<String>,
    /// MediaType.
    pub media_type: Option<String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// One recorded request.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// e.g. `deleteStream`.
    pub action: String,
    /// When it arrived.
    pub at: Instant,
    /// Its JSON body.
    pub body: Value,
    /// The status answered.
    pub status: u16,
}

#[derive(Clone, Debug)]
struct FakeStream {
    arn: String,
    version: String,
    status: &'static str,
    describes_until_active: usize,
    device_name: Option<String>,
    media_type: Option<String>,
    kms_key_id: Option<String>,
    retention: i64,
    created: f64,
    tags: BTreeMap<String, String>,
}

#[derive(Default)]
struct Inner {
    streams: BTreeMap<String, FakeStream>,
    throttles: HashMap<String, Throttle>,
    not_authorized: HashSet<String>,
    failures: HashMap<String, (u16, String)>,
    account_stream_limit: Option<usize>,
    creating_describes: usize,
    latency: Duration,
    requests: Vec<Recorded>,
    counter: u64,
}

/// The fake's state, shared with the test.
#[derive(Clone, Default)]
pub struct KvsFake {
    inner: Arc<Mutex<Inner>>,
}

/// A running fake.
pub struct RunningKvsFake {
    /// The fake's state.
    pub fake: KvsFake,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RunningKvsFake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn error(status: StatusCode, code: &str, message: &str, request_id: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("x-amzn-ErrorType", code.parse().unwrap());
    headers.insert("x-amzn-RequestId", request_id.parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    (status, headers, json!({ "Message": message }).to_string()).into_response()
}

fn ok(body: Value, request_id: &str) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("x-amzn-RequestId", request_id.parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    (StatusCode::OK, headers, body.to_string()).into_response()
}

fn info(name: &str, s: &FakeStream) -> Value {
    json!({
        "StreamName": name,
        "StreamARN": s.arn,
        "DeviceName": s.device_name,
        "MediaType": s.media_type,
        "KmsKeyId": s.kms_key_id,
        "Version": s.version,
        "Status": s.status,
        "CreationTime": s.created,
        "DataRetentionInHours": s.retention,
    })
}

type Answer = Result<Value, (StatusCode, &'static str, String)>;

impl Inner {
    fn next_id(&mut self, what: &str) -> String {
        self.counter += 1;
        format!("{what}{:08}", self.counter)
    }

    /// Finds the stream a request names by StreamName or StreamARN.
    fn target(&self, body: &Value) -> Option<String> {
        if let Some(name) = body["StreamName"].as_str() {
            return self.streams.contains_key(name).then(|| name.to_string());
        }
        let arn = body["StreamARN"].as_str()?;
        self.streams
            .iter()
            .find(|(_, s)| s.arn == arn)
            .map(|(n, _)| n.clone())
    }

    fn found(&self, body: &Value) -> Result<String, (StatusCode, &'static str, String)> {
        self.target(body).ok_or((
            StatusCode::NOT_FOUND,
            "ResourceNotFoundException",
            "The requested stream is not found or not active.".to_string(),
        ))
    }

    fn check_version(
        &self,
        name: &str,
        body: &Value,
        required: bool,
    ) -> Result<(), (StatusCode, &'static str, String)> {
        let current = &self.streams[name].version;
        match body["CurrentVersion"].as_str() {
            Some(v) if v != current => Err((
                StatusCode::BAD_REQUEST,
                "VersionMismatchException",
                "The stream version you specified is not the latest version.".to_string(),
            )),
            None if required => Err((
                StatusCode::BAD_REQUEST,
                "InvalidArgumentException",
                "CurrentVersion is required".to_string(),
            )),
            _ => Ok(()),
        }
    }

    fn bump(&mut self, name: &str) {
        let version = self.next_id("v");
        self.streams.get_mut(name).unwrap().version = version;
    }

    fn answer(&mut self, action: &str, body: &Value) -> Answer {
        match action {
            "createStream" => {
                let name = body["StreamName"].as_str().unwrap_or_default().to_string();
                if self.streams.contains_key(&name) {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "ResourceInUseException",
                        format!("The stream {name} already exists"),
                    ));
                }
                if self
                    .account_stream_limit
                    .is_some_and(|max| self.streams.len() >= max)
                {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "AccountStreamLimitExceededException",
                        "The number of streams created for the account is too high.".to_string(),
                    ));
                }
                let arn = format!(
                    "arn:aws:kinesisvideo:us-east-1:123456789012:stream/{name}/{}",
                    self.counter + 1_000_000
                );
                let version = self.next_id("v");
                let tags = body["Tags"]
                    .as_object()
                    .map(|t| {
                        t.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let creating = self.creating_describes;
                self.streams.insert(
                    name,
                    FakeStream {
                        arn: arn.clone(),
                        version,
                        status: if creating > 0 { "CREATING" } else { "ACTIVE" },
                        describes_until_active: creating,
                        device_name: body["DeviceName"].as_str().map(str::to_string),
                        media_type: body["MediaType"].as_str().map(str::to_string),
                        kms_key_id: body["KmsKeyId"].as_str().map(str::to_string),
                        retention: body["DataRetentionInHours"].as_i64().unwrap_or(0),
                        created: now_seconds(),
                        tags,
                    },
                );
                Ok(json!({ "StreamARN": arn }))
            }
            "describeStream" => {
                let name = self.found(body)?;
                let stream = self.streams.get_mut(&name).unwrap();
                if stream.status == "CREATING" {
                    if stream.describes_until_active == 0 {
                        stream.status = "ACTIVE";
                    } else {
                        stream.describes_until_active -= 1;
                    }
                }
                Ok(json!({ "StreamInfo": info(&name, &self.streams[&name]) }))
            }
            "listStreams" => {
                let prefix = body["StreamNameCondition"]["ComparisonValue"]
                    .as_str()
                    .unwrap_or_default();
                let max = body["MaxResults"].as_u64().unwrap_or(10_000) as usize;
                let after = body["NextToken"].as_str().unwrap_or_default();
                let matching: Vec<_> = self
                    .streams
                    .iter()
                    .filter(|(n, _)| n.starts_with(prefix) && n.as_str() > after)
                    .collect();
                let page: Vec<Value> = matching.iter().take(max).map(|(n, s)| info(n, s)).collect();
                let next = (matching.len() > max).then(|| matching[max - 1].0.clone());
                Ok(json!({ "StreamInfoList": page, "NextToken": next }))
            }
            "deleteStream" => {
                let name = self.found(body)?;
                self.check_version(&name, body, false)?;
                self.streams.remove(&name);
                Ok(json!({}))
            }
            "updateStream" => {
                let name = self.found(body)?;
                self.check_version(&name, body, true)?;
                let stream = self.streams.get_mut(&name).unwrap();
                if let Some(d) = body["DeviceName"].as_str() {
                    stream.device_name = Some(d.to_string());
                }
                if let Some(m) = body["MediaType"].as_str() {
                    stream.media_type = Some(m.to_string());
                }
                self.bump(&name);
                Ok(json!({}))
            }
            "updateDataRetention" => {
                let name = self.found(body)?;
                self.check_version(&name, body, true)?;
                let change = body["DataRetentionChangeInHours"].as_i64().unwrap_or(0);
                let stream = self.streams.get_mut(&name).unwrap();
                match body["Operation"].as_str() {
                    Some("INCREASE_DATA_RETENTION") => stream.retention += change,
                    Some("DECREASE_DATA_RETENTION") if stream.retention >= change => {
                        stream.retention -= change
                    }
                    _ => {
                        return Err((
                            StatusCode::BAD_REQUEST,
                            "InvalidArgumentException",
                            "bad retention change".to_string(),
                        ));
                    }
                }
                self.bump(&name);
                Ok(json!({}))
            }
            "tagStream" => {
                let name = self.found(body)?;
                let stream = self.streams.get_mut(&name).unwrap();
                for (k, v) in body["Tags"].as_object().into_iter().flatten() {
                    stream
                        .tags
                        .insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                }
                if stream.tags.len() > 50 {
                    return Err((
                        StatusCode::BAD_REQUEST,
                        "TagsPerResourceExceededLimitException",
                        "too many tags".to_string(),
                    ));
                }
                Ok(json!({}))
            }
            "untagStream" => {
                let name = self.found(body)?;
                let stream = self.streams.get_mut(&name).unwrap();
                for key in body["TagKeyList"].as_array().into_iter().flatten() {
                    stream.tags.remove(key.as_str().unwrap_or_default());
                }
                Ok(json!({}))
            }
            "listTagsForStream" => {
                let name = self.found(body)?;
                Ok(json!({ "Tags": self.streams[&name].tags }))
            }
            other => Err((
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                format!("the fake does not know {other}"),
            )),
        }
    }
}

async fn handle(State(fake): State<KvsFake>, Path(action): Path<String>, body: String) -> Response {
    let (response, latency) = answer(&fake, action, body);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    response
}

/// The answer to one request, and how long to wait before sending it.
fn answer(fake: &KvsFake, action: String, body: String) -> (Response, Duration) {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut inner = fake.inner.lock().unwrap();
    let request_id = inner.next_id("req-");
    let throttled = match inner.throttles.get_mut(&action) {
        Some(Throttle::Always) => true,
        Some(Throttle::Next(n)) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    };
    let injected = inner.failures.remove(&action);
    let response = if let Some((status, code)) = injected {
        error(
            StatusCode::from_u16(status).unwrap(),
            &code,
            "injected by the test",
            &request_id,
        )
    } else if throttled {
        error(
            StatusCode::BAD_REQUEST,
            "ClientLimitExceededException",
            "Your request has been throttled because you have exceeded the limit of allowed client calls.",
            &request_id,
        )
    } else if inner.not_authorized.contains(&action) {
        error(
            StatusCode::UNAUTHORIZED,
            "NotAuthorizedException",
            "The caller is not authorized to perform this operation.",
            &request_id,
        )
    } else {
        match inner.answer(&action, &body) {
            Ok(value) => ok(value, &request_id),
            Err((status, code, message)) => error(status, code, &message, &request_id),
        }
    };
    inner.requests.push(Recorded {
        action,
        at: Instant::now(),
        body,
        status: response.status().as_u16(),
    });
    (response, inner.latency)
}

impl KvsFake {
    /// Starts the fake on 127.0.0.1, port 0.
    pub async fn start() -> RunningKvsFake {
        let fake = KvsFake::default();
        let app = Router::new()
            .route("/{action}", axum::routing::post(handle))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        RunningKvsFake {
            fake,
            url: format!("http://{addr}"),
            task,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }

    /// New streams answer CREATING to this many DescribeStream calls before ACTIVE.
    pub fn set_creating_describes(&self, n: usize) {
        self.with(|i| i.creating_describes = n);
    }

    /// Answers every request `latency` after it arrived, as a provider endpoint that far
    /// away would (the benchmark's realistic-latency runs).
    pub fn set_latency(&self, latency: Duration) {
        self.with(|i| i.latency = latency);
    }

    /// Throttles `action` (e.g. `createStream`).
    pub fn throttle(&self, action: &str, how: Throttle) {
        self.with(|i| i.throttles.insert(action.to_string(), how));
    }

    /// Answers the next call of `action` with the error `code` and HTTP `status`.
    pub fn fail_next(&self, action: &str, status: u16, code: &str) {
        self.with(|i| {
            i.failures
                .insert(action.to_string(), (status, code.to_string()))
        });
    }

    /// Answers NotAuthorizedException to `action`.
    pub fn deny(&self, action: &str) {
        self.with(|i| i.not_authorized.insert(action.to_string()));
    }

    /// Refuses CreateStream once the account holds `max` streams.
    pub fn set_account_stream_limit(&self, max: usize) {
        self.with(|i| i.account_stream_limit = Some(max));
    }

    /// Adds an ACTIVE stream directly.
    pub fn add_stream(&self, name: &str) -> String {
        self.with(|i| {
            let version = i.next_id("v");
            let arn = format!("arn:aws:kinesisvideo:us-east-1:123456789012:stream/{name}/1");
            i.streams.insert(
                name.to_string(),
                FakeStream {
                    arn,
                    version: version.clone(),
                    status: "ACTIVE",
                    describes_until_active: 0,
                    device_name: None,
                    media_type: Some("video/h264".into()),
                    kms_key_id: None,
                    retention: 1,
                    created: now_seconds(),
                    tags: BTreeMap::new(),
                },
            );
            version
        })
    }

    /// Whether the fake holds `name`.
    pub fn has(&self, name: &str) -> bool {
        self.with(|i| i.streams.contains_key(name))
    }

    /// The stream as the fake holds it.
    pub fn stream(&self, name: &str) -> Option<StreamView> {
        self.with(|i| {
            i.streams.get(name).map(|s| StreamView {
                version: s.version.clone(),
                retention: s.retention,
                device_name: s.device_name.clone(),
                media_type: s.media_type.clone(),
                tags: s.tags.clone(),
            })
        })
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.with(|i| i.requests.clone())
    }

    /// The requests of one action.
    pub fn requests_of(&self, action: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.action == action)
            .collect()
    }
}

/// An AWS SDK client of the KVS API at `url` (the fake or moto), with test credentials.
pub fn kvs_client(url: &str) -> aws_sdk_kinesisvideo::Client {
    let config = aws_sdk_kinesisvideo::config::Builder::new()
        .behavior_version(aws_sdk_kinesisvideo::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesisvideo::config::Region::new("us-east-1"))
        .endpoint_url(url)
        .credentials_provider(aws_sdk_kinesisvideo::config::Credentials::new(
            "AKIDSTREAMGATETEST",
            "streamgate-test-secret",
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_kinesisvideo::Client::from_conf(config)
}
