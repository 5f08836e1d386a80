//! The performance harness of streamgate (issue 7): every scenario in one run, printed as a
//! markdown table with the targets.
//!
//! `cargo bench --bench gateway` (what `scripts/bench` runs) measures in full: the servers are
//! separate processes pinned to core 0 — the release `streamgate` binary, and the bare tonic
//! echo server of the baseline (this executable run with `--echo-server ADDR`) — and this
//! process, the load generator, is pinned to core 1 with the fakes and the OTLP receiver it
//! hosts. Under `cargo test` (no `--bench` argument) it is a smoke test of a few seconds: every
//! scenario at a tiny size, unpinned, checking that each call succeeded and that the VOD batch
//! made exactly the calls it should.
//!
//! Scenarios: (a) the echo baseline; (b) GetProvider through the full middleware stack (API
//! key, rate limits above the load, tracing exported in batches over OTLP to a local receiver,
//! Prometheus metrics); (c) GetStream on `local`; (d) CreateStream → WaitOperation →
//! DeleteStream cycles on `local` with SQLite; (e) KVS DescribeStream on the wire-level fake,
//! through the gateway and straight from the SDK; (f) BatchDeleteStreams of VOD streams under
//! the default 50 QPS DeleteStream limit; start-up time, idle RSS, and RSS with open
//! WatchStream subscribers (of `local` streams, then of polled KVS streams). (a) and (b) are
//! also driven by `h2load` when it is installed. Then issue 19's fleet scenarios (`fleet.rs`):
//! provider reads while watching, and quota utilisation with the demand moved between
//! replicas. `run` calls one function per scenario, in the order (a), start-up, (b), (c)–(f),
//! watchers, fleet, then assembles the report.
//!
//! Environment: `BENCH_SECONDS` (measured seconds per closed-loop run, default 5);
//! `BENCH_ONLY=fleet` (measured run only) runs the watchers and the fleet scenarios alone.
//! For profiling a gateway by hand: `--otlp-receiver` runs only the OTLP receiver (it prints
//! its endpoint); `--cycles ADDR N [C]` drives N create/wait/delete cycles against a gateway.

#[allow(dead_code)]
#[path = "../../tests/support/kvs_fake.rs"]
mod kvs_fake;
#[allow(dead_code)]
#[path = "../../tests/fakes/vod.rs"]
mod vod_fake;
// The fleet's throwaway PostgreSQL (and the test certificates its TLS mode takes).
#[allow(dead_code)]
#[path = "../../tests/support/pki.rs"]
mod pki;
#[allow(dead_code)]
#[path = "../../tests/support/postgres.rs"]
mod postgres;

mod echo;
mod fleet;
mod h2load;
mod load;
mod otlp;
mod procs;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sha2::Digest;
use streamgate::pb;
use streamgate::pb::operation_service_client::OperationServiceClient;
use streamgate::pb::provider_service_client::ProviderServiceClient;
use streamgate::pb::stream_service_client::StreamServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use fleet::FleetSize;
use load::{Load, Plan};
use procs::{LOAD_CORE, SERVER_CORE, Server, free_port};
use report::{Checks, Report, Row};

/// The gateway's allocator (src/main.rs), so that the echo baseline, which runs from this
/// executable, is measured with the same one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// (e)'s provider latency in its second run: the low end of a KVS control-plane call made
/// from the same AWS region (an assumption; no real endpoint is reachable from here).
const KVS_LATENCY: Duration = Duration::from_millis(10);
/// The bench principal's API key (its SHA-256 is in the gateway's config).
const API_KEY: &str = "bench-key-5f2c9a17d4e8";
/// The VOD fake's AccessKey.
const VOD_KEY_ID: &str = "LTAIbench";
const VOD_SECRET: &str = "bench-vod-secret";

/// How big each scenario is: full measurement, or the smoke test under `cargo test`.
struct Size {
    full: bool,
    plan: Plan,
    connections: usize,
    high: usize,
    low: usize,
    cycles: usize,
    kvs_streams: usize,
    kvs_every: Duration,
    videos: usize,
    per_video: usize,
    watch_streams: usize,
    watchers: usize,
    startups: usize,
    fleet: FleetSize,
}

impl Size {
    fn full() -> Self {
        let seconds = std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5);
        Size {
            full: true,
            plan: Plan {
                warmup: Duration::from_secs(1),
                measure: Duration::from_secs(seconds),
            },
            connections: 4,
            high: 64,
            low: 16,
            cycles: 32,
            kvs_streams: 100,
            kvs_every: Duration::from_millis(5),
            videos: 10,
            per_video: 100,
            watch_streams: 100,
            watchers: 10_000,
            startups: 5,
            fleet: FleetSize::full(),
        }
    }

    fn smoke() -> Self {
        Size {
            full: false,
            plan: Plan {
                warmup: Duration::from_millis(100),
                measure: Duration::from_millis(300),
            },
            connections: 2,
            high: 8,
            low: 4,
            cycles: 4,
            kvs_streams: 50,
            kvs_every: Duration::from_millis(5),
            videos: 2,
            per_video: 30,
            watch_streams: 4,
            watchers: 200,
            startups: 1,
            fleet: FleetSize::smoke(),
        }
    }

    fn core(&self, core: u32) -> Option<u32> {
        self.full.then_some(core)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--echo-server") {
        let addr = args
            .get(2)
            .and_then(|a| a.parse().ok())
            .expect("--echo-server ADDR");
        echo::serve(addr);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--otlp-receiver") {
        // For profiling a gateway by hand: a receiver that prints its endpoint and runs until
        // killed.
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let receiver = otlp::Receiver::start().await;
            println!("{}", receiver.endpoint);
            std::future::pending::<()>().await;
        });
        return;
    }
    if args.get(1).map(String::as_str) == Some("--cycles") {
        // For profiling a gateway by hand: `--cycles ADDR N [C]` runs N create/wait/delete
        // cycles, C (default 4) at a time, against the gateway at ADDR (the bench's API key).
        let addr: std::net::SocketAddr = args
            .get(2)
            .and_then(|a| a.parse().ok())
            .expect("--cycles ADDR N");
        let n: u64 = args
            .get(3)
            .and_then(|a| a.parse().ok())
            .expect("--cycles ADDR N");
        let c: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(4);
        let runtime = streamgate::runtime::build(0).expect("runtime");
        runtime.block_on(async {
            let channel = connect(addr, 1).await.remove(0);
            let auth = auth();
            let started = Instant::now();
            let mut workers = Vec::new();
            for w in 0..c {
                let (channel, auth) = (channel.clone(), auth.clone());
                workers.push(tokio::spawn(async move {
                    let mut failed = 0;
                    for i in (w..n).step_by(c as usize) {
                        if !cycle(
                            channel.clone(),
                            &auth,
                            &format!("p{}x{i}", std::process::id()),
                        )
                        .await
                        {
                            failed += 1;
                        }
                    }
                    failed
                }));
            }
            let mut failed = 0;
            for worker in workers {
                failed += worker.await.expect("worker");
            }
            println!(
                "{n} cycles, {failed} failed, {:.0} cycles/s",
                n as f64 / started.elapsed().as_secs_f64()
            );
        });
        return;
    }
    let size = if args.iter().any(|a| a == "--bench") {
        procs::pin_self(LOAD_CORE);
        Size::full()
    } else {
        Size::smoke()
    };
    // `BENCH_ONLY=fleet`: issue 19's scenarios only (the measured run; the smoke test runs all).
    let only_fleet = match std::env::var("BENCH_ONLY").as_deref() {
        Ok("fleet") => size.full,
        Ok("") | Err(_) => false,
        Ok(other) => panic!("BENCH_ONLY={other:?}: the one subset is `fleet`"),
    };
    // The load generator runs on the gateway's kind of runtime too: pinned to one core, the
    // current-thread scheduler, which writes the requests of several calls in one `writev`.
    let runtime = streamgate::runtime::build(0).expect("runtime");
    let checks = if only_fleet {
        runtime.block_on(run_fleet(size))
    } else {
        runtime.block_on(run(size))
    };
    println!("{}", checks.summary());
    if checks.failed() > 0 {
        std::process::exit(1);
    }
}

/// The gateway's configuration: the full stack and the three provider kinds under test.
fn config_text(dir: &Path, metrics_port: u16, kvs_url: &str, vod_url: &str) -> String {
    let hash: String = sha2::Sha256::digest(API_KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        r#"[server]
drain_timeout = "2s"
# One principal stands for every caller of the load: the per-caller bounds are lifted so
# the watchers and the concurrent calls are measured, not refused.
max_streams_per_principal = 20000
max_in_flight_per_principal = 100000

[store]
url = "sqlite://{dir}/sg.db"

[telemetry]
log_filter = "info"
metrics_listen = "127.0.0.1:{metrics_port}"

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
id = "local"
kind = "local"
create_delay = "0s"

[[providers]]
id = "kvs"
kind = "kinesis-video"
region = "us-east-1"
endpoint_url = "{kvs_url}"
read_tags = false

[[providers]]
id = "vod"
kind = "aliyun-vod"
region = "cn-shanghai"
endpoint_url = "{vod_url}"
access_key_id = "{VOD_KEY_ID}"
access_key_secret = "{VOD_SECRET}"
"#,
        dir = dir.display()
    )
}

/// What every gateway process of the run is started with.
#[derive(Clone)]
struct GatewaySetup {
    binary: PathBuf,
    kvs_url: String,
    vod_url: String,
    env: Vec<(String, String)>,
    core: Option<u32>,
}

/// A gateway process with its own directory (store, config, log).
struct Gateway {
    server: Server,
    metrics: u16,
    _dir: tempfile::TempDir,
}

impl GatewaySetup {
    async fn start(&self) -> Gateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let metrics = free_port();
        let config = dir.path().join("streamgate.toml");
        std::fs::write(
            &config,
            config_text(dir.path(), metrics, &self.kvs_url, &self.vod_url),
        )
        .expect("write config");
        let server = procs::gateway(&self.binary, &config, dir.path(), &self.env, self.core).await;
        Gateway {
            server,
            metrics,
            _dir: dir,
        }
    }
}

fn auth() -> MetadataValue<Ascii> {
    format!("Bearer {API_KEY}").parse().expect("header value")
}

fn authed<T>(message: T, auth: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", auth.clone());
    request
}

async fn connect(addr: std::net::SocketAddr, n: usize) -> Vec<Channel> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .expect("connect"),
        );
    }
    channels
}

/// One GetProvider call of `providers/local` (the same request for the echo server and the
/// gateway); whether it succeeded.
fn get_provider(
    channel: Channel,
    auth: &MetadataValue<Ascii>,
) -> impl std::future::Future<Output = bool> + Send + use<> {
    let request = authed(
        pb::GetProviderRequest {
            name: "providers/local".into(),
        },
        auth,
    );
    async move {
        ProviderServiceClient::new(channel)
            .get_provider(request)
            .await
            .is_ok()
    }
}

/// Closed-loop GetProvider calls (the same request for the echo server and the gateway).
async fn get_provider_load(channels: &[Channel], concurrency: usize, plan: Plan) -> Load {
    let auth = auth();
    load::closed(channels, concurrency, plan, move |channel, _, _| {
        get_provider(channel, &auth)
    })
    .await
}

/// How often each of `low` paced callers calls in the (a)/(b) rows below saturation: 16 callers
/// every 4 ms offer 4,000 calls/s, under a third of what the gateway serves at 16.
const CALLER_PACE: Duration = Duration::from_millis(4);

fn callers_label(callers: usize) -> String {
    format!(
        "{callers} callers, 1 every {} ms each",
        CALLER_PACE.as_millis()
    )
}

/// GetProvider from `callers` paced callers over `channels` (see [`load::paced_callers`]).
async fn get_provider_callers(channels: &[Channel], callers: usize, plan: Plan) -> Load {
    let auth = auth();
    load::paced_callers(channels, callers, CALLER_PACE, plan, move |channel, _| {
        get_provider(channel, &auth)
    })
    .await
}

/// GetProvider calls one at a time, one every millisecond: the latency of a call that never
/// queues behind another.
async fn get_provider_paced(channel: &Channel, plan: Plan) -> Load {
    let auth = auth();
    load::paced(Duration::from_millis(1), plan, |_| {
        get_provider(channel.clone(), &auth)
    })
    .await
}

/// The server's CPU time per call of `load`, in microseconds.
fn cpu_per_call(cpu: Duration, calls: f64) -> Option<f64> {
    (calls > 0.0).then(|| cpu.as_secs_f64() * 1e6 / calls)
}

/// Runs `work` and returns its load with the server's CPU time per call.
async fn with_cpu(
    server: &Server,
    work: impl std::future::Future<Output = Load>,
) -> (Load, Option<f64>) {
    let before = server.cpu();
    let load = work.await;
    let cpu = cpu_per_call(server.cpu() - before, load.all_calls as f64);
    (load, cpu)
}

/// Samples a process's RSS every 50 ms while `work` runs; returns its result and the peak.
async fn with_rss_peak<T>(pid: u32, work: impl std::future::Future<Output = T>) -> (T, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak));
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(procs::memory_kib(pid).0, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let result = work.await;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    (result, peak.load(Ordering::Relaxed) as f64 / 1024.0)
}

/// GetProvider calls with grpc-status OK, from the gateway's Prometheus endpoint.
async fn ok_get_provider_calls(metrics: u16) -> f64 {
    let text = match reqwest::get(format!("http://127.0.0.1:{metrics}/metrics")).await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => return 0.0,
    };
    text.lines()
        .filter(|l| l.starts_with("streamgate_rpc_requests_total{"))
        .filter(|l| l.contains("rpc_method=\"GetProvider\"") && l.contains("grpc_code=\"OK\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What every scenario shares: its size, the checks and the report it adds to, and h2load's
/// work directory and request body.
struct Bench {
    size: Size,
    checks: Checks,
    report: Report,
    work: tempfile::TempDir,
    body: PathBuf,
    use_h2load: bool,
}

impl Bench {
    fn new(size: Size) -> Self {
        let mut report = Report::new(size.full);
        let work = tempfile::tempdir().expect("temp dir");
        let body = h2load::write_body(
            &work.path().join("get_provider.bin"),
            &pb::GetProviderRequest {
                name: "providers/local".into(),
            },
        );
        let use_h2load = size.full && h2load::available();
        if size.full && !use_h2load {
            report.note("h2load is not installed (apt-get install nghttp2-client): no h2load rows");
        }
        Bench {
            size,
            checks: Checks::default(),
            report,
            work,
            body,
            use_h2load,
        }
    }

    /// The h2load runs of one server at 64 and 16 concurrent calls.
    fn h2load_rows(&mut self, label: &str, server: &Server) -> Vec<h2load::H2load> {
        let mut runs = Vec::new();
        let size = &self.size;
        for concurrency in [size.high, size.low] {
            let log = self
                .work
                .path()
                .join(format!("h2load-{label}-{concurrency}.log"));
            let cpu = server.cpu();
            let run = h2load::run(
                server.addr,
                "/streamgate.v1.ProviderService/GetProvider",
                &self.body,
                &[format!("authorization: Bearer {API_KEY}")],
                size.connections,
                concurrency / size.connections,
                size.plan.warmup,
                size.plan.measure,
                size.core(LOAD_CORE),
                &log,
            );
            let cpu = server.cpu() - cpu;
            let calls = run.rate * (size.plan.warmup + size.plan.measure).as_secs_f64();
            self.report.row(Row {
                cpu_us: cpu_per_call(cpu, calls),
                scenario: format!("{label}, h2load"),
                concurrency: concurrency.to_string(),
                rate: run.rate,
                p50: run.ms(0.5),
                p99: run.ms(0.99),
                p999: run.ms(0.999),
                rss: Some(server.rss_mib()),
                note: format!(
                    "{} answered, {} failed (HTTP level)",
                    run.succeeded, run.failed
                ),
            });
            runs.push(run);
        }
        runs
    }
}

/// Every scenario in order, then the memory and start-up lines and the targets.
async fn run(size: Size) -> Checks {
    let mut bench = Bench::new(size);
    let echo = echo_baseline(&mut bench).await;
    let fakes = Fakes::start(&bench.size).await;
    let (startup_median, startup_max) = startups(&fakes.setup, bench.size.startups).await;

    let gateway = fakes.setup.start().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = gateway.server.rss_mib();
    let channels = connect(gateway.server.addr, bench.size.connections).await;
    let stack = full_stack(&mut bench, &gateway, &channels).await;
    sampled_stack(&mut bench, &fakes.setup, &echo.loads).await;
    let get_stream = get_stream_local(&mut bench, &gateway, &channels).await;
    let cycles = create_wait_delete(&mut bench, &gateway, &channels).await;
    let kvs = kvs_describe(&mut bench, &gateway, &channels, &fakes.kvs).await;
    let batch = vod_batch_delete(&mut bench, &gateway, &channels, &fakes.vod).await;
    let spans = fakes.receiver.spans();
    drop(channels);
    drop(gateway);

    // Open WatchStream subscribers, on a fresh gateway: of `local` streams, then of polled KVS
    // streams.
    let (watch_idle, watch_rss) = watchers(&mut bench, &fakes, Watched::Local).await;
    let (kvs_idle, kvs_rss) = watchers(&mut bench, &fakes, Watched::Kvs).await;
    let fleet = fleet::run(&bench.size.fleet, &mut bench.checks).await;
    let Bench {
        size,
        checks,
        mut report,
        ..
    } = bench;

    report.memory(idle, stack.peak_rss);
    report.watchers_local(watch_idle, watch_rss, size.watchers);
    report.watchers_kvs(kvs_idle, kvs_rss, size.watchers);
    report.section(fleet);
    report.startup(startup_median, startup_max, size.startups);
    report.note(&format!(
        "OTLP receiver got {spans} spans from the gateway's batch exporter during the run"
    ));
    report.targets(report::Figures {
        baseline: &echo.loads,
        full_stack: &stack.loads,
        echo_h2: &echo.h2,
        echo_paced: &echo.paced,
        stack_paced: &stack.paced,
        echo_callers: &echo.callers,
        stack_callers: &stack.callers,
        stack_h2: &stack.h2,
        high: size.high,
        low: size.low,
        get_stream: &get_stream,
        cycles: &cycles,
        direct: &kvs.near.0,
        via: &kvs.near.1,
        direct_far: &kvs.far.0,
        via_far: &kvs.far.1,
        far: KVS_LATENCY,
        exact: batch.exact,
        wall: batch.wall,
        floor: batch.floor,
        idle,
        under_b: stack.peak_rss,
        startup: startup_max,
    });
    report.print();
    checks
}

/// Issue 19's scenarios only (`BENCH_ONLY=fleet`): the watchers' RSS, of `local` and of polled
/// KVS streams, and the fleet's provider reads and quota utilisation.
async fn run_fleet(size: Size) -> Checks {
    let mut bench = Bench::new(size);
    let fakes = Fakes::start(&bench.size).await;
    let (watch_idle, watch_rss) = watchers(&mut bench, &fakes, Watched::Local).await;
    let (kvs_idle, kvs_rss) = watchers(&mut bench, &fakes, Watched::Kvs).await;
    let fleet = fleet::run(&bench.size.fleet, &mut bench.checks).await;
    let Bench {
        size,
        checks,
        mut report,
        ..
    } = bench;
    report.watchers_local(watch_idle, watch_rss, size.watchers);
    report.watchers_kvs(kvs_idle, kvs_rss, size.watchers);
    report.section(fleet);
    report.print();
    checks
}

/// GetProvider loads of one server: closed loops by concurrency, one call at a time, paced
/// callers, and h2load's runs.
struct GetProviderLoads {
    loads: BTreeMap<usize, Load>,
    paced: Load,
    callers: Load,
    h2: Vec<h2load::H2load>,
}

/// (a) The baseline: a bare tonic server, no middleware.
async fn echo_baseline(bench: &mut Bench) -> GetProviderLoads {
    let size = &bench.size;
    let echo = procs::echo(bench.work.path(), size.core(SERVER_CORE)).await;
    let channels = connect(echo.addr, size.connections).await;
    let mut loads = BTreeMap::new();
    for concurrency in [size.high, size.low] {
        let (load, cpu_us) =
            with_cpu(&echo, get_provider_load(&channels, concurrency, size.plan)).await;
        bench
            .checks
            .calls(&format!("(a) echo at {concurrency}"), &load);
        bench.report.row(Row {
            cpu_us,
            ..Row::closed(
                "(a) bare tonic echo",
                concurrency,
                &load,
                Some(echo.rss_mib()),
            )
        });
        loads.insert(concurrency, load);
    }
    let paced = get_provider_paced(&channels[0], size.plan).await;
    bench.report.row(Row {
        concurrency: "1 every 1 ms".into(),
        ..Row::closed("(a) bare tonic echo", 1, &paced, Some(echo.rss_mib()))
    });
    let callers = get_provider_callers(&channels, size.low, size.plan).await;
    bench.report.row(Row {
        concurrency: callers_label(size.low),
        ..Row::closed(
            "(a) bare tonic echo",
            size.low,
            &callers,
            Some(echo.rss_mib()),
        )
    });
    let h2 = if bench.use_h2load {
        bench.h2load_rows("(a) bare tonic echo", &echo)
    } else {
        Vec::new()
    };
    GetProviderLoads {
        loads,
        paced,
        callers,
        h2,
    }
}

/// The fakes and the OTLP receiver, which live in this process, and how the gateways that
/// use them are started.
struct Fakes {
    receiver: otlp::Receiver,
    kvs: kvs_fake::RunningKvsFake,
    vod: vod_fake::FakeVod,
    setup: GatewaySetup,
}

impl Fakes {
    async fn start(size: &Size) -> Self {
        let receiver = otlp::Receiver::start().await;
        let kvs = kvs_fake::KvsFake::start().await;
        let vod = vod_fake::FakeVod::start().await;
        vod.add_key(VOD_KEY_ID, VOD_SECRET, None);
        let setup = GatewaySetup {
            binary: PathBuf::from(env!("CARGO_BIN_EXE_streamgate")),
            kvs_url: kvs.url.clone(),
            vod_url: vod.url(),
            env: vec![
                ("AWS_ACCESS_KEY_ID".into(), "AKIDSTREAMGATETEST".into()),
                (
                    "AWS_SECRET_ACCESS_KEY".into(),
                    "streamgate-test-secret".into(),
                ),
                ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                    receiver.endpoint.clone(),
                ),
            ],
            core: size.core(SERVER_CORE),
        };
        Fakes {
            receiver,
            kvs,
            vod,
            setup,
        }
    }
}

/// Start-up to health SERVING, `n` times, each on a fresh store: the median and the slowest.
async fn startups(setup: &GatewaySetup, n: usize) -> (Duration, Duration) {
    let mut startups = Vec::new();
    for _ in 0..n {
        startups.push(setup.start().await.server.started_in);
    }
    startups.sort();
    (startups[startups.len() / 2], startups[startups.len() - 1])
}

/// (b)'s loads, with the gateway's peak RSS under them.
struct FullStack {
    loads: BTreeMap<usize, Load>,
    paced: Load,
    callers: Load,
    h2: Vec<h2load::H2load>,
    peak_rss: f64,
}

/// (b) GetProvider through the full stack.
async fn full_stack(bench: &mut Bench, gateway: &Gateway, channels: &[Channel]) -> FullStack {
    let size = &bench.size;
    let pid = gateway.server.child.id();
    let mut loads = BTreeMap::new();
    let mut peak_rss: f64 = 0.0;
    for concurrency in [size.high, size.low] {
        let ((load, cpu_us), peak) = with_rss_peak(
            pid,
            with_cpu(
                &gateway.server,
                get_provider_load(channels, concurrency, size.plan),
            ),
        )
        .await;
        peak_rss = peak_rss.max(peak);
        bench
            .checks
            .calls(&format!("(b) GetProvider at {concurrency}"), &load);
        bench.report.row(Row {
            cpu_us,
            ..Row::closed(
                "(b) GetProvider, full stack",
                concurrency,
                &load,
                Some(peak),
            )
        });
        loads.insert(concurrency, load);
    }
    let callers = get_provider_callers(channels, size.low, size.plan).await;
    bench
        .checks
        .calls("(b) GetProvider, paced callers", &callers);
    bench.report.row(Row {
        concurrency: callers_label(size.low),
        ..Row::closed(
            "(b) GetProvider, full stack",
            size.low,
            &callers,
            Some(gateway.server.rss_mib()),
        )
    });
    let paced = get_provider_paced(&channels[0], size.plan).await;
    bench.checks.calls("(b) GetProvider one at a time", &paced);
    bench.report.row(Row {
        concurrency: "1 every 1 ms".into(),
        ..Row::closed(
            "(b) GetProvider, full stack",
            1,
            &paced,
            Some(gateway.server.rss_mib()),
        )
    });
    let h2 = if bench.use_h2load {
        let before = ok_get_provider_calls(gateway.metrics).await;
        let runs = bench.h2load_rows("(b) GetProvider, full stack", &gateway.server);
        let ok = ok_get_provider_calls(gateway.metrics).await - before;
        let answered: u64 = runs.iter().map(|r| r.succeeded).sum();
        bench.report.note(&format!(
            "h2load (b): the gateway counted {ok:.0} GetProvider calls with grpc-status OK for \
             {answered} HTTP answers (warm-up included)"
        ));
        peak_rss = peak_rss.max(gateway.server.peak_mib());
        runs
    } else {
        Vec::new()
    };
    FullStack {
        loads,
        paced,
        callers,
        h2,
        peak_rss,
    }
}

/// (b) again on a gateway configured as a busy production one would be: 1% of traces
/// sampled (parent-based, so a sampled caller's trace stays whole) and warnings only in the
/// log (no access line per call). Context for the tracked (b) ÷ (a) ratio, not its setup.
async fn sampled_stack(bench: &mut Bench, setup: &GatewaySetup, baseline: &BTreeMap<usize, Load>) {
    let size = &bench.size;
    let mut env = setup.env.clone();
    env.extend([
        (
            "OTEL_TRACES_SAMPLER".to_string(),
            "parentbased_traceidratio".to_string(),
        ),
        ("OTEL_TRACES_SAMPLER_ARG".to_string(), "0.01".to_string()),
        ("STREAMGATE_LOG".to_string(), "warn".to_string()),
    ]);
    let lean = GatewaySetup {
        env,
        ..setup.clone()
    }
    .start()
    .await;
    let lean_channels = connect(lean.server.addr, size.connections).await;
    let (load, cpu_us) = with_cpu(
        &lean.server,
        get_provider_load(&lean_channels, size.high, size.plan),
    )
    .await;
    bench
        .checks
        .calls("(b) GetProvider, 1% sampled, warn logs", &load);
    bench.report.note(&format!(
        "(b) at {} with 1% of traces sampled and log filter `warn` (context): {:.0} calls/s \
         = {:.2} × (a)",
        size.high,
        load.rate(),
        load.rate() / baseline[&size.high].rate()
    ));
    bench.report.row(Row {
        cpu_us,
        ..Row::closed(
            "(b) GetProvider, 1% of traces sampled, log filter warn",
            size.high,
            &load,
            Some(lean.server.rss_mib()),
        )
    });
}

/// (c) GetStream on `local`.
async fn get_stream_local(bench: &mut Bench, gateway: &Gateway, channels: &[Channel]) -> Load {
    let size = &bench.size;
    let auth = auth();
    let created = StreamServiceClient::new(channels[0].clone())
        .create_stream(authed(
            pb::CreateStreamRequest {
                parent: "providers/local".into(),
                stream_id: "bench-get".into(),
                ..Default::default()
            },
            &auth,
        ))
        .await
        .expect("create the GetStream target")
        .into_inner();
    finish(&channels[0], created, &auth).await;
    let (get_stream, get_stream_cpu) = with_cpu(
        &gateway.server,
        load::closed(channels, size.high, size.plan, move |channel, _, _| {
            let request = authed(
                pb::GetStreamRequest {
                    name: "providers/local/streams/bench-get".into(),
                    ..Default::default()
                },
                &auth,
            );
            async move {
                StreamServiceClient::new(channel)
                    .get_stream(request)
                    .await
                    .is_ok()
            }
        }),
    )
    .await;
    bench.checks.calls("(c) GetStream", &get_stream);
    bench.report.row(Row {
        cpu_us: get_stream_cpu,
        ..Row::closed(
            "(c) GetStream, local",
            size.high,
            &get_stream,
            Some(gateway.server.rss_mib()),
        )
    });
    get_stream
}

/// (d) CreateStream → WaitOperation → DeleteStream cycles.
async fn create_wait_delete(bench: &mut Bench, gateway: &Gateway, channels: &[Channel]) -> Load {
    let size = &bench.size;
    let auth = auth();
    let (cycles, cycles_cpu) = with_cpu(
        &gateway.server,
        load::closed(
            channels,
            size.cycles,
            size.plan,
            move |channel, worker, n| {
                let auth = auth.clone();
                async move { cycle(channel, &auth, &format!("w{worker}n{n}")).await }
            },
        ),
    )
    .await;
    bench.checks.calls("(d) create/wait/delete cycles", &cycles);
    bench.report.row(Row {
        cpu_us: cycles_cpu,
        note: "cycles/s; latency and CPU of a whole cycle (3 calls)".into(),
        ..Row::closed(
            "(d) create→wait→delete, local, SQLite",
            size.cycles,
            &cycles,
            Some(gateway.server.rss_mib()),
        )
    });
    cycles
}

/// (e)'s two runs, each straight from the SDK and through the gateway.
struct KvsLoads {
    /// The fake answering at once.
    near: (Load, Load),
    /// The fake answering after [`KVS_LATENCY`].
    far: (Load, Load),
}

/// (e) KVS DescribeStream on the fake: straight from the SDK, and through the gateway.
async fn kvs_describe(
    bench: &mut Bench,
    gateway: &Gateway,
    channels: &[Channel],
    kvs: &kvs_fake::RunningKvsFake,
) -> KvsLoads {
    let size = &bench.size;
    let auth = auth();
    let kvs_names: Vec<String> = (0..size.kvs_streams).map(|i| format!("kvs-{i}")).collect();
    for name in &kvs_names {
        kvs.fake.add_stream(name);
    }
    let client = kvs_fake::kvs_client(&kvs.url);
    // Twice: the fake answering at once (what the gateway adds, as a ratio to a loopback
    // call), then as a provider endpoint KVS_LATENCY away would.
    let mut e_loads = Vec::new();
    for latency in [Duration::ZERO, KVS_LATENCY] {
        kvs.fake.set_latency(latency);
        let direct = load::paced(size.kvs_every, size.plan, |n| {
            let client = client.clone();
            let name = kvs_names[n as usize % kvs_names.len()].clone();
            async move {
                client
                    .describe_stream()
                    .stream_name(name)
                    .send()
                    .await
                    .is_ok()
            }
        })
        .await;
        let (via, via_cpu) = with_cpu(
            &gateway.server,
            load::paced(size.kvs_every, size.plan, |n| {
                let request = authed(
                    pb::GetStreamRequest {
                        name: format!(
                            "providers/kvs/streams/{}",
                            kvs_names[n as usize % kvs_names.len()]
                        ),
                        ..Default::default()
                    },
                    &auth,
                );
                let channel = channels[0].clone();
                async move {
                    StreamServiceClient::new(channel)
                        .get_stream(request)
                        .await
                        .is_ok()
                }
            }),
        )
        .await;
        let away = if latency.is_zero() {
            String::new()
        } else {
            format!(", provider {} ms away", latency.as_millis())
        };
        for (label, load, cpu_us) in [
            (
                format!("(e) KVS DescribeStream, SDK direct{away}"),
                &direct,
                None,
            ),
            (
                format!("(e) KVS GetStream via gateway{away}"),
                &via,
                via_cpu,
            ),
        ] {
            bench.checks.calls(&label, load);
            bench.report.row(Row {
                cpu_us,
                concurrency: format!("1 every {} ms", size.kvs_every.as_millis()),
                note: format!("{} streams, round robin", size.kvs_streams),
                ..Row::closed(&label, 1, load, None)
            });
        }
        if !latency.is_zero() {
            // The fake's latency is in every call, or the row measures something else.
            bench.checks.expect(
                "(e) every call through the gateway took the provider's latency",
                via.ms(0.0) >= latency.as_secs_f64() * 1e3,
                format!("fastest call {:.3} ms", via.ms(0.0)),
            );
        }
        e_loads.push((direct, via));
    }
    kvs.fake.set_latency(Duration::ZERO);
    let far = e_loads.pop().expect("the far run");
    let near = e_loads.pop().expect("the near run");
    KvsLoads { near, far }
}

/// What (f) found: whether each video got exactly its DeleteStream calls, the batch's wall
/// time, and the 50 QPS quota's floor under it in seconds.
struct Batch {
    exact: bool,
    wall: Duration,
    floor: f64,
}

/// (f) A batch delete of VOD streams under the 50 QPS DeleteStream limit.
async fn vod_batch_delete(
    bench: &mut Bench,
    gateway: &Gateway,
    channels: &[Channel],
    vod: &vod_fake::FakeVod,
) -> Batch {
    let size = &bench.size;
    let auth = auth();
    let mut names = Vec::new();
    for v in 0..size.videos {
        let video = format!("video{v:02}");
        let jobs: Vec<String> = (0..size.per_video)
            .map(|j| format!("job{v:02}x{j:04}"))
            .collect();
        let refs: Vec<&str> = jobs.iter().map(String::as_str).collect();
        vod.add_video(&video, &refs);
        names.extend(
            jobs.iter()
                .map(|j| format!("providers/vod/videos/{video}/streams/{j}")),
        );
    }
    let before = vod.requests().len();
    let started = Instant::now();
    let op = StreamServiceClient::new(channels[0].clone())
        .batch_delete_streams(authed(
            pb::BatchDeleteStreamsRequest {
                parent: "providers/vod".into(),
                names: names.clone(),
                ..Default::default()
            },
            &auth,
        ))
        .await
        .expect("BatchDeleteStreams")
        .into_inner();
    let op = finish(&channels[0], op, &auth).await;
    let wall = started.elapsed();
    let deleted = match &op.result {
        Some(pb::operation::Result::BatchDeleteStreams(r)) => {
            r.results.iter().filter(|r| r.error.is_none()).count()
        }
        _ => 0,
    };
    let requests = vod.requests().split_off(before);
    let mut per_video: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for r in &requests {
        let entry = per_video
            .entry(r.param("VideoId").unwrap_or_default().to_string())
            .or_default();
        match r.action() {
            "DeleteStream" => entry.0 += 1,
            "GetPlayInfo" => entry.1 += 1,
            _ => {}
        }
    }
    let expected = size.per_video.div_ceil(20);
    let delete_calls: usize = per_video.values().map(|c| c.0).sum();
    let play_info_calls: usize = per_video.values().map(|c| c.1).sum();
    let exact = per_video.len() == size.videos && per_video.values().all(|c| c.0 == expected);
    let floor = delete_calls as f64 / 50.0;
    bench.checks.expect(
        "(f) VOD batch: every stream deleted",
        deleted == names.len(),
        format!("{deleted} of {}", names.len()),
    );
    bench.checks.expect(
        "(f) VOD batch: ⌈streams per video / 20⌉ DeleteStream calls per video",
        exact,
        format!("{per_video:?}, expected {expected} DeleteStream each"),
    );
    bench.report.row(Row {
        scenario: "(f) VOD BatchDeleteStreams".into(),
        concurrency: format!("{} streams, {} videos", names.len(), size.videos),
        rate: delete_calls as f64 / wall.as_secs_f64(),
        p50: wall.as_secs_f64() * 1e3,
        p99: f64::NAN,
        p999: f64::NAN,
        rss: Some(gateway.server.rss_mib()),
        cpu_us: None,
        note: format!(
            "wall {:.3} s vs quota floor {floor:.3} s ({:.1}%); DeleteStream {delete_calls} \
             ({}/video), GetPlayInfo {play_info_calls}; rate column = DeleteStream calls/s, \
             p50 column = wall ms",
            wall.as_secs_f64(),
            (wall.as_secs_f64() / floor - 1.0) * 100.0,
            per_video
                .values()
                .map(|c| c.0.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    });
    Batch { exact, wall, floor }
}

/// Waits for `op` to be done (WaitOperation) unless it already is.
async fn finish(
    channel: &Channel,
    op: pb::Operation,
    auth: &MetadataValue<Ascii>,
) -> pb::Operation {
    if op.done {
        return op;
    }
    OperationServiceClient::new(channel.clone())
        .wait_operation(authed(
            pb::WaitOperationRequest {
                name: op.name,
                timeout: Some(prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }),
            },
            auth,
        ))
        .await
        .expect("WaitOperation")
        .into_inner()
}

/// One CreateStream → WaitOperation → DeleteStream cycle; whether each step succeeded.
async fn cycle(channel: Channel, auth: &MetadataValue<Ascii>, id: &str) -> bool {
    let mut streams = StreamServiceClient::new(channel.clone());
    let Ok(created) = streams
        .create_stream(authed(
            pb::CreateStreamRequest {
                parent: "providers/local".into(),
                stream_id: id.to_string(),
                ..Default::default()
            },
            auth,
        ))
        .await
    else {
        return false;
    };
    let Ok(waited) = OperationServiceClient::new(channel)
        .wait_operation(authed(
            pb::WaitOperationRequest {
                name: created.into_inner().name,
                timeout: Some(prost_types::Duration {
                    seconds: 10,
                    nanos: 0,
                }),
            },
            auth,
        ))
        .await
    else {
        return false;
    };
    let waited = waited.into_inner();
    if !matches!(waited.result, Some(pb::operation::Result::Stream(_))) {
        return false;
    }
    let Ok(deleted) = streams
        .delete_stream(authed(
            pb::DeleteStreamRequest {
                name: format!("providers/local/streams/{id}"),
                ..Default::default()
            },
            auth,
        ))
        .await
    else {
        return false;
    };
    let deleted = deleted.into_inner();
    deleted.done && !matches!(deleted.result, Some(pb::operation::Result::Error(_)))
}

/// The streams the watchers scenario watches.
#[derive(Clone, Copy, PartialEq)]
enum Watched {
    /// `local` streams, created through the gateway: changes are pushed, nothing polls.
    Local,
    /// Streams on the KVS fake: one poller per watched stream reads it every
    /// `watch_poll_interval` (default 2 s).
    Kvs,
}

/// Opens `size.watchers` WatchStream calls on a fresh gateway; returns its RSS before and with
/// them open, and checks that each got its initial message.
async fn watchers(bench: &mut Bench, fakes: &Fakes, watched: Watched) -> (f64, f64) {
    let size = &bench.size;
    let gateway = fakes.setup.start().await;
    let auth = auth();
    let per_connection = 100;
    let channels = connect(
        gateway.server.addr,
        size.watchers.div_ceil(per_connection).max(1),
    )
    .await;
    let (provider, prefix) = match watched {
        Watched::Local => ("local", "watched"),
        Watched::Kvs => ("kvs", "kvswatched"),
    };
    for s in 0..size.watch_streams {
        let id = format!("{prefix}{s}");
        if watched == Watched::Kvs {
            fakes.kvs.fake.add_stream(&id);
            continue;
        }
        let op = StreamServiceClient::new(channels[0].clone())
            .create_stream(authed(
                pb::CreateStreamRequest {
                    parent: "providers/local".into(),
                    stream_id: id,
                    ..Default::default()
                },
                &auth,
            ))
            .await
            .expect("create a watched stream")
            .into_inner();
        finish(&channels[0], op, &auth).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = gateway.server.rss_mib();
    let limit = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tasks = Vec::with_capacity(size.watchers);
    for w in 0..size.watchers {
        let channel = channels[w / per_connection].clone();
        let request = authed(
            pb::WatchStreamRequest {
                name: format!(
                    "providers/{provider}/streams/{prefix}{}",
                    w % size.watch_streams
                ),
            },
            &auth,
        );
        let limit = Arc::clone(&limit);
        tasks.push(tokio::spawn(async move {
            let permit = limit.acquire_owned().await.expect("semaphore");
            let mut stream = StreamServiceClient::new(channel)
                .watch_stream(request)
                .await
                .ok()?
                .into_inner();
            let first = stream.message().await.ok().flatten();
            drop(permit);
            first.map(|_| stream)
        }));
    }
    let mut open = Vec::with_capacity(size.watchers);
    for task in tasks {
        if let Ok(Some(stream)) = task.await {
            open.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let with = gateway.server.rss_mib();
    let opened = open.len();
    drop(open);
    bench.checks.expect(
        &format!("watchers of {provider} streams: every WatchStream got its initial state"),
        opened == size.watchers,
        format!("{opened} of {}", size.watchers),
    );
    (idle, with)
}
