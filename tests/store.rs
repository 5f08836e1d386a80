//! One suite for the operation store, run against every backend: SQLite (a file) and
//! PostgreSQL (a throwaway server the test starts); the same for the audit trail. Plus the whole
//! API on PostgreSQL.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};
use streamgate::domain::{OpRequest, OpResult, Operation, StreamName};
use streamgate::error::{Error, Kind};
use streamgate::operations::fingerprint;
use streamgate::pb;
use streamgate::store::{
    AuditFilter, AuditRecord, AuditStore, Inserted, Lease, OperationFilter, OperationStore,
    Orphans, Renewed, SqlStore,
};

use streamgate::pb::stream_service_client::StreamServiceClient;
use support::postgres::Postgres;
use support::{Binary, TestServer, local_provider, wait, wait_on};
use tonic::transport::Channel;

fn op(id: &str, stream: &str, time: i64, request_id: Option<&str>) -> Operation {
    let request = OpRequest::Delete {
        name: StreamName {
            provider: "local".into(),
            video: None,
            stream: stream.into(),
        },
        etag: None,
        allow_missing: false,
    };
    Operation {
        id: id.into(),
        fingerprint: fingerprint(&request),
        request,
        principal: "alice".into(),
        request_id: request_id.map(str::to_string),
        step: "accepted".into(),
        progress: serde_json::Value::Null,
        next_run_ms: time,
        attempts: 0,
        retries: 0,
        cancel_requested: false,
        replayed: false,
        outcome: None,
        warnings: Vec::new(),
        create_time_ms: time,
        update_time_ms: time,
    }
}

/// The runner processes of the lease checks.
const A: &str = "runner-a";
const B: &str = "runner-b";
const C: &str = "runner-c";

/// A lease of a minute: it holds through the suite unless renewed shorter.
const MINUTE: u64 = 60_000;

fn lease(owner: &str, length_ms: u64) -> Lease {
    Lease {
        owner: owner.into(),
        length: Duration::from_millis(length_ms),
    }
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn owned(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

/// Ends `owner`'s leases of `ids` on the database's clock: renewed for 1 ms, then past it.
async fn lapse(store: &SqlStore, owner: &str, ids: &[&str]) {
    store.renew(&lease(owner, 1), &owned(ids)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
}

fn ids(ops: &[Operation]) -> Vec<&str> {
    ops.iter().map(|o| o.id.as_str()).collect()
}

async fn suite(store: SqlStore) {
    // Insert, read back, and the AIP-155 uniqueness of (principal, request_id).
    let first = op("op1", "a", 1_000, Some("rid-1"));
    assert!(matches!(
        store.insert(&first, &lease(A, MINUTE), None).await.unwrap(),
        Inserted::New
    ));
    assert_eq!(store.get("op1").await.unwrap().unwrap(), first);
    assert!(store.get("nope").await.unwrap().is_none());
    match store
        .insert(
            &op("op2", "b", 1_001, Some("rid-1")),
            &lease(A, MINUTE),
            None,
        )
        .await
        .unwrap()
    {
        Inserted::Existing(existing) => assert_eq!(existing.id, "op1"),
        Inserted::New => panic!("a second operation under one request_id"),
    }
    let mut other = op("op2", "b", 1_001, Some("rid-1"));
    other.principal = "bob".into();
    assert!(
        matches!(
            store.insert(&other, &lease(A, MINUTE), None).await.unwrap(),
            Inserted::New
        ),
        "request ids are per principal"
    );
    assert!(matches!(
        store
            .insert(&op("op3", "c", 1_002, None), &lease(A, MINUTE), None)
            .await
            .unwrap(),
        Inserted::New
    ));
    assert!(
        matches!(
            store
                .insert(&op("op4", "d", 1_002, None), &lease(A, MINUTE), None)
                .await
                .unwrap(),
            Inserted::New
        ),
        "no request_id never collides"
    );
    assert_eq!(
        store
            .find_by_request_id("alice", "rid-1")
            .await
            .unwrap()
            .unwrap()
            .id,
        "op1"
    );

    // Cancel sets a flag the runner's saves do not clear.
    assert!(store.request_cancel("op3").await.unwrap());
    let mut running = store.get("op3").await.unwrap().unwrap();
    assert!(running.cancel_requested);
    running.step = "creating".into();
    running.cancel_requested = false;
    assert!(store.save(&running, A).await.unwrap());
    let read = store.get("op3").await.unwrap().unwrap();
    assert_eq!(read.step, "creating");
    assert!(read.cancel_requested, "save keeps the cancel flag");

    // Finish one; done operations are neither unfinished nor cancellable.
    let mut finished = store.get("op1").await.unwrap().unwrap();
    finished.outcome = Some(Err(
        Error::new(Kind::StreamNotFound, "gone").with_provider_code("X")
    ));
    finished.update_time_ms = 2_000;
    assert!(store.save(&finished, A).await.unwrap());
    assert_eq!(store.get("op1").await.unwrap().unwrap(), finished);
    assert!(!store.request_cancel("op1").await.unwrap());
    let unfinished: Vec<_> = store
        .unfinished()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(unfinished, ["op2", "op3", "op4"]);

    // Newest first, with (time, id) positions for paging, and filters.
    let all = OperationFilter::default();
    let page1: Vec<_> = store
        .list(&all, None, 2)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(page1, ["op4", "op3"]);
    let page2: Vec<_> = store
        .list(&all, Some((1_002, "op3".into())), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(page2, ["op2", "op1"]);
    let done: Vec<_> = store
        .list(
            &OperationFilter {
                done: Some(true),
                ..Default::default()
            },
            None,
            10,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(done, ["op1"]);
    let target = OperationFilter {
        target: Some("providers/local/streams/c".into()),
        verb: Some("DeleteStream".into()),
        done: Some(false),
        ..Default::default()
    };
    let by_target: Vec<_> = store
        .list(&target, None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.id)
        .collect();
    assert_eq!(by_target, ["op3"]);

    // A result round-trips too.
    let mut ok = store.get("op4").await.unwrap().unwrap();
    ok.outcome = Some(Ok(OpResult::Deleted {
        name: StreamName::parse(&ok.request.target(), "name").unwrap(),
        existed: true,
    }));
    assert!(store.save(&ok, A).await.unwrap());
    assert_eq!(store.get("op4").await.unwrap().unwrap(), ok);

    leases(&store).await;
    by_principal(&store).await;
}

/// ListOperations of a caller without an `operations = "all"` grant: the principal is a term of
/// the query, so a page holds that principal's operations only, and holds them in full.
async fn by_principal(store: &SqlStore) {
    let of = |principal: &str| OperationFilter {
        principal: Some(principal.into()),
        ..Default::default()
    };
    let ids = |ops: Vec<Operation>| ops.into_iter().map(|o| o.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list(&of("bob"), None, 10).await.unwrap()),
        ["op2"]
    );
    // (Before the leases' orphans, alice's too.)
    let before_orphans = Some((1_003, String::new()));
    assert_eq!(
        ids(store.list(&of("alice"), before_orphans, 3).await.unwrap()),
        ["op4", "op3", "op1"],
        "a full page of alice's, bob's op2 between them left out"
    );
    assert!(store.list(&of("carol"), None, 10).await.unwrap().is_empty());
}

/// Leases: one owner per unfinished operation; adoption once a lease ends on the database's
/// clock; renewals of the named operations only; fenced saves.
/// Unfinished here: op2 and op3 (cancel requested), both leased to A for a minute.
async fn leases(store: &SqlStore) {
    assert!(
        store
            .claim(&lease(B, MINUTE), Orphans::Lapsed, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let mut op3 = store.get("op3").await.unwrap().unwrap();
    op3.step = "stolen".into();
    assert!(!store.save(&op3, B).await.unwrap(), "B does not hold op3");
    assert_eq!(store.get("op3").await.unwrap().unwrap().step, "creating");
    // A renews what it names and holds (and learns op3's cancellation); B holds nothing.
    let renewed = store
        .renew(&lease(A, MINUTE), &owned(&["op3", "op2", "op1", "nope"]))
        .await
        .unwrap();
    assert_eq!(sorted(renewed.held), ["op2", "op3"], "op1 is done");
    assert_eq!(renewed.cancelled, ["op3"]);
    assert_eq!(
        store
            .renew(&lease(B, MINUTE), &owned(&["op2"]))
            .await
            .unwrap(),
        Renewed::default()
    );
    // A's leases end: B adopts them, as many as it asks for.
    lapse(store, A, &["op2", "op3"]).await;
    let first = store
        .claim(&lease(B, MINUTE), Orphans::Lapsed, 1)
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    let rest = store
        .claim(&lease(B, MINUTE), Orphans::Lapsed, 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    let both: Vec<&Operation> = first.iter().chain(&rest).collect();
    assert_eq!(
        sorted(both.iter().map(|o| o.id.clone()).collect()),
        ["op2", "op3"]
    );
    assert!(both.iter().all(|o| o.cancel_requested == (o.id == "op3")));
    // A's saves are fenced now, and A renews nothing; B's saves go through.
    assert!(!store.save(&op3, A).await.unwrap());
    assert!(
        store
            .renew(&lease(A, MINUTE), &owned(&["op2", "op3"]))
            .await
            .unwrap()
            .held
            .is_empty()
    );
    assert!(store.save(&op3, B).await.unwrap());
    assert_eq!(store.get("op3").await.unwrap().unwrap().step, "stolen");
    // B stops cleanly: C adopts at once, long before B's lease would end.
    store.release(B).await.unwrap();
    let adopted = store
        .claim(&lease(C, MINUTE), Orphans::Lapsed, 10)
        .await
        .unwrap();
    assert_eq!(
        sorted(adopted.iter().map(|o| o.id.clone()).collect()),
        ["op2", "op3"]
    );
    // Done operations are never claimed.
    let mut done = adopted.iter().find(|o| o.id == "op2").unwrap().clone();
    done.outcome = Some(Err(Error::new(Kind::Internal, "x")));
    assert!(store.save(&done, C).await.unwrap());
    store.release(C).await.unwrap();
    let left = store
        .claim(&lease(A, MINUTE), Orphans::Lapsed, 10)
        .await
        .unwrap();
    assert_eq!(ids(&left), ["op3"]);
    // A process takes its own lapsed operations too (a task of its own stopped).
    lapse(store, A, &["op3"]).await;
    let again = store
        .claim(&lease(A, MINUTE), Orphans::Lapsed, 10)
        .await
        .unwrap();
    assert_eq!(ids(&again), ["op3"]);
    // One operation released, by its holder only.
    store.release_one("op3", B).await.unwrap();
    assert!(
        store
            .claim(&lease(C, MINUTE), Orphans::Lapsed, 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.release_one("op3", A).await.unwrap();
    let released = store
        .claim(&lease(C, MINUTE), Orphans::Lapsed, 10)
        .await
        .unwrap();
    assert_eq!(ids(&released), ["op3"]);
    // Every unfinished operation, leases or not.
    let all = store
        .claim(&lease(A, MINUTE), Orphans::All, 10)
        .await
        .unwrap();
    assert_eq!(ids(&all), ["op3"]);

    // Two processes claiming at once never both get an operation.
    for i in 0..20 {
        let orphan = op(&format!("orphan{i:02}"), &format!("o{i}"), 3_000 + i, None);
        store.insert(&orphan, &lease(A, 1), None).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let (lease_b, lease_c) = (lease(B, MINUTE), lease(C, MINUTE));
    let (b, c) = tokio::join!(
        store.claim(&lease_b, Orphans::Lapsed, 100),
        store.claim(&lease_c, Orphans::Lapsed, 100)
    );
    let (b, c) = (b.unwrap(), c.unwrap());
    let mut all: Vec<&str> = ids(&b).into_iter().chain(ids(&c)).collect();
    all.sort();
    let expected: Vec<String> = (0..20).map(|i| format!("orphan{i:02}")).collect();
    assert_eq!(all, expected, "each claimed exactly once");
}

#[tokio::test]
async fn operation_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/dir/sg.db", dir.path().display());
    suite(SqlStore::open(&url).await.unwrap()).await;
    // Reopening runs the migrations again, harmlessly, and finds the data.
    let reopened = SqlStore::open(&url).await.unwrap();
    assert!(reopened.get("op1").await.unwrap().is_some());
}

#[tokio::test]
async fn operation_store_on_postgres() {
    let pg = Postgres::start();
    suite(SqlStore::open(&pg.url).await.unwrap()).await;
}

#[tokio::test]
async fn operation_store_on_postgres_over_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path(), "db");
    let pg = Postgres::start_tls(&pki.server("db-server"));
    // The server takes TCP connections over TLS only.
    let plain = SqlStore::open(&format!("{}?sslmode=disable", pg.url)).await;
    assert!(plain.is_err(), "a plaintext connection was accepted");
    // A server certificate no trusted CA signed is refused.
    let other = support::pki::Pki::new(dir.path(), "other");
    let foreign = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url,
        other.ca_file.display()
    );
    assert!(
        SqlStore::open(&foreign).await.is_err(),
        "a foreign CA was trusted"
    );
    let verified = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url,
        pki.ca_file.display()
    );
    suite(SqlStore::open(&verified).await.unwrap()).await;
}

fn audit_record(
    id: &str,
    time_ms: i64,
    principal: &str,
    method: &str,
    operation: &str,
) -> AuditRecord {
    AuditRecord {
        id: id.into(),
        time_ms,
        principal: principal.into(),
        method: method.into(),
        target: "providers/local/streams/cam-1".into(),
        request_id: String::new(),
        operation: operation.into(),
        outcome: if operation.is_empty() {
            "ETAG_MISMATCH"
        } else {
            "accepted"
        }
        .into(),
        provider_request_id: if operation.is_empty() { "req-9" } else { "" }.into(),
        ..AuditRecord::default()
    }
}

async fn audit_suite(store: SqlStore) {
    let a = audit_record("a", 100, "ops", "CreateStream", "operations/o1");
    let b = audit_record("b", 200, "reader", "DeleteStream", "");
    let c = audit_record("c", 200, "ops", "DeleteStream", "operations/o2");
    // The completion may come before the call's row: the order does not matter.
    store
        .complete("operations/o2", 250, "STREAM_IN_USE", "req-7")
        .await
        .unwrap();
    for r in [&a, &b, &c] {
        store.record(r).await.unwrap();
    }
    store
        .complete("operations/o1", 150, "succeeded", "")
        .await
        .unwrap();
    // The first final outcome wins.
    store
        .complete("operations/o1", 160, "INTERNAL", "")
        .await
        .unwrap();

    let all = store
        .list_records(&AuditFilter::default(), None, 10)
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["c", "b", "a"]);
    assert_eq!(all[0].final_outcome, "STREAM_IN_USE");
    assert_eq!(all[0].final_provider_request_id, "req-7");
    assert_eq!(all[1].final_outcome, "");
    assert_eq!(all[1].provider_request_id, "req-9");
    assert_eq!(all[2].final_outcome, "succeeded");
    let expected_a = AuditRecord {
        final_outcome: "succeeded".into(),
        ..a.clone()
    };
    assert_eq!(all[2], expected_a);

    let page = store
        .list_records(&AuditFilter::default(), Some((200, "c".into())), 1)
        .await
        .unwrap();
    assert_eq!(page[0].id, "b");
    let page = store
        .list_records(&AuditFilter::default(), Some((200, "b".into())), 5)
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "a");

    let filter = AuditFilter {
        principal: Some("ops".into()),
        method: Some("DeleteStream".into()),
        ..AuditFilter::default()
    };
    let found = store.list_records(&filter, None, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, "c");
    let filter = AuditFilter {
        operation: Some("operations/o1".into()),
        target: Some("providers/local/streams/cam-1".into()),
        ..AuditFilter::default()
    };
    let found = store.list_records(&filter, None, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, "a");
}

#[tokio::test]
async fn audit_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/sg.db", dir.path().display());
    audit_suite(SqlStore::open(&url).await.unwrap()).await;
}

#[tokio::test]
async fn audit_store_on_postgres() {
    let pg = Postgres::start();
    audit_suite(SqlStore::open(&pg.url).await.unwrap()).await;
}

#[tokio::test]
async fn refuses_an_in_memory_sqlite_store() {
    let error = SqlStore::open("sqlite::memory:").await.unwrap_err();
    assert!(error.message().contains("not durable"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_on_postgres() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let server =
        TestServer::start_with_store(dir, &pg.url, &local_provider("local", "100ms")).await;
    let mut streams = server.streams();
    for id in ["p-1", "p-2", "q-1"] {
        let op = streams
            .create_stream(pb::CreateStreamRequest {
                parent: "providers/local".into(),
                stream_id: id.into(),
                request_id: format!("pg-{id}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let done = wait(&server, &op).await;
        assert!(done.done);
    }
    let listed = streams
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/local".into(),
            filter: "stream_id_prefix = p- AND state = ACTIVE".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.streams[0].name, "providers/local/streams/p-1");
    let rest = streams
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/local".into(),
            filter: "stream_id_prefix = p- AND state = ACTIVE".into(),
            page_size: 5,
            page_token: listed.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.streams.len(), 1);
    assert_eq!(rest.streams[0].name, "providers/local/streams/p-2");

    let deleted = streams
        .batch_delete_streams(pb::BatchDeleteStreamsRequest {
            parent: "providers/local".into(),
            names: vec![
                "providers/local/streams/p-1".into(),
                "providers/local/streams/zz".into(),
            ],
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::operation::Result::BatchDeleteStreams(result)) = deleted.result else {
        panic!("{deleted:?}");
    };
    assert!(result.results[0].deleted);
    assert!(!result.results[1].deleted);
}

/// A config for a replica on the shared PostgreSQL at `url`, with this operation lease.
fn replica_config(dir: &std::path::Path, name: &str, url: &str, lease: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[server]\ndrain_timeout = \"2s\"\n[store]\nurl = \"{url}\"\n\
             operation_lease = \"{lease}\"\n\
             [[providers]]\nid = \"local\"\nkind = \"local\"\ncreate_delay = \"3s\"\n"
        ),
    )
    .unwrap();
    path
}

async fn create(channel: &Channel, id: &str) -> pb::Operation {
    let op = StreamServiceClient::new(channel.clone())
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/local".into(),
            stream_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done, "{op:?}");
    op
}

/// Whether `binary` logged a line in `op`'s `operation` span. A replica logs "operation done"
/// after saving the operation, so a caller can see it done before the line reaches the log:
/// this looks again for up to 5 s before answering no.
async fn drove(binary: &Binary, op: &pb::Operation) -> bool {
    let id = op.name.trim_start_matches("operations/");
    let span = format!("operation{{operation={id}}}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if std::fs::read_to_string(&binary.log)
            .unwrap()
            .contains(&span)
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_drive_each_operation_once_and_adopt_a_dead_ones() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let short = replica_config(dir.path(), "short", &pg.url, "1s");
    let mut a = Binary::spawn(&short, dir.path(), "a");
    let mut b = Binary::spawn(&short, dir.path(), "b");
    let (to_a, to_b) = (a.ready().await, b.ready().await);

    // A 3 s operation on A, with 1 s leases: A renews, B never takes it over.
    let op = create(&to_a, "one").await;
    let done = wait_on(&to_b, &op).await;
    assert!(
        done.done && matches!(done.result, Some(pb::operation::Result::Stream(_))),
        "{done:?}"
    );
    assert!(drove(&a, &op).await);
    assert!(!drove(&b, &op).await, "B drove a live replica's operation");

    // A dies mid-operation: B adopts it once A's lease has run out, and finishes it.
    let op = create(&to_a, "two").await;
    a.signal("KILL");
    a.wait_exit(Duration::from_secs(5)).await;
    let done = wait_on(&to_b, &op).await;
    assert!(
        done.done && matches!(done.result, Some(pb::operation::Result::Stream(_))),
        "{done:?}"
    );
    assert!(
        drove(&b, &op).await,
        "B did not adopt the dead replica's operation"
    );
    let log = std::fs::read_to_string(&b.log).unwrap();
    assert!(
        log.contains("adopted operations whose process stopped"),
        "{log}"
    );

    // C holds 60 s leases, and stops cleanly mid-operation: it releases them, so B adopts the
    // operation at once rather than after 60 s.
    let long = replica_config(dir.path(), "long", &pg.url, "60s");
    let mut c = Binary::spawn(&long, dir.path(), "c");
    let to_c = c.ready().await;
    let op = create(&to_c, "three").await;
    let stopped = Instant::now();
    c.signal("TERM");
    assert!(c.wait_exit(Duration::from_secs(10)).await.success());
    let done = wait_on(&to_b, &op).await;
    assert!(
        done.done && matches!(done.result, Some(pb::operation::Result::Stream(_))),
        "{done:?}"
    );
    assert!(
        drove(&b, &op).await,
        "B did not adopt the released operation; C's log:\n{}",
        std::fs::read_to_string(&c.log).unwrap()
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(20),
        "adopted only after {:?}",
        stopped.elapsed()
    );
    let streams = StreamServiceClient::new(to_b.clone())
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/local".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .streams;
    assert_eq!(streams.len(), 3, "{streams:?}");
}
