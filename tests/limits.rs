//! The limits on long-lived and concurrent calls, through the real binary: WatchStream calls
//! open per principal (the excess refused RESOURCE_EXHAUSTED / TOO_MANY_STREAMS, the admitted
//! ones still streaming, RSS bounded, room again once callers drop theirs), tokenless health
//! Watch calls per connection and in all, calls in flight per principal (another principal
//! still served), and the HTTP/2 settings a client sees: `max_concurrent_streams` (a call
//! beyond it waits in the client) and `max_connection_age` (an open stream is ended). The
//! keepalive settings are not shown here: a stock client answers every ping.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use streamgate::pb;
use streamgate::pb::operation_service_client::OperationServiceClient;
use streamgate::pb::provider_service_client::ProviderServiceClient;
use streamgate::pb::stream_service_client::StreamServiceClient;
use streamgate::pb::watch_stream_response::ChangeType;
use support::{Binary, connect, reason};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_types::StatusExt;

const OPS: &str = "sg-limits-ops-key-0123";
const OTHER: &str = "sg-limits-other-key-0123";
const STREAM: &str = "providers/local/streams/watched";

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A configuration with `server` lines in `[server]`, API keys for principals `ops` and
/// `other` (both granted everything) and a `local` provider that creates in `create_delay`.
fn write_config(dir: &Path, server: &str, create_delay: &str) -> PathBuf {
    let path = dir.join("streamgate.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ndrain_timeout = \"2s\"\n{server}\n[store]\nurl = \"sqlite://{}/sg.db\"\n\
             [auth]\nmode = \"api-key\"\n\
             [[auth.api_keys]]\nprincipal = \"ops\"\nsha256 = \"{}\"\n\
             [[auth.api_keys]]\nprincipal = \"other\"\nsha256 = \"{}\"\n\
             [[authorization]]\nprincipal = \"*\"\nmethods = [\"*\"]\n\
             [[providers]]\nid = \"local\"\nkind = \"local\"\ncreate_delay = \"{create_delay}\"\n",
            dir.display(),
            sha256_hex(OPS),
            sha256_hex(OTHER),
        ),
    )
    .unwrap();
    path
}

fn authed<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {key}")).unwrap(),
    );
    request
}

/// Creates the stream every WatchStream here watches, and waits until it exists.
async fn create_watched(channel: &Channel) {
    let op = StreamServiceClient::new(channel.clone())
        .create_stream(authed(
            pb::CreateStreamRequest {
                parent: "providers/local".into(),
                stream_id: "watched".into(),
                ..Default::default()
            },
            OPS,
        ))
        .await
        .unwrap()
        .into_inner();
    let done = OperationServiceClient::new(channel.clone())
        .wait_operation(authed(
            pb::WaitOperationRequest {
                name: op.name,
                timeout: Some(prost_types::Duration {
                    seconds: 20,
                    nanos: 0,
                }),
            },
            OPS,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(done.done, "{done:?}");
}

type Watch = tonic::Streaming<pb::WatchStreamResponse>;

/// A WatchStream of `key`'s on `channel`, once its first answer came.
async fn watch(channel: Channel, key: &str) -> Result<Watch, tonic::Status> {
    let mut watch = StreamServiceClient::new(channel)
        .watch_stream(authed(
            pb::WatchStreamRequest {
                name: STREAM.into(),
            },
            key,
        ))
        .await?
        .into_inner();
    let initial = watch.message().await?.expect("the initial state");
    assert_eq!(initial.change_type, ChangeType::Initial as i32);
    Ok(watch)
}

/// A refusal for one of the limits: RESOURCE_EXHAUSTED, `reason`, and RetryInfo.
fn assert_refused(status: &tonic::Status, expected: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(status), expected, "{status:?}");
    assert!(
        status.get_error_details().retry_info().is_some(),
        "{status:?}"
    );
}

/// Calls `open` until it succeeds (a dropped call's slot is given back once the gateway
/// sees the reset), at most 20 s.
async fn admitted_again<T, F, Fut>(mut open: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match open().await {
            Ok(admitted) => return admitted,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("still refused after 20 s: {status:?}"),
        }
    }
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// 3,000 WatchStream calls of one principal over 4 connections, with the default bound of
/// 100 per principal: 100 are admitted and keep streaming (each sees a later change), the
/// other 2,900 are refused TOO_MANY_STREAMS with RetryInfo, and the gateway's RSS grows by
/// far less than the 20,000 open streams of the finding cost. Dropped watches give their
/// room back, to that principal only.
#[tokio::test]
async fn one_principals_watch_streams_are_bounded_and_released_when_dropped() {
    let dir = tempfile::tempdir().unwrap();
    // The calls in flight of one principal are bounded too (256 by default): 3,000 opened at
    // once may find that bound first, which another test shows. Here only streams count.
    let config = write_config(dir.path(), "max_in_flight_per_principal = 4000", "0s");
    let mut gateway = Binary::spawn(&config, dir.path(), "streams");
    let channel = gateway.ready().await;
    create_watched(&channel).await;
    let mut channels = vec![channel.clone()];
    for _ in 1..4 {
        channels.push(connect(gateway.addr).await);
    }
    let before = rss_kib(gateway.child.id());

    // A stream HTTP/2 refused before the gateway read it (REFUSED_STREAM: UNAVAILABLE, when a
    // burst outruns the client's view of the connection's stream limit) is retried, as a
    // client would.
    let calls: Vec<_> = (0..3_000)
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            tokio::spawn(async move {
                let mut tries = 0;
                loop {
                    tries += 1;
                    match watch(channel.clone(), OPS).await {
                        Err(status) if status.code() == Code::Unavailable && tries < 3 => {}
                        answer => break answer,
                    }
                }
            })
        })
        .collect();
    let mut open = Vec::new();
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(watch) => open.push(watch),
            Err(status) => {
                assert_refused(&status, "TOO_MANY_STREAMS");
                refused += 1;
            }
        }
    }
    assert_eq!(open.len(), 100, "the default max_streams_per_principal");
    assert_eq!(refused, 2_900);
    let grown_mib = rss_kib(gateway.child.id()).saturating_sub(before) / 1024;
    assert!(grown_mib < 150, "RSS grew by {grown_mib} MiB");

    // Another principal has its own bound (on a connection of its own: one of ops' may be
    // full).
    let mut theirs = watch(connect(gateway.addr).await, OTHER).await.unwrap();

    // The admitted watches still stream.
    StreamServiceClient::new(channel.clone())
        .update_stream(authed(
            pb::UpdateStreamRequest {
                stream: Some(pb::Stream {
                    name: STREAM.into(),
                    data_retention_hours: 48,
                    ..Default::default()
                }),
                ..Default::default()
            },
            OPS,
        ))
        .await
        .unwrap();
    for watch in open.iter_mut().chain([&mut theirs]) {
        let change = watch.message().await.unwrap().expect("a change");
        assert_eq!(change.change_type, ChangeType::Updated as i32);
        assert_eq!(change.stream.unwrap().data_retention_hours, 48);
    }

    // Dropped watches give their room back.
    open.truncate(90);
    for _ in 0..10 {
        open.push(admitted_again(|| watch(channels[1].clone(), OPS)).await);
    }
    let status = watch(channels[2].clone(), OPS).await.unwrap_err();
    assert_refused(&status, "TOO_MANY_STREAMS");
}

/// Tokenless health Watch calls: at most `max_streams_per_connection` on one connection, and
/// `max_health_watches` in all; a closed connection gives its watches back.
#[tokio::test]
async fn tokenless_health_watches_are_bounded_per_connection_and_in_all() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "max_streams_per_connection = 5\nmax_health_watches = 8",
        "0s",
    );
    let mut gateway = Binary::spawn(&config, dir.path(), "health");
    let first = gateway.ready().await;
    let second = connect(gateway.addr).await;
    async fn health_watch(
        channel: &Channel,
    ) -> Result<tonic::Streaming<tonic_health::pb::HealthCheckResponse>, tonic::Status> {
        let mut watch = HealthClient::new(channel.clone())
            .watch(HealthCheckRequest {
                service: String::new(),
            })
            .await?
            .into_inner();
        watch.message().await?.expect("the current status");
        Ok(watch)
    }

    let mut on_first = Vec::new();
    for _ in 0..5 {
        on_first.push(health_watch(&first).await.unwrap());
    }
    let status = health_watch(&first).await.unwrap_err();
    assert_refused(&status, "TOO_MANY_STREAMS");
    assert!(status.message().contains("connection"), "{status:?}");

    let mut on_second = Vec::new();
    for _ in 0..3 {
        on_second.push(health_watch(&second).await.unwrap());
    }
    let status = health_watch(&second).await.unwrap_err();
    assert_refused(&status, "TOO_MANY_STREAMS");
    assert!(status.message().contains("health watches"), "{status:?}");
    // A health check is no watch: never refused.
    HealthClient::new(second.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();

    drop(on_first);
    drop(first);
    on_second.push(admitted_again(|| health_watch(&second)).await);
    on_second.push(health_watch(&second).await.unwrap());
}

/// One principal's calls in flight are bounded (`max_in_flight_per_principal`), well below
/// the gateway's `max_in_flight`: of its 8 WaitOperation calls 4 are refused TOO_MANY_CALLS
/// with RetryInfo, and with the other 4 waiting so is its next call, while another principal
/// is still served; once they end, it is served again.
#[tokio::test]
async fn one_principals_calls_in_flight_are_bounded_and_others_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "max_in_flight = 64\nmax_in_flight_per_principal = 4",
        "60s",
    );
    let mut gateway = Binary::spawn(&config, dir.path(), "in-flight");
    let channel = gateway.ready().await;
    let op = StreamServiceClient::new(channel.clone())
        .create_stream(authed(
            pb::CreateStreamRequest {
                parent: "providers/local".into(),
                stream_id: "slow".into(),
                ..Default::default()
            },
            OPS,
        ))
        .await
        .unwrap()
        .into_inner();
    // Eight waits at once: four are held for 50 s, and the other four are refused, each
    // when four were held already.
    let mut waits: Vec<_> = (0..8)
        .map(|_| {
            let mut operations = OperationServiceClient::new(channel.clone());
            let name = op.name.clone();
            tokio::spawn(async move {
                operations
                    .wait_operation(authed(
                        pb::WaitOperationRequest {
                            name,
                            timeout: Some(prost_types::Duration {
                                seconds: 50,
                                nanos: 0,
                            }),
                        },
                        OPS,
                    ))
                    .await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while waits.iter().filter(|w| w.is_finished()).count() < 4 {
        assert!(Instant::now() < deadline, "the waits were not refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut held = Vec::new();
    for wait in waits.drain(..) {
        if wait.is_finished() {
            assert_refused(&wait.await.unwrap().unwrap_err(), "TOO_MANY_CALLS");
        } else {
            held.push(wait);
        }
    }
    assert_eq!(held.len(), 4);
    let list = |key: &'static str| {
        let mut providers = ProviderServiceClient::new(channel.clone());
        async move {
            providers
                .list_providers(authed(pb::ListProvidersRequest::default(), key))
                .await
        }
    };
    assert_refused(&list(OPS).await.unwrap_err(), "TOO_MANY_CALLS");
    list(OTHER).await.unwrap();

    for wait in &held {
        wait.abort();
    }
    admitted_again(|| list(OPS)).await;
}

/// `http2_max_concurrent_streams` reaches the client in the HTTP/2 settings: with 4 watches
/// open on a connection allowed 4 streams, a fifth call on it waits in the client (while the
/// same call on another connection is answered), and goes out once a watch is dropped.
#[tokio::test]
async fn calls_beyond_http2_max_concurrent_streams_wait_in_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "http2_max_concurrent_streams = 4", "0s");
    let mut gateway = Binary::spawn(&config, dir.path(), "h2");
    let channel = gateway.ready().await;
    create_watched(&channel).await;
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(watch(channel.clone(), OPS).await.unwrap());
    }
    let mut providers = ProviderServiceClient::new(channel.clone());
    let mut queued = tokio::spawn(async move {
        providers
            .list_providers(authed(pb::ListProvidersRequest::default(), OPS))
            .await
    });
    let other = connect(gateway.addr).await;
    ProviderServiceClient::new(other)
        .list_providers(authed(pb::ListProvidersRequest::default(), OPS))
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut queued)
            .await
            .is_err(),
        "the fifth call went out on a connection allowed four streams"
    );
    open.pop();
    tokio::time::timeout(Duration::from_secs(20), queued)
        .await
        .expect("the queued call goes out once a stream closes")
        .unwrap()
        .unwrap();
}

/// `max_connection_age` (and its grace) end a connection, open streams included: a watch on
/// a connection past its age is ended, and the client reconnects for its next call.
#[tokio::test]
async fn connections_past_their_age_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "max_connection_age = \"3s\"\nmax_connection_age_grace = \"1s\"",
        "0s",
    );
    let mut gateway = Binary::spawn(&config, dir.path(), "age");
    gateway.ready().await;
    create_watched(&connect(gateway.addr).await).await;
    let channel = connect(gateway.addr).await;
    let mut open = watch(channel.clone(), OPS).await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(_)) = open.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "the watch outlived its connection's age");
    // The client reconnects (a call racing the close may fail UNAVAILABLE first).
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(status) = watch(channel.clone(), OPS).await {
        assert!(Instant::now() < deadline, "no new watch: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
