//! A pass-through HTTP proxy in front of moto's server, for what moto cannot be asked to do:
//! count the requests it receives, and answer the next requests of a method with a CloudFront
//! error (throttling, a 5xx, a DELETE refused in the window after Deployed) instead of
//! forwarding them. Everything else reaches moto unchanged.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

#[derive(Default)]
struct Inner {
    requests: usize,
    gets: usize,
    /// Errors for the next requests: (method, HTTP status, CloudFront code).
    failures: VecDeque<(Method, u16, String)>,
}

struct Shared {
    upstream: String,
    client: reqwest::Client,
    inner: Mutex<Inner>,
}

/// A running proxy.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Serves on 127.0.0.1 (a free port), forwarding to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> Self {
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            client: reqwest::Client::new(),
            inner: Mutex::default(),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Proxy { addr, shared, task }
    }

    /// The endpoint_url to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many requests arrived.
    pub fn requests(&self) -> usize {
        self.shared.inner.lock().unwrap().requests
    }

    /// How many GETs arrived.
    pub fn gets(&self) -> usize {
        self.shared.inner.lock().unwrap().gets
    }

    /// Answers the next `times` requests of `method` with `code` and HTTP `status`, as
    /// CloudFront words errors.
    pub fn fail_next(&self, method: Method, status: u16, code: &str, times: usize) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.failures.extend(std::iter::repeat_n(
            (method, status, code.to_string()),
            times,
        ));
    }
}

async fn forward(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let injected = {
        let mut inner = shared.inner.lock().unwrap();
        inner.requests += 1;
        if method == Method::GET {
            inner.gets += 1;
        }
        let at = inner.failures.iter().position(|(m, ..)| *m == method);
        at.and_then(|at| inner.failures.remove(at))
    };
    if let Some((_, status, code)) = injected {
        let body = format!(
            "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\">\
             <Error><Type>Sender</Type><Code>{code}</Code><Message>injected by the test</Message>\
             </Error><RequestId>proxy-injected</RequestId></ErrorResponse>"
        );
        return (
            StatusCode::from_u16(status).unwrap(),
            [
                ("content-type", "text/xml"),
                ("x-amz-request-id", "proxy-injected"),
            ],
            body,
        )
            .into_response();
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = shared
        .client
        .request(method, format!("{}{path}", shared.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != "transfer-encoding" && name != "content-length" && name != "connection" {
            out.insert(name, value.clone());
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    (status, out, bytes).into_response()
}
