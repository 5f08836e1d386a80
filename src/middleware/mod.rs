//! The tower middleware in front of every gRPC service, composed in one function.
//!
//! - `trace.rs`: one span per call (OpenTelemetry server span and the `call` log span) and
//!   the access log line, with the final gRPC status.
//! - `rpc_metrics.rs`: calls, errors and latency by method, provider instance and code.
//! - `deadline.rs`: the caller's `grpc-timeout` as the deadline of everything the call does.
//! - `outcome.rs`: not a layer; how the trace and metrics layers learn a call's final status.

mod deadline;
mod outcome;
mod rpc_metrics;
mod trace;

use std::sync::Arc;

use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};

pub use deadline::{Deadline, DeadlineLayer};
pub use outcome::Observed;
pub use rpc_metrics::{RpcMetrics, RpcMetricsLayer};
pub use trace::{Trace, TraceLayer};

use crate::telemetry::Telemetry;

/// The composed stack's type.
pub type MiddlewareStack =
    Stack<DeadlineLayer, Stack<RpcMetricsLayer, Stack<TraceLayer, Identity>>>;

/// THE middleware stack, outermost first.
pub fn stack(telemetry: &Arc<Telemetry>) -> ServiceBuilder<MiddlewareStack> {
    ServiceBuilder::new()
        // Outermost, so the span and the log line cover everything the call went through,
        // rejections by inner layers included, and so the call's telemetry context (trace
        // context, provider instance) is open for every layer and handler below.
        .layer(TraceLayer::new(Arc::clone(telemetry)))
        // Inside the trace layer, whose context tells it the provider instance; outside the
        // others, so that calls they refuse are counted with the code they got.
        .layer(RpcMetricsLayer::new(Arc::clone(telemetry)))
        // Innermost: the deadline scopes the handler and everything it calls, provider retries
        // included.
        .layer(DeadlineLayer)
}
