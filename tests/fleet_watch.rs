//! Shared reads across a fleet (issue 19, Build 1 and the watch part of Build 3), through real
//! gateway binaries: three replicas on one PostgreSQL ([`support::fleet`]) against the KVS
//! wire-level fake enforcing KVS's quotas and recording each call's time, stream and caller.
//! One replica polls a watched stream for the whole fleet, whatever the number of watchers and
//! replicas; another takes its lease over when it dies; replicas that cannot hear its notices
//! read its stored reads every interval instead; a caller that accepts staleness is
//! answered from the shared read without a provider call; and a watch's initial read waits for
//! an outbound-limit turn no longer than `[server] watch_initial_read_timeout`.

mod support;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sqlx::Connection;

use streamgate::pb;
use streamgate::pb::stream_service_client::StreamServiceClient;
use streamgate::pb::watch_stream_response::ChangeType;
use support::fleet::{Extra, Fleet};
use support::kvs_fake::{KvsFake, Recorded};
use support::{AWS_ENV, TestServer, reason, violated_fields};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt;

/// The poll interval of the fleets' KVS instance.
const EVERY: Duration = Duration::from_secs(1);

fn polling_every(every: Duration) -> Extra {
    Extra {
        kvs: format!("watch_poll_interval = \"{}ms\"", every.as_millis()),
        ..Extra::default()
    }
}

fn name(id: &str) -> String {
    format!("providers/kvs/streams/{id}")
}

/// A watch of `id` through `channel`, once its initial state has come.
async fn watch(channel: &Channel, id: &str) -> tonic::Streaming<pb::WatchStreamResponse> {
    let mut watch = StreamServiceClient::new(channel.clone())
        .watch_stream(pb::WatchStreamRequest { name: name(id) })
        .await
        .unwrap()
        .into_inner();
    let initial = watch.message().await.unwrap().unwrap();
    assert_eq!(initial.change_type, ChangeType::Initial as i32);
    watch
}

/// Waits for the change that gives `id` the tag `key` = `value`, within `bound`.
async fn until_tagged(
    watch: &mut tonic::Streaming<pb::WatchStreamResponse>,
    key: &str,
    value: &str,
    bound: Duration,
) {
    tokio::time::timeout(bound, async {
        loop {
            let change = watch.message().await.unwrap().expect("the watch goes on");
            assert_eq!(change.change_type, ChangeType::Updated as i32);
            if change.stream.unwrap().tags.get(key).map(String::as_str) == Some(value) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the change was not seen within {bound:?}"));
}

/// GetStream of `id` through `channel`, with a deadline of `timeout`.
async fn get(
    channel: &Channel,
    id: &str,
    max_staleness: Option<prost_types::Duration>,
    timeout: Duration,
) -> Result<pb::Stream, tonic::Status> {
    let mut request = tonic::Request::new(pb::GetStreamRequest {
        name: name(id),
        max_staleness,
    });
    request.set_timeout(timeout);
    StreamServiceClient::new(channel.clone())
        .get_stream(request)
        .await
        .map(tonic::Response::into_inner)
}

/// The fake's records of `action` on the stream `id`.
fn calls(fleet: &Fleet, action: &str, id: &str) -> Vec<Recorded> {
    fleet
        .fake()
        .requests_of(action)
        .into_iter()
        .filter(|r| r.stream.as_deref() == Some(id))
        .collect()
}

/// The most calls that started within `window` of each other.
fn most_within(calls: &[Recorded], window: Duration) -> usize {
    calls
        .iter()
        .map(|first| {
            calls
                .iter()
                .filter(|c| c.at >= first.at && c.at - first.at < window)
                .count()
        })
        .max()
        .unwrap_or(0)
}

fn ms_since_epoch(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn timestamp_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

#[tokio::test]
async fn a_hundred_watchers_on_three_replicas_cost_one_read_per_interval() {
    let fleet = Fleet::start(3, &polling_every(EVERY)).await;
    fleet.fake().add_stream("watched");
    let started = Instant::now();
    let fleet = &fleet;
    let open = (0..100).map(|i| watch(&fleet.channels[i % 3], "watched"));
    let mut watches = futures::future::join_all(open).await;
    tokio::time::sleep_until((started + Duration::from_secs(10)).into()).await;
    // A change made in KVS reaches all 100, on every replica, within two intervals.
    fleet.fake().set_tag("watched", "seen", "yes");
    let seen = watches
        .iter_mut()
        .map(|watch| until_tagged(watch, "seen", "yes", 2 * EVERY));
    futures::future::join_all(seen).await;
    tokio::time::sleep_until((started + Duration::from_secs(20)).into()).await;
    for action in ["describeStream", "listTagsForStream"] {
        let calls = calls(fleet, action, "watched");
        eprintln!(
            "{action}: {} calls of the watched stream in 20 s",
            calls.len()
        );
        assert!(calls.iter().all(|c| !c.throttled), "{action} throttled");
        // The initial read and the first poll may come close together; after them, one read
        // per interval (a tenth of it allowed for the timers' jitter), whoever makes it.
        let polls = calls.get(2..).unwrap_or_default();
        assert!(
            most_within(polls, EVERY * 9 / 10) <= 1,
            "{action}: two reads within one interval: {:?}",
            calls.iter().map(|c| c.at - started).collect::<Vec<_>>()
        );
        assert!(
            calls.len() <= 22,
            "{action}: {} reads in 20 intervals",
            calls.len()
        );
    }
}

#[tokio::test]
async fn two_hundred_readers_on_three_replicas_are_all_answered() {
    let fleet = Fleet::start(3, &Extra::default()).await;
    fleet.fake().add_stream("read");
    let fleet = &fleet;
    let reads = (0..200).map(|i| get(&fleet.channels[i % 3], "read", None, Duration::from_secs(5)));
    for answer in futures::future::join_all(reads).await {
        assert_eq!(answer.expect("every reader is answered").name, name("read"));
    }
    let describes = calls(fleet, "describeStream", "read");
    eprintln!(
        "{} DescribeStream calls of the stream, at most {} within one second, {} throttled",
        describes.len(),
        most_within(&describes, Duration::from_secs(1)),
        describes.iter().filter(|c| c.throttled).count()
    );
    assert!(most_within(&describes, Duration::from_secs(1)) <= 5);
}

#[tokio::test]
async fn the_lease_of_a_killed_poller_is_taken_over() {
    let mut fleet = Fleet::start(3, &polling_every(EVERY)).await;
    fleet.fake().add_stream("kept");
    let mut watches = Vec::new();
    for i in 0..3 {
        for _ in 0..2 {
            watches.push((i, watch(&fleet.channels[i], "kept").await));
        }
    }
    tokio::time::sleep(2 * EVERY).await;
    let holder_key = calls(&fleet, "describeStream", "kept")
        .last()
        .expect("the stream is polled")
        .access_key
        .clone();
    let holder = (0..3)
        .find(|&i| Fleet::access_key(i) == holder_key)
        .expect("a replica polls");
    fleet.kill(holder);
    let killed = Instant::now();
    fleet.fake().set_tag("kept", "after", "kill");
    // The lease lasts three intervals: another replica polls within four.
    for (_, watch) in watches.iter_mut().filter(|(i, _)| *i != holder) {
        until_tagged(watch, "after", "kill", 6 * EVERY).await;
    }
    let after: Vec<_> = calls(&fleet, "describeStream", "kept")
        .into_iter()
        .filter(|c| c.at > killed)
        .collect();
    assert!(!after.is_empty());
    assert!(after.iter().all(|c| c.access_key != holder_key));
}

#[tokio::test]
async fn a_caller_accepting_staleness_is_answered_from_the_shared_read() {
    // One poll of the watched stream, then none for a minute.
    let fleet = Fleet::start(2, &polling_every(Duration::from_secs(60))).await;
    fleet.fake().add_stream("stale");
    let _watch = watch(&fleet.channels[0], "stale").await;
    let describes = calls(&fleet, "describeStream", "stale").len();
    let asked = ms_since_epoch(SystemTime::now());
    let minute = prost_types::Duration {
        seconds: 60,
        nanos: 0,
    };
    let stale = get(
        &fleet.channels[1],
        "stale",
        Some(minute),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(stale.name, name("stale"));
    assert!(timestamp_ms(stale.read_time.as_ref().expect("a read time")) <= asked);
    assert_eq!(calls(&fleet, "describeStream", "stale").len(), describes);
    // Without it: a read started after the call arrived.
    let fresh = get(&fleet.channels[1], "stale", None, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(timestamp_ms(fresh.read_time.as_ref().expect("a read time")) >= asked);
    assert_eq!(
        calls(&fleet, "describeStream", "stale").len(),
        describes + 1
    );
    // Negative or absurd staleness is refused.
    for (seconds, nanos) in [(-1, 0), (0, -5), (3601, 0), (1, 1_000_000_000)] {
        let bad = prost_types::Duration { seconds, nanos };
        let refused = get(
            &fleet.channels[1],
            "stale",
            Some(bad),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&refused), ["max_staleness"]);
    }
}

#[tokio::test]
async fn a_watch_waits_for_its_initial_read_no_longer_than_its_bound() {
    let kvs = KvsFake::start().await;
    for i in 0..10 {
        kvs.fake.add_stream(&format!("queued-{i}"));
    }
    kvs.fake.add_stream("watched");
    let config = format!(
        "[[providers]]\nid = \"kvs\"\nkind = \"kinesis-video\"\nregion = \"us-east-1\"\n\
         endpoint_url = \"{}\"\nwatch_poll_interval = \"500ms\"\n\
         [providers.outbound_limits]\ndescribe_stream = 1\n",
        kvs.url
    );
    let server =
        TestServer::start_configured("watch_initial_read_timeout = \"2s\"\n", &config, &AWS_ENV)
            .await;
    // Ten readers hold the next ten turns of the account's DescribeStream limit (one a second).
    let channel = server.channel.clone();
    let queued = tokio::spawn(async move {
        let ids: Vec<String> = (0..10).map(|i| format!("queued-{i}")).collect();
        let reads = ids
            .iter()
            .map(|id| get(&channel, id, None, Duration::from_secs(30)));
        futures::future::join_all(reads).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let refused = server
        .streams()
        .watch_stream(pb::WatchStreamRequest {
            name: name("watched"),
        })
        .await
        .expect_err("no turn before the bound");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(reason(&refused), "PROVIDER_THROTTLED");
    let retry = refused.get_details_retry_info().expect("RetryInfo");
    assert!(retry.retry_delay.is_some_and(|d| d > Duration::ZERO));
    for answer in queued.await.unwrap() {
        answer.unwrap();
    }
}

#[tokio::test]
async fn one_process_answers_max_staleness_from_its_poller() {
    let kvs = KvsFake::start().await;
    kvs.fake.add_stream("solo");
    let config = format!(
        "[[providers]]\nid = \"kvs\"\nkind = \"kinesis-video\"\nregion = \"us-east-1\"\n\
         endpoint_url = \"{}\"\nwatch_poll_interval = \"60s\"\n",
        kvs.url
    );
    let server = TestServer::start_env(&config, &AWS_ENV).await;
    let _watch = watch(&server.channel, "solo").await;
    let describes = kvs.fake.requests_of("describeStream").len();
    let asked = ms_since_epoch(SystemTime::now());
    let minute = prost_types::Duration {
        seconds: 60,
        nanos: 0,
    };
    let stale = get(
        &server.channel,
        "solo",
        Some(minute),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(timestamp_ms(stale.read_time.as_ref().expect("a read time")) <= asked);
    assert_eq!(kvs.fake.requests_of("describeStream").len(), describes);
    // A list is read anew, whatever staleness its caller accepts.
    let list = |max_staleness| pb::ListStreamsRequest {
        parent: "providers/kvs".into(),
        max_staleness,
        ..Default::default()
    };
    let listed = server
        .streams()
        .list_streams(list(Some(minute)))
        .await
        .unwrap()
        .into_inner();
    let read_time = listed.streams[0].read_time.as_ref().expect("a read time");
    assert!(timestamp_ms(read_time) >= asked);
    let negative = prost_types::Duration {
        seconds: -60,
        nanos: 0,
    };
    let refused = server
        .streams()
        .list_streams(list(Some(negative)))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&refused), ["max_staleness"]);
}

#[tokio::test]
async fn without_their_listener_replicas_follow_the_stored_reads_each_interval() {
    let fleet = Fleet::start(2, &polling_every(EVERY)).await;
    fleet.fake().add_stream("followed");
    let mut watches = vec![
        watch(&fleet.channels[0], "followed").await,
        watch(&fleet.channels[1], "followed").await,
    ];
    // The replicas' pools open the connections they will use meanwhile, while they can.
    for channel in &fleet.channels {
        let reads = (0..20).map(|_| get(channel, "followed", None, Duration::from_secs(5)));
        futures::future::join_all(reads).await;
    }
    // Every listener cut, and kept from listening again: no replica hears a notice.
    let (server, _) = fleet.postgres.url.rsplit_once('/').unwrap();
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/template1"))
        .await
        .unwrap();
    sqlx::query("ALTER DATABASE postgres WITH ALLOW_CONNECTIONS false")
        .execute(&mut admin)
        .await
        .unwrap();
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'streamgate-listener'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(cut, [true, true]);
    tokio::time::sleep(EVERY).await;
    // The replica that does not poll reads the stored row every interval instead.
    fleet.fake().set_tag("followed", "heard", "no");
    for watch in &mut watches {
        until_tagged(watch, "heard", "no", 3 * EVERY).await;
    }
    sqlx::query("ALTER DATABASE postgres WITH ALLOW_CONNECTIONS true")
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn polling_goes_on_while_any_replica_watches_and_stops_after_the_last() {
    let fleet = Fleet::start(2, &polling_every(EVERY)).await;
    fleet.fake().add_stream("handed");
    let first = watch(&fleet.channels[0], "handed").await;
    let mut second = watch(&fleet.channels[1], "handed").await;
    // The first replica's watcher leaves: the other's still sees changes.
    drop(first);
    tokio::time::sleep(2 * EVERY).await;
    fleet.fake().set_tag("handed", "still", "watched");
    until_tagged(&mut second, "still", "watched", 2 * EVERY).await;
    // The last watcher leaves: within two intervals nobody polls the stream any more.
    drop(second);
    tokio::time::sleep(2 * EVERY).await;
    let polls = calls(&fleet, "describeStream", "handed").len();
    tokio::time::sleep(3 * EVERY).await;
    assert_eq!(calls(&fleet, "describeStream", "handed").len(), polls);
}
