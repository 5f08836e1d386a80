//! The tower middleware in front of every gRPC service, composed in one function.
//!
//! - `access_log.rs`: one span and one log line per call, with the gRPC status.

mod access_log;

use tower::ServiceBuilder;
use tower::layer::util::{Identity, Stack};

pub use access_log::{AccessLogLayer, access_log};

/// THE middleware stack, outermost first.
pub fn stack() -> ServiceBuilder<Stack<AccessLogLayer, Identity>> {
    ServiceBuilder::new()
        // Outermost, so the log line covers everything the call went through, rejections by
        // inner layers included.
        .layer(access_log())
}
