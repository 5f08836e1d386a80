//! Issue 19's scenarios ("the fleet"): replicas of the gateway on one throwaway PostgreSQL, with
//! a `kinesis-video` provider on the KVS wire-level fake made to enforce KVS's published
//! quotas, each replica signing its calls with its own access key so the fake's records say
//! which replica called.
//!
//! - Watchers: for 1, 100, 1,000 and 10,000 WatchStream callers of one stream, and 10,000 over
//!   100 streams, spread round robin over the replicas, the DescribeStream and
//!   ListTagsForStream calls of the watched streams the provider got over a measured window
//!   (scaled to a minute), how many were throttled, how many watchers got their initial state
//!   and how many were ended by an error.
//! - Quota: closed-loop GetStream demand (DescribeStream of many streams, tags not read) above
//!   the account's 300/s DescribeStream quota on replica A, then on replica B only: the calls
//!   per second the provider answered in each phase against the quota, how long after the move
//!   B's calls over the last second reached 80% of it, and the throttled calls.
//!
//! The replicas run what the rest of the harness runs (the release binary under `cargo bench`),
//! configured with keys that exist today only: the same scenario measures the code before and
//! after the fleet-wide poller and quotas are built.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamgate::pb;
use streamgate::pb::stream_service_client::StreamServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::kvs_fake::{KvsFake, Recorded, RunningKvsFake};
use crate::postgres::Postgres;
use crate::procs::{self, SERVER_CORE, Server};
use crate::report::Checks;
use crate::{API_KEY, auth, authed, connect};

/// KVS's DescribeStream quota per account (calls per second), which the fake enforces.
const DESCRIBE_QUOTA: f64 = 300.0;
/// WatchStream calls per HTTP/2 connection.
const WATCHERS_PER_CONNECTION: usize = 100;
/// How long each caller of the quota scenario gives a GetStream call.
const CALL_DEADLINE: Duration = Duration::from_secs(2);

/// How big the fleet scenarios are.
pub struct FleetSize {
    /// Whether this is the measured run (pinned, full sizes) rather than the smoke test.
    pub full: bool,
    /// How many replicas.
    pub replicas: usize,
    /// The kvs provider's `watch_poll_interval`.
    pub poll: Duration,
    /// The measured window of each watchers row.
    pub window: Duration,
    /// The watchers rows: (streams, watchers).
    pub rows: Vec<(usize, usize)>,
    /// How long a watcher may take to get its initial state.
    pub initial_timeout: Duration,
    /// How long the demand stays on each replica.
    pub phase: Duration,
    /// Concurrent GetStream callers of the demand.
    pub demand: usize,
    /// The streams the demand reads, round robin.
    pub quota_streams: usize,
}

impl FleetSize {
    pub fn full() -> Self {
        FleetSize {
            full: true,
            replicas: 2,
            poll: Duration::from_secs(2),
            window: Duration::from_secs(20),
            rows: vec![(1, 1), (1, 100), (1, 1_000), (1, 10_000), (100, 10_000)],
            initial_timeout: Duration::from_secs(60),
            phase: Duration::from_secs(10),
            demand: 64,
            quota_streams: 200,
        }
    }

    pub fn smoke() -> Self {
        FleetSize {
            full: false,
            replicas: 2,
            poll: Duration::from_secs(1),
            window: Duration::from_secs(1),
            rows: vec![(1, 10), (3, 12)],
            initial_timeout: Duration::from_secs(10),
            phase: Duration::from_millis(500),
            demand: 8,
            quota_streams: 200,
        }
    }
}

/// The replicas, their store and the fake they call.
struct Fleet {
    replicas: Vec<Server>,
    kvs: RunningKvsFake,
    _postgres: Postgres,
    _dir: tempfile::TempDir,
}

/// The access key replica `i` signs its KVS calls with.
fn access_key(i: usize) -> String {
    format!("AKIDBENCHREPLICA{i}")
}

/// `d` as a configuration duration: `2s`, or `500ms`.
fn duration_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The replicas' configuration: the bench principal, the shared store, `kvs` as shipped (tags
/// read) polled every `poll`, and `kvs-describe` on the same account with reads of one
/// DescribeStream (`read_tags = false`), for the quota scenario.
fn config_text(store: &str, kvs: &str, poll: Duration) -> String {
    use sha2::Digest;
    let hash: String = sha2::Sha256::digest(API_KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        r#"[server]
drain_timeout = "2s"
max_streams_per_principal = 20000
max_in_flight_per_principal = 100000

[store]
url = "{store}"

[auth]
mode = "api-key"
public = ["grpc.health.v1.Health"]

[[auth.api_keys]]
principal = "bench"
sha256 = "{hash}"

[[authorization]]
principal = "bench"
methods = ["StreamService/*", "ProviderService/*", "OperationService/*"]

[rate_limits]
per_second = 1000000

[[providers]]
id = "kvs"
kind = "kinesis-video"
region = "us-east-1"
endpoint_url = "{kvs}"
watch_poll_interval = "{poll}"

[[providers]]
id = "kvs-describe"
kind = "kinesis-video"
region = "us-east-1"
endpoint_url = "{kvs}"
read_tags = false
"#,
        poll = duration_text(poll)
    )
}

impl Fleet {
    async fn start(size: &FleetSize) -> Fleet {
        let postgres = Postgres::start();
        let kvs = KvsFake::start().await;
        kvs.fake.enforce_quotas();
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("replica.toml");
        std::fs::write(&config, config_text(&postgres.url, &kvs.url, size.poll))
            .expect("write config");
        let binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_streamgate"));
        let mut replicas = Vec::new();
        // One after another: the first creates the store's tables.
        for i in 0..size.replicas {
            let env = [
                ("AWS_ACCESS_KEY_ID".to_string(), access_key(i)),
                (
                    "AWS_SECRET_ACCESS_KEY".to_string(),
                    "streamgate-test-secret".to_string(),
                ),
                ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
            ];
            let core = size.full.then_some(SERVER_CORE);
            replicas.push(procs::gateway(&binary, &config, dir.path(), &env, core).await);
        }
        Fleet {
            replicas,
            kvs,
            _postgres: postgres,
            _dir: dir,
        }
    }

    /// The replica that signed `record`, by its access key.
    fn replica_of(&self, record: &Recorded) -> Option<usize> {
        (0..self.replicas.len()).find(|&i| record.access_key == access_key(i))
    }
}

/// Records a check of the smoke test. At full size the same facts are figures of the code
/// measured (today's, before issue 19's fleet-wide poller and quotas: throttled calls, watchers
/// ended by an error), shown in the tables rather than failing the run.
fn check(size: &FleetSize, checks: &mut Checks, what: &str, ok: bool, detail: String) {
    if !size.full {
        checks.expect(what, ok, detail);
    }
}

/// Runs the fleet scenarios; returns the markdown of their tables.
pub async fn run(size: &FleetSize, checks: &mut Checks) -> Vec<String> {
    let fleet = Fleet::start(size).await;
    let mut lines = vec![
        format!(
            "#### Provider reads while watching ({} replicas on one PostgreSQL, watchers round \
             robin over them; `watch_poll_interval = \"{}\"`, tags read; {:.1} s measured \
             after every watcher had its initial state)",
            size.replicas,
            duration_text(size.poll),
            size.window.as_secs_f64()
        ),
        String::new(),
        "| watched | DescribeStream/min | ListTagsForStream/min | reads/min | throttled | \
         initial state | ended by an error | replica RSS MiB |"
            .to_string(),
        "|---|---:|---:|---:|---:|---:|---:|---|".to_string(),
    ];
    for (row, &(streams, watchers)) in size.rows.iter().enumerate() {
        lines.push(watch_row(size, &fleet, row, streams, watchers, checks).await);
        if size.full {
            // The row's pollers stop at their next tick: not in the next row's account budget.
            tokio::time::sleep(size.poll).await;
        }
    }
    lines.push(String::new());
    lines.extend(quota(size, &fleet, checks).await);
    lines
}

/// What happened to the watchers of one row.
#[derive(Default)]
struct Watched {
    /// Got their initial state.
    initial: AtomicUsize,
    /// Ended by an error or the end of the stream before the window closed.
    ended: AtomicUsize,
}

/// One watchers row: opens `watchers` WatchStream calls over `streams` new streams, waits for
/// their initial states, counts the provider's calls of those streams over the window.
async fn watch_row(
    size: &FleetSize,
    fleet: &Fleet,
    row: usize,
    streams: usize,
    watchers: usize,
    checks: &mut Checks,
) -> String {
    let names: Vec<String> = (0..streams).map(|s| format!("fleet{row}w{s}")).collect();
    for name in &names {
        fleet.kvs.fake.add_stream(name);
    }
    let began = Instant::now();
    let replicas = fleet.replicas.len();
    let mut channels = Vec::new();
    for replica in &fleet.replicas {
        let n = watchers
            .div_ceil(replicas)
            .div_ceil(WATCHERS_PER_CONNECTION);
        channels.push(connect(replica.addr, n.max(1)).await);
    }
    let watched = Arc::new(Watched::default());
    let stop = CancellationToken::new();
    let opening = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(watchers);
    let auth = auth();
    for w in 0..watchers {
        let (replica, nth) = (w % replicas, w / replicas);
        let channel = channels[replica][nth / WATCHERS_PER_CONNECTION].clone();
        let request = authed(
            pb::WatchStreamRequest {
                name: format!("providers/kvs/streams/{}", names[w % streams]),
            },
            &auth,
        );
        let (watched, stop, opening) = (Arc::clone(&watched), stop.clone(), Arc::clone(&opening));
        let timeout = size.initial_timeout;
        tasks.push(tokio::spawn(async move {
            let permit = opening.acquire_owned().await.expect("semaphore");
            let open = async {
                let mut stream = StreamServiceClient::new(channel)
                    .watch_stream(request)
                    .await
                    .ok()?
                    .into_inner();
                stream.message().await.ok().flatten().map(|_| stream)
            };
            let Ok(Some(mut stream)) = tokio::time::timeout(timeout, open).await else {
                return;
            };
            drop(permit);
            watched.initial.fetch_add(1, Ordering::Relaxed);
            loop {
                tokio::select! {
                    message = stream.message() => match message {
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => {
                            watched.ended.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    },
                    () = stop.cancelled() => return,
                }
            }
        }));
    }
    // Every watcher has its initial state, or gave up waiting for it.
    let open_deadline = Instant::now() + size.initial_timeout + Duration::from_secs(5);
    while watched.initial.load(Ordering::Relaxed) < watchers && Instant::now() < open_deadline {
        if tasks.iter().all(|t| t.is_finished()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let opened_in = began.elapsed();
    let from = Instant::now();
    tokio::time::sleep(size.window).await;
    let to = Instant::now();
    let rss: Vec<String> = fleet
        .replicas
        .iter()
        .map(|r| format!("{:.1}", r.rss_mib()))
        .collect();
    let ended = watched.ended.load(Ordering::Relaxed);
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    drop(channels);

    let names: HashSet<&str> = names.iter().map(String::as_str).collect();
    let records: Vec<Recorded> = fleet
        .kvs
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.at >= began && r.stream.as_deref().is_some_and(|s| names.contains(s)))
        .collect();
    let in_window = |action: &str| {
        records
            .iter()
            .filter(|r| r.action == action && r.at >= from && r.at < to)
            .count()
    };
    let per_minute = 60.0 / (to - from).as_secs_f64();
    let describes = in_window("describeStream");
    let tags = in_window("listTagsForStream");
    let throttled = records.iter().filter(|r| r.throttled).count();
    let initial = watched.initial.load(Ordering::Relaxed);
    let what = format!(
        "{watchers} watcher{} of {streams} stream{}",
        if watchers == 1 { "" } else { "s" },
        if streams == 1 { "" } else { "s" }
    );
    eprintln!(
        "  fleet: {what}: {describes} DescribeStream and {tags} ListTagsForStream in {:.1} s, \
         {throttled} throttled, {initial} initial states in {:.1} s, {ended} ended",
        (to - from).as_secs_f64(),
        opened_in.as_secs_f64()
    );
    check(
        size,
        checks,
        &format!("fleet: {what}: every watcher got its initial state"),
        initial == watchers,
        format!("{initial} of {watchers}"),
    );
    check(
        size,
        checks,
        &format!("fleet: {what}: no watcher ended by an error"),
        ended == 0,
        format!("{ended} of {watchers} ended"),
    );
    // Each watched stream is polled: at least one DescribeStream of each in the window.
    let unpolled = names
        .iter()
        .filter(|&&name| {
            !records.iter().any(|r| {
                r.action == "describeStream"
                    && r.at >= from
                    && r.at < to
                    && r.stream.as_deref() == Some(name)
            })
        })
        .count();
    check(
        size,
        checks,
        &format!("fleet: {what}: every watched stream was polled in the window"),
        unpolled == 0,
        format!("{unpolled} of {streams} streams not read"),
    );
    format!(
        "| {what} | {:.0} | {:.0} | {:.0} | {throttled} | {initial} of {watchers} in {:.1} s | \
         {ended} | {} |",
        describes as f64 * per_minute,
        tags as f64 * per_minute,
        (describes + tags) as f64 * per_minute,
        opened_in.as_secs_f64(),
        rss.join(", ")
    )
}

/// How the demand's calls were answered.
#[derive(Default)]
struct Answers {
    ok: AtomicUsize,
    /// RESOURCE_EXHAUSTED: refused by the gateway's limiter (PROVIDER_THROTTLED).
    refused: AtomicUsize,
    /// Any other answer, by gRPC code.
    other: Mutex<BTreeMap<String, usize>>,
}

impl Answers {
    fn others(&self) -> usize {
        lock(&self.other).values().sum()
    }

    /// e.g. `1033 OK, 0 refused RESOURCE_EXHAUSTED, 40 other (DeadlineExceeded 40)`.
    fn describe(&self) -> String {
        let other = lock(&self.other);
        let mut text = format!(
            "{} OK, {} refused RESOURCE_EXHAUSTED, {} other",
            self.ok.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            other.values().sum::<usize>()
        );
        if !other.is_empty() {
            let codes: Vec<String> = other.iter().map(|(c, n)| format!("{c} {n}")).collect();
            text += &format!(" ({})", codes.join(", "));
        }
        text
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Closed-loop GetStream calls of `streams` (round robin), `workers` at a time through
/// `channels`, until `until`.
async fn demand(
    channels: Vec<Channel>,
    workers: usize,
    streams: Arc<Vec<String>>,
    until: Instant,
) -> Answers {
    let answers = Arc::new(Answers::default());
    let next = Arc::new(AtomicUsize::new(0));
    let auth = auth();
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let channel = channels[w % channels.len()].clone();
        let (answers, next, streams, auth) = (
            Arc::clone(&answers),
            Arc::clone(&next),
            Arc::clone(&streams),
            auth.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut client = StreamServiceClient::new(channel);
            while Instant::now() < until {
                let n = next.fetch_add(1, Ordering::Relaxed) % streams.len();
                let mut request = authed(
                    pb::GetStreamRequest {
                        name: format!("providers/kvs-describe/streams/{}", streams[n]),
                        ..Default::default()
                    },
                    &auth,
                );
                request.set_timeout(CALL_DEADLINE);
                match client.get_stream(request).await {
                    Ok(_) => {
                        answers.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        answers.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(s) => {
                        *lock(&answers.other)
                            .entry(format!("{:?}", s.code()))
                            .or_default() += 1;
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    Arc::try_unwrap(answers).unwrap_or_default()
}

/// The quota scenario: demand on replica A, then moved to replica B.
async fn quota(size: &FleetSize, fleet: &Fleet, checks: &mut Checks) -> Vec<String> {
    let streams: Arc<Vec<String>> = Arc::new(
        (0..size.quota_streams)
            .map(|s| format!("fleetq{s}"))
            .collect(),
    );
    for name in streams.iter() {
        fleet.kvs.fake.add_stream(name);
    }
    let (a, b) = (0, 1);
    let a_channels = connect(fleet.replicas[a].addr, 4).await;
    let b_channels = connect(fleet.replicas[b].addr, 4).await;
    let start = Instant::now();
    let moved = start + size.phase;
    let end = moved + size.phase;
    let on_a = tokio::spawn(demand(a_channels, size.demand, Arc::clone(&streams), moved));
    tokio::time::sleep_until(moved.into()).await;
    let on_b = tokio::spawn(demand(b_channels, size.demand, Arc::clone(&streams), end));
    let answers_a = on_a.await.expect("demand on A");
    let answers_b = on_b.await.expect("demand on B");
    let finished = Instant::now();

    let names: HashSet<&str> = streams.iter().map(String::as_str).collect();
    let records: Vec<Recorded> = fleet
        .kvs
        .fake
        .requests()
        .into_iter()
        .filter(|r| {
            r.action == "describeStream"
                && r.at >= start
                && r.stream.as_deref().is_some_and(|s| names.contains(s))
        })
        .collect();
    let count = |replica: Option<usize>, from: Instant, to: Instant, throttled: bool| {
        records
            .iter()
            .filter(|r| {
                r.at >= from
                    && r.at < to
                    && r.throttled == throttled
                    && replica.is_none_or(|i| fleet.replica_of(r) == Some(i))
            })
            .count()
    };
    let phase = size.phase.as_secs_f64();
    let rate_a = count(Some(a), start, moved, false) as f64 / phase;
    let rate_b = count(Some(b), moved, end, false) as f64 / phase;
    let throttled_a = count(None, start, moved, true);
    let throttled_b = count(None, moved, finished + Duration::from_secs(1), true);
    let a_after_move = count(Some(a), moved, finished + Duration::from_secs(1), false);
    let b_before_move = count(Some(b), start, moved, false) + count(Some(b), start, moved, true);
    // When B's answered calls over the last second first reached 80% of the quota.
    let b_calls: Vec<Instant> = records
        .iter()
        .filter(|r| !r.throttled && r.at >= moved && fleet.replica_of(r) == Some(b))
        .map(|r| r.at)
        .collect();
    // The first moment after the move when B's answered calls over the last second were at
    // least `rate`.
    let reached = |rate: f64| {
        let needed = (rate.ceil() as usize).max(1);
        b_calls
            .iter()
            .enumerate()
            .find(|&(i, &at)| {
                i + 1 >= needed
                    && at.duration_since(b_calls[i + 1 - needed]) < Duration::from_secs(1)
            })
            .map(|(_, &at)| at.duration_since(moved))
    };
    let to_80 = reached(DESCRIBE_QUOTA * 0.8);
    // What one replica reached alone, as the mark where it falls short of the quota.
    let to_80_of_a = reached(rate_a * 0.8);
    eprintln!(
        "  fleet quota: A {rate_a:.0}/s ({throttled_a} throttled), B {rate_b:.0}/s \
         ({throttled_b} throttled), B at 80% after {to_80:?}, at 80% of A's rate after \
         {to_80_of_a:?}"
    );
    let after = |d: Option<Duration>| {
        d.map_or("never".to_string(), |d| format!("{:.2} s", d.as_secs_f64()))
    };

    for (label, x) in [("A", &answers_a), ("B", &answers_b)] {
        check(
            size,
            checks,
            &format!("fleet quota: every call on {label} answered OK or PROVIDER_THROTTLED"),
            x.others() == 0 && x.ok.load(Ordering::Relaxed) > 0,
            x.describe(),
        );
    }
    check(
        size,
        checks,
        "fleet quota: one replica alone stays within the quota (no call throttled in phase A)",
        throttled_a == 0,
        format!("{throttled_a} throttled"),
    );
    check(
        size,
        checks,
        "fleet quota: the demand moved (B called only after the move, and did call)",
        b_before_move == 0 && !b_calls.is_empty(),
        format!(
            "B: {b_before_move} calls before the move, {} after",
            b_calls.len()
        ),
    );

    let percent = |rate: f64| rate / DESCRIBE_QUOTA * 100.0;
    vec![
        format!(
            "#### Quota utilisation, demand moved between replicas (DescribeStream, account \
             quota {DESCRIBE_QUOTA:.0}/s enforced by the fake; {} closed-loop GetStream callers \
             over {} streams, {} s deadline, {:.1} s on A then {:.1} s on B)",
            size.demand,
            size.quota_streams,
            CALL_DEADLINE.as_secs(),
            phase,
            phase
        ),
        String::new(),
        "| phase | DescribeStream/s answered by the provider | of the quota | throttled | \
         the callers' calls |"
            .to_string(),
        "|---|---:|---:|---:|---|".to_string(),
        format!(
            "| demand on A | {rate_a:.0} | {:.0}% | {throttled_a} | {} |",
            percent(rate_a),
            answers_a.describe()
        ),
        format!(
            "| moved to B | {rate_b:.0} | {:.0}% | {throttled_b} | {} |",
            percent(rate_b),
            answers_b.describe()
        ),
        String::new(),
        format!(
            "- B's answered calls over the last second reached 80% of the quota {} after the \
             move, and 80% of what A reached alone ({:.0}/s) {} after it; A's calls already \
             waiting at the move reached the provider after it: {a_after_move}",
            after(to_80),
            rate_a * 0.8,
            after(to_80_of_a)
        ),
    ]
}
