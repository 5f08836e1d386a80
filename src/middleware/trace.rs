//! One span per call, and the access log line when it ends.
//!
//! The OpenTelemetry server span continues the caller's W3C `traceparent` (a new trace when
//! there is none), is named `package.Service/Method` and carries the rpc semantic-convention
//! attributes (`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`,
//! `server.address`, `network.peer.address`); the call's telemetry context
//! ([`crate::telemetry::call`]) makes it the parent of every provider-call span. The same call
//! is one `tracing` span named `call` whose fields (`trace_id` and `span_id` among them) every
//! log line written during the call carries, in text and JSON alike.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::Code;
use tonic::transport::server::TcpConnectInfo;
use tower::{Layer, Service};
use tracing::Instrument;

use super::outcome::{Observed, Outcome, observe_call};
use crate::telemetry::call::CallContext;
use crate::telemetry::metrics::code_name;
use crate::telemetry::{RpcName, Telemetry};

/// Opens each call's spans and telemetry context.
#[derive(Clone)]
pub struct TraceLayer {
    telemetry: Arc<Telemetry>,
}

impl TraceLayer {
    /// Spans made with `telemetry`'s tracer.
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        TraceLayer { telemetry }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Trace {
            inner,
            telemetry: Arc::clone(&self.telemetry),
        }
    }
}

/// The service of [`TraceLayer`].
#[derive(Clone)]
pub struct Trace<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// Reads `traceparent` and `tracestate` from the request headers.
struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // The W3C propagator asks for these two on every call: by `HeaderName`, so that the
        // name is not parsed each time.
        let value = match key {
            "traceparent" => self.0.get(&TRACEPARENT),
            "tracestate" => self.0.get(&TRACESTATE),
            key => self.0.get(key),
        };
        value.and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// `bytes` in lower-case hex, written into `out` (twice their length).
fn hex_str<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    match hex::encode_to_slice(bytes, out) {
        Ok(()) => std::str::from_utf8(out).unwrap_or_default(),
        Err(_) => "",
    }
}

/// The codes a server span reports as an error (the server's fault, per the semantic
/// conventions); the others are the caller's business.
fn server_fault(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// `ip` as text. An IPv4 address, nearly every peer, is written digit by digit: `Ipv4Addr`'s
/// `Display` goes through the formatter's padding machinery, ~1,300 instructions a call.
fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut text = String::with_capacity(15);
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push('.');
                }
                if octet >= 100 {
                    text.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    text.push(char::from(b'0' + octet / 10 % 10));
                }
                text.push(char::from(b'0' + octet % 10));
            }
            text
        }
        std::net::IpAddr::V6(v6) => v6.to_string(),
    }
}

fn attributes<B>(request: &http::Request<B>, name: RpcName<'static>) -> Vec<KeyValue> {
    let mut attributes = Vec::with_capacity(7);
    attributes.extend([
        KeyValue::new("rpc.system", "grpc"),
        KeyValue::new("rpc.service", name.service),
        KeyValue::new("rpc.method", name.method),
    ]);
    if let Some(authority) = request.uri().authority() {
        attributes.push(KeyValue::new(
            "server.address",
            authority.host().to_string(),
        ));
        if let Some(port) = authority.port_u16() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
    if let Some(peer) = request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
    {
        attributes.push(KeyValue::new("network.peer.address", ip_text(peer.ip())));
        attributes.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
    }
    attributes
}

impl<S, B, R> Service<http::Request<B>> for Trace<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<Observed<R>>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let served = crate::methods::served(request.uri().path());
        let name = served.map_or(RpcName::UNKNOWN, RpcName::of);
        let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
        let tracer = self.telemetry.tracer();
        let span = tracer
            .span_builder(served.map_or("unknown/unknown", |m| m.full.as_str()))
            .with_kind(SpanKind::Server)
            .with_attributes(attributes(&request, name))
            .start_with_context(tracer, &parent);
        let otel = parent.with_span(span);
        let ids = otel.span().span_context().clone();
        let (mut trace_id, mut span_id) = ([0u8; 32], [0u8; 16]);
        let trace_id = hex_str(&ids.trace_id().to_bytes(), &mut trace_id);
        let span_id = hex_str(&ids.span_id().to_bytes(), &mut span_id);
        // At ERROR level so that it is enabled whenever any line is: whatever the log filter,
        // the lines of the call carry its fields. Recorded as `Display` (`%`): a `&str` field
        // is written through `Debug`, escaped character by character, each call.
        let log_span = tracing::error_span!(
            "call",
            rpc.service = %name.service,
            rpc.method = %name.method,
            trace_id = %trace_id,
            span_id = %span_id,
        );
        let context = CallContext::new(Arc::clone(&self.telemetry), otel);
        let future = context.sync_scope(|| log_span.in_scope(|| self.inner.call(request)));
        let future = context.clone().scope(future.instrument(log_span.clone()));
        let finish = move |outcome: Outcome| {
            let span = context.otel().span();
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", outcome.code as i64));
            if server_fault(outcome.code) {
                span.set_status(Status::error(outcome.message.clone()));
            }
            span.end();
            let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
            let code = code_name(outcome.code);
            log_span.in_scope(|| {
                if server_fault(outcome.code) {
                    tracing::warn!(grpc.code = %code, grpc.message = %outcome.message, latency_ms, "call failed");
                } else {
                    tracing::info!(grpc.code = %code, latency_ms, "call finished");
                }
            });
        };
        observe_call(future, Box::new(finish))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::ip_text;

    #[test]
    fn ip_text_is_what_display_writes() {
        for octet in 0..=255u8 {
            for ip in [
                Ipv4Addr::new(octet, 0, 255, 9),
                Ipv4Addr::new(127, octet, 10, 1),
                Ipv4Addr::new(1, 99, octet, 100),
                Ipv4Addr::new(200, 20, 2, octet),
            ] {
                assert_eq!(ip_text(IpAddr::V4(ip)), ip.to_string());
            }
        }
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        assert_eq!(ip_text(v6), "2001:db8::1");
    }
}
