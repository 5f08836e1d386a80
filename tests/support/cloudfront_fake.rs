//! A wire-level fake of CloudFront's streaming-distribution API (restXml under
//! `/2020-05-31/streaming-distribution`), which no emulator offers since AWS discontinued
//! RTMP distributions. It behaves as the API reference describes: every change issues a new
//! ETag and If-Match must name the current one (`PreconditionFailed` otherwise,
//! `InvalidIfMatchVersion` when missing), a changed distribution stays `InProgress` for a
//! set number of polls, and an enabled or undeployed distribution refuses DELETE with
//! `StreamingDistributionNotDisabled`. It records every request it answers.
//!
//! Switchable per test, as CloudFront really behaves: the window after Deployed during which
//! DELETE is still refused `StreamingDistributionNotDisabled` ([`StreamingFake::settle_after_deploy`];
//! terraform-provider-aws retries it for minutes), a distribution deleted by someone else
//! ([`StreamingFake::remove`]), and any error answered to the next request of a method
//! ([`StreamingFake::fail_next`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

const PREFIX: &str = "/2020-05-31/streaming-distribution";
const XMLNS: &str = "http://cloudfront.amazonaws.com/doc/2020-05-31/";

/// One request as the fake received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub method: String,
    /// The path without the API version, e.g. `/streaming-distribution/E1/config`.
    pub path: String,
    pub if_match: Option<String>,
    pub body: String,
    /// The ETag the fake answered with, if any.
    pub answered_etag: Option<String>,
}

impl Recorded {
    /// `METHOD path`, for compact assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

struct Distribution {
    etag: String,
    /// The children of `<StreamingDistributionConfig>`, as last PUT.
    config: String,
    in_progress_left: u32,
    /// When its last change was Deployed (`None`: long ago).
    deployed_at: Option<Instant>,
}

#[derive(Default)]
struct Fake {
    distributions: BTreeMap<String, Distribution>,
    requests: Vec<Recorded>,
    etags: u32,
    polls_after_change: u32,
    delete_delay: Duration,
    /// How long a PUT's answer is held back after the change took effect.
    put_delay: Duration,
    /// PUTs still to lose a race: before each, someone else changes the distribution.
    contended_puts: u32,
    /// How long after Deployed a DELETE is still refused.
    settle: Duration,
    /// Errors for the next request of a method: (method, HTTP status, code).
    failures: Vec<(String, u16, String)>,
}

impl Fake {
    fn new_etag(&mut self) -> String {
        self.etags += 1;
        format!("E{:04}ETAG", self.etags)
    }
}

/// The running fake.
#[derive(Clone)]
pub struct StreamingFake {
    pub addr: SocketAddr,
    state: Arc<Mutex<Fake>>,
}

fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(&xml[start..end])
}

/// The children of the element `tag`, whatever its attributes.
fn inner<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let start = xml.find(&format!("<{tag}"))?;
    let open_end = xml[start..].find('>')? + start + 1;
    let close = xml.rfind(&format!("</{tag}>"))?;
    (open_end <= close).then(|| &xml[open_end..close])
}

/// The distribution's own `Enabled`: the last one, after Logging's and TrustedSigners'.
fn enabled(config: &str) -> bool {
    config
        .rfind("<Enabled>")
        .map(|i| config[i..].starts_with("<Enabled>true<"))
        .unwrap_or(false)
}

fn config_xml(caller_reference: &str, bucket: &str, comment: &str, enabled: bool) -> String {
    format!(
        "<CallerReference>{caller_reference}</CallerReference>\
         <S3Origin><DomainName>{bucket}</DomainName><OriginAccessIdentity></OriginAccessIdentity></S3Origin>\
         <Aliases><Quantity>0</Quantity></Aliases><Comment>{comment}</Comment>\
         <Logging><Enabled>false</Enabled><Bucket></Bucket><Prefix></Prefix></Logging>\
         <TrustedSigners><Enabled>false</Enabled><Quantity>0</Quantity></TrustedSigners>\
         <PriceClass>PriceClass_All</PriceClass><Enabled>{enabled}</Enabled>"
    )
}

fn xml(status: StatusCode, etag: Option<&str>, body: String) -> Response {
    let mut response = (
        status,
        [
            ("content-type", "text/xml".to_string()),
            ("x-amz-request-id", format!("fake-{}", rand_id())),
        ],
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{body}"),
    )
        .into_response();
    if let Some(etag) = etag {
        response
            .headers_mut()
            .insert("etag", etag.parse().expect("etag header"));
    }
    response
}

fn rand_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    xml(
        status,
        None,
        format!(
            "<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>Sender</Type><Code>{code}</Code>\
             <Message>{message}</Message></Error><RequestId>{}</RequestId></ErrorResponse>",
            rand_id()
        ),
    )
}

fn no_such() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NoSuchStreamingDistribution",
        "The specified streaming distribution does not exist.",
    )
}

fn status(d: &Distribution) -> &'static str {
    if d.in_progress_left > 0 {
        "InProgress"
    } else {
        "Deployed"
    }
}

fn distribution_xml(id: &str, d: &Distribution) -> String {
    format!(
        "<StreamingDistribution xmlns=\"{XMLNS}\"><Id>{id}</Id>\
         <ARN>arn:aws:cloudfront::123456789012:streaming-distribution/{id}</ARN>\
         <Status>{}</Status><LastModifiedTime>2020-11-30T12:00:00Z</LastModifiedTime>\
         <DomainName>s{}.cloudfront.net</DomainName>\
         <ActiveTrustedSigners><Enabled>false</Enabled><Quantity>0</Quantity></ActiveTrustedSigners>\
         <StreamingDistributionConfig>{}</StreamingDistributionConfig></StreamingDistribution>",
        status(d),
        id.to_lowercase(),
        d.config
    )
}

fn summary_xml(id: &str, d: &Distribution) -> String {
    let c = &d.config;
    format!(
        "<StreamingDistributionSummary><Id>{id}</Id>\
         <ARN>arn:aws:cloudfront::123456789012:streaming-distribution/{id}</ARN>\
         <Status>{}</Status><LastModifiedTime>2020-11-30T12:00:00Z</LastModifiedTime>\
         <DomainName>s{}.cloudfront.net</DomainName>\
         <S3Origin>{}</S3Origin><Aliases><Quantity>0</Quantity></Aliases>\
         <TrustedSigners><Enabled>false</Enabled><Quantity>0</Quantity></TrustedSigners>\
         <Comment>{}</Comment><PriceClass>PriceClass_All</PriceClass><Enabled>{}</Enabled>\
         </StreamingDistributionSummary>",
        status(d),
        id.to_lowercase(),
        element(c, "S3Origin").unwrap_or_default(),
        element(c, "Comment").unwrap_or_default(),
        enabled(c)
    )
}

fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

async fn handle(
    State(state): State<Arc<Mutex<Fake>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (index, delay) = {
        let mut fake = state.lock().unwrap();
        fake.requests.push(Recorded {
            method: method.to_string(),
            path: uri.path().trim_start_matches("/2020-05-31").to_string(),
            if_match: headers
                .get("if-match")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: String::from_utf8_lossy(&body).to_string(),
            answered_etag: None,
        });
        (fake.requests.len() - 1, fake.delete_delay)
    };
    if method == Method::DELETE && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (response, hold) = {
        let mut fake = state.lock().unwrap();
        let response = answer(&mut fake, &method, &uri, &headers, &body);
        fake.requests[index].answered_etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (response, fake.put_delay)
    };
    if method == Method::PUT && !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    response
}

/// The answer to one request, as CloudFront would give it.
fn answer(
    fake: &mut Fake,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response {
    let body = String::from_utf8_lossy(body).to_string();
    let if_match = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let path = uri.path().to_string();
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return error(StatusCode::NOT_FOUND, "NotFound", "no such API");
    };
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(at) = fake
        .failures
        .iter()
        .position(|(m, ..)| m == method.as_str())
    {
        let (_, status, code) = fake.failures.remove(at);
        return error(
            StatusCode::from_u16(status).unwrap(),
            &code,
            "injected by the test",
        );
    }
    match (method.as_str(), segments.as_slice()) {
        ("GET", []) => {
            let marker = query_param(uri, "Marker").unwrap_or_default();
            let max: usize = query_param(uri, "MaxItems")
                .and_then(|m| m.parse().ok())
                .unwrap_or(100);
            let after: Vec<(&String, &Distribution)> = fake
                .distributions
                .iter()
                .filter(|(id, _)| marker.is_empty() || id.as_str() > marker.as_str())
                .collect();
            let page: Vec<_> = after.iter().take(max).collect();
            let truncated = after.len() > max;
            let next = if truncated {
                format!("<NextMarker>{}</NextMarker>", page.last().unwrap().0)
            } else {
                String::new()
            };
            let items: String = page.iter().map(|(id, d)| summary_xml(id, d)).collect();
            xml(
                StatusCode::OK,
                None,
                format!(
                    "<StreamingDistributionList xmlns=\"{XMLNS}\"><Marker>{marker}</Marker>{next}\
                     <MaxItems>{max}</MaxItems><IsTruncated>{truncated}</IsTruncated>\
                     <Quantity>{}</Quantity><Items>{items}</Items></StreamingDistributionList>",
                    page.len()
                ),
            )
        }
        ("GET", [id]) => {
            let Some(d) = fake.distributions.get_mut(*id) else {
                return no_such();
            };
            let answer = xml(StatusCode::OK, Some(&d.etag), distribution_xml(id, d));
            if d.in_progress_left == 1 {
                d.deployed_at = Some(Instant::now());
            }
            d.in_progress_left = d.in_progress_left.saturating_sub(1);
            answer
        }
        ("GET", [id, "config"]) => match fake.distributions.get(*id) {
            Some(d) => xml(
                StatusCode::OK,
                Some(&d.etag),
                format!(
                    "<StreamingDistributionConfig xmlns=\"{XMLNS}\">{}</StreamingDistributionConfig>",
                    d.config
                ),
            ),
            None => no_such(),
        },
        ("PUT", [id, "config"]) => {
            if fake.contended_puts > 0 && fake.distributions.contains_key(*id) {
                fake.contended_puts -= 1;
                let raced = fake.new_etag();
                fake.distributions.get_mut(*id).unwrap().etag = raced;
            }
            let polls = fake.polls_after_change;
            let etag = fake.new_etag();
            let Some(d) = fake.distributions.get_mut(*id) else {
                return no_such();
            };
            match &if_match {
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "InvalidIfMatchVersion",
                        "The If-Match version is missing or not valid for the resource.",
                    );
                }
                Some(given) if *given != d.etag => {
                    return error(
                        StatusCode::PRECONDITION_FAILED,
                        "PreconditionFailed",
                        "The precondition given in one or more of the request-header fields evaluated to false.",
                    );
                }
                Some(_) => {}
            }
            let Some(config) = inner(&body, "StreamingDistributionConfig") else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "MalformedXML",
                    "no StreamingDistributionConfig",
                );
            };
            d.config = config.to_string();
            d.etag = etag;
            d.in_progress_left = polls;
            d.deployed_at = (polls == 0).then(Instant::now);
            xml(StatusCode::OK, Some(&d.etag), distribution_xml(id, d))
        }
        ("DELETE", [id]) => {
            let settle = fake.settle;
            let Some(d) = fake.distributions.get(*id) else {
                return no_such();
            };
            match &if_match {
                None => error(
                    StatusCode::BAD_REQUEST,
                    "InvalidIfMatchVersion",
                    "The If-Match version is missing or not valid for the resource.",
                ),
                Some(given) if *given != d.etag => error(
                    StatusCode::PRECONDITION_FAILED,
                    "PreconditionFailed",
                    "The precondition given in one or more of the request-header fields evaluated to false.",
                ),
                Some(_)
                    if enabled(&d.config)
                        || d.in_progress_left > 0
                        || d.deployed_at.is_some_and(|t| t.elapsed() < settle) =>
                {
                    error(
                        StatusCode::CONFLICT,
                        "StreamingDistributionNotDisabled",
                        "The specified CloudFront distribution has not been disabled.",
                    )
                }
                Some(_) => {
                    fake.distributions.remove(*id);
                    StatusCode::NO_CONTENT.into_response()
                }
            }
        }
        _ => error(
            StatusCode::BAD_REQUEST,
            "InvalidArgument",
            "unsupported request",
        ),
    }
}

impl StreamingFake {
    /// Starts the fake on 127.0.0.1; a changed distribution stays InProgress for
    /// `polls_after_change` GETs of it.
    pub async fn start(polls_after_change: u32) -> Self {
        let state = Arc::new(Mutex::new(Fake {
            polls_after_change,
            ..Fake::default()
        }));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        StreamingFake { addr, state }
    }

    /// The endpoint_url to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a deployed distribution; returns its ETag.
    pub fn add(&self, id: &str, enabled: bool, comment: &str) -> String {
        let mut fake = self.state.lock().unwrap();
        let etag = fake.new_etag();
        fake.distributions.insert(
            id.to_string(),
            Distribution {
                etag: etag.clone(),
                config: config_xml(
                    &format!("ref-{id}"),
                    "media.s3.amazonaws.com",
                    comment,
                    enabled,
                ),
                in_progress_left: 0,
                deployed_at: None,
            },
        );
        etag
    }

    /// Changes a distribution behind the gateway's back (a new ETag, as any change does).
    pub fn touch(&self, id: &str, enabled: bool) -> String {
        let mut fake = self.state.lock().unwrap();
        let etag = fake.new_etag();
        let d = fake
            .distributions
            .get_mut(id)
            .expect("no such distribution");
        d.config = config_xml(
            &format!("ref-{id}"),
            "media.s3.amazonaws.com",
            "touched",
            enabled,
        );
        d.etag = etag.clone();
        etag
    }

    /// Makes the next `n` PUTs lose a race: someone else changes the distribution first.
    pub fn contend_puts(&self, n: u32) {
        self.state.lock().unwrap().contended_puts = n;
    }

    /// How many polls a distribution stays InProgress after the next change.
    pub fn set_polls_after_change(&self, polls: u32) {
        self.state.lock().unwrap().polls_after_change = polls;
    }

    /// Lets a distribution finish deploying after `polls` more GETs.
    pub fn deploy_after(&self, id: &str, polls: u32) {
        self.state
            .lock()
            .unwrap()
            .distributions
            .get_mut(id)
            .expect("no such distribution")
            .in_progress_left = polls;
    }

    /// Holds back every PUT's answer this long, after the change took effect.
    pub fn delay_put_answers(&self, delay: Duration) {
        self.state.lock().unwrap().put_delay = delay;
    }

    /// After a change is Deployed, DELETE stays refused `StreamingDistributionNotDisabled`
    /// for `window` (CloudFront's window after Deployed).
    pub fn settle_after_deploy(&self, window: Duration) {
        self.state.lock().unwrap().settle = window;
    }

    /// Deletes `id` as someone else would.
    pub fn remove(&self, id: &str) {
        self.state.lock().unwrap().distributions.remove(id);
    }

    /// Answers the next request of `method` (e.g. `DELETE`) with `code` and HTTP `status`.
    pub fn fail_next(&self, method: &str, status: u16, code: &str) {
        self.state
            .lock()
            .unwrap()
            .failures
            .push((method.to_string(), status, code.to_string()));
    }

    /// Makes every DELETE wait this long before it is answered.
    pub fn delay_deletes(&self, delay: Duration) {
        self.state.lock().unwrap().delete_delay = delay;
    }

    pub fn exists(&self, id: &str) -> bool {
        self.state.lock().unwrap().distributions.contains_key(id)
    }

    pub fn is_enabled(&self, id: &str) -> bool {
        enabled(&self.state.lock().unwrap().distributions[id].config)
    }

    pub fn etag(&self, id: &str) -> String {
        self.state.lock().unwrap().distributions[id].etag.clone()
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state.lock().unwrap().requests.clear();
    }
}

/// The distribution's own Enabled in a PUT body, as the fake reads it.
pub fn body_enabled(body: &str) -> bool {
    enabled(body)
}
