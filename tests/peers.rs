//! The gateway driven by independent clients: grpcurl 1.8.6 (reflection v1alpha only) and the
//! Python grpcio health client. Both come from the venv that `scripts/test` installs.

mod support;

use std::process::Command;

use support::{TestServer, grpcurl, local_provider, output_text, venv_tool};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_calls_and_prints_error_details() {
    let server = TestServer::start(&local_provider("local", "200ms")).await;
    let addr = server.addr.to_string();
    let addr = addr.as_str();

    let list = grpcurl(&[addr, "list"]);
    assert!(list.status.success(), "{}", output_text(&list));
    let services = String::from_utf8_lossy(&list.stdout);
    for service in [
        "streamgate.v1.StreamService",
        "streamgate.v1.ProviderService",
        "streamgate.v1.OperationService",
        "streamgate.v1.AuditService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.lines().any(|l| l == service),
            "{service} not in:\n{services}"
        );
    }

    let describe = grpcurl(&[addr, "describe", "streamgate.v1.StreamService"]);
    assert!(describe.status.success(), "{}", output_text(&describe));
    let described = String::from_utf8_lossy(&describe.stdout);
    for method in [
        "CreateStream",
        "GetStream",
        "ListStreams",
        "UpdateStream",
        "DeleteStream",
        "BatchDeleteStreams",
        "WatchStream",
    ] {
        assert!(
            described.contains(&format!("rpc {method}")),
            "{method}:\n{described}"
        );
    }
    let message = grpcurl(&[addr, "describe", "streamgate.v1.Operation"]);
    assert!(
        output_text(&message).contains(".google.rpc.Status error"),
        "{}",
        output_text(&message)
    );

    let created = grpcurl(&[
        "-d",
        r#"{"parent": "providers/local", "stream_id": "cam-1", "stream": {"media_type": "video/h264", "data_retention_hours": 24}}"#,
        addr,
        "streamgate.v1.StreamService/CreateStream",
    ]);
    assert!(created.status.success(), "{}", output_text(&created));
    let op: serde_json::Value = serde_json::from_slice(&created.stdout).unwrap();
    let op_name = op["name"].as_str().unwrap().to_string();
    assert!(op_name.starts_with("operations/"));

    let waited = grpcurl(&[
        "-d",
        &format!(r#"{{"name": "{op_name}", "timeout": "10s"}}"#),
        addr,
        "streamgate.v1.OperationService/WaitOperation",
    ]);
    let done: serde_json::Value = serde_json::from_slice(&waited.stdout).unwrap();
    assert_eq!(done["done"], true, "{done}");
    assert_eq!(done["stream"]["state"], "STATE_ACTIVE", "{done}");
    assert_eq!(done["stream"]["dataRetentionHours"], 24, "{done}");

    let failed = grpcurl(&[
        "-d",
        r#"{"parent": "providers/local", "stream_id": "bad id"}"#,
        addr,
        "streamgate.v1.StreamService/CreateStream",
    ]);
    assert!(!failed.status.success());
    let printed = output_text(&failed);
    assert!(printed.contains("Code: InvalidArgument"), "{printed}");
    assert!(printed.contains("google.rpc.ErrorInfo"), "{printed}");
    assert!(
        printed.contains(r#""reason":"INVALID_ARGUMENT""#),
        "{printed}"
    );
    assert!(printed.contains(r#""domain":"streamgate""#), "{printed}");
    assert!(printed.contains("google.rpc.BadRequest"), "{printed}");
    assert!(printed.contains(r#""field":"stream_id""#), "{printed}");

    let missing = grpcurl(&[
        "-d",
        r#"{"name": "providers/local/streams/nope"}"#,
        addr,
        "streamgate.v1.StreamService/GetStream",
    ]);
    let printed = output_text(&missing);
    assert!(printed.contains("Code: NotFound"), "{printed}");
    assert!(
        printed.contains(r#""reason":"STREAM_NOT_FOUND""#),
        "{printed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_health_client_sees_every_service() {
    let server = TestServer::start(&local_provider("local", "1s")).await;
    let script = support::repo().join("tests/py/health_check.py");
    let output = Command::new(venv_tool("python"))
        .arg(script)
        .arg(server.addr.to_string())
        .args([
            "-",
            "streamgate.v1.StreamService",
            "streamgate.v1.ProviderService",
            "streamgate.v1.OperationService",
        ])
        .output()
        .unwrap();
    let printed = output_text(&output);
    assert!(output.status.success(), "{printed}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .collect::<Vec<_>>(),
        [
            "- SERVING",
            "streamgate.v1.StreamService SERVING",
            "streamgate.v1.ProviderService SERVING",
            "streamgate.v1.OperationService SERVING",
            "no.such.Service NOT_FOUND",
        ],
        "{printed}"
    );
}

#[tokio::test]
async fn reflection_v1_serves_the_services_and_the_error_detail_types() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start(&local_provider("local", "1s")).await;
    let mut client = ServerReflectionClient::new(server.channel.clone());
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("google.rpc.ErrorInfo".into()),
        MessageRequest::FileContainingSymbol("streamgate.v1.StreamService".into()),
    ]
    .map(|message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    });
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for service in [
        "streamgate.v1.StreamService",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(names.contains(&service), "{service} not in {names:?}");
    }
    for _ in 0..2 {
        let answer = answers.message().await.unwrap().unwrap().message_response;
        assert!(
            matches!(answer, Some(MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()),
            "{answer:?}"
        );
    }
}

/// `body` sent as the request of `method` by the Python grpcio client: its "<CODE> <message
/// bytes>" line.
fn grpcio_raw_call(server: &TestServer, method: &str, body: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("request.bin");
    std::fs::write(&file, body).unwrap();
    let output = Command::new(venv_tool("python"))
        .arg(support::repo().join("tests/py/raw_call.py"))
        .arg(server.addr.to_string())
        .arg(method)
        .arg(&file)
        .output()
        .unwrap();
    let printed = output_text(&output);
    assert!(output.status.success(), "{printed}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_mask_paths_answer_an_invalid_argument_grpcio_can_read() {
    use prost::Message;
    let server = TestServer::start(&local_provider("local", "1s")).await;
    let request = streamgate::pb::UpdateStreamRequest {
        stream: Some(streamgate::pb::Stream {
            name: "providers/local/streams/cam-1".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: (0..100_000).map(|i| format!("no_such_field_{i}")).collect(),
        }),
        ..Default::default()
    };
    let answer = grpcio_raw_call(
        &server,
        "/streamgate.v1.StreamService/UpdateStream",
        &request.encode_to_vec(),
    );
    let (code, length) = answer.split_once(' ').unwrap();
    assert_eq!(code, "INVALID_ARGUMENT", "{answer}");
    assert!(length.parse::<usize>().unwrap() <= 512, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_protobuf_is_invalid_argument() {
    let server = TestServer::start(&local_provider("local", "1s")).await;
    for method in [
        "/streamgate.v1.StreamService/GetStream",
        "/streamgate.v1.StreamService/DeleteStream",
        "/streamgate.v1.OperationService/GetOperation",
        // tonic-health, served through the same codec.
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    ] {
        // A field of wire type 7, which does not exist, then a varint that never ends.
        let answer = grpcio_raw_call(&server, method, &[0x0f, 0xff, 0xff, 0xff, 0xff]);
        assert!(
            answer.starts_with("INVALID_ARGUMENT "),
            "{method}: {answer}"
        );
    }
}
