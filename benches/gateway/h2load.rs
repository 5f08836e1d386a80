//! The independent load generator: nghttp2's `h2load` (Debian package nghttp2-client), sending
//! gRPC as plain HTTP/2 — a POST of the 5-byte-prefixed protobuf message with
//! `content-type: application/grpc` and `te: trailers` — and writing each request's latency to
//! a log file, from which the percentiles are read.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hdrhistogram::Histogram;
use prost::Message;

/// What one h2load run reported.
pub struct H2load {
    /// Requests per second over the measured time, as h2load prints it.
    pub rate: f64,
    /// Requests h2load counted as succeeded (HTTP 200: the gRPC status is in the trailers).
    pub succeeded: u64,
    /// Requests that failed or errored.
    pub failed: u64,
    /// Per-request latencies from `--log-file`, in nanoseconds.
    pub latency: Histogram<u64>,
}

impl H2load {
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1e6
    }
}

/// Whether `h2load` is on the PATH.
pub fn available() -> bool {
    Command::new("h2load")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Writes the gRPC body of `message` (uncompressed flag, big-endian length, bytes) to `path`.
pub fn write_body(path: &Path, message: &impl Message) -> PathBuf {
    let bytes = message.encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&u32::try_from(bytes.len()).expect("small").to_be_bytes());
    body.extend_from_slice(&bytes);
    std::fs::write(path, body).expect("write the h2load body");
    path.to_path_buf()
}

fn number_after(text: &str, label: &str) -> Option<f64> {
    let rest = &text[text.find(label)? + label.len()..];
    rest.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .find(|s| !s.is_empty())?
        .parse()
        .ok()
}

/// Runs h2load against `addr{path}` with `connections` × `streams` concurrent calls.
#[allow(clippy::too_many_arguments)]
pub fn run(
    addr: SocketAddr,
    path: &str,
    body: &Path,
    headers: &[String],
    connections: usize,
    streams: usize,
    warmup: Duration,
    measure: Duration,
    core: Option<u32>,
    log: &Path,
) -> H2load {
    let mut command = match core {
        Some(core) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &core.to_string(), "h2load"]);
            c
        }
        None => Command::new("h2load"),
    };
    command
        .arg(format!("--clients={connections}"))
        .arg(format!("--max-concurrent-streams={streams}"))
        .arg("--threads=1")
        .arg(format!("--duration={}", measure.as_secs().max(1)))
        .arg(format!("--warm-up-time={}", warmup.as_secs().max(1)))
        .arg(format!("--data={}", body.display()))
        .arg(format!("--log-file={}", log.display()))
        .args(["--header", "content-type: application/grpc"])
        .args(["--header", "te: trailers"]);
    for header in headers {
        command.args(["--header", header]);
    }
    let output = command
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "h2load failed: {text}");
    let rate = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| number_after(l, "s, "))
        .unwrap_or(0.0);
    let requests = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_default()
        .to_string();
    let succeeded = number_after(&requests, "done, ").unwrap_or(0.0) as u64;
    let failed = number_after(&requests, "succeeded, ").unwrap_or(0.0) as u64
        + number_after(&requests, "failed, ").unwrap_or(0.0) as u64;
    let mut latency = Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds");
    // Columns: start (µs since the epoch), HTTP status, µs until the end of the response.
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        let mut columns = line.split('\t');
        let (_, status, micros) = (columns.next(), columns.next(), columns.next());
        if let (Some("200"), Some(Ok(micros))) = (status, micros.map(str::parse::<u64>)) {
            latency.saturating_record((micros * 1000).max(1));
        }
    }
    H2load {
        rate,
        succeeded,
        failed,
        latency,
    }
}
