//! GetStreamEndpoints: the request checks every kind shares, the capability matrix in
//! ProviderService, and each kind's endpoints — `local` placeholders in-process and through the
//! real binary with grpcurl.

mod support;

use std::time::{Duration, Instant};

use streamgate::pb;
use support::{Binary, TestServer, local_provider, reason, violated_fields, wait};
use tonic::Code;

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
    let answer = streams
        .get_stream_endpoints(endpoints_request(
            "providers/local/streams/cam-1",
            &[pb::EndpointPurpose::Playback, pb::EndpointPurpose::Ingest],
        ))
        .await
        .unwrap()
        .into_inner();
    let [playback, ingest] = answer.endpoints.as_slice() else {
        panic!("{answer:?}");
    };
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
                    ip_range: "10.0.0.0".into(),
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
