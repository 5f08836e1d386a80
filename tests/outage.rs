//! When the store or the network fails, through the real binary on a PostgreSQL the test
//! starts: operations in flight finish without a restart of the gateway, calls made meanwhile
//! answer UNAVAILABLE / `STORE_UNAVAILABLE` within their deadline, and health (overall and per
//! service) is NOT_SERVING while the store does not answer and SERVING once it does, while the
//! `liveness` service stays SERVING. Faults the network makes (a blackhole: no answer, no
//! reset) come from the fault-injecting proxy of `support/faultproxy.rs`, between the gateway
//! and PostgreSQL, or a provider fake.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use streamgate::config::StoreConfig;
use streamgate::pb;
use streamgate::pb::operation_service_client::OperationServiceClient;
use streamgate::pb::stream_service_client::StreamServiceClient;
use streamgate::store::SqlStore;
use support::faultproxy::{Fault, FaultProxy};
use support::kvs_fake::KvsFake;
use support::postgres::Postgres;
use support::scrape::{sample, scrape};
use support::{AWS_ENV, Binary, free_port, reason};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

/// A config on the store at `url`, with a `local` provider whose creates take 3 s and a
/// metrics endpoint on `metrics`.
fn config(dir: &Path, url: &str, metrics: SocketAddr) -> PathBuf {
    let path = dir.join("streamgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndrain_timeout = \"2s\"\n[store]\nurl = \"{url}\"\n\
             max_connections = 4\nacquire_timeout = \"5s\"\nstatement_timeout = \"5s\"\n\
             [telemetry]\nmetrics_listen = \"{metrics}\"\n\
             [[providers]]\nid = \"local\"\nkind = \"local\"\ncreate_delay = \"3s\"\n"
        ),
    )
    .unwrap();
    path
}

fn metrics_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

async fn create(channel: &Channel, id: &str) -> pb::Operation {
    let op = StreamServiceClient::new(channel.clone())
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/local".into(),
            stream_id: id.into(),
            request_id: format!("outage-{id}"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done, "{op:?}");
    op
}

/// The operation once done, asked again while the store is not back (up to 40 s).
async fn finished(channel: &Channel, op: &pb::Operation) -> pb::Operation {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let mut request = tonic::Request::new(pb::GetOperationRequest {
            name: op.name.clone(),
        });
        request.set_timeout(Duration::from_secs(5));
        match OperationServiceClient::new(channel.clone())
            .get_operation(request)
            .await
        {
            Ok(got) if got.get_ref().done => return got.into_inner(),
            Ok(_) => {}
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        assert!(Instant::now() < deadline, "{} never finished", op.name);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn created(op: &pb::Operation) {
    assert!(
        op.done && matches!(op.result, Some(pb::operation::Result::Stream(_))),
        "{op:?}"
    );
}

async fn health(channel: &Channel, service: &str) -> Option<i32> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.into(),
    });
    request.set_timeout(Duration::from_secs(2));
    HealthClient::new(channel.clone())
        .check(request)
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

/// How long until overall health is `status` (polled every 50 ms, up to `bound` + 10 s), and
/// then every service of the server with it.
async fn turns(channel: &Channel, status: ServingStatus, bound: Duration) -> Duration {
    let started = Instant::now();
    while health(channel, "").await != Some(status as i32) {
        assert!(
            started.elapsed() < bound + Duration::from_secs(10),
            "health never turned {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    for service in streamgate::server::SERVICES {
        assert_eq!(
            health(channel, service).await,
            Some(status as i32),
            "{service}"
        );
    }
    took
}

/// Calls made while the store does not answer, at once: GetOperation (on an operation no
/// process holds in memory, so only the store can answer) and ListOperations with a 3 s
/// deadline, which ends their wait, and GetOperation with a 20 s one, whose wait the pool's
/// 5 s acquire timeout ends. Each answers UNAVAILABLE / `STORE_UNAVAILABLE` before its
/// deadline.
async fn calls_answer_store_unavailable(channel: &Channel) {
    let get = |deadline: Duration| {
        let name = format!("operations/local.{}", "0".repeat(32));
        let mut request = tonic::Request::new(pb::GetOperationRequest { name });
        request.set_timeout(deadline);
        let mut operations = OperationServiceClient::new(channel.clone());
        async move {
            let started = Instant::now();
            let status = operations.get_operation(request).await.unwrap_err();
            (status, started.elapsed(), deadline)
        }
    };
    let list = async {
        let mut request = tonic::Request::new(pb::ListOperationsRequest::default());
        request.set_timeout(Duration::from_secs(3));
        let started = Instant::now();
        let status = OperationServiceClient::new(channel.clone())
            .list_operations(request)
            .await
            .unwrap_err();
        (status, started.elapsed(), Duration::from_secs(3))
    };
    let (short, long, listed) = tokio::join!(
        get(Duration::from_secs(3)),
        get(Duration::from_secs(20)),
        list
    );
    for (status, took, deadline) in [short, long, listed] {
        store_unavailable(&status);
        assert!(took < deadline, "answered after {took:?}: {status:?}");
    }
}

fn store_unavailable(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(status), "STORE_UNAVAILABLE");
    assert!(
        status.get_error_details().retry_info().is_some(),
        "{status:?}"
    );
}

async fn store_up(metrics: SocketAddr) -> Option<f64> {
    sample(&scrape(metrics).await, "streamgate_store_up", &[], &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_then_stopped_for_10s_mid_operation() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let metrics = metrics_addr();
    let mut binary = Binary::spawn(&config(dir.path(), &pg.url, metrics), dir.path(), "gw");
    let channel = binary.ready().await;
    assert_eq!(store_up(metrics).await, Some(1.0));

    // Restarted while an operation runs: every session ends, the operation still finishes.
    let first = create(&channel, "restarted").await;
    pg.restart();
    created(&finished(&channel, &first).await);

    // Stopped for 10 s while an operation runs.
    let second = create(&channel, "stopped").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.stop();
    let down = Instant::now();
    let took = turns(&channel, ServingStatus::NotServing, Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(2), "NOT_SERVING after {took:?}");
    assert_eq!(
        health(&channel, streamgate::server::LIVENESS).await,
        Some(ServingStatus::Serving as i32)
    );
    assert_eq!(store_up(metrics).await, Some(0.0));
    calls_answer_store_unavailable(&channel).await;

    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
    pg.start_again();
    let took = turns(&channel, ServingStatus::Serving, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5), "SERVING after {took:?}");
    assert_eq!(store_up(metrics).await, Some(1.0));
    created(&finished(&channel, &second).await);
    created(&support::wait_on(&channel, &create(&channel, "after").await).await);
    assert!(
        binary.child.try_wait().unwrap().is_none(),
        "the gateway exited"
    );
    let log = std::fs::read_to_string(&binary.log).unwrap();
    assert!(log.contains("the store does not answer"), "{log}");
    assert!(log.contains("the store answers again"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_store_answers_unavailable_at_the_deadline() {
    let pg = Postgres::start();
    let proxy = FaultProxy::start(pg.addr()).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = metrics_addr();
    let url = pg.url_via(proxy.addr);
    let mut binary = Binary::spawn(&config(dir.path(), &url, metrics), dir.path(), "gw");
    let channel = binary.ready().await;
    let op = create(&channel, "before").await;
    created(&support::wait_on(&channel, &op).await);

    proxy.set(Fault::Blackhole);
    calls_answer_store_unavailable(&channel).await;
    // Nothing fails fast in a blackhole: the probe's 1 s bound ends its wait.
    turns(
        &channel,
        ServingStatus::NotServing,
        Duration::from_millis(1500),
    )
    .await;
    assert_eq!(
        health(&channel, streamgate::server::LIVENESS).await,
        Some(ServingStatus::Serving as i32)
    );

    // A slow store is no outage.
    proxy.set(Fault::Delay(Duration::from_millis(50)));
    let took = turns(&channel, ServingStatus::Serving, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(5), "SERVING after {took:?}");
    proxy.set(Fault::Pass);
    created(&finished(&channel, &op).await);
    created(&support::wait_on(&channel, &create(&channel, "after").await).await);

    // Connections closed under it: the pool opens new ones.
    proxy.set(Fault::Drop);
    turns(
        &channel,
        ServingStatus::NotServing,
        Duration::from_millis(1500),
    )
    .await;
    proxy.set(Fault::Pass);
    turns(&channel, ServingStatus::Serving, Duration::from_secs(5)).await;
    created(&finished(&channel, &op).await);
    assert!(
        binary.child.try_wait().unwrap().is_none(),
        "the gateway exited"
    );
}

/// A provider that accepts connections and never answers: the call ends at its deadline (here
/// the server's default, so that the client keeps no timer of its own to race the answer) with
/// DEADLINE_EXCEEDED (docs/errors.md), and the next one works once the network does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_provider_call_ends_at_its_deadline() {
    let fake = KvsFake::start().await;
    fake.fake.add_stream("cam");
    let upstream: SocketAddr = fake.url.trim_start_matches("http://").parse().unwrap();
    let proxy = FaultProxy::start(upstream).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndefault_deadline = \"2s\"\n[store]\nurl = \"sqlite://{}/sg.db\"\n\
             [[providers]]\nid = \"kvs\"\nkind = \"kinesis-video\"\nregion = \"us-east-1\"\n\
             endpoint_url = \"http://{}\"\n",
            dir.path().display(),
            proxy.addr
        ),
    )
    .unwrap();
    let mut binary = Binary::spawn_with_env(&path, dir.path(), "gw", &AWS_ENV);
    let channel = binary.ready().await;
    let mut streams = StreamServiceClient::new(channel.clone());
    let get = pb::GetStreamRequest {
        name: "providers/kvs/streams/cam".into(),
        ..Default::default()
    };
    streams.get_stream(get.clone()).await.unwrap();

    proxy.set(Fault::Blackhole);
    let started = Instant::now();
    let status = streams.get_stream(get.clone()).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(took >= Duration::from_secs(2), "ended after {took:?}");
    assert!(took < Duration::from_secs(6), "ended after {took:?}");

    proxy.set(Fault::Pass);
    streams.get_stream(get.clone()).await.unwrap();
}

/// `[store]` pool settings reach the database: PostgreSQL cancels a statement past
/// `statement_timeout` (SQLite waits that long for a lock), and the pool opens at most
/// `max_connections`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_settings_reach_the_database() {
    let pg = Postgres::start();
    let config = StoreConfig {
        url: pg.url.clone(),
        max_connections: 3,
        statement_timeout: Duration::from_millis(300),
        ..StoreConfig::default()
    };
    let store = SqlStore::connect(&config).await.unwrap();
    assert_eq!(store.pool().options().get_max_connections(), 3);
    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(shown, "300ms");
    let error = sqlx::query("SELECT pg_sleep(3)")
        .execute(store.pool())
        .await
        .unwrap_err();
    let code = error.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("57014"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqlStore::connect(&StoreConfig {
        url: format!("sqlite://{}/sg.db", dir.path().display()),
        statement_timeout: Duration::from_millis(1234),
        ..StoreConfig::default()
    })
    .await
    .unwrap();
    let busy: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(sqlite.pool())
        .await
        .unwrap();
    assert_eq!(busy, 1234);
}
