//! Readiness that follows the store. Every half second a probe asks the PostgreSQL store
//! `SELECT 1` on a connection of its own, with a 1 s bound; the first answer that fails or
//! does not come turns health NOT_SERVING (overall and every service), the first that comes
//! back turns it SERVING again, and `streamgate_store_up` says the same. The process keeps
//! running either way, and the health service `liveness` stays SERVING: an orchestrator stops
//! routing calls to a replica that cannot serve them, without restarting it. So health turns
//! NOT_SERVING at most 1.5 s after the store stops answering (a probe interval plus its bound),
//! and SERVING at most half a second after it answers again. An embedded SQLite store is a file
//! of this process: it is not probed.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::api::{AuditApi, OperationApi, ProviderApi, StreamApi};
use crate::pb::audit_service_server::AuditServiceServer;
use crate::pb::operation_service_server::OperationServiceServer;
use crate::pb::provider_service_server::ProviderServiceServer;
use crate::pb::stream_service_server::StreamServiceServer;
use crate::store::SqlStore;
use crate::telemetry::Telemetry;

/// The names of the services whose health is reported, besides the overall `""`.
pub const SERVICES: [&str; 4] = [
    <StreamServiceServer<StreamApi> as NamedService>::NAME,
    <ProviderServiceServer<ProviderApi> as NamedService>::NAME,
    <OperationServiceServer<OperationApi> as NamedService>::NAME,
    <AuditServiceServer<AuditApi> as NamedService>::NAME,
];

/// The health service that is SERVING for as long as the process runs, whatever the store or
/// a shutdown say: the one a liveness probe asks (`""` and [`SERVICES`] are for readiness).
pub const LIVENESS: &str = "liveness";

/// Sets the readiness statuses: overall and every service of [`SERVICES`].
pub(super) async fn set_health(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// How often the store is probed.
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long a probe waits for its answer (and for its connection, when it opens one).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The probe loop, stopped before shutdown turns health NOT_SERVING for good.
pub(super) struct Readiness {
    stop: CancellationToken,
    // None on SQLite, and once stopped.
    task: Option<JoinHandle<()>>,
}

impl Readiness {
    /// Starts probing `store` (health is SERVING now), reporting to `health` and the metrics
    /// of `telemetry`.
    pub(super) fn start(
        store: &SqlStore,
        health: HealthReporter,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        telemetry.metrics().store_up(true);
        let stop = CancellationToken::new();
        let task = store.probe().map(|mut probe| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut up = true;
                let mut every = tokio::time::interval(PROBE_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let checked = tokio::select! {
                        () = stop.cancelled() => return,
                        checked = async {
                            every.tick().await;
                            probe.check(PROBE_TIMEOUT).await
                        } => checked,
                    };
                    match checked {
                        Err(error) if up => {
                            warn!(%error, "the store does not answer: health NOT_SERVING until it does");
                            up = false;
                        }
                        Ok(()) if !up => {
                            info!("the store answers again: health SERVING");
                            up = true;
                        }
                        _ => continue,
                    }
                    telemetry.metrics().store_up(up);
                    let status = if up {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    };
                    set_health(&health, status).await;
                }
            })
        });
        Readiness { stop, task }
    }

    /// Stops probing; health is left as it is.
    pub(super) async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}
