//! The tower middleware in front of every gRPC service, composed in ONE function, [`stack`].
//!
//! - `trace.rs`: one span per call (OpenTelemetry server span and the `call` log span) and
//!   the access log line, with the final gRPC status.
//! - `rpc_metrics.rs`: calls, errors and latency by method, provider instance and code.
//! - `load_shed.rs`: a bound on calls in flight.
//! - `authn.rs`: who calls (API keys, JWTs).
//! - `authz.rs`: what the caller may do (methods here; provider instances in the handlers).
//! - `rate_limit.rs`: inbound rates per principal and method.
//! - `caller_limits.rs`: calls in flight per principal, and long-lived calls open per
//!   principal and connection.
//! - `deadline.rs`: the call's deadline, visible to everything the call does.
//! - `gate.rs`: not a layer of its own; the plumbing of authn, authz and rate limits.
//! - `outcome.rs`: not a layer; how the trace and metrics layers learn a call's final status.

mod authn;
mod authz;
mod caller_limits;
mod deadline;
mod gate;
mod load_shed;
mod outcome;
mod rate_limit;
mod rpc_metrics;
mod trace;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};

pub use authn::{Authenticator, Authn, AuthnLayer};
pub use authz::{Authorizer, Authz, AuthzLayer};
pub use caller_limits::{CallerBounds, CallerLimits, CallerLimitsLayer};
pub use deadline::{Deadline, DeadlineLayer};
pub use gate::{Gate, GateLayer, Gated};
pub use load_shed::{LoadShed, LoadShedLayer};
pub use outcome::Observed;
pub use rate_limit::{InboundGate, InboundLimits, RateLimit, RateLimitLayer};
pub use rpc_metrics::{RpcMetrics, RpcMetricsLayer};
pub use trace::{Trace, TraceLayer};

use crate::audit::Audit;
use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::methods::ServedMethod;
use crate::telemetry::Telemetry;

/// What the security layers are built from, checked once at start-up.
pub struct Security {
    authenticator: Arc<Authenticator>,
    authorizer: Arc<Authorizer>,
    limits: Arc<InboundGate>,
    // One for the process, shared by the stack of every connection, so that a principal's
    // calls and streams are counted across all its connections.
    callers: Arc<CallerBounds>,
    max_in_flight: usize,
    default_deadline: Duration,
}

impl Security {
    /// Builds (and so validates) `[auth]`, `[[authorization]]`, `[rate_limits]` and the
    /// server bounds.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        Ok(Security {
            authenticator: Arc::new(Authenticator::from_config(
                &config.auth,
                &config.environment,
            )?),
            authorizer: Arc::new(Authorizer::from_config(
                config.auth.mode,
                &config.auth.public,
                &config.authorization,
            )?),
            limits: Arc::new(InboundGate::new(
                config
                    .rate_limits
                    .as_ref()
                    .map(InboundLimits::from_config)
                    .transpose()?,
            )),
            callers: Arc::new(CallerBounds::from_config(&config.server)?),
            max_in_flight: config.server.max_in_flight.max(1),
            default_deadline: config.server.default_deadline,
        })
    }
}

/// The composed stack's type.
pub type MiddlewareStack = Stack<
    DeadlineLayer,
    Stack<
        CallerLimitsLayer,
        Stack<
            RateLimitLayer,
            Stack<
                AuthzLayer,
                Stack<
                    AuthnLayer,
                    Stack<LoadShedLayer, Stack<RpcMetricsLayer, Stack<TraceLayer, Identity>>>,
                >,
            >,
        >,
    >,
>;

/// THE middleware stack, outermost first.
pub fn stack(
    telemetry: &Arc<Telemetry>,
    security: &Security,
    audit: &Arc<Audit>,
) -> ServiceBuilder<MiddlewareStack> {
    ServiceBuilder::new()
        // Outermost, so the span and the log line cover everything the call went through,
        // rejections by inner layers included, and so the call's telemetry context (trace
        // context, provider instance) is open for every layer and handler below.
        .layer(TraceLayer::new(Arc::clone(telemetry)))
        // Inside the trace layer, whose context tells it the provider instance; outside the
        // others, so that calls they refuse are counted with the code they got.
        .layer(RpcMetricsLayer::new(Arc::clone(telemetry)))
        // Before any work, so that an overload is refused cheaply, credentials checks included.
        .layer(LoadShedLayer::new(security.max_in_flight))
        // Who calls: everything below needs the principal. A call refused here has none: it
        // is counted and logged once a second, never one audit row each (anyone can send
        // them). The next two record the mutating calls they refuse in the audit trail.
        .layer(AuthnLayer::new(Arc::clone(&security.authenticator)))
        // What they may call: denied calls never spend their rate or reach a handler.
        .layer(AuthzLayer::new(Arc::clone(&security.authorizer)).audited(audit))
        // Rates count only calls that were allowed, per principal and method.
        .layer(RateLimitLayer::new(Arc::clone(&security.limits)).audited(audit))
        // Per principal, so after authentication; after the gates, so that only calls that
        // will run hold a slot. Long-lived calls hold theirs until their response ends.
        .layer(CallerLimitsLayer::new(Arc::clone(&security.callers)))
        // Innermost: the deadline scopes the handler and everything it calls, provider retries
        // included, and nothing above spends any of it.
        .layer(DeadlineLayer::new(security.default_deadline))
}

/// The answer of a layer that refuses a call.
fn reject(error: &Error) -> http::Response<tonic::body::Body> {
    error.to_status().into_http()
}

/// `(package.Service/Method, Service/Method)` of a gRPC path, given its served method if any
/// (`methods::served(path)`, looked up once by the caller): the served method's names, made
/// once at start-up, else split from the path (a method no service serves: the call ends
/// UNIMPLEMENTED if it gets through).
fn method_names(
    served: Option<&'static ServedMethod>,
    path: &str,
) -> (Cow<'static, str>, Cow<'static, str>) {
    if let Some(served) = served {
        return (
            Cow::Borrowed(served.full.as_str()),
            Cow::Borrowed(served.short.as_str()),
        );
    }
    let full = path.trim_start_matches('/').to_string();
    let short = match full.split_once('/') {
        Some((service, method)) => {
            format!("{}/{method}", service.rsplit('.').next().unwrap_or(service))
        }
        None => full.clone(),
    };
    (Cow::Owned(full), Cow::Owned(short))
}

/// Whether `path` is a `grpc.health.v1.Health` method. Health is never shed nor rate limited:
/// an overloaded gateway is still alive, and a prober that saw it fail would restart it and
/// so cut off every call it was finishing; probes come at the prober's fixed pace.
fn is_health(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
}

/// Whether `path` belongs to one of the `public` services.
fn is_public(public: &[String], path: &str) -> bool {
    let service = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    public.iter().any(|p| p == service)
}
