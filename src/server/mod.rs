//! The gRPC server (plaintext, or TLS / mTLS per `[server.tls]`, see [`crate::tls`]): mounts
//! StreamService, ProviderService, OperationService, AuditService, `grpc.health.v1` and
//! reflection (v1 and v1alpha, with the `google.rpc` error detail types) behind the middleware
//! stack, serves the Prometheus scrape endpoint when configured, and shuts down gracefully.
//!
//! Shutdown: health turns NOT_SERVING (overall and per service), WatchStream calls end, the
//! server stops accepting and drains in-flight calls for at most `[server] drain_timeout`,
//! then operation tasks stop at their next wait (they resume at the next start), the scrape
//! endpoint closes, and the spans and metrics still buffered are exported.
//!
//! - `mod.rs`: [`run`], which serves with the [`Parts`] of a configuration.
//! - `parts.rs`: [`Parts::build`], the one place the configuration's runtime objects are
//!   built (and so checked), shared by serving and `check-config`.
//! - `readiness.rs`: the health statuses, and readiness that follows the store (NOT_SERVING
//!   while a PostgreSQL store does not answer); [`LIVENESS`] stays SERVING while the process
//!   runs.
//! - `health.rs`: tonic-health's service served through the gateway's codec.

mod health;
mod parts;
mod readiness;

pub use parts::Parts;
pub use readiness::{LIVENESS, SERVICES};

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::api::{AuditApi, Gateway, OperationApi, ProviderApi, StreamApi};
use crate::audit::Audit;
use crate::error::{Error, Result};
use crate::operations::Runner;
use crate::pb::audit_service_server::AuditServiceServer;
use crate::pb::operation_service_server::OperationServiceServer;
use crate::pb::provider_service_server::ProviderServiceServer;
use crate::pb::stream_service_server::StreamServiceServer;
use crate::providers::Registry;
use crate::store::{Notifier, SqlStore};
use crate::telemetry::{Telemetry, scrape};
use crate::watch::WatchHub;
use readiness::{Readiness, set_health};

fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Serves the configuration `parts` were built from on `listener` until `shutdown` completes,
/// then drains and returns.
pub async fn run(
    listener: TcpListener,
    parts: Parts,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let Parts {
        config,
        security,
        transport,
        otel,
        providers,
        pages,
    } = parts;
    let telemetry = Telemetry::new(otel)?;
    let store = SqlStore::connect(&config.store).await?;
    if !pages.configured() && !config.store.url.starts_with("sqlite:") {
        warn!(
            variable = %config.auth.page_token_key_env,
            "no page token key is set: each replica signs page tokens with a key of its own, \
             and a token one replica gave is refused by the others"
        );
    }
    let notifier = if crate::store::OperationStore::exclusive(&store) {
        Notifier::in_process()
    } else {
        Notifier::postgres(&config.store.url, &store, Arc::clone(&telemetry)).await?
    };
    // With several replicas, one of them polls each watched stream for all (`watch`).
    let hub = Arc::new(if crate::store::OperationStore::exclusive(&store) {
        WatchHub::default()
    } else {
        WatchHub::fleet(crate::store::PollStore::of(&store), Arc::clone(&notifier))
    });
    let registry = Arc::new(Registry::build(providers, &store, &hub, &notifier).await?);
    let audit = Audit::new(Arc::new(store.clone()));
    let runner = Runner::new(
        Arc::new(store.clone()),
        Arc::clone(&registry),
        Arc::clone(&telemetry),
        Arc::clone(&audit) as Arc<dyn crate::operations::OperationObserver>,
        config.store.operation_lease,
        Arc::clone(&notifier),
    );
    runner.resume_all().await?;
    let sweep_stop = CancellationToken::new();
    let sweep = tokio::spawn(crate::store::sweep::run(
        store.clone(),
        crate::store::sweep::Retention {
            operations: config.store.operation_retention,
            audit: config.store.audit_retention,
        },
        Arc::clone(&telemetry),
        sweep_stop.clone(),
    ));
    let gateway = Arc::new(Gateway {
        registry,
        runner: Arc::clone(&runner),
        audit,
        hub,
        notifier,
        shutdown: CancellationToken::new(),
        pages,
        watch_initial_read_timeout: config.server.watch_initial_read_timeout,
    });

    let health = tonic_health::server::HealthReporter::new();
    let health_service = health::server(health.clone());
    health
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    set_health(&health, ServingStatus::Serving).await;
    let mut readiness = Readiness::start(&store, health.clone(), Arc::clone(&telemetry));
    let reflection_v1 = reflection_builder()
        .build_v1()
        .map_err(|e| Error::internal(format_args!("reflection: {e}")))?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| Error::internal(format_args!("reflection: {e}")))?;

    let scrape_stop = CancellationToken::new();
    let scrape = match config.telemetry.metrics_listen {
        Some(address) => {
            let listener = TcpListener::bind(address).await.map_err(|e| {
                Error::internal(format_args!("cannot listen on {address} for metrics: {e}"))
            })?;
            info!(%address, "serving metrics at /metrics");
            Some(tokio::spawn(scrape::serve(
                listener,
                Arc::clone(&telemetry),
                scrape_stop.clone(),
            )))
        }
        None => None,
    };

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let address = listener.local_addr().ok();
    let server = transport
        .layer(crate::middleware::stack(
            &telemetry,
            &security,
            &gateway.audit,
        ))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(StreamServiceServer::new(StreamApi::new(Arc::clone(
            &gateway,
        ))))
        .add_service(ProviderServiceServer::new(ProviderApi::new(Arc::clone(
            &gateway,
        ))))
        .add_service(OperationServiceServer::new(OperationApi::new(Arc::clone(
            &gateway,
        ))))
        .add_service(AuditServiceServer::new(AuditApi::new(Arc::clone(&gateway))))
        // tonic applies TCP_NODELAY only to listeners it binds itself: without it, Nagle held
        // back the last frames of an answer until the caller's delayed ACK, ~40 ms
        // (docs/PERFORMANCE.md).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = stop_rx.await;
            },
        );
    tokio::pin!(server);
    if let Some(address) = address {
        let tls = match &config.server.tls {
            None => "off",
            Some(tls) if tls.client_ca_file.is_none() => "on",
            Some(tls) if tls.client_auth_optional => "on, client certificates optional",
            Some(_) => "on, client certificates required",
        };
        let workers = tokio::runtime::Handle::current().metrics().num_workers();
        info!(%address, tls, workers, "serving");
    }

    let served = tokio::select! {
        served = &mut server => served,
        () = shutdown => {
            info!("shutting down: health NOT_SERVING, draining in-flight calls");
            readiness.stop().await;
            set_health(&health, ServingStatus::NotServing).await;
            gateway.shutdown.cancel();
            let _ = stop_tx.send(());
            match tokio::time::timeout(config.server.drain_timeout, &mut server).await {
                Ok(served) => served,
                Err(_) => {
                    warn!(bound = ?config.server.drain_timeout, "calls still in flight after the drain bound; closing them");
                    Ok(())
                }
            }
        }
    };
    readiness.stop().await;
    runner.shutdown(config.server.drain_timeout).await;
    sweep_stop.cancel();
    let _ = sweep.await;
    gateway.audit.flush(config.server.drain_timeout).await;
    store.close().await;
    scrape_stop.cancel();
    if let Some(scrape) = scrape {
        match scrape.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "the metrics endpoint failed"),
            Err(e) => warn!(error = %e, "the metrics endpoint task failed"),
        }
    }
    telemetry.shutdown().await;
    info!("stopped");
    served.map_err(|e| Error::internal(format_args!("server: {e}")))
}
