//! gRPC handlers: validate, route to a provider instance, convert. No SDK or SQL here.
//!
//! - `stream.rs`: StreamService.
//! - `provider.rs`: ProviderService.
//! - `operation.rs`: OperationService.
//! - `convert.rs`: domain ↔ protobuf.

mod convert;
mod operation;
mod provider;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use operation::OperationApi;
pub use provider::ProviderApi;
pub use stream::StreamApi;

use crate::operations::Runner;
use crate::providers::Registry;
use crate::watch::WatchHub;

/// The principal of a caller, put into the request extensions by authentication.
#[derive(Clone, Debug)]
pub struct Principal(pub String);

/// The principal of unauthenticated callers.
pub const ANONYMOUS: &str = "anonymous";

/// How long a mutating call waits for its operation's first step at most.
const FIRST_STEP_WAIT: Duration = Duration::from_secs(30);

/// What every handler shares.
pub struct Gateway {
    /// The configured provider instances.
    pub registry: Arc<Registry>,
    /// The durable operation runner.
    pub runner: Arc<Runner>,
    /// Stream change fan-out for WatchStream.
    pub hub: Arc<WatchHub>,
    /// Cancelled at shutdown, to end WatchStream calls so the server can drain.
    pub shutdown: CancellationToken,
}

/// The caller's principal.
pub fn principal<T>(request: &tonic::Request<T>) -> String {
    request
        .extensions()
        .get::<Principal>()
        .map_or_else(|| ANONYMOUS.to_string(), |p| p.0.clone())
}

/// The time left before the caller's deadline (`grpc-timeout`), if it sent one.
pub fn deadline<T>(request: &tonic::Request<T>) -> Option<Duration> {
    let value = request.metadata().get("grpc-timeout")?.to_str().ok()?;
    crate::deadline::parse_grpc_timeout(value)
}

/// How long a handler may wait for something and still answer before the caller's deadline.
pub fn within_deadline<T>(request: &tonic::Request<T>, wanted: Duration) -> Duration {
    match deadline(request) {
        Some(left) => wanted.min(
            left.saturating_sub(left / 10)
                .saturating_sub(Duration::from_millis(5)),
        ),
        None => wanted,
    }
}

/// How long a mutating call waits for its operation's first step.
pub fn first_step_wait<T>(request: &tonic::Request<T>) -> Duration {
    within_deadline(request, FIRST_STEP_WAIT)
}
