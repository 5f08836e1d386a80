//! The servers under test as child processes: the release `streamgate` binary and the bare
//! tonic echo server (this same executable, run with `--echo-server`), each pinned to its own
//! core when the harness pins; their memory read from `/proc/PID/status`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streamgate::pb;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The core the servers run on, and the one the load generator runs on.
pub const SERVER_CORE: u32 = 0;
pub const LOAD_CORE: u32 = 1;

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `program`, run through `taskset -c core` when `core` is given.
pub fn command(program: &Path, core: Option<u32>) -> Command {
    match core {
        Some(core) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Pins the calling thread (and so every thread it starts later) to `core`.
pub fn pin_self(core: u32) {
    let status = Command::new("taskset")
        .args([
            "-p",
            "-c",
            &core.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .expect("taskset (util-linux) is needed to pin the load generator");
    assert!(status.success(), "taskset -p failed");
}

/// A server process, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// From spawn to the first answer of SERVING (gateway) or of a call (echo).
    pub started_in: Duration,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of a process, in KiB: (VmRSS now, VmHWM peak).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU time a process has used (user + system), from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is the first, utime the 12th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

impl Server {
    pub fn cpu(&self) -> Duration {
        cpu_time(self.child.id())
    }

    pub fn rss_mib(&self) -> f64 {
        memory_kib(self.child.id()).0 as f64 / 1024.0
    }

    pub fn peak_mib(&self) -> f64 {
        memory_kib(self.child.id()).1 as f64 / 1024.0
    }
}

async fn try_connect(addr: SocketAddr) -> Option<Channel> {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .ok()
}

async fn serving(addr: SocketAddr) -> bool {
    let Some(channel) = try_connect(addr).await else {
        return false;
    };
    HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status == ServingStatus::Serving as i32)
}

async fn echoing(addr: SocketAddr) -> bool {
    let Some(channel) = try_connect(addr).await else {
        return false;
    };
    pb::provider_service_client::ProviderServiceClient::new(channel)
        .get_provider(pb::GetProviderRequest {
            name: "providers/echo".into(),
        })
        .await
        .is_ok()
}

/// Polls every millisecond until `ready` says so; panics with the log after 20 s.
async fn wait_ready<F, Fut>(child: &mut Child, log: &Path, ready: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if ready().await {
            return started.elapsed();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "server exited with {status}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "server not ready after 20 s: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Starts the gateway binary with `config` in `dir` and waits for health SERVING.
pub async fn gateway(
    binary: &Path,
    config: &Path,
    dir: &Path,
    env: &[(String, String)],
    core: Option<u32>,
) -> Server {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let log = dir.join(format!("gateway-{}.log", addr.port()));
    let mut child = command(binary, core)
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(addr.to_string())
        .env_remove("STREAMGATE_CONFIG")
        .env_remove("STREAMGATE_LISTEN")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn streamgate");
    let started_in = wait_ready(&mut child, &log, || serving(addr)).await;
    Server {
        child,
        addr,
        started_in,
    }
}

/// Starts the bare tonic echo server (this executable with `--echo-server ADDR`).
pub async fn echo(dir: &Path, core: Option<u32>) -> Server {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let log = dir.join("echo.log");
    let exe = std::env::current_exe().expect("current exe");
    let mut child = command(&exe, core)
        .arg("--echo-server")
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn the echo server");
    let started_in = wait_ready(&mut child, &log, || echoing(addr)).await;
    Server {
        child,
        addr,
        started_in,
    }
}
