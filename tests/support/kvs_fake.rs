//! A wire-level fake of the Kinesis Video Streams control plane (restJson1: `POST
//! /createStream`, `/describeStream`, ...), for what moto does not do: CREATING → ACTIVE after
//! some polls, Version checks (VersionMismatchException), throttling
//! (ClientLimitExceededException), UpdateStream, UpdateDataRetention, tags, NotAuthorized and
//! AccountStreamLimitExceeded on demand. It records every request with its time and the access
//! key that signed it (so that a test can tell which replica called).
//!
//! Switchable per test, as KVS behaves ([`Windows`], [`KvsFake::enforce_quotas`]): a new stream
//! invisible to reads for a moment (eventual consistency); CREATING, UPDATING (after
//! UpdateStream and UpdateDataRetention) and DELETING lasting a while, with UpdateStream,
//! UpdateDataRetention and DeleteStream refused ResourceInUseException ("not in Active status")
//! until the stream is ACTIVE; the published
//! control-plane quotas per account and per stream, answered ClientLimitExceededException.
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
    /// The stream it named (by StreamName or StreamARN), if any.
    pub stream: Option<String>,
    /// Whether it was answered ClientLimitExceededException.
    pub throttled: bool,
    /// The access key id of its SigV4 `Authorization` header (`Credential=AKID/…`), or empty.
    pub access_key: String,
}

/// How long the fake's streams stay in KVS's passing states (zero: not at all).
#[derive(Clone, Copy, Debug, Default)]
pub struct Windows {
    /// After CreateStream, reads answer ResourceNotFoundException for this long.
    pub invisible: Duration,
    /// CREATING for this long after CreateStream.
    pub creating: Duration,
    /// UPDATING for this long after UpdateStream or UpdateDataRetention.
    pub updating: Duration,
    /// DELETING for this long after DeleteStream, then gone.
    pub deleting: Duration,
}

/// The published control-plane quotas (calls per second): per account, and per stream where
/// KVS sets one (the KVS developer guide, "service quotas").
const QUOTAS: &[(&str, usize, Option<usize>)] = &[
    ("createStream", 50, None),
    ("deleteStream", 50, Some(5)),
    ("describeStream", 300, Some(5)),
    ("listStreams", 50, None),
    ("listTagsForStream", 50, Some(5)),
    ("tagStream", 50, Some(5)),
    ("untagStream", 50, Some(5)),
    ("updateStream", 50, Some(5)),
    ("updateDataRetention", 50, Some(5)),
    ("getDataEndpoint", 300, Some(5)),
];

#[derive(Clone, Debug)]
struct FakeStream {
    arn: String,
    version: String,
    status: &'static str,
    /// When a timed CREATING / UPDATING / DELETING ends.
    until: Option<Instant>,
    /// Before this, reads do not see the stream.
    visible_at: Instant,
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
    windows: Windows,
    quotas: bool,
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
    /// The stream a request names, by StreamName or by a known StreamARN.
    fn named(&self, body: &Value) -> Option<String> {
        if let Some(name) = body["StreamName"].as_str() {
            return Some(name.to_string());
        }
        let arn = body["StreamARN"].as_str()?;
        self.streams
            .iter()
            .find(|(_, s)| s.arn == arn)
            .map(|(n, _)| n.clone())
    }

    /// Finds the stream a request names by StreamName or StreamARN, if reads see it yet.
    fn target(&self, body: &Value) -> Option<String> {
        let now = Instant::now();
        if let Some(name) = body["StreamName"].as_str() {
            return self
                .streams
                .get(name)
                .is_some_and(|s| s.visible_at <= now)
                .then(|| name.to_string());
        }
        let arn = body["StreamARN"].as_str()?;
        self.streams
            .iter()
            .find(|(_, s)| s.arn == arn && s.visible_at <= now)
            .map(|(n, _)| n.clone())
    }

    /// Ends the timed states that are over: CREATING and UPDATING become ACTIVE, DELETING
    /// streams are gone.
    fn settle(&mut self) {
        let now = Instant::now();
        self.streams
            .retain(|_, s| !(s.status == "DELETING" && s.until.is_some_and(|t| t <= now)));
        for stream in self.streams.values_mut() {
            if stream.until.is_some_and(|t| t <= now) {
                stream.until = None;
                stream.status = "ACTIVE";
            }
        }
    }

    /// The stream found for a change, refused as KVS refuses changes to a stream that is not
    /// ACTIVE: UpdateStream, UpdateDataRetention and DeleteStream (the actions whose published
    /// errors include ResourceInUseException; tagging has none).
    fn found_active(&self, body: &Value) -> Result<String, (StatusCode, &'static str, String)> {
        let name = self.found(body)?;
        match self.streams[&name].status {
            "ACTIVE" => Ok(name),
            status => Err((
                StatusCode::BAD_REQUEST,
                "ResourceInUseException",
                format!("The stream {name} is not in Active status (it is {status})."),
            )),
        }
    }

    /// Puts `name` in `status` for `how_long` (nothing when zero).
    fn pass(&mut self, name: &str, status: &'static str, how_long: Duration) {
        if !how_long.is_zero() {
            let stream = self.streams.get_mut(name).unwrap();
            stream.status = status;
            stream.until = Some(Instant::now() + how_long);
        }
    }

    /// Whether one more call of `action` (on `stream`, if it names one) would go over the
    /// published quota, counting the calls answered in the last second.
    fn over_quota(&self, action: &str, stream: Option<&str>, now: Instant) -> bool {
        let Some(&(_, account, per_stream)) = QUOTAS.iter().find(|(a, ..)| *a == action) else {
            return false;
        };
        let recent: Vec<&Recorded> = self
            .requests
            .iter()
            .rev()
            .take_while(|r| now.duration_since(r.at) < Duration::from_secs(1))
            .filter(|r| r.action == action && !r.throttled)
            .collect();
        if recent.len() >= account {
            return true;
        }
        match (per_stream, stream) {
            (Some(max), Some(name)) => {
                recent
                    .iter()
                    .filter(|r| r.stream.as_deref() == Some(name))
                    .count()
                    >= max
            }
            _ => false,
        }
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
                let now = Instant::now();
                let timed = !self.windows.creating.is_zero();
                self.streams.insert(
                    name,
                    FakeStream {
                        arn: arn.clone(),
                        version,
                        status: if creating > 0 || timed {
                            "CREATING"
                        } else {
                            "ACTIVE"
                        },
                        until: timed.then(|| now + self.windows.creating),
                        visible_at: now + self.windows.invisible,
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
                if stream.status == "CREATING" && stream.until.is_none() {
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
                let now = Instant::now();
                let matching: Vec<_> = self
                    .streams
                    .iter()
                    .filter(|(n, s)| {
                        n.starts_with(prefix) && n.as_str() > after && s.visible_at <= now
                    })
                    .collect();
                let page: Vec<Value> = matching.iter().take(max).map(|(n, s)| info(n, s)).collect();
                let next = (matching.len() > max).then(|| matching[max - 1].0.clone());
                Ok(json!({ "StreamInfoList": page, "NextToken": next }))
            }
            "deleteStream" => {
                let name = self.found_active(body)?;
                self.check_version(&name, body, false)?;
                if self.windows.deleting.is_zero() {
                    self.streams.remove(&name);
                } else {
                    let deleting = self.windows.deleting;
                    self.pass(&name, "DELETING", deleting);
                }
                Ok(json!({}))
            }
            "updateStream" => {
                let name = self.found_active(body)?;
                self.check_version(&name, body, true)?;
                let stream = self.streams.get_mut(&name).unwrap();
                if let Some(d) = body["DeviceName"].as_str() {
                    stream.device_name = Some(d.to_string());
                }
                if let Some(m) = body["MediaType"].as_str() {
                    stream.media_type = Some(m.to_string());
                }
                self.bump(&name);
                let updating = self.windows.updating;
                self.pass(&name, "UPDATING", updating);
                Ok(json!({}))
            }
            "updateDataRetention" => {
                let name = self.found_active(body)?;
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
                let updating = self.windows.updating;
                self.pass(&name, "UPDATING", updating);
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

async fn handle(
    State(fake): State<KvsFake>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let (response, latency) = answer(&fake, action, access_key(&headers), body);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    response
}

/// The access key id a SigV4 `Authorization` header names, or empty.
fn access_key(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once("Credential="))
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// The answer to one request, and how long to wait before sending it.
fn answer(
    fake: &KvsFake,
    action: String,
    access_key: String,
    body: String,
) -> (Response, Duration) {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut inner = fake.inner.lock().unwrap();
    inner.settle();
    let request_id = inner.next_id("req-");
    let stream = inner.named(&body);
    let now = Instant::now();
    let throttled = match inner.throttles.get_mut(&action) {
        Some(Throttle::Always) => true,
        Some(Throttle::Next(n)) if *n > 0 => {
            *n -= 1;
            true
        }
        _ => false,
    } || (inner.quotas && inner.over_quota(&action, stream.as_deref(), now));
    let injected = inner.failures.remove(&action);
    let injected_any = injected.is_some();
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
        at: now,
        body,
        status: response.status().as_u16(),
        stream,
        throttled: throttled && !injected_any,
        access_key,
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

    /// Makes new streams and changes pass through KVS's timed states (see [`Windows`]).
    pub fn set_windows(&self, windows: Windows) {
        self.with(|i| i.windows = windows);
    }

    /// Answers ClientLimitExceededException to calls over the published quotas ([`QUOTAS`]),
    /// per account and per stream, counted over the last second.
    pub fn enforce_quotas(&self) {
        self.with(|i| i.quotas = true);
    }

    /// The status KVS shows for `name` now (`None` when it is gone), passing states included.
    pub fn status(&self, name: &str) -> Option<&'static str> {
        self.with(|i| {
            i.settle();
            i.streams.get(name).map(|s| s.status)
        })
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
                    until: None,
                    visible_at: Instant::now(),
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

    /// Sets the tag `key` of `name` to `value` directly, as a change made outside the gateway
    /// (as in KVS, the Version stays).
    pub fn set_tag(&self, name: &str, key: &str, value: &str) {
        self.with(|i| {
            if let Some(stream) = i.streams.get_mut(name) {
                stream.tags.insert(key.to_string(), value.to_string());
            }
        });
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
