//! The `kinesis-video` adapter against moto server, an independent KVS emulator: create,
//! describe, list, delete, duplicates, not found — checking moto's own state through the AWS
//! SDK, and once through the release path: the real binary driven by grpcurl.

mod support;

use std::process::Command;

use streamgate::pb;
use support::kvs_fake::kvs_client;
use support::moto::Moto;
use support::{AWS_ENV, Binary, TestServer, reason, venv_tool, wait};
use tonic::Code;

fn provider(moto: &Moto) -> String {
    // moto has no ListTagsForStream: reads skip tags.
    format!(
        "[[providers]]\nid = \"kvs\"\nkind = \"kinesis-video\"\nregion = \"us-east-1\"\n\
         endpoint_url = \"{}\"\ncreation_poll_interval = \"50ms\"\nread_tags = false\n",
        moto.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_describe_list_delete_against_moto() {
    let moto = Moto::start();
    let server = TestServer::start_env(&provider(&moto), &AWS_ENV).await;
    let mut streams = server.streams();
    let op = streams
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/kvs".into(),
            stream_id: "lobby".into(),
            stream: Some(pb::Stream {
                media_type: "video/h264".into(),
                data_retention_hours: 72,
                device_name: "lobby-cam".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let done = wait(&server, &op).await;
    let Some(pb::operation::Result::Stream(created)) = done.result else {
        panic!("{done:?}");
    };

    // moto's own record, read with the SDK.
    let client = kvs_client(&moto.url());
    let info = client
        .describe_stream()
        .stream_name("lobby")
        .send()
        .await
        .unwrap()
        .stream_info
        .unwrap();
    assert_eq!(info.data_retention_in_hours(), Some(72));
    assert_eq!(info.media_type(), Some("video/h264"));
    assert_eq!(info.device_name(), Some("lobby-cam"));
    assert_eq!(info.stream_arn(), Some(created.provider_uid.as_str()));

    let got = streams
        .get_stream(pb::GetStreamRequest {
            name: "providers/kvs/streams/lobby".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.data_retention_hours, 72);
    assert_eq!(got.etag, info.version().unwrap());

    let duplicate = streams
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/kvs".into(),
            stream_id: "lobby".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    client
        .create_stream()
        .stream_name("garage")
        .send()
        .await
        .unwrap();
    let listed = streams
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/kvs".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut names: Vec<_> = listed.streams.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "providers/kvs/streams/garage",
            "providers/kvs/streams/lobby"
        ]
    );

    let deleted = streams
        .delete_stream(pb::DeleteStreamRequest {
            name: "providers/kvs/streams/lobby".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.done, "{deleted:?}");
    assert!(matches!(
        deleted.result,
        Some(pb::operation::Result::DeleteStream(_))
    ));
    let gone = client
        .describe_stream()
        .stream_name("lobby")
        .send()
        .await
        .unwrap_err();
    assert!(
        gone.as_service_error()
            .unwrap()
            .is_resource_not_found_exception()
    );

    let missing = streams
        .get_stream(pb::GetStreamRequest {
            name: "providers/kvs/streams/lobby".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "STREAM_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_and_grpcurl_against_moto() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kvs.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}/sg.db\"\n{}",
            dir.path().display(),
            provider(&moto)
        ),
    )
    .unwrap();
    let mut gateway = Binary::spawn_with_env(&config, dir.path(), "kvs", &AWS_ENV);
    gateway.ready().await;
    let addr = gateway.addr.to_string();
    let grpcurl = |args: &[&str]| {
        let output = Command::new(venv_tool("grpcurl"))
            .arg("-plaintext")
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "grpcurl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let op = grpcurl(&[
        "-d",
        r#"{"parent": "providers/kvs", "stream_id": "dock", "stream": {"media_type": "video/h265", "data_retention_hours": 168}}"#,
        &addr,
        "streamgate.v1.StreamService/CreateStream",
    ]);
    let op_name = op["name"].as_str().unwrap();
    let done = grpcurl(&[
        "-d",
        &format!(r#"{{"name": "{op_name}", "timeout": "20s"}}"#),
        &addr,
        "streamgate.v1.OperationService/WaitOperation",
    ]);
    assert_eq!(done["done"], true, "{done}");
    assert_eq!(done["stream"]["state"], "STATE_ACTIVE", "{done}");

    let client = kvs_client(&moto.url());
    let info = client
        .describe_stream()
        .stream_name("dock")
        .send()
        .await
        .unwrap()
        .stream_info
        .unwrap();
    assert_eq!(info.data_retention_in_hours(), Some(168));
    assert_eq!(info.media_type(), Some("video/h265"));

    let deleted = grpcurl(&[
        "-d",
        r#"{"name": "providers/kvs/streams/dock"}"#,
        &addr,
        "streamgate.v1.StreamService/DeleteStream",
    ]);
    assert_eq!(deleted["done"], true, "{deleted}");
    let gone = client
        .describe_stream()
        .stream_name("dock")
        .send()
        .await
        .unwrap_err();
    assert!(
        gone.as_service_error()
            .unwrap()
            .is_resource_not_found_exception()
    );
}
