//! Counts every call and measures its latency, by method, provider instance and final gRPC
//! code (see [`crate::telemetry::metrics`] for the names).
//!
//! The provider instance is read from the call's telemetry context, which the trace layer
//! opens outside this one and the registry fills in when a handler resolves the instance.
//! A method no service serves is counted as `unknown` (see [`RpcName::parse`]), so that
//! callers cannot invent label values, whichever layer refused the call.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::outcome::{Observed, Outcome, observe_call};
use crate::telemetry::metrics::RpcLabels;
use crate::telemetry::{RpcName, Telemetry, call};

/// Records the metrics of each call.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    telemetry: Arc<Telemetry>,
}

impl RpcMetricsLayer {
    /// Records into `telemetry`'s instruments.
    pub fn new(telemetry: Arc<Telemetry>) -> Self {
        RpcMetricsLayer { telemetry }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics {
            inner,
            telemetry: Arc::clone(&self.telemetry),
        }
    }
}

/// The service of [`RpcMetricsLayer`].
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

impl<S, B, R> Service<http::Request<B>> for RpcMetrics<S>
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
        let name = RpcName::parse(request.uri().path());
        let context = call::current();
        let telemetry = Arc::clone(&self.telemetry);
        let finish = move |outcome: Outcome| {
            let labels = RpcLabels {
                service: name.service,
                method: name.method,
                provider: context.as_ref().and_then(|c| c.provider()),
                code: outcome.code,
            };
            telemetry.metrics().rpc(labels, started.elapsed());
        };
        observe_call(self.inner.call(request), Box::new(finish))
    }
}
