//! The telemetry context of the call being served: its OpenTelemetry context (the server span)
//! and the provider instance it turned out to address, visible to everything the call does
//! through a task-local, like the caller's deadline ([`crate::deadline`]).
//!
//! The trace layer opens it for each call; the operation runner opens one for each operation
//! task, under the call that started the operation if there is one. Code outside any context
//! (unit tests, start-up) records nothing.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

use super::{RpcName, Telemetry};
use crate::error::{Error, Result};

tokio::task_local! {
    static CURRENT: CallContext;
}

/// What the telemetry of one call hangs on.
#[derive(Clone)]
pub struct CallContext {
    telemetry: Arc<Telemetry>,
    otel: Context,
    // Set once by the registry when a handler resolves a configured instance; read by the
    // metrics layer when the call ends (errors included).
    provider: Arc<OnceLock<String>>,
}

impl CallContext {
    /// A context whose spans are children of `otel`'s span.
    pub fn new(telemetry: Arc<Telemetry>, otel: Context) -> Self {
        CallContext {
            telemetry,
            otel,
            provider: Arc::new(OnceLock::new()),
        }
    }

    /// A context for work spawned by the current call (or for background work when there is
    /// none): its spans stay in the current trace, its provider is its own.
    pub fn spawned(telemetry: &Arc<Telemetry>) -> Self {
        let otel = current().map(|c| c.otel).unwrap_or_default();
        CallContext::new(Arc::clone(telemetry), otel)
    }

    /// The OpenTelemetry context (the call's span).
    pub fn otel(&self) -> &Context {
        &self.otel
    }

    /// The provider instance the call addressed, once a handler resolved it.
    pub fn provider(&self) -> Option<&str> {
        self.provider.get().map(String::as_str)
    }

    /// Runs `future` inside this context.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(self, future).await
    }

    /// Runs `f` inside this context (for the synchronous part of a tower `call`).
    pub fn sync_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self.clone(), f)
    }
}

/// The context of the current call, if any.
pub fn current() -> Option<CallContext> {
    CURRENT.try_with(Clone::clone).ok()
}

/// `future` inside the current call's context, for a task the call spawns (it runs after the
/// call's own future returned, outside the task-local).
pub fn in_current_call<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let context = current();
    async move {
        match context {
            Some(context) => context.scope(future).await,
            None => future.await,
        }
    }
}

/// Notes that the current call addresses the configured provider instance `id` (the first one
/// noted wins). Called by the registry, so that every handler labels its call alike.
pub fn record_provider(id: &str) {
    let _ = CURRENT.try_with(|c| {
        c.provider.get_or_init(|| id.to_string());
    });
}

/// Counts a call refused for being over its caller's rate: `path` is the request's
/// `/package.Service/Method`. The rate-limit layer sits inside the trace layer, so the
/// current call's context is there; outside any call this records nothing.
pub fn rate_limited(principal: &str, path: &str) {
    let _ = CURRENT.try_with(|c| {
        let name = RpcName::parse(path);
        c.telemetry
            .metrics()
            .rate_limited(principal, name.service, name.method);
    });
}

/// Counts a call refused for want of valid credentials: `path` is the request's
/// `/package.Service/Method`. The authentication layer sits inside the trace layer, so the
/// current call's context is there; outside any call this records nothing.
pub fn unauthenticated_refusal(path: &str) {
    let _ = CURRENT.try_with(|c| {
        let name = RpcName::parse(path);
        c.telemetry
            .metrics()
            .unauthenticated_refusal(name.service, name.method);
    });
}

/// Runs one provider API call (retries included) as a client span under the current call's
/// span, and records its latency: `provider` is the instance id, `kind` its kind, `action` the
/// provider's own API name (e.g. `DescribeStream`).
pub async fn provider_call<T>(
    provider: &str,
    kind: &'static str,
    action: &'static str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Some(context) = current() else {
        return call.await;
    };
    let tracer = context.telemetry.tracer();
    let span = tracer
        .span_builder(format!("{kind} {action}"))
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("provider", provider.to_string()),
            KeyValue::new("provider.kind", kind),
            KeyValue::new("provider.action", action),
        ])
        .start_with_context(tracer, &context.otel);
    let otel = context.otel.with_span(span);
    let started = Instant::now();
    let inner = CallContext {
        otel: otel.clone(),
        ..context.clone()
    };
    let result = inner.scope(call).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.kind().reason(),
    };
    context
        .telemetry
        .metrics()
        .provider_call(provider, kind, action, outcome, started.elapsed());
    let span = otel.span();
    span.set_attribute(KeyValue::new("outcome", outcome));
    if let Err(e) = &result {
        describe_failure(&span, e);
    }
    span.end();
    result
}

fn describe_failure(span: &opentelemetry::trace::SpanRef<'_>, error: &Error) {
    span.set_attribute(KeyValue::new("error.type", error.kind().reason()));
    if let Some(code) = error.provider_code() {
        span.set_attribute(KeyValue::new("provider.error_code", code.to_string()));
    }
    if let Some(id) = error.provider_request_id() {
        span.set_attribute(KeyValue::new("provider.request_id", id.to_string()));
    }
    span.set_status(Status::error(error.message().to_string()));
}

/// Notes on the current provider-call span that a try failed and will be retried after
/// `delay`.
pub fn retrying(error: &Error, delay: std::time::Duration) {
    let _ = CURRENT.try_with(|c| {
        c.otel.span().add_event(
            "retry",
            vec![
                KeyValue::new("error.type", error.kind().reason()),
                KeyValue::new("retry.delay_ms", delay.as_millis() as i64),
            ],
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Environment;
    use crate::error::Kind;

    fn sample<'a>(text: &'a str, prefix: &str, contains: &[&str]) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix) && contains.iter().all(|c| l.contains(c)))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[tokio::test]
    async fn rate_limits_count_inside_a_call_only() {
        let telemetry = Telemetry::new(
            crate::telemetry::otel::OtelSettings::from_env(&Environment::default()).unwrap(),
        )
        .unwrap();
        let path = "/streamgate.v1.StreamService/DeleteStream";
        rate_limited("alice", path);
        let call = CallContext::new(Arc::clone(&telemetry), Context::new());
        call.scope(async {
            rate_limited("alice", path);
            rate_limited("alice", path);
        })
        .await;
        let text = telemetry.prometheus_text().unwrap();
        let labels = [
            "principal=\"alice\"",
            "rpc_service=\"streamgate.v1.StreamService\"",
            "rpc_method=\"DeleteStream\"",
        ];
        assert_eq!(
            sample(&text, "streamgate_rate_limited_total{", &labels),
            Some("2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn provider_calls_are_measured_with_their_outcome_and_the_first_provider_labels_the_call()
    {
        let telemetry = Telemetry::new(
            crate::telemetry::otel::OtelSettings::from_env(&Environment::default()).unwrap(),
        )
        .unwrap();
        let call = CallContext::new(Arc::clone(&telemetry), Context::new());
        let result = call
            .clone()
            .scope(async {
                record_provider("kvs");
                record_provider("other");
                provider_call("kvs", "kinesis-video", "DescribeStream", async {
                    Err::<(), _>(Error::new(Kind::StreamNotFound, "gone"))
                })
                .await
            })
            .await;
        assert_eq!(result.unwrap_err().kind(), Kind::StreamNotFound);
        assert_eq!(call.provider(), Some("kvs"));
        let text = telemetry.prometheus_text().unwrap();
        let labels = [
            "provider=\"kvs\"",
            "provider_kind=\"kinesis-video\"",
            "provider_action=\"DescribeStream\"",
            "outcome=\"STREAM_NOT_FOUND\"",
        ];
        assert_eq!(
            sample(
                &text,
                "streamgate_provider_call_duration_seconds_count{",
                &labels
            ),
            Some("1"),
            "{text}"
        );
    }
}
