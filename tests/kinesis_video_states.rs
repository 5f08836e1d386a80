//! The `kinesis-video` adapter against KVS's timed states and quotas, as the wire-level fake
//! plays them (`support::kvs_fake::Windows`, `enforce_quotas`): a new stream invisible for a
//! moment, UPDATING between the steps of an update, DELETING, a follow-up read refused, the
//! provider's code on a missing stream — and the fake's own states and quotas checked with the
//! AWS SDK.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_kinesisvideo::error::ProvideErrorMetadata;
use streamgate::pb;
use streamgate::pb::stream::State;
use support::kvs_fake::{KvsFake, RunningKvsFake, Windows, kvs_client};
use support::{AWS_ENV, TestServer, info_metadata, op_error, reason, wait};
use tonic::Code;

async fn gateway(fake: &RunningKvsFake, extra: &str) -> TestServer {
    let config = format!(
        "[[providers]]\nid = \"kvs\"\nkind = \"kinesis-video\"\nregion = \"us-east-1\"\n\
         endpoint_url = \"{}\"\ncreation_poll_interval = \"50ms\"\n{extra}",
        fake.url
    );
    TestServer::start_env(&config, &AWS_ENV).await
}

fn name(id: &str) -> String {
    format!("providers/kvs/streams/{id}")
}

async fn create(server: &TestServer, id: &str) -> pb::Operation {
    let op = server
        .streams()
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/kvs".into(),
            stream_id: id.into(),
            stream: Some(pb::Stream {
                media_type: "video/h264".into(),
                data_retention_hours: 24,
                tags: HashMap::from([("team".into(), "video".into())]),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    wait(server, &op).await
}

async fn delete(server: &TestServer, id: &str, allow_missing: bool) -> pb::Operation {
    let op = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: name(id),
            allow_missing,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    wait(server, &op).await
}

fn full_update(id: &str) -> pb::UpdateStreamRequest {
    pb::UpdateStreamRequest {
        stream: Some(pb::Stream {
            name: name(id),
            device_name: "camera-2".into(),
            media_type: "video/h265".into(),
            data_retention_hours: 48,
            tags: HashMap::from([("tier".into(), "gold".into())]),
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
    }
}

/// How many of the fake's answers were KVS refusing a change to a stream not ACTIVE.
fn refused_not_active(fake: &RunningKvsFake) -> usize {
    fake.fake
        .requests()
        .iter()
        .filter(|r| r.status == 400 && !r.throttled && r.action != "describeStream")
        .count()
}

#[tokio::test]
async fn the_fake_plays_kvs_states_and_quotas_to_the_aws_sdk() {
    let fake = KvsFake::start().await;
    fake.fake.set_windows(Windows {
        invisible: Duration::from_millis(300),
        creating: Duration::from_millis(300),
        updating: Duration::from_millis(300),
        deleting: Duration::from_millis(300),
    });
    let client = kvs_client(&fake.url);
    client
        .create_stream()
        .stream_name("sdk")
        .data_retention_in_hours(1)
        .send()
        .await
        .unwrap();
    let invisible = client
        .describe_stream()
        .stream_name("sdk")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        invisible.as_service_error().and_then(|e| e.code()),
        Some("ResourceNotFoundException")
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let info = client
        .describe_stream()
        .stream_name("sdk")
        .send()
        .await
        .unwrap()
        .stream_info
        .unwrap();
    assert_eq!(info.status().unwrap().as_str(), "ACTIVE");

    client
        .update_stream()
        .stream_name("sdk")
        .current_version(info.version().unwrap())
        .device_name("d")
        .send()
        .await
        .unwrap();
    assert_eq!(fake.fake.status("sdk"), Some("UPDATING"));
    let busy = client
        .update_data_retention()
        .stream_name("sdk")
        .current_version(info.version().unwrap())
        .operation(aws_sdk_kinesisvideo::types::UpdateDataRetentionOperation::IncreaseDataRetention)
        .data_retention_change_in_hours(1)
        .send()
        .await
        .unwrap_err();
    let busy = busy.as_service_error().unwrap();
    assert!(busy.is_resource_in_use_exception(), "{busy:?}");
    assert!(busy.message().unwrap().contains("not in Active status"));
    // Tagging publishes no ResourceInUseException: KVS takes it in any state.
    client
        .tag_stream()
        .stream_name("sdk")
        .tags("a", "b")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;

    let arn = info.stream_arn().unwrap();
    client.delete_stream().stream_arn(arn).send().await.unwrap();
    assert_eq!(fake.fake.status("sdk"), Some("DELETING"));
    let again = client
        .delete_stream()
        .stream_arn(arn)
        .send()
        .await
        .unwrap_err();
    assert!(
        again
            .as_service_error()
            .unwrap()
            .is_resource_in_use_exception()
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(fake.fake.status("sdk"), None);

    // The published per-stream DescribeStream quota: 5 a second.
    fake.fake.add_stream("q");
    fake.fake.add_stream("other");
    fake.fake.enforce_quotas();
    for _ in 0..5 {
        client
            .describe_stream()
            .stream_name("q")
            .send()
            .await
            .unwrap();
    }
    let over = client
        .describe_stream()
        .stream_name("q")
        .send()
        .await
        .unwrap_err();
    assert!(
        over.as_service_error()
            .unwrap()
            .is_client_limit_exceeded_exception()
    );
    client
        .describe_stream()
        .stream_name("other")
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_new_stream_invisible_for_a_moment_is_waited_for_within_visibility_timeout() {
    let fake = KvsFake::start().await;
    fake.fake.set_windows(Windows {
        invisible: Duration::from_millis(400),
        creating: Duration::from_millis(600),
        ..Windows::default()
    });
    let server = gateway(&fake, "").await;
    let done = create(&server, "late").await;
    let Some(pb::operation::Result::Stream(stream)) = &done.result else {
        panic!("{done:?}");
    };
    assert_eq!(stream.state, State::Active as i32);
    let misses = fake
        .fake
        .requests_of("describeStream")
        .iter()
        .filter(|r| r.status == 404)
        .count();
    assert!(misses >= 1, "the stream was invisible at first");

    // Past the configured bound, the create fails and says why.
    let fake = KvsFake::start().await;
    fake.fake.set_windows(Windows {
        invisible: Duration::from_secs(30),
        ..Windows::default()
    });
    let server = gateway(&fake, "visibility_timeout = \"300ms\"\n").await;
    let done = create(&server, "never").await;
    let error = op_error(&done);
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(error.message().contains("visibility_timeout"), "{error:?}");
}

#[tokio::test]
async fn an_update_of_every_field_waits_for_active_between_its_steps() {
    let fake = KvsFake::start().await;
    fake.fake.add_stream("upd");
    fake.fake.set_windows(Windows {
        updating: Duration::from_millis(400),
        ..Windows::default()
    });
    let server = gateway(&fake, "").await;
    let op = server
        .streams()
        .update_stream(full_update("upd"))
        .await
        .unwrap()
        .into_inner();
    let done = wait(&server, &op).await;
    let Some(pb::operation::Result::Stream(stream)) = &done.result else {
        panic!("{done:?}");
    };
    assert_eq!(stream.device_name, "camera-2");
    assert_eq!(stream.data_retention_hours, 48);
    assert_eq!(stream.tags["tier"], "gold");
    let held = fake.fake.stream("upd").unwrap();
    assert_eq!(held.device_name.as_deref(), Some("camera-2"));
    assert_eq!(held.retention, 48);
    assert_eq!(held.tags.get("tier").map(String::as_str), Some("gold"));
    assert_eq!(refused_not_active(&fake), 0, "{:?}", fake.fake.requests());

    // A delete sent while someone else's update holds the stream UPDATING waits for ACTIVE.
    kvs_client(&fake.url)
        .update_stream()
        .stream_name("upd")
        .current_version(held.version)
        .device_name("camera-3")
        .send()
        .await
        .unwrap();
    assert_eq!(fake.fake.status("upd"), Some("UPDATING"));
    let deleted = delete(&server, "upd", false).await;
    assert!(
        matches!(deleted.result, Some(pb::operation::Result::DeleteStream(_))),
        "{deleted:?}"
    );
    assert!(!fake.fake.has("upd"));
    assert_eq!(refused_not_active(&fake), 0, "{:?}", fake.fake.requests());
}

#[tokio::test]
async fn an_update_that_outwaits_update_timeout_says_what_it_changed() {
    let fake = KvsFake::start().await;
    fake.fake.add_stream("slow");
    fake.fake.set_windows(Windows {
        updating: Duration::from_secs(30),
        ..Windows::default()
    });
    let server = gateway(&fake, "update_timeout = \"400ms\"\n").await;
    let op = server
        .streams()
        .update_stream(full_update("slow"))
        .await
        .unwrap()
        .into_inner();
    let error = op_error(&wait(&server, &op).await);
    assert_eq!(error.code(), Code::DeadlineExceeded, "{error:?}");
    assert!(
        error
            .message()
            .contains("the device name and media type were changed; retention and tags were not"),
        "{error:?}"
    );
    assert_eq!(
        fake.fake.stream("slow").unwrap().device_name.as_deref(),
        Some("camera-2")
    );
}

#[tokio::test]
async fn a_stream_being_deleted_counts_as_gone() {
    let fake = KvsFake::start().await;
    fake.fake.add_stream("bye");
    fake.fake.set_windows(Windows {
        deleting: Duration::from_secs(30),
        ..Windows::default()
    });
    let server = gateway(&fake, "").await;
    let first = delete(&server, "bye", false).await;
    assert!(
        matches!(first.result, Some(pb::operation::Result::DeleteStream(_))),
        "{first:?}"
    );
    assert_eq!(fake.fake.status("bye"), Some("DELETING"));
    let second = delete(&server, "bye", true).await;
    assert!(
        matches!(second.result, Some(pb::operation::Result::DeleteStream(_))),
        "a second delete with allow_missing succeeds: {second:?}"
    );
    assert_eq!(fake.fake.requests_of("deleteStream").len(), 1);
}

#[tokio::test]
async fn a_create_whose_tag_read_is_refused_succeeds_and_says_so() {
    let fake = KvsFake::start().await;
    fake.fake.deny("listTagsForStream");
    let server = gateway(&fake, "").await;
    let done = create(&server, "made").await;
    let Some(pb::operation::Result::Stream(stream)) = &done.result else {
        panic!("the stream was made, so the create succeeded: {done:?}");
    };
    assert_eq!(stream.tags["team"], "video", "the tags as requested");
    let warnings = &done.metadata.as_ref().unwrap().warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("NotAuthorizedException"),
        "{warnings:?}"
    );
    assert!(fake.fake.has("made"));
}

#[tokio::test]
async fn a_missing_stream_answers_with_kvs_code_and_request_id() {
    let fake = KvsFake::start().await;
    let server = gateway(&fake, "").await;
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
    assert_eq!(
        info_metadata(&missing, "provider_code"),
        "ResourceNotFoundException"
    );
    assert!(!info_metadata(&missing, "provider_request_id").is_empty());
}
