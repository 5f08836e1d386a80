//! A wire-level fake of ApsaraVideo VOD (RPC API 2017-03-21), served in-process on
//! 127.0.0.1:0 with axum.
//!
//! It keeps videos and their streams (job ids), checks every request the way VOD does —
//! signature V1 recomputed here independently of the adapter's signer, known AccessKeyId,
//! STS token, Timestamp within 15 minutes, SignatureNonce never seen before — answers
//! GetPlayInfo and DeleteStream with VOD's JSON shapes and documented error codes, reproduces
//! any error code on demand, answers Forbidden.IllegalStatus (HTTP 403) to GetPlayInfo of a video
//! switched to a status other than Normal (`set_video_status`; DeleteStream still works on it),
//! and records every request (AuthTimeout included). With URL
//! authentication switched on (`set_url_authentication`), each PlayURL carries an `auth_key`
//! of type A — `{expiry}-{rand}-{uid}-{md5("{path}-{expiry}-{rand}-{uid}-{key}")}` — whose
//! expiry is now + AuthTimeout (VOD's default validity, 1800 s, without it); off, PlayURLs
//! carry none and AuthTimeout changes nothing, as on a domain without URL authentication. `tests/aliyun_vod.rs` checks the fake
//! itself against the official Python SDK. With quotas switched on (`enforce_quotas`), calls
//! over VOD's published per-account QPS ([`QUOTAS`]) are answered `Throttling.User`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::Digest;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinHandle;

/// How far a request's Timestamp may be from the fake's clock (VOD allows 15 minutes).
const MAX_CLOCK_SKEW: time::Duration = time::Duration::minutes(15);
/// The most job ids DeleteStream takes.
const MAX_JOB_IDS: usize = 20;
/// How long a PlayURL stays valid without AuthTimeout, with URL authentication on (s).
const DEFAULT_AUTH_TIMEOUT: i64 = 1800;
/// VOD's published QPS per account (the Alibaba Cloud account and its RAM users together) of
/// the actions the adapter calls ("API QPS limits" in the VOD developer reference).
pub const QUOTAS: &[(&str, usize)] = &[("GetPlayInfo", 360), ("DeleteStream", 50)];

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Every parameter, query and form body merged, `Signature` included.
    pub params: BTreeMap<String, String>,
    /// Whether the signature matched the one the fake computed.
    pub signature_valid: bool,
    /// The error code answered, if any.
    pub code: Option<String>,
    pub request_id: String,
}

impl Recorded {
    pub fn action(&self) -> &str {
        self.params.get("Action").map(String::as_str).unwrap_or("")
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The JobIds of a DeleteStream call.
    pub fn job_ids(&self) -> Vec<String> {
        self.param("JobIds")
            .unwrap_or_default()
            .split(',')
            .filter(|id| !id.is_empty())
            .map(str::to_string)
            .collect()
    }
}

struct Key {
    secret: String,
    token: Option<String>,
}

#[derive(Default)]
struct Inner {
    keys: HashMap<String, Key>,
    videos: BTreeMap<String, Vec<String>>,
    // Videos whose status is not Normal (e.g. "Blocked", "Checking"): GetPlayInfo refuses them.
    statuses: HashMap<String, String>,
    nonces: HashSet<String>,
    requests: Vec<Recorded>,
    failures: HashMap<String, VecDeque<String>>,
    // HTTP statuses for codes VOD does not document (a new code the adapter does not know).
    code_statuses: HashMap<String, StatusCode>,
    partial_deletes: bool,
    next_request: u64,
    // The URL authentication key of the playback domain; None: authentication off.
    url_auth_key: Option<String>,
    // Whether calls over QUOTAS are throttled.
    quotas: bool,
    // When each authenticated, unthrottled call of an action was answered, for QUOTAS.
    answered: HashMap<String, VecDeque<std::time::Instant>>,
}

impl Inner {
    /// Whether one more call of `action` now goes over its published QPS; if not, counts it.
    fn over_quota(&mut self, action: &str) -> bool {
        let Some(&(_, qps)) = QUOTAS.iter().find(|(a, _)| *a == action) else {
            return false;
        };
        let now = std::time::Instant::now();
        let calls = self.answered.entry(action.to_string()).or_default();
        while calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= std::time::Duration::from_secs(1))
        {
            calls.pop_front();
        }
        if self.quotas && calls.len() >= qps {
            return true;
        }
        calls.push_back(now);
        false
    }
}

/// The fake VOD service.
pub struct FakeVod {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: JoinHandle<()>,
}

impl Drop for FakeVod {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeVod {
    /// Serves on 127.0.0.1 (a free port).
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .fallback(any(handle))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeVod { addr, inner, task }
    }

    /// `http://127.0.0.1:PORT`, for `endpoint_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accepts the AccessKey `id` with `secret` (and, when given, only with STS `token`).
    pub fn add_key(&self, id: &str, secret: &str, token: Option<&str>) {
        self.lock().keys.insert(
            id.to_string(),
            Key {
                secret: secret.to_string(),
                token: token.map(str::to_string),
            },
        );
    }

    /// Adds (or replaces) a video with the streams `jobs`.
    pub fn add_video(&self, video: &str, jobs: &[&str]) {
        self.lock().videos.insert(
            video.to_string(),
            jobs.iter().map(|j| j.to_string()).collect(),
        );
    }

    /// Sets a video's status; anything but "Normal" makes GetPlayInfo answer
    /// Forbidden.IllegalStatus (HTTP 403), as VOD does. DeleteStream still works on it.
    pub fn set_video_status(&self, video: &str, status: &str) {
        self.lock()
            .statuses
            .insert(video.to_string(), status.to_string());
    }

    /// The streams a video has now, `None` if the video does not exist.
    pub fn streams(&self, video: &str) -> Option<Vec<String>> {
        self.lock().videos.get(video).cloned()
    }

    /// Switches URL authentication of the playback domain on (with its key) or off.
    pub fn set_url_authentication(&self, key: Option<&str>) {
        self.lock().url_auth_key = key.map(str::to_string);
    }

    /// Answers the next `times` calls of `action` that pass authentication with `code`.
    pub fn fail_next(&self, action: &str, code: &str, times: usize) {
        let mut inner = self.lock();
        let queue = inner.failures.entry(action.to_string()).or_default();
        queue.extend(std::iter::repeat_n(code.to_string(), times));
    }

    /// Answers `code` with HTTP `status` from now on (for a code `status_of` does not know).
    pub fn set_code_status(&self, code: &str, status: u16) {
        self.lock()
            .code_statuses
            .insert(code.to_string(), StatusCode::from_u16(status).unwrap());
    }

    /// When true, a DeleteStream that answers InvalidStream.NotFound first deletes the ids
    /// that do exist (one way VOD could behave); when false (the default) it deletes nothing.
    pub fn set_partial_deletes(&self, partial: bool) {
        self.lock().partial_deletes = partial;
    }

    /// Throttles calls over VOD's published QPS per account ([`QUOTAS`]) with `Throttling.User`.
    pub fn enforce_quotas(&self) {
        self.lock().quotas = true;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The requests of `action` so far.
    pub fn calls(&self, action: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.action() == action)
            .collect()
    }
}

/// RFC 3986 percent-encoding the way the SDK's signer ends up with it (urlencode, then
/// `+`→`%20`, `*`→`%2A`, `%7E`→`~`): only unreserved bytes stay as they are.
fn encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `k=v&…` of a query string or a form body, decoded.
fn decode_pairs(text: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The string VOD signs for `params` sent with `method`.
fn string_to_sign(method: &str, params: &BTreeMap<String, String>) -> String {
    let query = params
        .iter()
        .filter(|(k, _)| k.as_str() != "Signature")
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    format!("{method}&{}&{}", encode("/"), encode(&query))
}

/// The signature of `to_sign` under `secret`.
fn sign(secret: &str, to_sign: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{secret}&").as_bytes()).unwrap();
    mac.update(to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The HTTP status VOD documents for a code (clients must not rely on it: the adapter
/// classifies on the code).
fn status_of(code: &str) -> StatusCode {
    match code {
        "InvalidVideo.NotFound"
        | "InvalidStream.NotFound"
        | "InvalidVideo.NoneStream"
        | "InvalidAccessKeyId.NotFound" => StatusCode::NOT_FOUND,
        "DeleteStreamFailed" | "ServiceUnavailable" | "Throttling" => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        c if c.starts_with("Forbidden") || c.starts_with("OperationDenied") => {
            StatusCode::FORBIDDEN
        }
        "InternalError" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn message_of(code: &str) -> &'static str {
    match code {
        "JobIdsExceededMax" => "The JobIds exceeded maximum.",
        "InvalidVideo.NotFound" => "The video does not exist.",
        "InvalidStream.NotFound" => "The stream does not exist.",
        "InvalidVideo.NoneStream" => "The video has no stream to play.",
        "DeleteStreamFailed" => "Deleting stream has failed due to some unknown error.",
        "SignatureNonceUsed" => "Specified signature nonce was used already.",
        "InvalidTimeStamp.Expired" => "Specified time stamp or date value is expired.",
        "InvalidAccessKeyId.NotFound" => "Specified access key is not found.",
        "InvalidSecurityToken.Mismatch" => "Specified SecurityToken mismatch with the AccessKey.",
        "Throttling" | "Throttling.User" | "Throttling.Api" => {
            "Request was denied due to request throttling."
        }
        "Forbidden" => "User not authorized to operate on the specified resource.",
        "Forbidden.IllegalStatus" => "Status of the video is illegal.",
        _ => "The request was refused.",
    }
}

struct Answer {
    code: Option<String>,
    status: StatusCode,
    body: serde_json::Value,
}

fn error(code: &str, request_id: &str, message: String) -> Answer {
    Answer {
        code: Some(code.to_string()),
        status: status_of(code),
        body: serde_json::json!({
            "RequestId": request_id,
            "HostId": "vod.cn-shanghai.aliyuncs.com",
            "Code": code,
            "Message": message,
            "Recommend": format!("https://api.aliyun.com/troubleshoot?q={code}"),
        }),
    }
}

fn documented(code: &str, request_id: &str) -> Answer {
    error(code, request_id, message_of(code).to_string())
}

/// Authenticates a request: `Err` is the answer when it is refused.
fn authenticate(
    inner: &mut Inner,
    method: &str,
    params: &BTreeMap<String, String>,
    request_id: &str,
) -> Result<(), Answer> {
    for required in [
        "Action",
        "Version",
        "AccessKeyId",
        "Signature",
        "SignatureMethod",
        "SignatureVersion",
        "SignatureNonce",
        "Timestamp",
    ] {
        if !params.contains_key(required) {
            return Err(error(
                "MissingParameter",
                request_id,
                format!("The input parameter \"{required}\" that is mandatory is not supplied."),
            ));
        }
    }
    if params["SignatureMethod"] != "HMAC-SHA1" || params["SignatureVersion"] != "1.0" {
        return Err(error(
            "InvalidParameter",
            request_id,
            "SignatureMethod or SignatureVersion is not supported.".into(),
        ));
    }
    let Some(key) = inner.keys.get(&params["AccessKeyId"]) else {
        return Err(documented("InvalidAccessKeyId.NotFound", request_id));
    };
    let to_sign = string_to_sign(method, params);
    if sign(&key.secret, &to_sign) != params["Signature"] {
        // VOD echoes the string it signed; the SDK compares it with its own.
        return Err(error(
            "SignatureDoesNotMatch",
            request_id,
            format!(
                "Specified signature is not matched with our calculation. server string to \
                 sign is:{to_sign}"
            ),
        ));
    }
    match OffsetDateTime::parse(&params["Timestamp"], &Rfc3339) {
        Ok(at) if (OffsetDateTime::now_utc() - at).abs() <= MAX_CLOCK_SKEW => {}
        Ok(_) => return Err(documented("InvalidTimeStamp.Expired", request_id)),
        Err(_) => {
            return Err(error(
                "InvalidTimeStamp.Format",
                request_id,
                "Specified time stamp or date value is not well formatted.".into(),
            ));
        }
    }
    if key.token.as_deref() != params.get("SecurityToken").map(String::as_str) {
        return Err(documented("InvalidSecurityToken.Mismatch", request_id));
    }
    if !inner.nonces.insert(params["SignatureNonce"].clone()) {
        return Err(documented("SignatureNonceUsed", request_id));
    }
    Ok(())
}

fn get_play_info(inner: &Inner, params: &BTreeMap<String, String>, request_id: &str) -> Answer {
    let video = params.get("VideoId").cloned().unwrap_or_default();
    let Some(jobs) = inner.videos.get(&video) else {
        return documented("InvalidVideo.NotFound", request_id);
    };
    if inner
        .statuses
        .get(&video)
        .is_some_and(|status| status != "Normal")
    {
        return documented("Forbidden.IllegalStatus", request_id);
    }
    if jobs.is_empty() {
        return documented("InvalidVideo.NoneStream", request_id);
    }
    let auth_timeout: i64 = params
        .get("AuthTimeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(DEFAULT_AUTH_TIMEOUT);
    let play_url = |job: &str| {
        let path = format!("/{video}/{job}.m3u8");
        match &inner.url_auth_key {
            None => format!("https://vod.example{path}"),
            Some(key) => {
                let expiry = OffsetDateTime::now_utc().unix_timestamp() + auth_timeout;
                let hash = md5::Md5::digest(format!("{path}-{expiry}-0-0-{key}").as_bytes());
                format!(
                    "https://vod.example{path}?auth_key={expiry}-0-0-{}",
                    hex::encode(hash)
                )
            }
        }
    };
    let play_info: Vec<serde_json::Value> = jobs
        .iter()
        .map(|job| {
            serde_json::json!({
                "JobId": job,
                "Definition": "LD",
                "Format": "m3u8",
                "StreamType": "video",
                "Status": "Normal",
                "CreationTime": "2026-01-01T00:00:00Z",
                "ModificationTime": "2026-01-02T00:00:00Z",
                "PlayURL": play_url(job),
            })
        })
        .collect();
    Answer {
        code: None,
        status: StatusCode::OK,
        body: serde_json::json!({
            "RequestId": request_id,
            "VideoBase": {"VideoId": video, "Status": "Normal", "Title": video},
            "PlayInfoList": {"PlayInfo": play_info},
        }),
    }
}

fn delete_stream(
    inner: &mut Inner,
    params: &BTreeMap<String, String>,
    request_id: &str,
    injected: Option<String>,
) -> Answer {
    let video = params.get("VideoId").cloned().unwrap_or_default();
    let ids: Vec<String> = params
        .get("JobIds")
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .collect();
    if ids.len() > MAX_JOB_IDS {
        return documented("JobIdsExceededMax", request_id);
    }
    let partial = inner.partial_deletes;
    let Some(jobs) = inner.videos.get_mut(&video) else {
        return documented("InvalidVideo.NotFound", request_id);
    };
    let unknown = ids.iter().any(|id| !jobs.contains(id));
    let refused = match injected {
        Some(code) if code == "InvalidStream.NotFound" => true,
        Some(code) => return documented(&code, request_id),
        None => unknown,
    };
    if refused {
        if partial {
            jobs.retain(|job| !ids.contains(job));
        }
        return documented("InvalidStream.NotFound", request_id);
    }
    jobs.retain(|job| !ids.contains(job));
    Answer {
        code: None,
        status: StatusCode::OK,
        body: serde_json::json!({ "RequestId": request_id }),
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let mut params = BTreeMap::new();
    params.extend(decode_pairs(query.as_deref().unwrap_or_default()));
    params.extend(decode_pairs(&String::from_utf8_lossy(&body)));
    let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
    inner.next_request += 1;
    let request_id = format!(
        "FAKE-{:08}-0000-4000-8000-{:012X}",
        inner.next_request, inner.next_request
    );
    let action = params.get("Action").cloned().unwrap_or_default();
    let (signature_valid, answer) =
        match authenticate(&mut inner, method.as_str(), &params, &request_id) {
            Err(refusal) => (
                refusal.code.as_deref() != Some("SignatureDoesNotMatch")
                    && refusal.code.as_deref() != Some("MissingParameter")
                    && refusal.code.as_deref() != Some("InvalidAccessKeyId.NotFound"),
                refusal,
            ),
            Ok(()) => {
                let injected = inner
                    .failures
                    .get_mut(&action)
                    .and_then(VecDeque::pop_front);
                let throttled = inner.over_quota(&action);
                let mut answer = match (action.as_str(), injected) {
                    _ if throttled => documented("Throttling.User", &request_id),
                    ("DeleteStream", injected) => {
                        delete_stream(&mut inner, &params, &request_id, injected)
                    }
                    (_, Some(code)) => documented(&code, &request_id),
                    ("GetPlayInfo", None) => get_play_info(&inner, &params, &request_id),
                    (_, None) => error(
                        "InvalidAction.NotFound",
                        &request_id,
                        format!("Specified api {action} is not found."),
                    ),
                };
                if let Some(status) = answer
                    .code
                    .as_ref()
                    .and_then(|code| inner.code_statuses.get(code))
                {
                    answer.status = *status;
                }
                (true, answer)
            }
        };
    inner.requests.push(Recorded {
        method: method.to_string(),
        params,
        signature_valid,
        code: answer.code.clone(),
        request_id,
    });
    (
        answer.status,
        [(header::CONTENT_TYPE, "application/json;charset=utf-8")],
        answer.body.to_string(),
    )
        .into_response()
}
