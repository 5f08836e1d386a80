//! The health service: tonic-health's (its statuses are set through its `HealthReporter`),
//! served through the gateway's codec ([`crate::pb::health`]), so that a request that does not
//! decode is INVALID_ARGUMENT, like every other service's, and never an INTERNAL that would
//! count as a fault of the gateway.

use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::Health as TonicHealth;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};

use crate::pb::health::health_server::{Health, HealthServer};

/// tonic-health's service, answering through [`HealthServer`].
pub(super) struct CheckedHealth(HealthService);

/// The health server whose statuses `reporter` sets.
pub(super) fn server(reporter: HealthReporter) -> HealthServer<CheckedHealth> {
    HealthServer::new(CheckedHealth(HealthService::from_health_reporter(reporter)))
}

#[tonic::async_trait]
impl Health for CheckedHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        TonicHealth::check(&self.0, request).await
    }

    type WatchStream = <HealthService as TonicHealth>::WatchStream;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        TonicHealth::watch(&self.0, request).await
    }
}
