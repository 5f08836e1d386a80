//! gRPC handlers: validate, route to a provider instance, convert. No SDK or SQL here.
//!
//! - `stream.rs`: StreamService.
//! - `provider.rs`: ProviderService.
//! - `operation.rs`: OperationService.
//! - `audit.rs`: AuditService (admin).
//! - `convert.rs`: domain ↔ protobuf.

mod audit;
mod convert;
mod operation;
mod provider;
mod stream;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use audit::AuditApi;
pub use operation::OperationApi;
pub use provider::ProviderApi;
pub use stream::StreamApi;

use crate::audit::Audit;
use crate::domain::PageTokens;
use crate::error::{Error, Kind, Result};
use crate::identity::{ANONYMOUS, Grants, Principal};
use crate::operations::Runner;
use crate::providers::Registry;
use crate::store::Notifier;
use crate::watch::WatchHub;

/// How long a mutating call waits for its operation's first step at most.
const FIRST_STEP_WAIT: Duration = Duration::from_secs(30);

/// What every handler shares.
pub struct Gateway {
    /// The configured provider instances.
    pub registry: Arc<Registry>,
    /// The durable operation runner.
    pub runner: Arc<Runner>,
    /// The audit trail of mutating calls.
    pub audit: Arc<Audit>,
    /// Stream change fan-out for WatchStream.
    pub hub: Arc<WatchHub>,
    /// Notices between the replicas sharing the store (this process alone on SQLite).
    pub notifier: Arc<Notifier>,
    /// Cancelled at shutdown, to end WatchStream calls so the server can drain.
    pub shutdown: CancellationToken,
    /// Signs and checks the page tokens of every List method.
    pub pages: PageTokens,
    /// How long a WatchStream waits for its initial state at most (`[server]
    /// watch_initial_read_timeout`).
    pub watch_initial_read_timeout: Duration,
}

/// The caller's principal.
pub fn principal<T>(request: &tonic::Request<T>) -> String {
    request
        .extensions()
        .get::<Principal>()
        .map_or_else(|| ANONYMOUS.to_string(), |p| p.0.to_string())
}

/// PERMISSION_DENIED unless the caller's grants (from the authorization layer) include the
/// provider instance `id`. Checked before the instance is looked up, so a denial never tells
/// whether it exists.
pub fn authorize_provider<T>(request: &tonic::Request<T>, id: &str) -> Result<()> {
    match request.extensions().get::<Grants>() {
        Some(grants) if !grants.allows(id) => Err(Error::new(
            Kind::PermissionDenied,
            format!("{} may not use providers/{id}", principal(request)),
        )),
        _ => Ok(()),
    }
}

/// How long a handler may wait for something and still answer before the caller's deadline.
/// The deadline is the caller's `grpc-timeout` or the server's default, as the deadline layer
/// scoped it.
pub fn within_deadline(wanted: Duration) -> Duration {
    match crate::deadline::remaining() {
        Some(left) => wanted.min(
            left.saturating_sub(left / 10)
                .saturating_sub(Duration::from_millis(5)),
        ),
        None => wanted,
    }
}

/// How long a mutating call waits for its operation's first step.
pub fn first_step_wait() -> Duration {
    within_deadline(FIRST_STEP_WAIT)
}
