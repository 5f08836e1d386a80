//! Tables that stay bounded, and an audit trail that survives the store's outages.
//!
//! - The store, on SQLite and PostgreSQL: an operation and the audit record of the call that
//!   started it are written together or not at all; the retention deletes and the oldest
//!   unfinished operation; the filters of ListOperations and ListAuditRecords use indexes.
//! - The real binary, on a SQLite store seeded with old rows: its retention sweep deletes the
//!   finished operations and audit rows older than `[store] operation_retention` and
//!   `audit_retention`, keeps the newer ones and every unfinished operation, and reports the
//!   oldest unfinished operation's age on its metrics endpoint.
//! - The real binary while its store refuses it (SQLite: the write lock held longer than a
//!   write waits for it; PostgreSQL: connections refused and ended): the audit rows of the
//!   calls refused, validated and cut short meanwhile are there once the store answers again.

mod support;

use std::time::{Duration, Instant};

use streamgate::domain::{OpRequest, Operation, StreamName, StreamSpec, now_ms};
use streamgate::error::{Error, Kind};
use streamgate::operations::fingerprint;
use streamgate::pb;
use streamgate::pb::audit_service_client::AuditServiceClient;
use streamgate::pb::stream_service_client::StreamServiceClient;
use streamgate::store::{
    AuditFilter, AuditRecord, AuditStore, Inserted, Lease, OperationFilter, OperationStore,
    SqlStore,
};
use support::postgres::Postgres;
use support::scrape::{sample, scrape};
use support::{Binary, free_port};
use tonic::metadata::MetadataValue;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// An operation creating `stream` on `local`, accepted at `created`, last saved at `updated`,
/// done (failed) or not.
fn op(id: &str, stream: &str, created: i64, updated: i64, done: bool) -> Operation {
    let request = OpRequest::Create {
        name: StreamName {
            provider: "local".into(),
            video: None,
            stream: stream.into(),
        },
        spec: StreamSpec::default(),
    };
    Operation {
        id: id.into(),
        fingerprint: fingerprint(&request),
        request,
        principal: "ops".into(),
        request_id: Some(format!("rid-{id}")),
        step: "accepted".into(),
        progress: serde_json::Value::Null,
        next_run_ms: created,
        attempts: 0,
        retries: 0,
        cancel_requested: false,
        replayed: false,
        outcome: done.then(|| Err(Error::new(Kind::StreamNotFound, "seeded"))),
        warnings: Vec::new(),
        create_time_ms: created,
        update_time_ms: updated,
    }
}

fn record(id: &str, time_ms: i64, target: &str) -> AuditRecord {
    AuditRecord {
        id: id.into(),
        time_ms,
        principal: "ops".into(),
        method: "CreateStream".into(),
        target: target.into(),
        outcome: "accepted".into(),
        ..AuditRecord::default()
    }
}

fn gone() -> Lease {
    Lease {
        owner: "gone".into(),
        length: std::time::Duration::ZERO,
    }
}

async fn records(store: &SqlStore) -> Vec<String> {
    let mut ids: Vec<String> = store
        .list_records(&AuditFilter::default(), None, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

async fn completions(store: &SqlStore) -> Vec<String> {
    sqlx::query_scalar("SELECT operation FROM audit_completions ORDER BY operation")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

async fn store_suite(store: SqlStore) {
    let now = now_ms();
    // An operation and its call's record: both, or (same request_id again) neither.
    let first = op("local.first", "a", now, now, false);
    let with = record("r-first", now, "providers/local/streams/a");
    assert!(matches!(
        store.insert(&first, &gone(), Some(&with)).await.unwrap(),
        Inserted::New
    ));
    let again = op("local.again", "a", now, now, false);
    let lost = record("r-again", now, "providers/local/streams/a");
    let mut again = again;
    again.request_id = first.request_id.clone();
    assert!(matches!(
        store.insert(&again, &gone(), Some(&lost)).await.unwrap(),
        Inserted::Existing(_)
    ));
    assert_eq!(records(&store).await, ["r-first"]);
    // Recording the same call again (a retried write) changes nothing.
    store.record(&with).await.unwrap();
    assert_eq!(records(&store).await, ["r-first"]);

    // Retention: finished operations by when they finished, never unfinished ones.
    for op in [
        op("local.old", "b", now - 5 * HOUR_MS, now - 4 * HOUR_MS, true),
        op(
            "local.late",
            "c",
            now - 5 * HOUR_MS,
            now - HOUR_MS / 2,
            true,
        ),
        op(
            "local.stuck",
            "d",
            now - 10 * DAY_MS,
            now - 10 * DAY_MS,
            false,
        ),
    ] {
        store.insert(&op, &gone(), None).await.unwrap();
    }
    assert_eq!(
        store.oldest_unfinished_ms().await.unwrap(),
        Some(now - 10 * DAY_MS)
    );
    let hour_ago = now - HOUR_MS;
    assert_eq!(
        store
            .delete_finished_operations(hour_ago, 500)
            .await
            .unwrap(),
        1
    );
    assert!(store.get("local.old").await.unwrap().is_none());
    for kept in ["local.late", "local.stuck", "local.first"] {
        assert!(store.get(kept).await.unwrap().is_some(), "{kept}");
    }
    // Audit rows by their time, a batch at a time.
    for (i, age) in [3, 3, 3, 0].into_iter().enumerate() {
        let r = record(&format!("r-{i}"), now - age * HOUR_MS, "x");
        store.record(&r).await.unwrap();
        store
            .complete(
                &format!("operations/o{i}"),
                now - age * HOUR_MS,
                "succeeded",
                "",
            )
            .await
            .unwrap();
    }
    assert_eq!(store.delete_audit_rows(hour_ago, 2).await.unwrap(), 4);
    assert_eq!(store.delete_audit_rows(hour_ago, 2).await.unwrap(), 2);
    assert_eq!(store.delete_audit_rows(hour_ago, 2).await.unwrap(), 0);
    assert_eq!(records(&store).await, ["r-3", "r-first"]);
    assert_eq!(completions(&store).await, ["operations/o3"]);

    // The filters still answer as before.
    let by_target = OperationFilter {
        target: Some("providers/local/streams/c".into()),
        ..OperationFilter::default()
    };
    let listed = store.list(&by_target, None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, "local.late");
}

#[tokio::test]
async fn store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/retention.db", dir.path().display());
    store_suite(SqlStore::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn store_on_postgres() {
    let pg = Postgres::start();
    store_suite(SqlStore::open(&pg.url).await.unwrap()).await;
}

/// SQLite's plan of `sql`, one line per step.
async fn plan(store: &SqlStore, sql: &str) -> String {
    let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
        .fetch_all(store.pool())
        .await
        .unwrap();
    rows.into_iter()
        .map(|(_, _, _, detail)| detail)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn every_list_filter_is_answered_by_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/plans.db", dir.path().display());
    let store = SqlStore::open(&url).await.unwrap();
    for (column, index) in [
        ("principal", "operations_principal_newest"),
        ("target", "operations_target_newest"),
        ("verb", "operations_verb_newest"),
    ] {
        let sql = format!(
            "SELECT record FROM operations WHERE {column} = 'x' \
             ORDER BY create_time_ms DESC, id DESC LIMIT 10"
        );
        let plan = plan(&store, &sql).await;
        assert!(plan.contains(index), "{column}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{column} sorts: {plan}");
    }
    for (column, index) in [
        ("principal", "audit_records_principal_newest"),
        ("method", "audit_records_method_newest"),
        ("target", "audit_records_target_newest"),
        ("operation", "audit_records_operation"),
    ] {
        let sql = format!(
            "SELECT id FROM audit_records WHERE {column} = 'x' \
             ORDER BY time_ms DESC, id DESC LIMIT 10"
        );
        let plan = plan(&store, &sql).await;
        assert!(plan.contains(index), "{column}: {plan}");
    }
    // The sweep's scans, oldest first, without a sort.
    for (sql, index) in [
        (
            "SELECT operation FROM audit_completions WHERE time_ms < 5 ORDER BY time_ms LIMIT 500",
            "audit_completions_oldest",
        ),
        (
            "SELECT id FROM audit_records WHERE time_ms < 5 ORDER BY time_ms, id LIMIT 500",
            "audit_records_newest",
        ),
        (
            "SELECT id FROM operations WHERE create_time_ms < 5 AND +done = 1 \
             AND update_time_ms < 5 ORDER BY create_time_ms, id LIMIT 500",
            "operations_newest",
        ),
    ] {
        let plan = plan(&store, sql).await;
        assert!(plan.contains(index), "{sql}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{sql} sorts: {plan}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_what_is_past_its_retention_and_never_an_unfinished_operation() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/sg.db", dir.path().display());
    let now = now_ms();
    let seeded = SqlStore::open(&url).await.unwrap();
    let ops = [
        // Finished 4 h ago: past the 1 h retention.
        op(
            "local.old",
            "old",
            now - 5 * HOUR_MS,
            now - 4 * HOUR_MS,
            true,
        ),
        // Accepted 5 h ago, finished 30 min ago: kept.
        op(
            "local.late",
            "late",
            now - 5 * HOUR_MS,
            now - HOUR_MS / 2,
            true,
        ),
        // Accepted 10 days ago and still unfinished: never deleted.
        op(
            "local.slow",
            "slow",
            now - 10 * DAY_MS,
            now - 10 * DAY_MS,
            false,
        ),
    ];
    for op in &ops {
        seeded.insert(op, &gone(), None).await.unwrap();
    }
    seeded
        .record(&record("a-old", now - 3 * HOUR_MS, "old"))
        .await
        .unwrap();
    seeded
        .record(&record("a-new", now - HOUR_MS, "new"))
        .await
        .unwrap();
    seeded
        .complete("operations/local.old", now - 3 * HOUR_MS, "succeeded", "")
        .await
        .unwrap();
    seeded
        .complete("operations/local.late", now - HOUR_MS / 2, "succeeded", "")
        .await
        .unwrap();
    seeded.close().await;

    let metrics = format!("127.0.0.1:{}", free_port());
    let config = dir.path().join("sg.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{url}\"\noperation_retention = \"1h\"\naudit_retention = \"2h\"\n\
             [telemetry]\nmetrics_listen = \"{metrics}\"\n\
             [[providers]]\nid = \"local\"\nkind = \"local\"\ncreate_delay = \"1h\"\n"
        ),
    )
    .unwrap();
    let mut binary = Binary::spawn(&config, dir.path(), "sweep");
    binary.ready().await;

    let store = SqlStore::open(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.get("local.old").await.unwrap().is_some()
        || records(&store).await.contains(&"a-old".to_string())
    {
        assert!(Instant::now() < deadline, "the sweep deleted nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(store.get("local.late").await.unwrap().is_some());
    let slow = store.get("local.slow").await.unwrap().unwrap();
    assert!(!slow.done(), "{slow:?}");
    assert_eq!(records(&store).await, ["a-new"]);
    assert_eq!(completions(&store).await, ["operations/local.late"]);

    let text = scrape(metrics.parse().unwrap()).await;
    let age = sample(
        &text,
        "streamgate_oldest_unfinished_operation_age_seconds",
        &[],
        &[],
    )
    .unwrap_or_else(|| panic!("{text}"));
    assert!(
        (10.0 * 86_400.0..11.0 * 86_400.0).contains(&age),
        "oldest unfinished operation {age} s old"
    );
    let log = std::fs::read_to_string(&binary.log).unwrap();
    assert!(log.contains("retention sweep"), "{log}");
}

const OPS_KEY: &str = "sg-retention-ops-key-0123456789";
const VIEWER_KEY: &str = "sg-retention-viewer-key-0123456789";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn as_<T>(token: &str, message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request.set_timeout(timeout);
    request
}

/// How a test makes the gateway's store refuse it.
enum Outage {
    /// Another connection holds the write lock of the SQLite file at this path past the
    /// store's busy timeout (10 s): every write of the gateway meanwhile waits and fails.
    Sqlite(std::path::PathBuf),
    /// The PostgreSQL database at this URL refuses new connections and the gateway's are
    /// ended, as when the server is down.
    Postgres(String),
}

/// An outage under way; [`Ongoing::end`] ends it.
enum Ongoing {
    Sqlite(rusqlite::Connection),
    Postgres(sqlx::PgConnection),
}

impl Outage {
    fn url(&self) -> String {
        match self {
            Outage::Sqlite(path) => format!("sqlite://{}", path.display()),
            Outage::Postgres(url) => url.clone(),
        }
    }

    /// How long it lasts.
    fn length(&self) -> Duration {
        match self {
            Outage::Sqlite(_) => Duration::from_secs(12),
            Outage::Postgres(_) => Duration::from_secs(6),
        }
    }

    async fn begin(&self) -> Ongoing {
        use sqlx::Connection;
        match self {
            Outage::Sqlite(path) => {
                let lock = rusqlite::Connection::open(path).unwrap();
                lock.execute_batch("BEGIN IMMEDIATE").unwrap();
                Ongoing::Sqlite(lock)
            }
            Outage::Postgres(url) => {
                // From another database: PostgreSQL will not close the one it is in.
                let (server, _) = url.rsplit_once('/').unwrap();
                let admin_url = format!("{server}/template1");
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
                for sql in [
                    "ALTER DATABASE postgres ALLOW_CONNECTIONS false",
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = 'postgres' AND pid <> pg_backend_pid()",
                ] {
                    sqlx::query(sql).execute(&mut admin).await.unwrap();
                }
                Ongoing::Postgres(admin)
            }
        }
    }
}

impl Ongoing {
    async fn end(self) {
        match self {
            Ongoing::Sqlite(lock) => lock.execute_batch("ROLLBACK").unwrap(),
            Ongoing::Postgres(mut admin) => {
                sqlx::query("ALTER DATABASE postgres ALLOW_CONNECTIONS true")
                    .execute(&mut admin)
                    .await
                    .unwrap();
            }
        }
    }
}

/// Mutating calls made during `outage` to the real binary: refused, validated, cut short by
/// their deadline. Their audit rows are there once the store answers again.
async fn audit_rows_survive(outage: Outage, dir: &std::path::Path) {
    let config = dir.join("sg.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"{}\"\n\
             [[providers]]\nid = \"local\"\nkind = \"local\"\ncreate_delay = \"10ms\"\n\
             [auth]\nmode = \"api-key\"\n\
             [[auth.api_keys]]\nprincipal = \"ops\"\nsha256 = \"{}\"\n\
             [[auth.api_keys]]\nprincipal = \"viewer\"\nsha256 = \"{}\"\n\
             [[authorization]]\nprincipal = \"ops\"\nmethods = [\"*\"]\n\
             [[authorization]]\nprincipal = \"viewer\"\nmethods = [\"StreamService/Get*\"]\n",
            outage.url(),
            sha256_hex(OPS_KEY),
            sha256_hex(VIEWER_KEY),
        ),
    )
    .unwrap();
    let mut binary = Binary::spawn(&config, dir, "outage");
    let channel = binary.ready().await;
    let mut streams = StreamServiceClient::new(channel.clone());
    let short = Duration::from_secs(1);

    let ongoing = outage.begin().await;
    let began = Instant::now();
    // Refused before its handler: recorded in the background.
    let refused = streams
        .delete_stream(as_(
            VIEWER_KEY,
            pb::DeleteStreamRequest {
                name: "providers/local/streams/refused".into(),
                ..Default::default()
            },
            short,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    // Validated; its record's write fails, or outlives the call's deadline (answered OK, or
    // past the deadline, as the store fails fast or hangs).
    let validated = streams
        .create_stream(as_(
            OPS_KEY,
            pb::CreateStreamRequest {
                parent: "providers/local".into(),
                stream_id: "validated".into(),
                validate_only: true,
                ..Default::default()
            },
            short,
        ))
        .await;
    assert!(
        validated.as_ref().map_or_else(
            |status| matches!(
                status.code(),
                tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ),
            |op| op.get_ref().done
        ),
        "{validated:?}"
    );
    // Failed in its handler for want of the store, or cut short by its deadline there.
    let cut = streams
        .delete_stream(as_(
            OPS_KEY,
            pb::DeleteStreamRequest {
                name: "providers/local/streams/cut".into(),
                ..Default::default()
            },
            short,
        ))
        .await;
    assert!(cut.is_err(), "{cut:?}");

    tokio::time::sleep(outage.length().saturating_sub(began.elapsed())).await;
    ongoing.end().await;

    let mut audit = AuditServiceClient::new(channel);
    let deadline = Instant::now() + Duration::from_secs(30);
    let wanted = [
        // Refused before the body was read: no target.
        ("viewer", "", "PERMISSION_DENIED"),
        ("ops", "providers/local/streams/validated", "validated"),
        // Whatever the store's failure was (CANCELLED: cut short by the deadline).
        ("ops", "providers/local/streams/cut", "*"),
    ];
    loop {
        let listed = audit
            .list_audit_records(as_(
                OPS_KEY,
                pb::ListAuditRecordsRequest::default(),
                Duration::from_secs(5),
            ))
            .await
            .map(|r| r.into_inner().audit_records)
            .unwrap_or_default();
        let found: Vec<(String, String, String)> = listed
            .iter()
            .map(|r| (r.principal.clone(), r.target.clone(), r.outcome.clone()))
            .collect();
        let all = wanted.iter().all(|(principal, target, _)| {
            found.iter().any(|(p, t, _)| p == principal && t == target)
        });
        if all {
            for (principal, target, outcome) in wanted {
                assert!(
                    found.iter().any(|(p, t, o)| p == principal
                        && t == target
                        && (outcome == "*" || o == outcome)),
                    "{principal} {target} {outcome}: {found:?}"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit rows lost: {found:?}\n{}",
            std::fs::read_to_string(&binary.log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    binary.signal("TERM");
    assert!(binary.wait_exit(Duration::from_secs(10)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_of_calls_made_while_sqlite_refuses_writes_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    audit_rows_survive(Outage::Sqlite(dir.path().join("sg.db")), dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_rows_of_calls_made_while_postgres_is_unreachable_are_kept() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    audit_rows_survive(Outage::Postgres(pg.url.clone()), dir.path()).await;
}
