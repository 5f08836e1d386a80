//! `streamgate probe`: asks a running gateway's `grpc.health.v1.Health/Check` whether it is
//! serving. It is the container image's health check: the runtime image has no shell and no
//! other gRPC client. Plaintext only, like the listener it checks; it loads no configuration.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

pub use tonic_health::pb::health_check_response::ServingStatus;

/// Why a probe got no health status.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No connection within the bound.
    #[error("cannot connect to {addr}: {why}")]
    Connect {
        /// The address probed.
        addr: SocketAddr,
        /// Why.
        why: String,
    },
    /// The health call failed (e.g. NOT_FOUND for a service the server does not report).
    #[error("health check of {addr} failed: {status}")]
    Call {
        /// The address probed.
        addr: SocketAddr,
        /// The call's status, code and message.
        status: String,
    },
    /// No answer within the bound.
    #[error("no answer from {addr} within {bound:?}")]
    Timeout {
        /// The address probed.
        addr: SocketAddr,
        /// The bound.
        bound: Duration,
    },
}

/// The serving status of `service` (`""`: the server as a whole) at `addr`, asked within
/// `bound` (connecting included).
pub async fn check(
    addr: SocketAddr,
    service: &str,
    bound: Duration,
) -> Result<ServingStatus, ProbeError> {
    let ask = async {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ProbeError::Connect {
                addr,
                why: e.to_string(),
            })?
            .connect_timeout(bound)
            .connect()
            .await
            .map_err(|e| ProbeError::Connect {
                addr,
                why: error_chain(&e),
            })?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .map_err(|status| ProbeError::Call {
                addr,
                status: format!("{:?}: {}", status.code(), status.message()),
            })?;
        Ok(ServingStatus::try_from(reply.into_inner().status).unwrap_or(ServingStatus::Unknown))
    };
    tokio::time::timeout(bound, ask)
        .await
        .unwrap_or(Err(ProbeError::Timeout { addr, bound }))
}

/// An error with its sources, as one line (tonic's transport error says little on its own).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
