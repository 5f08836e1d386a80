//! GetStreamEndpoints: the request checks every kind shares, the capability matrix in
//! ProviderService, authorization and rate limits as for any read, and each kind's endpoints — `local` placeholders in-process and through the
//! real binary with grpcurl; CloudFront URLs (web distributions on moto, streaming ones on the
//! wire-level fake) signed exactly as botocore's `CloudFrontSigner` signs them
//! (`tests/py/cloudfront_signer.py`); KVS session URLs from moto's server, control plane and
//! archived media on one loopback port (`tests/py/moto_kvs.py`); VOD PlayURLs through the VOD
//! fake, with AuthTimeout sent.

mod support;
// Shared with tests/aliyun_vod.rs, which uses the rest of it.
#[allow(dead_code)]
#[path = "fakes/vod.rs"]
mod vod;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use streamgate::pb;
use support::cloudfront_fake::StreamingFake;
use support::moto::{AWS_ENV, Moto};
use support::{Binary, TestServer, local_provider, reason, venv_tool, violated_fields, wait};
use tonic::Code;

const KEY_ID: &str = "K2JCJMDEHXQW5F";

const HOUR: prost_types::Duration = prost_types::Duration {
    seconds: 3600,
    nanos: 0,
};

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn endpoints_request(
    name: &str,
    purposes: &[pb::EndpointPurpose],
) -> pb::GetStreamEndpointsRequest {
    pb::GetStreamEndpointsRequest {
        name: name.into(),
        purposes: purposes.iter().map(|p| *p as i32).collect(),
        lifetime: Some(HOUR),
        ..Default::default()
    }
}

async fn create_local(server: &TestServer, id: &str) {
    let op = server
        .streams()
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/local".into(),
            stream_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(wait(server, &op).await.done);
}

#[tokio::test]
async fn local_streams_have_placeholder_endpoints_per_purpose_and_protocol() {
    let server = TestServer::start(&local_provider("local", "0s")).await;
    create_local(&server, "cam-1").await;
    let mut streams = server.streams();
    let before = now_s();
    let [playback, ingest] = playback_and_ingest(&server, "providers/local/streams/cam-1").await;
    assert_eq!(playback.purpose, pb::EndpointPurpose::Playback as i32);
    assert_eq!(playback.protocol, pb::EndpointProtocol::Hls as i32);
    let expires = playback.expire_time.unwrap().seconds;
    assert!(
        (before + 3600..=now_s() + 3600).contains(&expires),
        "{expires}"
    );
    assert_eq!(
        playback.uri,
        format!("local://local/streams/cam-1/index.m3u8?expires={expires}")
    );
    assert!(playback.client_requirements.contains("placeholder"));
    assert_eq!(ingest.purpose, pb::EndpointPurpose::Ingest as i32);
    assert_eq!(ingest.protocol, pb::EndpointProtocol::Rtmp as i32);
    assert!(
        ingest
            .uri
            .starts_with("local://local/streams/cam-1/ingest?expires=")
    );

    let dash = streams
        .get_stream_endpoints(pb::GetStreamEndpointsRequest {
            protocol: pb::EndpointProtocol::Dash as i32,
            lifetime: None,
            ..endpoints_request(
                "providers/local/streams/cam-1",
                &[pb::EndpointPurpose::Playback],
            )
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dash.endpoints[0].uri.contains("/manifest.mpd?expires="));
    let missing = streams
        .get_stream_endpoints(endpoints_request(
            "providers/local/streams/nope",
            &[pb::EndpointPurpose::Playback],
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "STREAM_NOT_FOUND");
}

#[tokio::test]
async fn bad_requests_name_every_offending_field() {
    let server = TestServer::start(&local_provider("local", "0s")).await;
    create_local(&server, "cam-1").await;
    let mut streams = server.streams();
    let name = "providers/local/streams/cam-1";
    let cases: Vec<(pb::GetStreamEndpointsRequest, Vec<&str>)> = vec![
        (endpoints_request(name, &[]), vec!["purposes"]),
        (
            endpoints_request(
                name,
                &[pb::EndpointPurpose::Playback, pb::EndpointPurpose::Playback],
            ),
            vec!["purposes[1]"],
        ),
        (
            pb::GetStreamEndpointsRequest {
                purposes: vec![2, 2, 2, 7],
                ..endpoints_request(name, &[])
            },
            vec!["purposes", "purposes[1]"],
        ),
        (
            pb::GetStreamEndpointsRequest {
                lifetime: Some(prost_types::Duration {
                    seconds: 0,
                    nanos: 0,
                }),
                protocol: 99,
                ..endpoints_request(name, &[pb::EndpointPurpose::Unspecified])
            },
            vec!["purposes[0]", "protocol", "lifetime"],
        ),
        (
            pb::GetStreamEndpointsRequest {
                lifetime: Some(prost_types::Duration {
                    seconds: 12 * 3600 + 1,
                    nanos: 0,
                }),
                protocol: pb::EndpointProtocol::PutMedia as i32,
                ..endpoints_request(name, &[pb::EndpointPurpose::Playback])
            },
            vec!["protocol", "lifetime"],
        ),
        (
            pb::GetStreamEndpointsRequest {
                playback: Some(pb::PlaybackOptions {
                    mode: pb::PlaybackMode::OnDemand as i32,
                    start_time: Some(prost_types::Timestamp {
                        seconds: 20,
                        nanos: 0,
                    }),
                    end_time: Some(prost_types::Timestamp {
                        seconds: 10,
                        nanos: 0,
                    }),
                }),
                cloudfront: Some(pb::CloudFrontEndpointOptions {
                    path: "/x y".into(),
                    ip_range: "10.0.0/8".into(),
                    ..Default::default()
                }),
                ..endpoints_request(name, &[pb::EndpointPurpose::Playback])
            },
            vec!["playback", "cloudfront.path", "cloudfront.ip_range"],
        ),
    ];
    for (request, fields) in cases {
        let status = streams
            .get_stream_endpoints(request.clone())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{request:?}");
        assert_eq!(violated_fields(&status), fields, "{request:?}");
    }
}

#[tokio::test]
async fn the_capability_matrix_shows_endpoints_and_their_absence() {
    let server = TestServer::start(&format!(
        "{}[[providers]]\nid = \"noendpoints\"\nkind = \"local\"\ndisabled_methods = [\"GetStreamEndpoints\"]\n",
        local_provider("local", "0s")
    ))
    .await;
    let caps = |name: &'static str| {
        let mut providers = server.providers();
        async move {
            providers
                .get_provider(pb::GetProviderRequest { name: name.into() })
                .await
                .unwrap()
                .into_inner()
                .capabilities
                .unwrap()
        }
    };
    let local = caps("providers/local").await;
    assert!(local.methods.contains(&"GetStreamEndpoints".to_string()));
    assert_eq!(
        local.endpoints,
        [
            pb::EndpointSupport {
                purpose: pb::EndpointPurpose::Playback as i32,
                protocols: vec![
                    pb::EndpointProtocol::Hls as i32,
                    pb::EndpointProtocol::Dash as i32,
                    pb::EndpointProtocol::Mp4 as i32,
                ],
            },
            pb::EndpointSupport {
                purpose: pb::EndpointPurpose::Ingest as i32,
                protocols: vec![pb::EndpointProtocol::Rtmp as i32],
            },
        ]
    );
    assert_eq!(local.max_endpoint_lifetime.unwrap().seconds, 12 * 3600);
    let none = caps("providers/noendpoints").await;
    assert!(!none.methods.contains(&"GetStreamEndpoints".to_string()));
    let refused = server
        .streams()
        .get_stream_endpoints(endpoints_request(
            "providers/noendpoints/streams/cam-1",
            &[pb::EndpointPurpose::Playback],
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented);
    assert_eq!(reason(&refused), "CAPABILITY_UNSUPPORTED");
}

#[tokio::test]
async fn the_binary_gives_a_playback_url_to_grpcurl() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("streamgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}/sg.db\"\n{}",
            dir.path().display(),
            local_provider("local", "0s")
        ),
    )
    .unwrap();
    let mut binary = Binary::spawn(&config, dir.path(), "endpoints");
    binary.ready().await;
    let addr = binary.addr.to_string();
    let created = support::grpcurl(&[
        "-d",
        r#"{"parent": "providers/local", "stream_id": "cam-1"}"#,
        &addr,
        "streamgate.v1.StreamService/CreateStream",
    ]);
    assert!(
        created.status.success(),
        "{}",
        support::output_text(&created)
    );
    let started = Instant::now();
    let answer = support::grpcurl(&[
        "-d",
        r#"{"name": "providers/local/streams/cam-1", "purposes": ["ENDPOINT_PURPOSE_PLAYBACK"], "lifetime": "600s"}"#,
        &addr,
        "streamgate.v1.StreamService/GetStreamEndpoints",
    ]);
    let text = support::output_text(&answer);
    assert!(answer.status.success(), "{text}");
    let json: serde_json::Value = serde_json::from_slice(&answer.stdout).unwrap();
    let endpoint = &json["endpoints"][0];
    assert_eq!(endpoint["protocol"], "ENDPOINT_PROTOCOL_HLS", "{text}");
    assert!(
        endpoint["uri"]
            .as_str()
            .unwrap()
            .starts_with("local://local/streams/cam-1/index.m3u8?expires="),
        "{text}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Runs `tests/py/cloudfront_signer.py` with `args`; its one line of output.
fn signer(args: &[&str]) -> String {
    let output = Command::new(venv_tool("python"))
        .arg(support::repo().join("tests/py/cloudfront_signer.py"))
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", support::output_text(&output));
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A new RSA key in `dir`, PKCS#1 (`RSA PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`).
fn keygen(dir: &Path, pkcs8: bool) -> String {
    let pem = dir.join("cloudfront.pem").display().to_string();
    if pkcs8 {
        signer(&["keygen", &pem, "pkcs8"]);
    } else {
        signer(&["keygen", &pem]);
    }
    pem
}

fn cloudfront_request(
    name: &str,
    path: &str,
    signed: bool,
    ip_range: &str,
    start_s: Option<i64>,
) -> pb::GetStreamEndpointsRequest {
    pb::GetStreamEndpointsRequest {
        cloudfront: Some(pb::CloudFrontEndpointOptions {
            path: path.into(),
            signed,
            ip_range: ip_range.into(),
            start_time: start_s.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
        }),
        lifetime: Some(prost_types::Duration {
            seconds: 600,
            nanos: 0,
        }),
        ..endpoints_request(name, &[pb::EndpointPurpose::Playback])
    }
}

/// The endpoints `request` is answered with.
async fn endpoints(
    server: &TestServer,
    request: pb::GetStreamEndpointsRequest,
) -> Vec<pb::StreamEndpoint> {
    server
        .streams()
        .get_stream_endpoints(request)
        .await
        .unwrap()
        .into_inner()
        .endpoints
}

async fn one_endpoint(
    server: &TestServer,
    request: pb::GetStreamEndpointsRequest,
) -> pb::StreamEndpoint {
    let [endpoint] = <[_; 1]>::try_from(endpoints(server, request).await)
        .unwrap_or_else(|answer| panic!("{answer:?}"));
    endpoint
}

/// The PLAYBACK and INGEST endpoints of `name`, asked for in that order, with defaults.
async fn playback_and_ingest(server: &TestServer, name: &str) -> [pb::StreamEndpoint; 2] {
    let answer = endpoints(
        server,
        endpoints_request(
            name,
            &[pb::EndpointPurpose::Playback, pb::EndpointPurpose::Ingest],
        ),
    )
    .await;
    <[_; 2]>::try_from(answer).unwrap_or_else(|answer| panic!("{answer:?}"))
}

/// A web distribution created on moto through the gateway; its Id and domain name.
async fn web_distribution(server: &TestServer) -> (String, String) {
    let op = server
        .streams()
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/web".into(),
            stream_id: "edge".into(),
            stream: Some(pb::Stream {
                details: Some(pb::stream::Details::Cloudfront(
                    pb::CloudFrontStreamDetails {
                        origin: Some(pb::CloudFrontOrigin {
                            r#type: pb::cloud_front_origin::Type::S3 as i32,
                            domain_name: "media.s3.amazonaws.com".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let op = if op.done { op } else { wait(server, &op).await };
    let Some(pb::operation::Result::Stream(stream)) = op.result else {
        panic!("{op:?}");
    };
    let Some(pb::stream::Details::Cloudfront(details)) = stream.details else {
        panic!("{stream:?}");
    };
    let id = stream.name.rsplit('/').next().unwrap().to_string();
    (id, details.domain_name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudfront_signed_urls_are_botocores_and_tampering_breaks_them() {
    let dir = tempfile::tempdir().unwrap();
    let pem = keygen(dir.path(), false);
    let moto = Moto::start();
    let providers = format!(
        "[[providers]]\nid = \"web\"\nkind = \"cloudfront\"\nendpoint_url = \"{}\"\n\
         signing_key_id = \"{KEY_ID}\"\nsigning_private_key_file = \"{pem}\"\n",
        moto.url()
    );
    let server = TestServer::start_in_env(tempfile::tempdir().unwrap(), &providers, &AWS_ENV).await;
    let (id, domain) = web_distribution(&server).await;
    let name = format!("providers/web/streams/{id}");
    let base = format!("https://{domain}/live/cam-7/index.m3u8");

    let before = now_s();
    let canned = one_endpoint(
        &server,
        cloudfront_request(&name, "live/cam-7/index.m3u8", false, "", None),
    )
    .await;
    assert_eq!(canned.protocol, pb::EndpointProtocol::Hls as i32);
    let expires = canned.expire_time.unwrap().seconds;
    assert!(
        (before + 599..=now_s() + 600).contains(&expires),
        "{expires}"
    );
    let botocore = signer(&["sign", &pem, KEY_ID, &base, &expires.to_string()]);
    assert_eq!(canned.uri, botocore);
    assert!(
        canned
            .uri
            .contains(&format!("?Expires={expires}&Signature="))
    );
    assert_eq!(signer(&["verify", &pem, &canned.uri]), "OK");
    let tampered = canned.uri.replace("cam-7", "cam-8");
    assert_eq!(signer(&["verify", &pem, &tampered]), "BAD");
    let extended = canned.uri.replace(
        &format!("Expires={expires}"),
        &format!("Expires={}", expires + 3600),
    );
    assert_eq!(signer(&["verify", &pem, &extended]), "BAD");

    let start = now_s() - 60;
    let custom = one_endpoint(
        &server,
        cloudfront_request(
            &name,
            "live/cam-7/index.m3u8",
            true,
            "192.0.2.0/24",
            Some(start),
        ),
    )
    .await;
    let expires = custom.expire_time.unwrap().seconds;
    let botocore = signer(&[
        "sign",
        &pem,
        KEY_ID,
        &base,
        &expires.to_string(),
        "192.0.2.0/24",
        &start.to_string(),
    ]);
    assert_eq!(custom.uri, botocore);
    assert!(custom.uri.contains("?Policy="));
    assert_eq!(signer(&["verify", &pem, &custom.uri]), "OK");
    assert!(custom.client_requirements.contains("192.0.2.0/24"));

    let dash = one_endpoint(
        &server,
        cloudfront_request(&name, "vod/a/manifest.mpd", false, "", None),
    )
    .await;
    assert_eq!(dash.protocol, pb::EndpointProtocol::Dash as i32);
    let missing = server
        .streams()
        .get_stream_endpoints(cloudfront_request(
            "providers/web/streams/ENOSUCHDIST",
            "a.m3u8",
            false,
            "",
            None,
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "STREAM_NOT_FOUND");
    assert_eq!(
        support::info_metadata(&missing, "provider_code"),
        "NoSuchDistribution"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_distributions_give_rtmp_urls_signed_with_a_key_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let pem = keygen(dir.path(), true);
    let fake = StreamingFake::start(0).await;
    fake.add("EFAKE1", true, "one");
    let providers = format!(
        "[[providers]]\nid = \"rtmp\"\nkind = \"cloudfront-streaming\"\nendpoint_url = \"{url}\"\n\
         signing_key_id = \"{KEY_ID}\"\nsigning_private_key_env = \"CF_SIGNING_KEY\"\n\
         [[providers]]\nid = \"unsigned\"\nkind = \"cloudfront-streaming\"\nendpoint_url = \"{url}\"\n",
        url = fake.url()
    );
    let key = std::fs::read_to_string(&pem).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
    let mut env = AWS_ENV.to_vec();
    env.push(("CF_SIGNING_KEY", &key));
    let server = TestServer::start_in_env(tempfile::tempdir().unwrap(), &providers, &env).await;

    let rtmp = one_endpoint(
        &server,
        cloudfront_request(
            "providers/rtmp/streams/EFAKE1",
            "mp4:cam-7",
            false,
            "",
            None,
        ),
    )
    .await;
    assert_eq!(rtmp.protocol, pb::EndpointProtocol::Rtmp as i32);
    let expires = rtmp.expire_time.unwrap().seconds;
    // An RTMP policy names the stream; the URL is the distribution's path to it.
    let botocore = signer(&["sign", &pem, KEY_ID, "mp4:cam-7", &expires.to_string()]);
    assert_eq!(
        rtmp.uri,
        format!("rtmp://sefake1.cloudfront.net/cfx/st/{botocore}")
    );

    let plain = one_endpoint(
        &server,
        cloudfront_request(
            "providers/unsigned/streams/EFAKE1",
            "mp4:cam-7",
            false,
            "",
            None,
        ),
    )
    .await;
    assert_eq!(plain.uri, "rtmp://sefake1.cloudfront.net/cfx/st/mp4:cam-7");
    assert_eq!(plain.expire_time, None);
    for request in [
        cloudfront_request("providers/unsigned/streams/EFAKE1", "a", true, "", None),
        cloudfront_request("providers/unsigned/streams/EFAKE1", "a", false, "", Some(1)),
    ] {
        let refused = server
            .streams()
            .get_stream_endpoints(request)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition);
        assert_eq!(reason(&refused), "SIGNING_KEY_NOT_CONFIGURED");
    }
    let no_path = server
        .streams()
        .get_stream_endpoints(endpoints_request(
            "providers/unsigned/streams/EFAKE1",
            &[pb::EndpointPurpose::Playback],
        ))
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&no_path), ["cloudfront.path"]);
}

/// moto's server with archived media routed (`tests/py/moto_kvs.py`); killed when dropped.
struct MotoKvs {
    child: std::process::Child,
    port: u16,
}

impl MotoKvs {
    async fn start() -> Self {
        let port = support::free_port();
        let child = Command::new(venv_tool("python"))
            .arg(support::repo().join("tests/py/moto_kvs.py"))
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let moto = MotoKvs { child, port };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto.recorded().await.is_none() {
            assert!(Instant::now() < deadline, "moto_kvs.py did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        moto
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What moto received (`METHOD PATH`) and the session URLs it issued.
    async fn recorded(&self) -> Option<(Vec<String>, Vec<String>)> {
        let body: serde_json::Value = reqwest::get(format!("{}/recorded", self.url()))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let strings = |key: &str| {
            body[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        Some((strings("requests"), strings("issued")))
    }
}

impl Drop for MotoKvs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn create_kvs(server: &TestServer, id: &str, retention: i32) -> pb::Stream {
    let op = server
        .streams()
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/kvs".into(),
            stream_id: id.into(),
            stream: Some(pb::Stream {
                media_type: "video/h264".into(),
                data_retention_hours: retention,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    match wait(server, &op).await.result {
        Some(pb::operation::Result::Stream(s)) => s,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kvs_session_urls_are_the_ones_moto_issued_and_stay_on_loopback() {
    let moto = MotoKvs::start().await;
    let providers = format!(
        "[[providers]]\nid = \"kvs\"\nkind = \"kinesis-video\"\nregion = \"us-east-1\"\n\
         endpoint_url = \"{}\"\ncreation_poll_interval = \"50ms\"\nread_tags = false\n",
        moto.url()
    );
    let server = TestServer::start_env(&providers, &AWS_ENV).await;
    let lobby = create_kvs(&server, "lobby", 24).await;
    create_kvs(&server, "noretain", 0).await;
    let mut streams = server.streams();

    let before = now_s();
    let [hls, ingest] = playback_and_ingest(&server, "providers/kvs/streams/lobby").await;
    let (requests, issued) = moto.recorded().await.unwrap();
    assert_eq!(issued.last(), Some(&hls.uri), "the URL moto issued");
    assert_eq!(hls.protocol, pb::EndpointProtocol::Hls as i32);
    assert!(
        hls.uri
            .contains("/hls/v1/getHLSMasterPlaylist.m3u8?SessionToken=")
    );
    let expires = hls.expire_time.unwrap().seconds;
    assert!(
        (before + 3599..=now_s() + 3600).contains(&expires),
        "{expires}"
    );
    // Every call reached moto on loopback: the data endpoint moto named (an AWS hostname)
    // was never called, or the archived-media call would not be in moto's record.
    for call in ["POST /getDataEndpoint", "POST /getHLSStreamingSessionURL"] {
        assert!(requests.iter().any(|r| r == call), "{call}: {requests:?}");
    }
    assert_eq!(ingest.protocol, pb::EndpointProtocol::PutMedia as i32);
    assert_eq!(ingest.uri, moto.url());
    assert!(ingest.client_requirements.contains("SigV4"));
    assert!(ingest.client_requirements.contains(&lobby.provider_uid));

    let dash = streams
        .get_stream_endpoints(pb::GetStreamEndpointsRequest {
            protocol: pb::EndpointProtocol::Dash as i32,
            playback: Some(pb::PlaybackOptions {
                mode: pb::PlaybackMode::OnDemand as i32,
                start_time: Some(prost_types::Timestamp {
                    seconds: before - 600,
                    nanos: 0,
                }),
                end_time: Some(prost_types::Timestamp {
                    seconds: before,
                    nanos: 0,
                }),
            }),
            ..endpoints_request(
                "providers/kvs/streams/lobby",
                &[pb::EndpointPurpose::Playback],
            )
        })
        .await
        .unwrap()
        .into_inner();
    let (_, issued) = moto.recorded().await.unwrap();
    assert_eq!(issued.last(), Some(&dash.endpoints[0].uri));
    assert!(
        dash.endpoints[0]
            .uri
            .contains("/dash/v1/getDASHManifest.mpd")
    );

    let not_retained = streams
        .get_stream_endpoints(endpoints_request(
            "providers/kvs/streams/noretain",
            &[pb::EndpointPurpose::Playback],
        ))
        .await
        .unwrap_err();
    assert_eq!(not_retained.code(), Code::FailedPrecondition);
    assert_eq!(reason(&not_retained), "STREAM_NOT_PLAYABLE");
    assert!(not_retained.message().contains("noretain"));
    let missing = streams
        .get_stream_endpoints(endpoints_request(
            "providers/kvs/streams/nope",
            &[pb::EndpointPurpose::Playback],
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "STREAM_NOT_FOUND");
    assert_eq!(
        support::info_metadata(&missing, "provider_code"),
        "ResourceNotFoundException"
    );
    let short = streams
        .get_stream_endpoints(pb::GetStreamEndpointsRequest {
            lifetime: Some(prost_types::Duration {
                seconds: 120,
                nanos: 0,
            }),
            ..endpoints_request(
                "providers/kvs/streams/lobby",
                &[pb::EndpointPurpose::Playback],
            )
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&short), ["lifetime"]);
    let caps = server
        .providers()
        .get_provider(pb::GetProviderRequest {
            name: "providers/kvs".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .unwrap();
    assert!(caps.methods.contains(&"GetStreamEndpoints".to_string()));
    assert_eq!(caps.max_endpoint_lifetime.unwrap().seconds, 43_200);
}

#[tokio::test]
async fn vod_play_urls_come_from_get_play_info_with_auth_timeout() {
    let fake = vod::FakeVod::start().await;
    fake.add_key("LTAI5tFakeKeyId01", "fake-secret", None);
    fake.add_video("v1", &["job-hls"]);
    fake.set_url_authentication(Some("url-auth-key"));
    let server = TestServer::start(&format!(
        "[[providers]]\nid = \"vod\"\nkind = \"aliyun-vod\"\nregion = \"cn-shanghai\"\n\
         endpoint_url = \"{}\"\naccess_key_id = \"LTAI5tFakeKeyId01\"\naccess_key_secret = \"fake-secret\"\n",
        fake.url()
    ))
    .await;
    let mut streams = server.streams();
    let name = "providers/vod/videos/v1/streams/job-hls";
    let before = now_s();
    let endpoint = one_endpoint(
        &server,
        endpoints_request(name, &[pb::EndpointPurpose::Playback]),
    )
    .await;
    let calls = fake.calls("GetPlayInfo");
    let call = calls.last().unwrap();
    assert_eq!(call.param("AuthTimeout"), Some("3600"));
    assert_eq!(call.param("VideoId"), Some("v1"));
    assert!(call.signature_valid);
    assert_eq!(endpoint.protocol, pb::EndpointProtocol::Hls as i32);
    let (url, auth_key) = endpoint.uri.split_once("?auth_key=").unwrap();
    assert_eq!(url, "https://vod.example/v1/job-hls.m3u8");
    let expiry: i64 = auth_key.split('-').next().unwrap().parse().unwrap();
    assert!(
        (before + 3600..=now_s() + 3600).contains(&expiry),
        "{expiry}"
    );
    let expires = endpoint.expire_time.unwrap().seconds;
    assert!((before + 3599..=now_s() + 3600).contains(&expires));

    fake.set_url_authentication(None);
    let plain = one_endpoint(
        &server,
        endpoints_request(name, &[pb::EndpointPurpose::Playback]),
    )
    .await;
    assert_eq!(plain.uri, "https://vod.example/v1/job-hls.m3u8");
    assert_eq!(
        plain.expire_time, None,
        "no URL authentication: it does not expire"
    );

    for (request, code, why) in [
        (
            endpoints_request(
                "providers/vod/videos/v1/streams/nope",
                &[pb::EndpointPurpose::Playback],
            ),
            Code::NotFound,
            "STREAM_NOT_FOUND",
        ),
        (
            endpoints_request(
                "providers/vod/videos/v404/streams/job-hls",
                &[pb::EndpointPurpose::Playback],
            ),
            Code::NotFound,
            "VIDEO_NOT_FOUND",
        ),
        (
            pb::GetStreamEndpointsRequest {
                protocol: pb::EndpointProtocol::Dash as i32,
                ..endpoints_request(name, &[pb::EndpointPurpose::Playback])
            },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            endpoints_request(name, &[pb::EndpointPurpose::Ingest]),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
    ] {
        let status = streams
            .get_stream_endpoints(request.clone())
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (code, why),
            "{request:?}"
        );
    }
    let missing_video = streams
        .get_stream_endpoints(endpoints_request(
            "providers/vod/videos/v404/streams/job-hls",
            &[pb::EndpointPurpose::Playback],
        ))
        .await
        .unwrap_err();
    assert_eq!(
        support::info_metadata(&missing_video, "provider_code"),
        "InvalidVideo.NotFound"
    );
}

fn bearer<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    request
}

#[tokio::test]
async fn endpoints_are_authorized_and_rate_limited_like_reads() {
    use sha2::Digest;
    let sha = |key: &str| hex::encode(sha2::Sha256::digest(key.as_bytes()));
    let rest = format!(
        "{}{}[auth]\nmode = \"api-key\"\n\
         [[auth.api_keys]]\nprincipal = \"ops\"\nsha256 = \"{}\"\n\
         [[auth.api_keys]]\nprincipal = \"viewer\"\nsha256 = \"{}\"\n\
         [[authorization]]\nprincipal = \"ops\"\nmethods = [\"*\"]\n\
         [[authorization]]\nprincipal = \"viewer\"\nmethods = [\"StreamService/Get*\"]\nproviders = [\"local\"]\n\
         [rate_limits]\nper_second = 1000\n\
         [[rate_limits.rules]]\nprincipal = \"viewer\"\nmethod = \"StreamService/GetStreamEndpoints\"\nper_second = 1\nburst = 2\n",
        local_provider("local", "0s"),
        local_provider("other", "0s"),
        sha("ops-key"),
        sha("viewer-key"),
    );
    let server = TestServer::start_configured("", &rest, &[]).await;
    let op = server
        .streams()
        .create_stream(bearer(
            pb::CreateStreamRequest {
                parent: "providers/local".into(),
                stream_id: "cam-1".into(),
                ..Default::default()
            },
            "ops-key",
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(op.done, "{op:?}");
    let mut streams = server.streams();
    let ask = |name: &str| {
        bearer(
            endpoints_request(name, &[pb::EndpointPurpose::Playback]),
            "viewer-key",
        )
    };
    // The provider grant is checked in the handler, inside the rate limit: this call takes
    // the first of the viewer's two tokens.
    let denied = streams
        .get_stream_endpoints(ask("providers/other/streams/cam-1"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(reason(&denied), "PERMISSION_DENIED");
    streams
        .get_stream_endpoints(ask("providers/local/streams/cam-1"))
        .await
        .expect("a Get* grant covers GetStreamEndpoints");
    let limited = streams
        .get_stream_endpoints(ask("providers/local/streams/cam-1"))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(reason(&limited), "RATE_LIMITED");
}
