//! Operation leases across real replicas (the `streamgate` binary) on a PostgreSQL server the
//! test starts: a replica frozen past its lease makes no provider call once thawed; a save that
//! fails with an error that is not temporary does not strand the operation; the orphans of a
//! replica that died are spread over the replicas still running.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::Connection;
use streamgate::pb;
use streamgate::pb::stream_service_client::StreamServiceClient;
use support::kvs_fake::{KvsFake, RunningKvsFake, Windows};
use support::postgres::Postgres;
use support::{Binary, wait_on};
use tonic::transport::Channel;

/// The lease of every replica here: short, so that the tests see it lapse.
const LEASE: &str = "2s";

/// A replica's config: the shared PostgreSQL at `url`, a `kinesis-video` provider on the fake
/// (polling a creating stream every 100 ms) and a `local` one whose creates take 30 s.
fn config(dir: &Path, url: &str, fake: &RunningKvsFake) -> PathBuf {
    let path = dir.join("replica.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndrain_timeout = \"2s\"\n[store]\nurl = \"{url}\"\n\
             operation_lease = \"{LEASE}\"\n\
             [[providers]]\nid = \"kvs\"\nkind = \"kinesis-video\"\nregion = \"us-east-1\"\n\
             endpoint_url = \"{}\"\ncreation_poll_interval = \"100ms\"\n\
             [[providers]]\nid = \"local\"\nkind = \"local\"\ncreate_delay = \"30s\"\n",
            fake.url
        ),
    )
    .unwrap();
    path
}

/// A replica signing its provider calls with access key `key`.
fn replica(config: &Path, dir: &Path, name: &str, key: &str) -> Binary {
    Binary::spawn_with_env(
        config,
        dir,
        name,
        &[
            ("AWS_ACCESS_KEY_ID", key),
            ("AWS_SECRET_ACCESS_KEY", "streamgate-test-secret"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    )
}

async fn create(channel: &Channel, parent: &str, id: &str) -> pb::Operation {
    let op = StreamServiceClient::new(channel.clone())
        .create_stream(pb::CreateStreamRequest {
            parent: parent.into(),
            stream_id: id.into(),
            stream: Some(pb::Stream {
                media_type: "video/h264".into(),
                data_retention_hours: 24,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done, "{op:?}");
    op
}

/// A KVS fake whose new streams stay CREATING for `creating`: a create polls it many times, by
/// whichever replica drives it.
async fn creating_for(creating: Duration) -> RunningKvsFake {
    let fake = KvsFake::start().await;
    fake.fake.set_windows(Windows {
        creating,
        ..Windows::default()
    });
    fake
}

/// Starts a KVS create of `id` through `channel`, and waits until the replica signing with
/// `key` has polled the creating stream: that replica drives it.
async fn create_polled(fake: &KvsFake, channel: &Channel, id: &str, key: &str) -> pb::Operation {
    let op = create(channel, "providers/kvs", id).await;
    let start = Instant::now();
    until(
        Duration::from_secs(10),
        "the replica polls the creating stream",
        || calls(fake, id, key, start) > 0,
    )
    .await;
    op
}

/// The KVS calls for `stream` signed with `key`, arrived at or after `since`.
fn calls(fake: &KvsFake, stream: &str, key: &str, since: Instant) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.stream.as_deref() == Some(stream) && r.access_key == key && r.at >= since)
        .count()
}

/// Waits (up to `bound`) until `check` holds.
async fn until(bound: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !check() {
        assert!(Instant::now() < deadline, "not within {bound:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn succeeded(op: &pb::Operation) -> bool {
    op.done && matches!(op.result, Some(pb::operation::Result::Stream(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_thawed_past_its_lease_makes_no_further_provider_call() {
    let pg = Postgres::start();
    let fake = creating_for(Duration::from_secs(8)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &pg.url, &fake);
    let mut a = replica(&config, dir.path(), "a", "AKIDREPLICAA");
    let mut b = replica(&config, dir.path(), "b", "AKIDREPLICAB");
    let (to_a, to_b) = (a.ready().await, b.ready().await);

    let start = Instant::now();
    let op = create_polled(&fake.fake, &to_a, "frozen", "AKIDREPLICAA").await;
    a.signal("STOP");
    // B adopts once A's lease has lapsed, and finishes the create.
    let done = wait_on(&to_b, &op).await;
    assert!(succeeded(&done), "{done:?}");
    assert!(calls(&fake.fake, "frozen", "AKIDREPLICAB", start) > 0);

    let thawed = Instant::now();
    a.signal("CONT");
    // A's timers (its task's next poll, its lease renewal) all fire at once now; it sees its
    // lease lapsed (or, frozen in the middle of a save, has that save refused) and leaves the
    // operation.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = calls(&fake.fake, "frozen", "AKIDREPLICAA", thawed);
    assert_eq!(
        after,
        0,
        "A called KVS for the adopted operation after it was thawed; its log:\n{}",
        std::fs::read_to_string(&a.log).unwrap()
    );
    // It found out by its own lease check, or — frozen mid-save — by the fenced save.
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(
        log.contains("lease lapsed") || log.contains("another process adopted the operation"),
        "{log}"
    );
    // A still serves.
    a.ready().await;
}

/// Sets `default_transaction_read_only` for every session of the server but the test's own
/// (as after a failover to a read-only node): every write fails with SQLSTATE 25006
/// (read_only_sql_transaction), an error the gateway does not count as temporary.
async fn read_only(admin: &mut sqlx::PgConnection, on: bool) {
    let set = if on {
        "ALTER SYSTEM SET default_transaction_read_only = on"
    } else {
        "ALTER SYSTEM RESET default_transaction_read_only"
    };
    sqlx::query(set).execute(&mut *admin).await.unwrap();
    sqlx::query("SELECT pg_reload_conf()")
        .execute(&mut *admin)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_whose_save_fails_for_good_still_finishes() {
    let pg = Postgres::start();
    let mut admin = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    // This session stays writable whatever the server's default.
    sqlx::query("SET default_transaction_read_only = off")
        .execute(&mut admin)
        .await
        .unwrap();
    let fake = creating_for(Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &pg.url, &fake);
    let mut a = replica(&config, dir.path(), "a", "AKIDREPLICAA");
    let to_a = a.ready().await;

    let op = create_polled(&fake.fake, &to_a, "readonly", "AKIDREPLICAA").await;
    read_only(&mut admin, true).await;
    // And the connections A holds are cut, as a failover does.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    until(Duration::from_secs(10), "a save fails", || {
        std::fs::read_to_string(&a.log)
            .unwrap()
            .contains("could not save the operation")
    })
    .await;
    // Longer than the lease: renewals fail too, and the task's lease lapses.
    tokio::time::sleep(Duration::from_secs(3)).await;
    read_only(&mut admin, false).await;

    // The same process, never restarted, takes the operation again and finishes it.
    let done = wait_on(&to_a, &op).await;
    assert!(
        succeeded(&done),
        "{done:?}; the log:\n{}",
        std::fs::read_to_string(&a.log).unwrap()
    );
    assert!(a.child.try_wait().unwrap().is_none(), "A exited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_orphans_of_a_dead_replica_are_spread_over_the_live_ones() {
    let pg = Postgres::start();
    let fake = KvsFake::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &pg.url, &fake);
    let mut a = replica(&config, dir.path(), "a", "AKIDREPLICAA");
    let mut b = replica(&config, dir.path(), "b", "AKIDREPLICAB");
    let mut c = replica(&config, dir.path(), "c", "AKIDREPLICAC");
    let to_a = a.ready().await;
    b.ready().await;
    c.ready().await;

    // 150 `local` creates, 30 s each, all driven by A; then A dies. One replica alone needs
    // five rounds (two seconds at least) to adopt them all.
    const COUNT: i64 = 150;
    for i in 0..COUNT {
        create(&to_a, "providers/local", &format!("s{i:03}")).await;
    }
    let mut admin = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    let dead: String = sqlx::query_scalar("SELECT DISTINCT owner FROM operations WHERE done = 0")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    a.signal("KILL");
    a.wait_exit(Duration::from_secs(5)).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let owners = loop {
        let owners: Vec<(String, i64)> = sqlx::query_as(
            "SELECT owner, count(*) FROM operations WHERE done = 0 \
             AND owner <> $1 GROUP BY owner ORDER BY owner",
        )
        .bind(&dead)
        .fetch_all(&mut admin)
        .await
        .unwrap();
        if owners.iter().map(|(_, n)| n).sum::<i64>() == COUNT || Instant::now() > deadline {
            break owners;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(owners.len(), 2, "B and C each adopted some: {owners:?}");
    assert_eq!(owners.iter().map(|(_, n)| n).sum::<i64>(), COUNT);
    // No round adopted more than a share.
    for replica in [&b, &c] {
        let log = std::fs::read_to_string(&replica.log).unwrap();
        let rounds: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("adopted operations whose process stopped"))
            .collect();
        assert!(!rounds.is_empty(), "{log}");
        for line in rounds {
            let count: usize = line
                .split("count=")
                .nth(1)
                .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no count in {line}"));
            assert!(count <= 32, "{line}");
        }
    }
}
