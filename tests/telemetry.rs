//! Tracing, metrics and logs as operators see them: spans exported over OTLP to an in-process
//! receiver (continuing the caller's `traceparent`, provider calls under the server span),
//! the Prometheus scrape endpoint counting the calls a test made, metrics over OTLP, and the
//! trace id in the log lines of the real binary.

mod support;
#[allow(dead_code)]
#[path = "fakes/vod.rs"]
mod vod;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use serde_json::Value;
use streamgate::pb;
use streamgate::pb::stream_service_client::StreamServiceClient;
use support::cloudfront_fake::StreamingFake;
use support::kvs_fake::KvsFake;
use support::otlp::{OtlpReceiver, attribute};
use support::scrape::{sample, scrape};
use support::{AWS_ENV, Binary, TestServer, free_port, local_provider, wait_on};
use tonic::Code;

/// The caller's trace: a W3C trace id and the id of the caller's own span.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("traceparent", traceparent().parse().unwrap());
    request
}

fn get(name: &str) -> pb::GetStreamRequest {
    pb::GetStreamRequest {
        name: name.into(),
        ..Default::default()
    }
}

fn create(stream_id: &str) -> pb::CreateStreamRequest {
    pb::CreateStreamRequest {
        parent: "providers/local".into(),
        stream_id: stream_id.into(),
        stream: Some(pb::Stream {
            media_type: "video/h264".into(),
            data_retention_hours: 1,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn otlp_receiver_gets_the_server_span_under_the_callers_traceparent_and_provider_calls_under_it()
 {
    let receiver = OtlpReceiver::start().await;
    let kvs = KvsFake::start().await;
    kvs.fake.add_stream("cam-1");
    let mut env = AWS_ENV.to_vec();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint));
    env.push(("OTEL_SERVICE_NAME", "streamgate-under-test"));
    let providers = format!(
        "[[providers]]\nid = \"kvs\"\nkind = \"kinesis-video\"\nregion = \"us-east-1\"\n\
         endpoint_url = \"{}\"\n",
        kvs.url
    );
    let server = TestServer::start_env(&providers, &env).await;
    let mut streams = server.streams();
    streams
        .get_stream(traced(get("providers/kvs/streams/cam-1")))
        .await
        .unwrap();
    let missing = streams
        .get_stream(get("providers/kvs/streams/missing"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // A mutation: its provider call runs in the operation's task, still under the call.
    kvs.fake.add_stream("cam-2");
    let deleted = streams
        .delete_stream(traced(pb::DeleteStreamRequest {
            name: "providers/kvs/streams/cam-2".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert!(!kvs.fake.has("cam-2"), "{deleted:?}");
    // Stopping the server flushes the batch exporter: no waiting on its schedule.
    server.stop().await.unwrap();

    let spans = receiver.spans();
    let ours: Vec<_> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == TRACE_ID)
        .collect();
    let server_span_of = |method: &str| {
        ours.iter()
            .find(|s| {
                s.kind == SpanKind::Server as i32
                    && s.name == format!("streamgate.v1.StreamService/{method}")
            })
            .unwrap_or_else(|| panic!("no {method} server span in trace {TRACE_ID}: {spans:#?}"))
    };
    let server_span = server_span_of("GetStream");
    assert_eq!(hex(&server_span.parent_span_id), PARENT_SPAN_ID);
    let attr = |key: &str| attribute(&server_span.attributes, key);
    assert_eq!(attr("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attr("rpc.service").as_deref(),
        Some("streamgate.v1.StreamService")
    );
    assert_eq!(attr("rpc.method").as_deref(), Some("GetStream"));
    assert_eq!(attr("rpc.grpc.status_code").as_deref(), Some("0"));
    assert_eq!(attr("network.peer.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attr("server.address").as_deref(), Some("127.0.0.1"));

    let children: Vec<_> = ours
        .iter()
        .filter(|s| s.parent_span_id == server_span.span_id)
        .collect();
    let describe = children
        .iter()
        .find(|s| s.name == "kinesis-video DescribeStream")
        .unwrap_or_else(|| panic!("no DescribeStream span under the server span: {ours:#?}"));
    assert_eq!(describe.kind, SpanKind::Client as i32);
    let attr = |key: &str| attribute(&describe.attributes, key);
    assert_eq!(attr("provider").as_deref(), Some("kvs"));
    assert_eq!(attr("provider.kind").as_deref(), Some("kinesis-video"));
    assert_eq!(attr("provider.action").as_deref(), Some("DescribeStream"));
    assert_eq!(attr("outcome").as_deref(), Some("ok"));
    assert!(
        children
            .iter()
            .any(|s| s.name == "kinesis-video ListTagsForStream"),
        "{children:#?}"
    );
    assert!(
        describe.start_time_unix_nano >= server_span.start_time_unix_nano
            && describe.end_time_unix_nano <= server_span.end_time_unix_nano
    );

    let delete_call = server_span_of("DeleteStream");
    assert_eq!(hex(&delete_call.parent_span_id), PARENT_SPAN_ID);
    let delete = ours
        .iter()
        .find(|s| s.name == "kinesis-video DeleteStream")
        .unwrap_or_else(|| panic!("no DeleteStream span in trace {TRACE_ID}: {ours:#?}"));
    assert_eq!(delete.parent_span_id, delete_call.span_id);

    // The untraced call started a trace of its own, with its failure on both spans.
    let failed = spans
        .iter()
        .find(|s| {
            s.kind == SpanKind::Server as i32
                && attribute(&s.attributes, "rpc.grpc.status_code").as_deref() == Some("5")
        })
        .unwrap_or_else(|| panic!("no NOT_FOUND server span: {spans:#?}"));
    assert_ne!(hex(&failed.trace_id), TRACE_ID);
    assert!(failed.parent_span_id.is_empty(), "a root span");
    let failed_describe = spans
        .iter()
        .find(|s| s.parent_span_id == failed.span_id && s.name.ends_with("DescribeStream"))
        .unwrap();
    assert_eq!(
        attribute(&failed_describe.attributes, "outcome").as_deref(),
        Some("STREAM_NOT_FOUND")
    );
    assert_eq!(
        failed_describe.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
}

#[tokio::test]
async fn aliyun_vod_and_cloudfront_calls_are_provider_call_spans_under_the_server_span() {
    let receiver = OtlpReceiver::start().await;
    let vod = vod::FakeVod::start().await;
    vod.add_key("LTAI5tFakeKeyId01", "fake-secret", None);
    vod.add_video("v1", &["job-1"]);
    let cloudfront = StreamingFake::start(0).await;
    cloudfront.add("EFAKE1", true, "one");
    let mut env = AWS_ENV.to_vec();
    env.push(("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint));
    let providers = format!(
        "[[providers]]\nid = \"vod\"\nkind = \"aliyun-vod\"\nregion = \"cn-shanghai\"\n\
         endpoint_url = \"{}\"\naccess_key_id = \"LTAI5tFakeKeyId01\"\n\
         access_key_secret = \"fake-secret\"\n\
         [[providers]]\nid = \"rtmp\"\nkind = \"cloudfront-streaming\"\nendpoint_url = \"{}\"\n",
        vod.url(),
        cloudfront.url()
    );
    let server = TestServer::start_env(&providers, &env).await;
    let mut streams = server.streams();
    streams
        .get_stream(traced(get("providers/vod/videos/v1/streams/job-1")))
        .await
        .unwrap();
    streams
        .get_stream(traced(get("providers/rtmp/streams/EFAKE1")))
        .await
        .unwrap();
    server.stop().await.unwrap();

    let spans = receiver.spans();
    let ours: Vec<_> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == TRACE_ID)
        .collect();
    for (name, provider) in [
        ("aliyun-vod GetPlayInfo", "vod"),
        ("cloudfront-streaming GetStreamingDistribution", "rtmp"),
    ] {
        let span = ours
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span: {ours:#?}"));
        assert_eq!(span.kind, SpanKind::Client as i32, "{name}");
        assert_eq!(
            attribute(&span.attributes, "provider").as_deref(),
            Some(provider)
        );
        let parent = ours
            .iter()
            .find(|s| s.span_id == span.parent_span_id)
            .unwrap_or_else(|| panic!("{name} has no parent in the trace"));
        assert_eq!(parent.kind, SpanKind::Server as i32, "{name}");
        assert_eq!(parent.name, "streamgate.v1.StreamService/GetStream");
    }
}

#[tokio::test]
async fn spans_reach_an_https_collector_that_only_its_configured_ca_vouches_for() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path(), "collector");
    let receiver = OtlpReceiver::start_tls(&pki.server("collector")).await;
    let ca = pki.ca_file.display().to_string();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
    ];
    let server = TestServer::start_env(&local_provider("local", "1s"), &env).await;
    server
        .providers()
        .list_providers(traced(pb::ListProvidersRequest::default()))
        .await
        .unwrap();
    server.stop().await.unwrap();
    let spans = receiver.spans();
    assert!(
        spans.iter().any(|s| hex(&s.trace_id) == TRACE_ID
            && s.name == "streamgate.v1.ProviderService/ListProviders"),
        "{spans:#?}"
    );

    // Without the CA, the webpki roots do not vouch for the collector: nothing arrives.
    let receiver = OtlpReceiver::start_tls(&pki.server("collector-2")).await;
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str())];
    let server = TestServer::start_env(&local_provider("local", "1s"), &env).await;
    server
        .providers()
        .list_providers(traced(pb::ListProvidersRequest::default()))
        .await
        .unwrap();
    server.stop().await.unwrap();
    assert!(receiver.spans().is_empty());
}

/// A gateway with one `local` instance and the scrape endpoint on a free port.
async fn scraped_gateway(extra_env: &[(&str, &str)]) -> (TestServer, SocketAddr) {
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = format!(
        "[telemetry]\nmetrics_listen = \"{metrics}\"\n{}",
        local_provider("local", "30s")
    );
    let server = TestServer::start_env(&config, extra_env).await;
    (server, metrics)
}

const REQUESTS: &str = "streamgate_rpc_requests_total";
const ERRORS: &str = "streamgate_rpc_errors_total";
const LATENCY_COUNT: &str = "streamgate_rpc_duration_seconds_count";
const IN_FLIGHT: &str = "streamgate_operations_in_flight";

#[tokio::test]
async fn metrics_scrape_counts_the_calls_by_method_provider_and_code() {
    let (server, metrics) = scraped_gateway(&[]).await;
    let not_found = [
        ("rpc_method", "GetStream"),
        ("provider", "local"),
        ("grpc_code", "NotFound"),
    ];
    let before = scrape(metrics).await;
    assert_eq!(sample(&before, REQUESTS, &not_found, &[]), None);

    let mut streams = server.streams();
    for i in 0..3 {
        let error = streams
            .get_stream(get(&format!("providers/local/streams/missing-{i}")))
            .await
            .unwrap_err();
        assert_eq!(error.code(), Code::NotFound);
    }
    // An instance that is not configured is no label value.
    let error = streams
        .get_stream(get("providers/nowhere/streams/x"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::NotFound);
    streams
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/local".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let after = scrape(metrics).await;
    assert_eq!(
        sample(&after, REQUESTS, &not_found, &[]),
        Some(3.0),
        "{after}"
    );
    assert_eq!(sample(&after, ERRORS, &not_found, &[]), Some(3.0));
    assert_eq!(sample(&after, LATENCY_COUNT, &not_found, &[]), Some(3.0));
    assert_eq!(
        sample(
            &after,
            "streamgate_rpc_duration_seconds_bucket",
            &[not_found[0], not_found[1], not_found[2], ("le", "+Inf")],
            &[],
        ),
        Some(3.0)
    );
    let unlabelled = [("rpc_method", "GetStream"), ("grpc_code", "NotFound")];
    assert_eq!(
        sample(&after, REQUESTS, &unlabelled, &["provider"]),
        Some(1.0)
    );
    let listed = [
        ("rpc_service", "streamgate.v1.StreamService"),
        ("rpc_method", "ListStreams"),
        ("provider", "local"),
        ("grpc_code", "OK"),
    ];
    assert_eq!(sample(&after, REQUESTS, &listed, &[]), Some(1.0));
    assert_eq!(sample(&after, ERRORS, &listed, &[]), None);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_scrape_follows_operations_in_flight_and_keeps_unknown_methods_out_of_labels() {
    let (server, metrics) = scraped_gateway(&[]).await;
    let creating = [("provider", "local"), ("verb", "CreateStream")];
    let op = server
        .streams()
        .create_stream(create("slow"))
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done);
    assert_eq!(
        sample(&scrape(metrics).await, IN_FLIGHT, &creating, &[]),
        Some(1.0)
    );
    let cancelled = server
        .operations()
        .cancel_operation(pb::CancelOperationRequest { name: op.name })
        .await
        .unwrap()
        .into_inner();
    assert!(cancelled.done, "{cancelled:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(&scrape(metrics).await, IN_FLIGHT, &creating, &[]) != Some(0.0) {
        assert!(Instant::now() < deadline, "the gauge did not come down");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A made-up method is answered UNIMPLEMENTED and counted as `unknown`.
    let mut grpc = tonic::client::Grpc::new(server.channel.clone());
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<(), (), _>(
            tonic::Request::new(()),
            http::uri::PathAndQuery::from_static("/made.Up/Nonsense"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    let text = scrape(metrics).await;
    assert!(!text.contains("Nonsense"), "{text}");
    assert_eq!(
        sample(
            &text,
            REQUESTS,
            &[
                ("rpc_service", "unknown"),
                ("rpc_method", "unknown"),
                ("grpc_code", "Unimplemented")
            ],
            &[],
        ),
        Some(1.0)
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_go_to_the_otlp_receiver_when_configured() {
    let receiver = OtlpReceiver::start().await;
    let server = TestServer::start_env(
        &local_provider("local", "1s"),
        &[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &receiver.endpoint)],
    )
    .await;
    server
        .streams()
        .get_stream(get("providers/local/streams/missing"))
        .await
        .unwrap_err();
    // The meter provider's shutdown exports what it holds.
    server.stop().await.unwrap();
    let names: Vec<String> = receiver.metrics().into_iter().map(|m| m.name).collect();
    assert!(
        names.iter().any(|n| n == "streamgate.rpc.requests"),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "streamgate.rpc.duration"),
        "{names:?}"
    );
    assert!(receiver.spans().is_empty(), "traces were not configured");
}

/// What a caller's name tries to make a log line of its own.
const FORGED: &str =
    "2026-11-21T15:46:47.389082Z  INFO audit: audit principal=ops outcome=accepted";

/// Runs the binary with `format` logs, makes a traced CreateStream, an untraced GetStream and a
/// DeleteStream whose name holds a newline and a [`FORGED`] line, stops it, and returns its log.
async fn binary_log(format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("streamgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}/sg.db\"\n[telemetry]\nlog_format = \"{format}\"\n{}",
            dir.path().display(),
            local_provider("local", "10ms")
        ),
    )
    .unwrap();
    let mut binary = Binary::spawn(&config, dir.path(), format);
    let channel = binary.ready().await;
    let mut streams = StreamServiceClient::new(channel.clone());
    let op = streams
        .create_stream(traced(create("logged")))
        .await
        .unwrap()
        .into_inner();
    let done = wait_on(&channel, &op).await;
    assert!(done.done, "{done:?}");
    streams
        .get_stream(get("providers/local/streams/other"))
        .await
        .unwrap_err();
    // A refused mutating call is audited with the name as the caller sent it.
    streams
        .delete_stream(pb::DeleteStreamRequest {
            name: format!("providers/local/streams/x\n{FORGED}"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    drop((streams, channel));
    binary.signal("TERM");
    // Waits without blocking the runtime, which closes the client's connection for the drain.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = binary.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "streamgate did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
    std::fs::read_to_string(&binary.log).unwrap()
}

#[tokio::test]
async fn json_log_lines_of_a_call_carry_its_trace_id() {
    let log = binary_log("json").await;
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let trace_of = |line: &Value| -> Option<String> {
        line["spans"]
            .as_array()?
            .iter()
            .find_map(|s| s["trace_id"].as_str().map(str::to_string))
    };
    let of_create: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["span"]["rpc.method"] == "CreateStream"
                || l["spans"][0]["rpc.method"] == "CreateStream"
        })
        .collect();
    let messages: Vec<&str> = of_create
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    for expected in ["operation accepted", "call finished", "operation done"] {
        assert!(
            messages.contains(&expected),
            "{expected:?} in {messages:?}\n{log}"
        );
    }
    for line in &of_create {
        assert_eq!(trace_of(line).as_deref(), Some(TRACE_ID), "{line}");
    }
    // The untraced call has a trace id of its own, in its line too.
    let other = lines
        .iter()
        .find(|l| l["span"]["rpc.method"] == "GetStream" && l["message"] == "call finished")
        .unwrap_or_else(|| panic!("no GetStream line:\n{log}"));
    assert!(
        log.contains(&format!("streams/x\\n{FORGED}")),
        "the name is escaped:\n{log}"
    );
    let other_trace = trace_of(other).unwrap();
    assert_eq!(other_trace.len(), 32);
    assert_ne!(other_trace, TRACE_ID);
    assert_eq!(other["grpc.code"], "NotFound");
}

#[tokio::test]
async fn text_log_lines_of_a_call_carry_its_trace_id() {
    let log = binary_log("text").await;
    let of_create: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("rpc.method=\"CreateStream\"") || l.contains("rpc.method=CreateStream")
        })
        .collect();
    assert!(
        of_create.iter().any(|l| l.contains("call finished")),
        "{log}"
    );
    assert!(
        of_create.iter().any(|l| l.contains("operation accepted")),
        "{log}"
    );
    for line in of_create {
        assert!(line.contains(&format!("trace_id={TRACE_ID}")), "{line}");
    }
    assert!(
        !log.lines().any(|l| l.starts_with(FORGED)),
        "a name started a line:\n{log}"
    );
    assert!(
        log.contains(&format!("streams/x\\n{FORGED}")),
        "the name is escaped:\n{log}"
    );
}
