//! The tower middleware in front of every gRPC service, composed in one function.
//!
//! - `access_log.rs`: one span and one log line per call, with the gRPC status.
//! - `deadline.rs`: the caller's `grpc-timeout` as the deadline of everything the call does.

mod access_log;
mod deadline;

use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};

pub use access_log::{AccessLogLayer, access_log};
pub use deadline::{Deadline, DeadlineLayer};

/// The composed stack's type.
pub type MiddlewareStack = Stack<DeadlineLayer, Stack<AccessLogLayer, Identity>>;

/// THE middleware stack, outermost first.
pub fn stack() -> ServiceBuilder<MiddlewareStack> {
    ServiceBuilder::new()
        // Outermost, so the log line covers everything the call went through, rejections by
        // inner layers included.
        .layer(access_log())
        // Innermost: the deadline scopes the handler and everything it calls, provider retries
        // included.
        .layer(DeadlineLayer)
}
