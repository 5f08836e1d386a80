//! The `kinesis-video` adapter against the wire-level KVS fake (what moto does not emulate:
//! CREATING, versions, throttling, updates, tags, authorization and quota errors), and the
//! fake itself checked with the AWS SDK.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_kinesisvideo::error::ProvideErrorMetadata;
use streamgate::pb;
use streamgate::pb::stream::State;
use streamgate::pb::watch_stream_response::ChangeType;
use support::kvs_fake::{KvsFake, RunningKvsFake, Throttle, kvs_client};
use support::{
    AWS_ENV, TestServer, info_metadata, op_error, output_text, reason, venv_tool, violated_fields,
    wait,
};
use tonic::Code;
use tonic_types::StatusExt;

fn provider(fake: &RunningKvsFake, extra: &str) -> String {
    format!(
        "[[providers]]\nid = \"kvs\"\nkind = \"kinesis-video\"\nregion = \"us-east-1\"\n\
         endpoint_url = \"{}\"\ncreation_poll_interval = \"20ms\"\nwatch_poll_interval = \"50ms\"\n{extra}",
        fake.url
    )
}

async fn gateway(fake: &RunningKvsFake, extra: &str) -> TestServer {
    TestServer::start_env(&provider(fake, extra), &AWS_ENV).await
}

fn create(id: &str) -> pb::CreateStreamRequest {
    pb::CreateStreamRequest {
        parent: "providers/kvs".into(),
        stream_id: id.into(),
        stream: Some(pb::Stream {
            media_type: "video/h264".into(),
            data_retention_hours: 24,
            device_name: "camera-1".into(),
            kms_key_id: "arn:aws:kms:us-east-1:123456789012:key/abc".into(),
            tags: HashMap::from([("team".into(), "video".into())]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn name(id: &str) -> String {
    format!("providers/kvs/streams/{id}")
}

#[tokio::test]
async fn the_fake_speaks_kvs_to_the_aws_sdk() {
    let fake = KvsFake::start().await;
    fake.fake.set_creating_describes(1);
    let client = kvs_client(&fake.url);
    let arn = client
        .create_stream()
        .stream_name("sdk")
        .media_type("video/h264")
        .data_retention_in_hours(5)
        .send()
        .await
        .unwrap()
        .stream_arn
        .unwrap();
    let first = client
        .describe_stream()
        .stream_name("sdk")
        .send()
        .await
        .unwrap();
    let info = first.stream_info.unwrap();
    assert_eq!(info.status().unwrap().as_str(), "CREATING");
    assert_eq!(info.stream_arn(), Some(arn.as_str()));
    assert_eq!(info.data_retention_in_hours(), Some(5));
    assert!(info.creation_time().is_some());
    let second = client
        .describe_stream()
        .stream_name("sdk")
        .send()
        .await
        .unwrap();
    assert_eq!(
        second.stream_info.unwrap().status().unwrap().as_str(),
        "ACTIVE"
    );

    let stale = client
        .delete_stream()
        .stream_arn(&arn)
        .current_version("not-the-version")
        .send()
        .await
        .unwrap_err();
    let service = stale.as_service_error().expect("a service error");
    assert!(service.is_version_mismatch_exception(), "{service:?}");
    assert!(aws_sdk_kinesisvideo::operation::RequestId::request_id(service).is_some());

    fake.fake.throttle("listStreams", Throttle::Next(1));
    let throttled = client.list_streams().send().await.unwrap_err();
    assert_eq!(
        throttled.as_service_error().and_then(|e| e.code()),
        Some("ClientLimitExceededException")
    );
    let missing = client
        .describe_stream()
        .stream_name("nope")
        .send()
        .await
        .unwrap_err();
    assert!(
        missing
            .as_service_error()
            .unwrap()
            .is_resource_not_found_exception()
    );
    fake.fake.deny("tagStream");
    let denied = client
        .tag_stream()
        .stream_name("sdk")
        .tags("a", "b")
        .send()
        .await
        .unwrap_err();
    assert!(
        denied
            .as_service_error()
            .unwrap()
            .is_not_authorized_exception()
    );
}

#[tokio::test]
async fn a_stream_creating_past_creation_timeout_fails_the_operation_deadline_exceeded() {
    let fake = KvsFake::start().await;
    fake.fake.set_creating_describes(1_000_000);
    let server = gateway(&fake, "creation_timeout = \"300ms\"\n").await;
    let op = server
        .streams()
        .create_stream(create("slow"))
        .await
        .unwrap()
        .into_inner();
    let done = wait(&server, &op).await;
    let error = op_error(&done);
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(error.message().contains("creation_timeout"), "{error:?}");
    assert!(
        fake.fake.requests_of("describeStream").len() >= 3,
        "it polled meanwhile"
    );
}

#[tokio::test]
async fn create_polls_until_active_with_every_parameter() {
    let fake = KvsFake::start().await;
    fake.fake.set_creating_describes(3);
    let server = gateway(&fake, "").await;
    let op = server
        .streams()
        .create_stream(create("cam-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done);
    let done = wait(&server, &op).await;
    let Some(pb::operation::Result::Stream(stream)) = done.result else {
        panic!("{done:?}");
    };
    assert_eq!(stream.state, State::Active as i32);
    assert_eq!(stream.name, name("cam-1"));
    assert!(stream.provider_uid.starts_with("arn:aws:kinesisvideo:"));
    assert!(!stream.etag.is_empty());
    assert_eq!(stream.tags["team"], "video");

    let sent = &fake.fake.requests_of("createStream")[0].body;
    assert_eq!(sent["StreamName"], "cam-1");
    assert_eq!(sent["DeviceName"], "camera-1");
    assert_eq!(sent["MediaType"], "video/h264");
    assert_eq!(
        sent["KmsKeyId"],
        "arn:aws:kms:us-east-1:123456789012:key/abc"
    );
    assert_eq!(sent["DataRetentionInHours"], 24);
    assert_eq!(sent["Tags"]["team"], "video");
    assert!(
        fake.fake.requests_of("describeStream").len() >= 4,
        "CREATING was polled until ACTIVE"
    );

    let again = server
        .streams()
        .create_stream(create("cam-1"))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    assert_eq!(reason(&again), "STREAM_ALREADY_EXISTS");
}

#[tokio::test]
async fn a_stale_etag_is_aborted_by_kvs_version_mismatch() {
    let fake = KvsFake::start().await;
    let version = fake.fake.add_stream("cam");
    let server = gateway(&fake, "").await;
    let got = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: name("cam"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.etag, version, "the etag is the KVS version");

    // Someone changes the stream behind the gateway's back.
    kvs_client(&fake.url)
        .update_stream()
        .stream_name("cam")
        .current_version(&version)
        .device_name("changed")
        .send()
        .await
        .unwrap();

    let op = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: name("cam"),
            etag: got.etag.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(op.done);
    let status = op_error(&op);
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(reason(&status), "ETAG_MISMATCH");
    assert_eq!(
        info_metadata(&status, "provider_code"),
        "VersionMismatchException"
    );
    assert!(info_metadata(&status, "provider_request_id").starts_with("req-"));
    assert_eq!(info_metadata(&status, "provider"), "kvs");
    assert!(fake.fake.has("cam"));

    let update = server
        .streams()
        .update_stream(pb::UpdateStreamRequest {
            stream: Some(pb::Stream {
                name: name("cam"),
                etag: got.etag,
                media_type: "video/h265".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = op_error(&update);
    assert_eq!(reason(&status), "ETAG_MISMATCH");
    assert_eq!(
        info_metadata(&status, "provider_code"),
        "VersionMismatchException"
    );

    // With the current etag the delete goes through, CurrentVersion and all.
    let current = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: name("cam"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let op = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: name("cam"),
            etag: current.etag.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        matches!(op.result, Some(pb::operation::Result::DeleteStream(_))),
        "{op:?}"
    );
    assert!(!fake.fake.has("cam"));
    let delete = fake.fake.requests_of("deleteStream").pop().unwrap();
    assert_eq!(delete.body["CurrentVersion"], current.etag.as_str());
    assert!(delete.body["StreamARN"].as_str().unwrap().ends_with("/1"));
}

#[tokio::test]
async fn three_throttles_then_success_and_constant_throttling() {
    let fake = KvsFake::start().await;
    let server = gateway(&fake, "").await;
    fake.fake.throttle("createStream", Throttle::Next(3));
    let op = server
        .streams()
        .create_stream(create("slowly"))
        .await
        .unwrap()
        .into_inner();
    let done = wait(&server, &op).await;
    assert!(
        matches!(done.result, Some(pb::operation::Result::Stream(_))),
        "{done:?}"
    );
    let creates = fake.fake.requests_of("createStream");
    assert_eq!(
        creates.iter().map(|r| r.status).collect::<Vec<_>>(),
        [400, 400, 400, 200]
    );

    fake.fake.throttle("describeStream", Throttle::Always);
    let mut request = tonic::Request::new(pb::GetStreamRequest {
        name: name("slowly"),
        ..Default::default()
    });
    request.set_timeout(Duration::from_secs(2));
    let started = Instant::now();
    let status = server.streams().get_stream(request).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "inside the deadline"
    );
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "PROVIDER_THROTTLED");
    assert_eq!(
        info_metadata(&status, "provider_code"),
        "ClientLimitExceededException"
    );
    assert!(
        status.get_error_details().retry_info().is_some(),
        "RetryInfo"
    );
    assert!(
        fake.fake.requests_of("describeStream").len() >= 3,
        "it retried"
    );
}

#[tokio::test]
async fn batch_delete_of_200_streams_stays_under_the_delete_rate() {
    let fake = KvsFake::start().await;
    let names: Vec<String> = (0..200).map(|i| format!("s{i:03}")).collect();
    for n in &names {
        fake.fake.add_stream(n);
    }
    let server = gateway(&fake, "").await;
    let mut request = pb::BatchDeleteStreamsRequest {
        parent: "providers/kvs".into(),
        names: names.iter().map(|n| name(n)).collect(),
        request_id: "batch-200".into(),
    };
    request.names.push(name("missing"));
    let op = server
        .streams()
        .batch_delete_streams(request)
        .await
        .unwrap()
        .into_inner();
    let done = wait(&server, &op).await;
    let Some(pb::operation::Result::BatchDeleteStreams(result)) = done.result else {
        panic!("{done:?}");
    };
    assert_eq!(result.results.len(), 201);
    assert!(result.results[..200].iter().all(|r| r.deleted));
    let missing = &result.results[200];
    assert!(!missing.deleted);
    assert_eq!(missing.error.as_ref().unwrap().reason, "STREAM_NOT_FOUND");

    let times: Vec<Instant> = fake
        .fake
        .requests_of("deleteStream")
        .iter()
        .map(|r| r.at)
        .collect();
    assert_eq!(times.len(), 200);
    assert!(
        fake.fake
            .requests_of("deleteStream")
            .iter()
            .all(|r| r.body.get("CurrentVersion").is_none()),
        "no etag: KVS checks the creation time only"
    );
    // In any one-second window, at most 50 DeleteStream calls (the default quota).
    let most = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && t.duration_since(*start) < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(most <= 50, "{most} DeleteStream calls within one second");
    assert!(most >= 40, "the limit is used, not undershot: {most}");
}

#[tokio::test]
async fn update_changes_fields_retention_and_tags() {
    let fake = KvsFake::start().await;
    let server = gateway(&fake, "").await;
    wait(
        &server,
        &server
            .streams()
            .create_stream(create("upd"))
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let before = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: name("upd"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for (hours, tags) in [
        (48, vec![("team", "video"), ("tier", "gold")]),
        (12, vec![("tier", "silver")]),
    ] {
        let op = server
            .streams()
            .update_stream(pb::UpdateStreamRequest {
                stream: Some(pb::Stream {
                    name: name("upd"),
                    device_name: format!("device-{hours}"),
                    media_type: "video/h265".into(),
                    data_retention_hours: hours,
                    tags: tags
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![
                        "device_name".into(),
                        "media_type".into(),
                        "data_retention_hours".into(),
                        "tags".into(),
                    ],
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let done = wait(&server, &op).await;
        let Some(pb::operation::Result::Stream(stream)) = done.result else {
            panic!("{done:?}");
        };
        assert_eq!(stream.data_retention_hours, hours);
        assert_eq!(stream.device_name, format!("device-{hours}"));
        assert_eq!(stream.tags.len(), tags.len());
        let held = fake.fake.stream("upd").unwrap();
        assert_eq!(held.retention, i64::from(hours));
        assert_eq!(
            held.device_name.as_deref(),
            Some(format!("device-{hours}").as_str())
        );
        assert_eq!(held.media_type.as_deref(), Some("video/h265"));
        assert_eq!(held.tags.len(), tags.len());
        assert_eq!(held.version, stream.etag);
        assert_ne!(stream.etag, before.etag);
    }
    let retention_calls = fake.fake.requests_of("updateDataRetention");
    assert_eq!(
        retention_calls[0].body["Operation"],
        "INCREASE_DATA_RETENTION"
    );
    assert_eq!(retention_calls[0].body["DataRetentionChangeInHours"], 24);
    assert_eq!(
        retention_calls[1].body["Operation"],
        "DECREASE_DATA_RETENTION"
    );
    assert_eq!(retention_calls[1].body["DataRetentionChangeInHours"], 36);
    assert_eq!(fake.fake.requests_of("untagStream").len(), 1);
}

#[tokio::test]
async fn authorization_and_quota_errors_are_mapped() {
    let fake = KvsFake::start().await;
    fake.fake.add_stream("locked");
    fake.fake.deny("deleteStream");
    fake.fake.set_account_stream_limit(1);
    let server = gateway(&fake, "").await;
    let op = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: name("locked"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let status = op_error(&op);
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(reason(&status), "PROVIDER_PERMISSION_DENIED");
    assert_eq!(
        info_metadata(&status, "provider_code"),
        "NotAuthorizedException"
    );

    let op = server
        .streams()
        .create_stream(create("one-too-many"))
        .await
        .unwrap()
        .into_inner();
    let status = op_error(&wait(&server, &op).await);
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "PROVIDER_QUOTA_EXCEEDED");
    assert_eq!(
        info_metadata(&status, "provider_code"),
        "AccountStreamLimitExceededException"
    );

    let missing = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: name("nope"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "STREAM_NOT_FOUND");
}

#[tokio::test]
async fn validation_happens_before_any_provider_call() {
    let fake = KvsFake::start().await;
    let server = gateway(&fake, "").await;
    let mut streams = server.streams();
    let bad = |f: fn(&mut pb::CreateStreamRequest)| {
        let mut request = create("ok");
        f(&mut request);
        request
    };
    let cases: Vec<(pb::CreateStreamRequest, &str)> = vec![
        (bad(|r| r.stream_id = "has space".into()), "stream_id"),
        (bad(|r| r.stream_id = "x".repeat(257)), "stream_id"),
        (
            bad(|r| r.stream.as_mut().unwrap().data_retention_hours = 87_601),
            "stream.data_retention_hours",
        ),
        (
            bad(|r| {
                r.stream.as_mut().unwrap().tags =
                    (0..51).map(|i| (format!("k{i}"), "v".into())).collect()
            }),
            "stream.tags",
        ),
        (
            bad(|r| r.stream.as_mut().unwrap().media_type = "h264".into()),
            "stream.media_type",
        ),
        (
            bad(|r| r.stream.as_mut().unwrap().device_name = "d".repeat(129)),
            "stream.device_name",
        ),
        (
            bad(|r| r.stream.as_mut().unwrap().kms_key_id = "k".repeat(2049)),
            "stream.kms_key_id",
        ),
    ];
    for (request, field) in cases {
        let status = streams.create_stream(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(violated_fields(&status), [field]);
    }
    let mut validate_only = create("dry");
    validate_only.validate_only = true;
    assert!(
        streams
            .create_stream(validate_only)
            .await
            .unwrap()
            .into_inner()
            .done
    );
    assert!(fake.fake.requests().is_empty(), "no call reached KVS");
}

/// Reads DeviceName, MediaType, TagKey and TagValue from botocore's KVS model and prints, as
/// JSON `[[shape, value, accepted], ...]`, boundary values of their lengths and one probe per
/// character of interest, each judged by the model's own length range and pattern (the
/// pattern is Java's: `\w` is ASCII).
const KVS_MODEL_CASES: &str = r##"
import gzip, json, os, botocore, regex
path = os.path.join(os.path.dirname(botocore.__file__), "data", "kinesisvideo", "2017-09-30")
name = [f for f in os.listdir(path) if f.startswith("service-2")][0]
opener = gzip.open if name.endswith(".gz") else open
with opener(os.path.join(path, name), "rt") as f:
    shapes = json.load(f)["shapes"]
probes = [" ", "_", ".", ":", "/", "=", "+", "-", "@", "!", "#", "*", ",", "$", "\t", "é", "ß",
          "中", "٣", "\u00a0", "\u2028", "\u2029", "Ⅻ", "½", "\u0301", "Ⓐ", "\u0903", "😀"]
cases = []
for shape in ["StreamName", "DeviceName", "MediaType", "TagKey", "TagValue", "Version"]:
    s = shapes[shape]
    lo, hi = s.get("min", 0), s["max"]
    pattern = s["pattern"].replace(r"\w", "A-Za-z0-9_")
    def judge(value):
        units = len(value.encode("utf-16-le")) // 2
        return lo <= units <= hi and regex.fullmatch(pattern, value) is not None
    if shape == "MediaType":
        values = ["video/" + "h" * (n - 6) for n in (hi - 1, hi, hi + 1)]
        values += ["video/h" + c + "264" for c in probes]
    else:
        values = ["a" * n for n in (lo - 1, lo, hi, hi + 1) if n >= 0]
        values += ["a" + c + "a" for c in probes]
    for value in values:
        cases.append([shape, value, judge(value)])
print(json.dumps(cases))
"##;

#[tokio::test]
async fn validate_only_agrees_with_the_published_kvs_model() {
    let output = std::process::Command::new(venv_tool("python"))
        .args(["-c", KVS_MODEL_CASES])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    let cases: Vec<(String, String, bool)> = serde_json::from_slice(&output.stdout).unwrap();
    assert!(cases.len() > 100, "{cases:?}");
    let fake = KvsFake::start().await;
    let server = gateway(&fake, "").await;
    let mut streams = server.streams();
    for (shape, value, accepted) in &cases {
        // A Version is the etag of a delete (empty is "not set").
        if shape == "Version" {
            if value.is_empty() {
                continue;
            }
            let request = pb::DeleteStreamRequest {
                name: name("dry"),
                etag: value.clone(),
                validate_only: true,
                ..Default::default()
            };
            let answer = streams.delete_stream(request).await;
            assert_eq!(
                answer.is_ok(),
                *accepted,
                "Version {value:?}: the model says {accepted}, the gateway {answer:?}"
            );
            continue;
        }
        let mut request = create("dry");
        request.validate_only = true;
        // The stream id is the StreamName.
        if shape == "StreamName" {
            request.stream_id = value.clone();
        }
        let stream = request.stream.as_mut().unwrap();
        match shape.as_str() {
            // Empty is "not set" in proto3: nothing to check against the model.
            "StreamName" | "DeviceName" | "MediaType" if value.is_empty() => continue,
            "StreamName" => {}
            "DeviceName" => stream.device_name = value.clone(),
            "MediaType" => stream.media_type = value.clone(),
            "TagKey" => stream.tags = HashMap::from([(value.clone(), "v".to_string())]),
            _ => stream.tags = HashMap::from([("k".to_string(), value.clone())]),
        }
        match streams.create_stream(request).await {
            Ok(op) => assert!(
                *accepted && op.into_inner().done,
                "{shape} {value:?}: the model refuses it, the gateway accepted it"
            ),
            Err(status) => {
                assert!(
                    !*accepted,
                    "{shape} {value:?}: the model accepts it, the gateway refused: {status:?}"
                );
                assert_eq!(status.code(), Code::InvalidArgument, "{shape} {value:?}");
            }
        }
    }
    assert!(fake.fake.requests().is_empty(), "no call reached KVS");
}

#[tokio::test]
async fn list_pages_with_the_prefix_filter_and_watch_polls() {
    let fake = KvsFake::start().await;
    for n in ["cam-a", "cam-b", "cam-c", "door-a"] {
        fake.fake.add_stream(n);
    }
    let server = gateway(&fake, "").await;
    let mut streams = server.streams();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = streams
            .list_streams(pb::ListStreamsRequest {
                parent: "providers/kvs".into(),
                filter: "stream_id_prefix = \"cam-\"".into(),
                page_size: 2,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.streams.into_iter().map(|s| s.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, [name("cam-a"), name("cam-b"), name("cam-c")]);
    let lists = fake.fake.requests_of("listStreams");
    assert_eq!(
        lists[0].body["StreamNameCondition"]["ComparisonOperator"],
        "BEGINS_WITH"
    );
    assert_eq!(lists[0].body["MaxResults"], 2);

    let unsupported = streams
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/kvs".into(),
            filter: "state = ACTIVE".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&unsupported), ["filter"]);

    // A change made outside the gateway reaches a watcher through polling.
    let mut watch = streams
        .watch_stream(pb::WatchStreamRequest {
            name: name("cam-a"),
        })
        .await
        .unwrap()
        .into_inner();
    let initial = watch.message().await.unwrap().unwrap();
    assert_eq!(initial.change_type, ChangeType::Initial as i32);
    let client = kvs_client(&fake.url);
    let version = initial.stream.unwrap().etag;
    client
        .update_stream()
        .stream_name("cam-a")
        .current_version(&version)
        .device_name("moved")
        .send()
        .await
        .unwrap();
    let updated = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(updated.change_type, ChangeType::Updated as i32);
    assert_eq!(updated.stream.unwrap().device_name, "moved");
    client
        .delete_stream()
        .stream_arn("arn:aws:kinesisvideo:us-east-1:123456789012:stream/cam-a/1")
        .send()
        .await
        .unwrap();
    let deleted = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(deleted.change_type, ChangeType::Deleted as i32);
}

#[tokio::test]
async fn an_unknown_code_with_a_server_error_status_is_retried() {
    let fake = KvsFake::start().await;
    let server = gateway(&fake, "").await;
    fake.fake.add_stream("flaky");
    fake.fake
        .fail_next("deleteStream", 502, "SomethingNewException");
    let op = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: name("flaky"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let done = wait(&server, &op).await;
    assert!(
        matches!(done.result, Some(pb::operation::Result::DeleteStream(_))),
        "{done:?}"
    );
    assert_eq!(fake.fake.requests_of("deleteStream").len(), 2);
}

#[tokio::test]
async fn every_seed_exception_reaches_the_caller_with_its_code_and_request_id() {
    let fake = KvsFake::start().await;
    let server = gateway(&fake, "").await;
    // (action, HTTP status, KVS code, gRPC code, reason)
    let deletes = [
        (
            "ClientLimitExceededException",
            400,
            Code::ResourceExhausted,
            "PROVIDER_THROTTLED",
        ),
        (
            "InvalidArgumentException",
            400,
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "ResourceNotFoundException",
            404,
            Code::NotFound,
            "STREAM_NOT_FOUND",
        ),
        (
            "NotAuthorizedException",
            401,
            Code::PermissionDenied,
            "PROVIDER_PERMISSION_DENIED",
        ),
        (
            "VersionMismatchException",
            400,
            Code::Aborted,
            "ETAG_MISMATCH",
        ),
        (
            "ResourceInUseException",
            400,
            Code::FailedPrecondition,
            "STREAM_IN_USE",
        ), // The gateway's own credentials refused: never UNAUTHENTICATED (the caller's code).
        (
            "UnrecognizedClientException",
            400,
            Code::Unavailable,
            "PROVIDER_CREDENTIALS_INVALID",
        ),
        (
            "InvalidSignatureException",
            403,
            Code::Unavailable,
            "PROVIDER_CREDENTIALS_INVALID",
        ),
        (
            "MissingAuthenticationTokenException",
            403,
            Code::Unavailable,
            "PROVIDER_CREDENTIALS_INVALID",
        ),
    ];
    for (i, (code, http, grpc, why)) in deletes.into_iter().enumerate() {
        let id = format!("del-{i}");
        fake.fake.add_stream(&id);
        if code == "ClientLimitExceededException" {
            fake.fake.throttle("deleteStream", Throttle::Always);
        } else {
            fake.fake.fail_next("deleteStream", http, code);
        }
        let op = server
            .streams()
            .delete_stream(pb::DeleteStreamRequest {
                name: name(&id),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let status = op_error(&wait(&server, &op).await);
        fake.fake.throttle("deleteStream", Throttle::Next(0));
        assert_eq!(status.code(), grpc, "{code}");
        assert_eq!(reason(&status), why, "{code}");
        assert_eq!(info_metadata(&status, "provider_code"), code);
        assert!(
            info_metadata(&status, "provider_request_id").starts_with("req-"),
            "{code}"
        );
    }
    let creates = [
        (
            "AccountStreamLimitExceededException",
            Code::ResourceExhausted,
            "PROVIDER_QUOTA_EXCEEDED",
        ),
        (
            "DeviceStreamLimitExceededException",
            Code::ResourceExhausted,
            "PROVIDER_QUOTA_EXCEEDED",
        ),
        (
            "ResourceInUseException",
            Code::AlreadyExists,
            "STREAM_ALREADY_EXISTS",
        ),
        (
            "InvalidDeviceException",
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "InvalidArgumentException",
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        (
            "TagsPerResourceExceededLimitException",
            Code::ResourceExhausted,
            "PROVIDER_QUOTA_EXCEEDED",
        ),
    ];
    for (i, (code, grpc, why)) in creates.into_iter().enumerate() {
        fake.fake.fail_next("createStream", 400, code);
        let op = server
            .streams()
            .create_stream(create(&format!("new-{i}")))
            .await
            .unwrap()
            .into_inner();
        let status = op_error(&wait(&server, &op).await);
        assert_eq!(status.code(), grpc, "{code}");
        assert_eq!(reason(&status), why, "{code}");
        assert_eq!(info_metadata(&status, "provider_code"), code);
        assert!(
            info_metadata(&status, "provider_request_id").starts_with("req-"),
            "{code}"
        );
    }
}

#[tokio::test]
async fn several_instances_side_by_side() {
    let east = KvsFake::start().await;
    let west = KvsFake::start().await;
    east.fake.add_stream("only-east");
    let providers = format!(
        "{}{}",
        provider(&east, ""),
        provider(&west, "")
            .replace("id = \"kvs\"", "id = \"kvs-west\"")
            .replace("us-east-1", "eu-west-1")
    );
    let server = TestServer::start_env(&providers, &AWS_ENV).await;
    let listed = server
        .providers()
        .list_providers(pb::ListProvidersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let regions: Vec<_> = listed
        .providers
        .iter()
        .map(|p| (p.name.as_str(), p.kind.as_str(), p.region.as_str()))
        .collect();
    assert_eq!(
        regions,
        [
            ("providers/kvs", "kinesis-video", "us-east-1"),
            ("providers/kvs-west", "kinesis-video", "eu-west-1"),
        ]
    );
    server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: name("only-east"),
            ..Default::default()
        })
        .await
        .expect("the east instance holds it");
    let west_view = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: "providers/kvs-west/streams/only-east".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(west_view.code(), Code::NotFound);
    assert!(west.fake.requests_of("describeStream").len() == 1);
}
