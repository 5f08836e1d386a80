//! The gRPC fuzz campaign (docs/fuzzing.md): random and boundary requests to every method the
//! real binary serves — StreamService, OperationService, ProviderService, AuditService, health
//! and reflection — as a granted principal, with no credentials and with a bad token; bodies
//! are messages of boundary values (empty, huge, unicode, control characters, `..`, long masks,
//! extreme numbers and durations), mutated encodings or random bytes; deadlines are none, tiny,
//! short or malformed. It counts calls and codes and fails on a crash (the process exits), a
//! panic in the log, an INTERNAL answer, a hang (no answer by the deadline plus a margin) or a
//! peak RSS above `MAX_PEAK_RSS`.
//!
//! Ignored by `cargo test`: `scripts/fuzz` runs it, for `STREAMGATE_FUZZ_SECONDS` (default 30)
//! with `STREAMGATE_FUZZ_SEED` (default: random, printed) and prints the figures.

mod support;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut};
use prost::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::Digest;
use streamgate::pb;
use support::cloudfront_fake::StreamingFake;
use support::{AWS_ENV, Binary};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// The API key of the granted principal.
const KEY: &str = "fuzz-key-0123456789";
/// The server's deadline for unary calls that send none (the config's `default_deadline`).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// How late past its deadline an answer may come before the call counts as a hang.
const MARGIN: Duration = Duration::from_secs(5);
/// Calls in flight at once.
const WORKERS: usize = 8;
/// The most resident memory the gateway may reach during a campaign.
const MAX_PEAK_RSS: u64 = 512 << 20;

/// Sends and receives message bodies as raw bytes, so that any bytes can be sent.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

/// How a method is called.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Unary,
    ServerStreaming,
    Bidi,
}

/// Every method served, with its shape.
const METHODS: [(&str, Shape); 19] = [
    ("/streamgate.v1.StreamService/CreateStream", Shape::Unary),
    ("/streamgate.v1.StreamService/GetStream", Shape::Unary),
    ("/streamgate.v1.StreamService/ListStreams", Shape::Unary),
    ("/streamgate.v1.StreamService/UpdateStream", Shape::Unary),
    ("/streamgate.v1.StreamService/DeleteStream", Shape::Unary),
    (
        "/streamgate.v1.StreamService/BatchDeleteStreams",
        Shape::Unary,
    ),
    (
        "/streamgate.v1.StreamService/WatchStream",
        Shape::ServerStreaming,
    ),
    (
        "/streamgate.v1.StreamService/GetStreamEndpoints",
        Shape::Unary,
    ),
    ("/streamgate.v1.OperationService/GetOperation", Shape::Unary),
    (
        "/streamgate.v1.OperationService/ListOperations",
        Shape::Unary,
    ),
    (
        "/streamgate.v1.OperationService/WaitOperation",
        Shape::Unary,
    ),
    (
        "/streamgate.v1.OperationService/CancelOperation",
        Shape::Unary,
    ),
    ("/streamgate.v1.ProviderService/ListProviders", Shape::Unary),
    ("/streamgate.v1.ProviderService/GetProvider", Shape::Unary),
    ("/streamgate.v1.AuditService/ListAuditRecords", Shape::Unary),
    ("/grpc.health.v1.Health/Check", Shape::Unary),
    ("/grpc.health.v1.Health/Watch", Shape::ServerStreaming),
    (
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Shape::Bidi,
    ),
    (
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Shape::Bidi,
    ),
];

/// Boundary values, and what the campaign learned (operation names) to aim at.
struct Gen {
    rng: StdRng,
    operations: Arc<Mutex<Vec<String>>>,
}

impl Gen {
    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.rng.random_range(0..from.len())].clone()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    /// A string from the boundaries: empty, dots, slashes, unicode, control characters,
    /// huge, random.
    fn text(&mut self) -> String {
        match self.rng.random_range(0..14) {
            0 => String::new(),
            1 => self
                .pick(&[".", "..", "...", "/", "//", "%2e%2e", "../..", "a/../b"])
                .into(),
            2 => self
                .pick(&[
                    "ストリーム",
                    "é",
                    "\u{202e}evil",
                    "\u{feff}",
                    "😀",
                    "\u{0}",
                    "ß",
                ])
                .into(),
            3 => self
                .pick(&["a\nb", "\r\n", "\0", "\x1b[31m", "\t", "a\u{85}b", "\u{7f}"])
                .into(),
            4 => "a".repeat(self.pick(&[256, 257, 1024, 4097, 65_536])),
            5 if self.chance(0.05) => "x".repeat(1 << 20),
            6 => self
                .pick(&[
                    "cam-0", "cam-1", "cam-2", "EFUZZ1", "EFUZZ2", "local", "rtmp",
                ])
                .into(),
            7 => self
                .pick(&[
                    "*",
                    "\"",
                    "'",
                    "\\",
                    "%",
                    "%00",
                    "=",
                    " AND ",
                    "state = ACTIVE",
                ])
                .into(),
            8 => (0..self.rng.random_range(0..64))
                .map(|_| self.rng.random_range(0x20u8..0x7f) as char)
                .collect(),
            9 => (0..self.rng.random_range(0..32))
                .map(|_| self.rng.random::<char>())
                .collect(),
            _ => format!("id-{}", self.rng.random_range(0..20)),
        }
    }

    fn provider(&mut self) -> String {
        if self.chance(0.8) {
            self.pick(&["local", "rtmp", "nope"]).into()
        } else {
            self.text()
        }
    }

    fn stream_id(&mut self) -> String {
        if self.chance(0.6) {
            self.pick(&[
                "cam-0", "cam-1", "cam-2", "cam-3", "EFUZZ1", "EFUZZ2", "ENONE",
            ])
            .into()
        } else {
            self.text()
        }
    }

    fn parent(&mut self) -> String {
        match self.rng.random_range(0..6) {
            0 => self.text(),
            1 => format!("providers/{}/videos/{}", self.provider(), self.text()),
            _ => format!("providers/{}", self.provider()),
        }
    }

    fn stream_name(&mut self) -> String {
        match self.rng.random_range(0..8) {
            0 => self.text(),
            1 => format!(
                "providers/{}/videos/{}/streams/{}",
                self.provider(),
                self.text(),
                self.stream_id()
            ),
            _ => format!("providers/{}/streams/{}", self.provider(), self.stream_id()),
        }
    }

    fn operation_name(&mut self) -> String {
        let known = self.operations.lock().unwrap().clone();
        if !known.is_empty() && self.chance(0.6) {
            self.pick(&known)
        } else if self.chance(0.5) {
            format!("operations/{}", self.text())
        } else {
            self.text()
        }
    }

    fn int(&mut self) -> i32 {
        self.pick(&[
            i32::MIN,
            -1,
            0,
            1,
            49,
            50,
            1000,
            1001,
            87_600,
            87_601,
            i32::MAX,
        ])
    }

    fn duration(&mut self) -> Option<prost_types::Duration> {
        self.chance(0.8).then(|| prost_types::Duration {
            seconds: self.pick(&[
                i64::MIN,
                -1,
                0,
                1,
                60,
                3600,
                86_400,
                315_576_000_000,
                i64::MAX,
            ]),
            nanos: self.pick(&[i32::MIN, -1, 0, 1, 999_999_999, 1_000_000_000, i32::MAX]),
        })
    }

    fn timestamp(&mut self) -> Option<prost_types::Timestamp> {
        self.chance(0.6).then(|| prost_types::Timestamp {
            seconds: self.pick(&[
                i64::MIN,
                -62_135_596_801,
                -1,
                0,
                1_700_000_000,
                253_402_300_800,
                i64::MAX,
            ]),
            nanos: self.pick(&[i32::MIN, -1, 0, 999_999_999, 1_000_000_000]),
        })
    }

    fn paths(&mut self) -> Vec<String> {
        match self.rng.random_range(0..6) {
            0 => Vec::new(),
            1 => vec!["*".into()],
            2 => (0..self.pick(&[1_000, 100_000]))
                .map(|i| format!("no_such_field_{i}"))
                .collect(),
            3 => vec!["tags".into(); self.pick(&[2, 10_000])],
            _ => (0..self.rng.random_range(1..5))
                .map(|_| {
                    let fields = ["media_type", "device_name", "data_retention_hours", "tags"];
                    let fields =
                        [&fields[..], &["cloudfront.enabled", "cloudfront.comment"]].concat();
                    if self.chance(0.8) {
                        self.pick(&fields).to_string()
                    } else {
                        self.text()
                    }
                })
                .collect(),
        }
    }

    fn tags(&mut self) -> std::collections::HashMap<String, String> {
        let n = self.pick(&[0, 1, 50, 51, 2_000]);
        (0..n)
            .map(|i| {
                if self.chance(0.5) {
                    (format!("k{i}"), "v".into())
                } else {
                    (format!("{}{i}", self.text()), self.text())
                }
            })
            .collect()
    }

    fn stream(&mut self) -> pb::Stream {
        let cloudfront = self.chance(0.3).then(|| {
            pb::stream::Details::Cloudfront(pb::CloudFrontStreamDetails {
                enabled: self.chance(0.5),
                comment: self.text(),
                origin: self.chance(0.7).then(|| pb::CloudFrontOrigin {
                    r#type: self.int(),
                    domain_name: self.text(),
                    origin_path: self.text(),
                    origin_access_identity: self.text(),
                    origin_protocol_policy: self.text(),
                }),
                ..Default::default()
            })
        });
        pb::Stream {
            name: self.stream_name(),
            etag: if self.chance(0.7) {
                String::new()
            } else {
                self.text()
            },
            media_type: if self.chance(0.5) {
                "video/h264".into()
            } else {
                self.text()
            },
            data_retention_hours: self.int(),
            device_name: self.text(),
            kms_key_id: if self.chance(0.7) {
                String::new()
            } else {
                self.text()
            },
            tags: self.tags(),
            details: cloudfront,
            ..Default::default()
        }
    }

    fn request_id(&mut self) -> String {
        match self.rng.random_range(0..4) {
            0 => String::new(),
            1 => format!("req-{}", self.rng.random_range(0..50)),
            _ => self.text(),
        }
    }

    /// A message of boundary values for `method`, encoded.
    fn message(&mut self, method: &str) -> Vec<u8> {
        let name = method.rsplit('/').next().unwrap_or_default();
        match name {
            "CreateStream" => pb::CreateStreamRequest {
                parent: self.parent(),
                stream_id: self.stream_id(),
                stream: self.chance(0.9).then(|| self.stream()),
                request_id: self.request_id(),
                validate_only: self.chance(0.3),
            }
            .encode_to_vec(),
            "GetStream" => pb::GetStreamRequest {
                name: self.stream_name(),
                ..Default::default()
            }
            .encode_to_vec(),
            "WatchStream" => pb::WatchStreamRequest {
                name: self.stream_name(),
            }
            .encode_to_vec(),
            "ListStreams" => pb::ListStreamsRequest {
                parent: self.parent(),
                page_size: self.int(),
                page_token: self.text(),
                filter: self.text(),
                ..Default::default()
            }
            .encode_to_vec(),
            "UpdateStream" => pb::UpdateStreamRequest {
                stream: self.chance(0.95).then(|| self.stream()),
                update_mask: self.chance(0.8).then(|| prost_types::FieldMask {
                    paths: self.paths(),
                }),
                request_id: self.request_id(),
                validate_only: self.chance(0.3),
            }
            .encode_to_vec(),
            "DeleteStream" => pb::DeleteStreamRequest {
                name: self.stream_name(),
                etag: if self.chance(0.7) {
                    String::new()
                } else {
                    self.text()
                },
                allow_missing: self.chance(0.5),
                request_id: self.request_id(),
                validate_only: self.chance(0.3),
            }
            .encode_to_vec(),
            "BatchDeleteStreams" => pb::BatchDeleteStreamsRequest {
                parent: self.parent(),
                names: (0..self.pick(&[0, 1, 3, 100, 1001, 5_000]))
                    .map(|_| self.stream_name())
                    .collect(),
                request_id: self.request_id(),
            }
            .encode_to_vec(),
            "GetStreamEndpoints" => pb::GetStreamEndpointsRequest {
                name: self.stream_name(),
                purposes: (0..self.pick(&[0, 1, 2, 3, 1000]))
                    .map(|_| self.pick(&[0, 1, 2, 3, -1, i32::MAX]))
                    .collect(),
                protocol: self.pick(&[0, 1, 2, 3, 4, 5, -1, i32::MAX]),
                lifetime: self.duration(),
                playback: self.chance(0.5).then(|| pb::PlaybackOptions {
                    mode: self.pick(&[0, 1, 2, 3, -1, 99]),
                    start_time: self.timestamp(),
                    end_time: self.timestamp(),
                }),
                cloudfront: self.chance(0.4).then(|| pb::CloudFrontEndpointOptions {
                    path: self.text(),
                    signed: self.chance(0.5),
                    ip_range: self.text(),
                    start_time: self.timestamp(),
                }),
            }
            .encode_to_vec(),
            "GetOperation" => pb::GetOperationRequest {
                name: self.operation_name(),
            }
            .encode_to_vec(),
            "CancelOperation" => pb::CancelOperationRequest {
                name: self.operation_name(),
            }
            .encode_to_vec(),
            "WaitOperation" => pb::WaitOperationRequest {
                name: self.operation_name(),
                timeout: self.duration(),
            }
            .encode_to_vec(),
            "ListOperations" => pb::ListOperationsRequest {
                page_size: self.int(),
                page_token: self.text(),
                filter: self.text(),
            }
            .encode_to_vec(),
            "ListProviders" => pb::ListProvidersRequest {
                page_size: self.int(),
                page_token: self.text(),
            }
            .encode_to_vec(),
            "GetProvider" => pb::GetProviderRequest {
                name: self.parent(),
            }
            .encode_to_vec(),
            "ListAuditRecords" => pb::ListAuditRecordsRequest {
                page_size: self.int(),
                page_token: self.text(),
                filter: self.text(),
            }
            .encode_to_vec(),
            "Check" | "Watch" => tonic_health::pb::HealthCheckRequest {
                service: if self.chance(0.5) {
                    self.pick(&["", "streamgate.v1.StreamService"]).into()
                } else {
                    self.text()
                },
            }
            .encode_to_vec(),
            // ServerReflectionRequest: file_by_filename = 3, file_containing_symbol = 4,
            // file_containing_extension = 5 (a message: text there is mis-typed), list_services = 7.
            _ => {
                let mut body = Vec::new();
                let text = self.text();
                let field = self.pick(&[3u8, 4, 5, 7]);
                body.push((field << 3) | 2);
                prost::encoding::encode_varint(text.len() as u64, &mut body);
                body.extend_from_slice(text.as_bytes());
                body
            }
        }
    }

    /// A body: a message of boundary values, a mutation of one, or random bytes.
    fn body(&mut self, method: &str) -> Vec<u8> {
        match self.rng.random_range(0..10) {
            0 => {
                let n = self.pick(&[0, 1, 5, 64, 4096]);
                (0..n).map(|_| self.rng.random()).collect()
            }
            1 => {
                let mut body = self.message(method);
                for _ in 0..self.rng.random_range(1..4) {
                    if body.is_empty() {
                        break;
                    }
                    let at = self.rng.random_range(0..body.len());
                    body[at] = self.rng.random();
                }
                if self.chance(0.3) {
                    body.truncate(self.rng.random_range(0..=body.len()));
                }
                body
            }
            _ => self.message(method),
        }
    }

    /// The `grpc-timeout` to send, and how long the server may take to answer.
    fn deadline(&mut self) -> (Option<&'static str>, Duration) {
        let (header, bound) = self.pick(&[
            (None, DEFAULT_DEADLINE),
            (Some("1m"), Duration::from_millis(1)),
            (Some("100m"), Duration::from_millis(100)),
            (Some("2S"), Duration::from_secs(2)),
            (Some("0n"), Duration::ZERO),
            (Some("99999999H"), DEFAULT_DEADLINE),
            (Some("abc"), DEFAULT_DEADLINE),
            (Some("-1S"), DEFAULT_DEADLINE),
        ]);
        (header, bound + MARGIN)
    }
}

/// What the campaign saw.
#[derive(Default)]
struct Tally {
    calls: u64,
    codes: BTreeMap<String, u64>,
    /// Per method and code, for the figures.
    by_method: BTreeMap<(String, String), u64>,
    /// The first message seen of each code and deadline, for the figures.
    samples: BTreeMap<(String, String), String>,
    hangs: Vec<String>,
    internal: Vec<String>,
}

fn write_config(dir: &std::path::Path, fake: &StreamingFake) -> std::path::PathBuf {
    let hash = hex::encode(sha2::Sha256::digest(KEY.as_bytes()));
    let path = dir.join("streamgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndefault_deadline = \"{}s\"\n\
             [store]\nurl = \"sqlite://{}/sg.db\"\n\
             [auth]\nmode = \"api-key\"\n\
             [[auth.api_keys]]\nprincipal = \"fuzzer\"\nsha256 = \"{hash}\"\n\
             [[authorization]]\nprincipal = \"fuzzer\"\nmethods = [\"*\"]\n\
             [[providers]]\nid = \"local\"\nkind = \"local\"\ncreate_delay = \"10ms\"\n\
             [[providers]]\nid = \"rtmp\"\nkind = \"cloudfront-streaming\"\nendpoint_url = \"{}\"\n\
             deploy_poll_interval = \"50ms\"\ndeploy_timeout = \"2s\"\n",
            DEFAULT_DEADLINE.as_secs(),
            dir.display(),
            fake.url()
        ),
    )
    .unwrap();
    path
}

/// One call of `method` with `body`: its code, or `None` when no answer came within `bound`.
async fn call(
    channel: Channel,
    method: &str,
    shape: Shape,
    body: Vec<u8>,
    credentials: Option<&str>,
    deadline: Option<&'static str>,
    bound: Duration,
) -> Option<(Code, Vec<u8>)> {
    let path = http::uri::PathAndQuery::from_str(method).unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let answer = async move {
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut metadata = tonic::metadata::MetadataMap::new();
        if let Some(value) = credentials {
            metadata.insert("authorization", MetadataValue::from_str(value).unwrap());
        }
        if let Some(value) = deadline {
            metadata.insert("grpc-timeout", MetadataValue::from_static(value));
        }
        fn request<T>(metadata: tonic::metadata::MetadataMap, message: T) -> tonic::Request<T> {
            tonic::Request::from_parts(metadata, tonic::Extensions::default(), message)
        }
        match shape {
            Shape::Unary => grpc
                .unary(request(metadata, body), path, Raw)
                .await
                .map(|r| r.into_inner()),
            Shape::ServerStreaming => {
                let response = grpc
                    .server_streaming(request(metadata, body), path, Raw)
                    .await?;
                Ok(response.into_inner().message().await?.unwrap_or_default())
            }
            Shape::Bidi => {
                let one = request(metadata, tokio_stream::once(body));
                let response = grpc.streaming(one, path, Raw).await?;
                Ok(response.into_inner().message().await?.unwrap_or_default())
            }
        }
    };
    match tokio::time::timeout(bound, answer).await {
        Err(_) => None,
        Ok(Ok(message)) => Some((Code::Ok, message)),
        Ok(Err(status)) => Some((status.code(), status.message().as_bytes().to_vec())),
    }
}

/// The peak and the current resident set of process `pid`, in bytes.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kib("VmHWM:"), kib("VmRSS:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the gRPC fuzz campaign: scripts/fuzz runs it"]
async fn grpc_fuzz_campaign() {
    let seconds: u64 = std::env::var("STREAMGATE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("STREAMGATE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let fake = StreamingFake::start(0).await;
    fake.add("EFUZZ1", true, "fuzz");
    fake.add("EFUZZ2", false, "fuzz");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake);
    let mut gateway = Binary::spawn_with_env(&config, dir.path(), "gateway", &AWS_ENV);
    gateway.ready().await;
    let pid = gateway.child.id();
    let bearer = format!("Bearer {KEY}");

    let tally = Arc::new(Mutex::new(Tally::default()));
    let operations = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        // A connection each: the server ends a connection that resets too many streams
        // (a GOAWAY), and only that worker's calls in flight go with it.
        let channel = support::connect(gateway.addr).await;
        let tally = Arc::clone(&tally);
        let bearer = bearer.clone();
        let mut generate = Gen {
            rng: StdRng::seed_from_u64(seed.wrapping_add(worker as u64)),
            operations: Arc::clone(&operations),
        };
        workers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let (method, shape) = generate.pick(&METHODS);
                let body = generate.body(method);
                let credentials = match generate.rng.random_range(0..10) {
                    0..=5 => Some(bearer.clone()),
                    6 => Some(format!("Bearer {}", generate.text().escape_default())),
                    _ => None,
                };
                let (deadline, bound) = generate.deadline();
                let answer = call(
                    channel.clone(),
                    method,
                    shape,
                    body,
                    credentials.as_deref(),
                    deadline,
                    bound,
                )
                .await;
                let mut tally = tally.lock().unwrap();
                tally.calls += 1;
                let what = format!("{method} deadline={deadline:?}");
                match answer {
                    None => tally.hangs.push(what),
                    Some((code, body)) => {
                        *tally.codes.entry(format!("{code:?}")).or_default() += 1;
                        *tally
                            .by_method
                            .entry((method.to_string(), format!("{code:?}")))
                            .or_default() += 1;
                        let message = String::from_utf8_lossy(&body).chars().take(160).collect();
                        tally
                            .samples
                            .entry((format!("{code:?}"), format!("{deadline:?}")))
                            .or_insert(message);
                        if code == Code::Internal {
                            let message = String::from_utf8_lossy(&body).into_owned();
                            tally.internal.push(format!("{what}: {message}"));
                        }
                        if code == Code::Ok
                            && let Ok(op) = pb::Operation::decode(body.as_slice())
                            && op.name.starts_with("operations/")
                        {
                            let mut known = generate.operations.lock().unwrap();
                            if known.len() < 100 {
                                known.push(op.name);
                            }
                        }
                    }
                }
            }
        }));
    }
    let mut peak_seen = 0;
    while workers.iter().any(|w| !w.is_finished()) {
        peak_seen = peak_seen.max(rss(pid).1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let exited = gateway.child.try_wait().unwrap();
    let (peak, now) = rss(pid);
    let log = std::fs::read_to_string(&gateway.log).unwrap_or_default();
    let panics = log.matches("panicked").count();
    let tally = tally.lock().unwrap();
    for ((method, code), n) in &tally.by_method {
        println!("grpc fuzz: {method} {code} {n}");
    }
    for ((code, deadline), message) in &tally.samples {
        println!("grpc fuzz: sample {code} deadline={deadline}: {message:?}");
    }
    println!(
        "grpc fuzz: seed={seed} seconds={seconds} calls={} codes={:?} crashes={} panics={panics} \
         hangs={} internal={} peak_rss_mib={:.1} rss_end_mib={:.1}",
        tally.calls,
        tally.codes,
        u8::from(exited.is_some()),
        tally.hangs.len(),
        tally.internal.len(),
        peak.max(peak_seen) as f64 / f64::from(1 << 20),
        now as f64 / f64::from(1 << 20),
    );
    assert!(exited.is_none(), "the gateway exited: {exited:?}\n{log}");
    assert_eq!(panics, 0, "{log}");
    assert!(tally.hangs.is_empty(), "hangs: {:?}", tally.hangs);
    assert!(tally.internal.is_empty(), "INTERNAL: {:?}", tally.internal);
    assert!(peak.max(peak_seen) <= MAX_PEAK_RSS, "peak RSS {peak} bytes");
    assert!(tally.calls > 0);
}
