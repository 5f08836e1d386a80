//! Outbound quotas shared by a fleet (docs/design.md §4a): several replicas on one PostgreSQL
//! take their turns in the store's shared budgets, so that together they stay under a
//! provider's quota, one busy replica can use most of a quota the others leave idle, a call
//! whose fleet-wide turn comes after its deadline is refused at once, and a store that does not
//! answer leaves each replica its share of the quota until it answers again; budgets idle for a
//! minute leave the table. Here each
//! "replica" is a [`SharedBudgets`] with connections of its own and the limits built on it;
//! the last test runs three gateway binaries against the KVS fake enforcing KVS's quotas.

mod support;

use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use streamgate::pb;
use streamgate::providers::limits::OutboundLimits;
use streamgate::store::{RESERVE_BOUND, SharedBudgets, SqlStore};
use support::fleet::{Extra, Fleet};
use support::postgres::Postgres;
use tokio::time::Instant;

/// Held by each test: they measure rates, and would share the machine's cores otherwise.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The calls each replica sent (when its limit let them through).
type Sent = Arc<Mutex<Vec<(usize, Instant)>>>;

/// A store with its migrations run (the budgets' tables among them).
async fn migrated(pg: &Postgres) {
    SqlStore::open(&pg.url).await.unwrap().close().await;
}

/// One replica: budgets of its own on `pg`, and `CreateStream` limited to `per_second` for
/// instance `kvs`, fleet-wide.
async fn replica(pg: &Postgres, per_second: u32) -> (Arc<SharedBudgets>, Arc<OutboundLimits>) {
    let budgets = SharedBudgets::connect(PgConnectOptions::from_str(&pg.url).unwrap())
        .await
        .unwrap();
    let limits = OutboundLimits::new()
        .per_action("CreateStream", NonZeroU32::new(per_second).unwrap())
        .per_resource("DescribeStream", NonZeroU32::new(5).unwrap())
        .fleet_wide("kvs", Some(&budgets));
    (budgets, Arc::new(limits))
}

/// `callers` tasks on replica `who`, each calling `CreateStream` in a loop until `until`.
fn demand(
    who: usize,
    limits: &Arc<OutboundLimits>,
    callers: usize,
    until: Instant,
    sent: &Sent,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..callers)
        .map(|_| {
            let (limits, sent) = (Arc::clone(limits), Arc::clone(sent));
            tokio::spawn(async move {
                while Instant::now() < until {
                    limits.acquire("CreateStream", None).await.unwrap();
                    sent.lock().unwrap().push((who, Instant::now()));
                }
            })
        })
        .collect()
}

/// The most calls of `times` in any one-second window.
fn busiest_second(times: &[Instant]) -> usize {
    let mut times = times.to_vec();
    times.sort();
    (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn times(sent: &Sent, who: Option<usize>) -> Vec<Instant> {
    sent.lock()
        .unwrap()
        .iter()
        .filter(|(w, _)| who.is_none_or(|who| *w == who))
        .map(|(_, t)| *t)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_together_stay_under_the_quota_and_use_it() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let pg = Postgres::start();
    migrated(&pg).await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&pg, 50).await);
    }
    let sent: Sent = Arc::default();
    let started = Instant::now();
    let until = started + Duration::from_secs(4);
    let tasks: Vec<_> = replicas
        .iter()
        .enumerate()
        .flat_map(|(who, (_, limits))| demand(who, limits, 8, until, &sent))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let all = times(&sent, None);
    assert!(
        busiest_second(&all) <= 50,
        "{} calls in one second",
        busiest_second(&all)
    );
    // Turns are 15% wider apart than the quota's interval: 43.5/s.
    let in_last_three: Vec<_> = all
        .iter()
        .filter(|t| **t >= started + Duration::from_secs(1))
        .collect();
    assert!(
        in_last_three.len() >= 3 * 41,
        "{} calls in 3 s at a quota of 50/s",
        in_last_three.len()
    );
    // Every replica had turns.
    for who in 0..3 {
        assert!(times(&sent, Some(who)).len() >= 20, "replica {who}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_replica_uses_what_the_others_leave() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let pg = Postgres::start();
    migrated(&pg).await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&pg, 50).await);
    }
    let sent: Sent = Arc::default();
    let started = Instant::now();
    let others_stop = started + Duration::from_secs(2);
    let busy_stops = others_stop + Duration::from_secs(5);
    let mut tasks = demand(0, &replicas[0].1, 8, busy_stops, &sent);
    for (who, (_, limits)) in replicas.iter().enumerate().skip(1) {
        tasks.extend(demand(who, limits, 8, others_stop, &sent));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let busy: Vec<_> = times(&sent, Some(0));
    let before: Vec<_> = busy.iter().filter(|t| **t < others_stop).copied().collect();
    // While all three called, the busy one had about a third.
    assert!(before.len() < 60, "{} calls of 100", before.len());
    // Within 5 s of the others going idle, it uses at least 80% of the quota.
    let window_start = busy_stops - Duration::from_secs(1);
    let late = busy.iter().filter(|t| **t >= window_start).count();
    assert!(
        late >= 40,
        "{late} calls in the last second, of a quota of 50"
    );
    assert!(busiest_second(&times(&sent, None)) <= 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_turn_past_the_deadline_is_refused_at_once_taking_no_turn() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let pg = Postgres::start();
    migrated(&pg).await;
    let (_a_budgets, a) = replica(&pg, 50).await;
    let (_b_budgets, b) = replica(&pg, 50).await;
    // Replica A queues ten reads of one stream: at 5/s the last turn is two seconds away.
    let queued: Vec<_> = (0..10)
        .map(|_| {
            let a = Arc::clone(&a);
            tokio::spawn(async move { a.acquire("DescribeStream", Some("s")).await })
        })
        .collect();
    let store = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let next_free = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT next_free_us FROM outbound_budgets WHERE provider = 'kvs' AND resource = 's'",
        )
        .fetch_optional(&store)
        .await
        .unwrap()
    };
    // All ten have their turns within a moment; the last is then more than 1.5 s away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(next_free().await.is_some());
    let before = next_free().await;
    let asked = Instant::now();
    let refused = streamgate::deadline::scope(
        Some(Duration::from_millis(500)),
        b.acquire("DescribeStream", Some("s")),
    )
    .await
    .unwrap_err();
    assert!(
        asked.elapsed() < Duration::from_millis(250),
        "{:?}",
        asked.elapsed()
    );
    assert!(refused > Duration::from_secs(1), "{refused:?}");
    assert_eq!(next_free().await, before, "the refused call took a turn");
    // Another stream's budget is its own: a call on it passes at once.
    streamgate::deadline::scope(
        Some(Duration::from_millis(500)),
        b.acquire("DescribeStream", Some("other")),
    )
    .await
    .unwrap();
    for call in queued {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_store_each_replica_keeps_its_share_then_shares_again() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let pg = Postgres::start();
    migrated(&pg).await;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(replica(&pg, 30).await);
    }
    // Every replica has counted the three.
    while replicas.iter().any(|(budgets, _)| budgets.replicas() != 3) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (budgets, limits) = &replicas[0];
    pg.stop();
    // Demand on one replica: its calls go on, at a third of 30/s, none waiting long.
    let sent: Sent = Arc::default();
    let started = Instant::now();
    let until = started + Duration::from_secs(3);
    let slowest = Arc::new(Mutex::new(Duration::ZERO));
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let (limits, sent, slowest) =
                (Arc::clone(limits), Arc::clone(&sent), Arc::clone(&slowest));
            tokio::spawn(async move {
                while Instant::now() < until {
                    let asked = Instant::now();
                    streamgate::deadline::scope(
                        Some(Duration::from_secs(2)),
                        limits.acquire("CreateStream", None),
                    )
                    .await
                    .unwrap();
                    let waited = asked.elapsed();
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(waited);
                    sent.lock().unwrap().push((0, Instant::now()));
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(!budgets.answering());
    let alone = times(&sent, None);
    let busiest = busiest_second(&alone);
    assert!(
        (8..=11).contains(&busiest),
        "{busiest} calls in a second at 10/s"
    );
    // Four callers at 10/s: each waits about 400 ms a turn; the first, besides, no longer than
    // the reservation's bound.
    let slowest = *slowest.lock().unwrap();
    assert!(
        slowest < RESERVE_BOUND + Duration::from_millis(600),
        "{slowest:?}"
    );

    pg.start_again();
    let back = Instant::now();
    while !budgets.answering() {
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "the store never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Shared again: the one busy replica has the fleet's whole quota.
    let sent: Sent = Arc::default();
    let started = Instant::now();
    for task in demand(0, limits, 8, started + Duration::from_secs(3), &sent) {
        task.await.unwrap();
    }
    let shared = times(&sent, None);
    let late = shared
        .iter()
        .filter(|t| **t >= started + Duration::from_secs(2))
        .count();
    assert!(
        late >= 24,
        "{late} calls in the last second, of a quota of 30"
    );
    let store = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbound_budgets WHERE provider = 'kvs' AND budget = 'CreateStream'",
    )
    .fetch_one(&store)
    .await
    .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_spread_over_three_replicas_stay_under_the_account_quota() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let fleet = Fleet::start(3, &Extra::default()).await;
    // Each replica warm, as a serving gateway is: its KVS client has made a call.
    for channel in &fleet.channels {
        pb::stream_service_client::StreamServiceClient::new(channel.clone())
            .list_streams(pb::ListStreamsRequest {
                parent: "providers/kvs".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let sent = std::time::Instant::now();
    let creates: Vec<_> = (0..150)
        .map(|i| {
            let channel = fleet.channels[i % 3].clone();
            tokio::spawn(async move {
                let op = pb::stream_service_client::StreamServiceClient::new(channel.clone())
                    .create_stream(pb::CreateStreamRequest {
                        parent: "providers/kvs".into(),
                        stream_id: format!("cam-{i}"),
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
                support::wait_on(&channel, &op).await
            })
        })
        .collect();
    for create in creates {
        let done = create.await.unwrap();
        assert!(
            matches!(done.result, Some(pb::operation::Result::Stream(_))),
            "{done:?}"
        );
    }
    let fake = fleet.fake();
    let throttled: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.throttled)
        .collect();
    let what: Vec<_> = throttled.iter().map(|r| (&r.action, &r.stream)).collect();
    assert!(throttled.is_empty(), "throttled: {what:?}");
    let created = fake.requests_of("createStream");
    assert_eq!(created.len(), 150);
    // Every replica sent its share, and the fleet as a whole kept to 50/s: 149 intervals of
    // 23 ms (the quota's interval and 15%) are 3.43 s, within 20% of the quota's 3 s.
    for i in 0..3 {
        let key = Fleet::access_key(i);
        assert!(created.iter().any(|r| r.access_key == key), "replica {i}");
    }
    let first = created.iter().map(|r| r.at).min().unwrap();
    let last = created.iter().map(|r| r.at).max().unwrap();
    let spread = last - first;
    assert!(spread <= Duration::from_millis(3600), "{spread:?}");
    eprintln!(
        "150 creates: the first reached the fake {:?} after they were sent, the last {spread:?} \
         after the first",
        first - sent
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_idle_for_a_minute_are_deleted() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let pg = Postgres::start();
    migrated(&pg).await;
    let store = sqlx::PgPool::connect(&pg.url).await.unwrap();
    // A stream last called two minutes ago, and one called just now.
    sqlx::query(
        "INSERT INTO outbound_budgets (provider, budget, resource, next_free_us)
         SELECT 'kvs', 'DescribeStream per resource', resource,
                (extract(epoch FROM clock_timestamp()) * 1000000)::bigint - age_us
         FROM (VALUES ('old', 120000000::bigint), ('recent', 0::bigint)) AS v(resource, age_us)",
    )
    .execute(&store)
    .await
    .unwrap();
    let (_budgets, _limits) = replica(&pg, 50).await;
    let resources = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT resource FROM outbound_budgets WHERE provider = 'kvs' ORDER BY resource",
        )
        .fetch_all(&store)
        .await
        .unwrap()
    };
    let started = Instant::now();
    while resources().await.contains(&"old".to_string()) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the idle budget was kept"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(resources().await, ["recent"]);
}
