//! The CloudFront kinds end to end: `cloudfront-streaming` against the wire-level fake of
//! `tests/support/cloudfront_fake.rs` (itself checked with the AWS SDK's own parsers), and
//! `cloudfront` against moto's server. Poll intervals shrink only through the instance's
//! `deploy_poll_interval`.

mod support;

use std::time::{Duration, Instant};

use aws_sdk_cloudfront::error::ProvideErrorMetadata;
use streamgate::pb;
use streamgate::pb::stream::State;
use support::cloudfront_fake::{StreamingFake, body_enabled};
use support::moto::{AWS_ENV, Moto};
use support::{
    TestServer, failure, grpcurl_follow, grpcurl_json, info_metadata, reason, step, until_step,
    wait,
};
use tonic::Code;

fn streaming_provider(fake: &StreamingFake, poll: &str) -> String {
    streaming_provider_with_timeout(fake, poll, "1m")
}

fn streaming_provider_with_timeout(fake: &StreamingFake, poll: &str, timeout: &str) -> String {
    format!(
        "[[providers]]\nid = \"rtmp\"\nkind = \"cloudfront-streaming\"\nendpoint_url = \"{}\"\n\
         deploy_poll_interval = \"{poll}\"\ndeploy_timeout = \"{timeout}\"\n",
        fake.url()
    )
}

fn web_provider(moto: &Moto, poll: &str) -> String {
    format!(
        "[[providers]]\nid = \"web\"\nkind = \"cloudfront\"\nendpoint_url = \"{}\"\n\
         deploy_poll_interval = \"{poll}\"\n",
        moto.url()
    )
}

async fn start_streaming(fake: &StreamingFake, poll: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    TestServer::start_in_env(dir, &streaming_provider(fake, poll), &AWS_ENV).await
}

fn delete(name: &str) -> pb::DeleteStreamRequest {
    pb::DeleteStreamRequest {
        name: name.into(),
        ..Default::default()
    }
}

fn cloudfront(stream: &pb::Stream) -> &pb::CloudFrontStreamDetails {
    match &stream.details {
        Some(pb::stream::Details::Cloudfront(d)) => d,
        other => panic!("no cloudfront details: {other:?}"),
    }
}

#[tokio::test]
async fn the_fake_speaks_cloudfront_as_the_aws_sdk_reads_it() {
    let fake = StreamingFake::start(2).await;
    let first = fake.add("EFAKE1", true, "one");
    fake.add("EFAKE2", false, "two");
    let config = aws_sdk_cloudfront::Config::builder()
        .behavior_version(aws_sdk_cloudfront::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudfront::config::Region::new("us-east-1"))
        .endpoint_url(fake.url())
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    let client = aws_sdk_cloudfront::Client::from_conf(config);

    let list = client
        .list_streaming_distributions()
        .max_items(1)
        .send()
        .await
        .unwrap();
    let list = list.streaming_distribution_list().unwrap();
    assert_eq!(list.items().len(), 1);
    assert!(list.is_truncated());
    assert_eq!(list.next_marker(), Some("EFAKE1"));
    assert_eq!(list.items()[0].comment(), "one");
    assert!(list.items()[0].enabled());

    let read = client
        .get_streaming_distribution_config()
        .id("EFAKE1")
        .send()
        .await
        .unwrap();
    assert_eq!(read.e_tag(), Some(first.as_str()));
    let mut config = read.streaming_distribution_config().unwrap().clone();
    assert!(config.enabled());
    assert_eq!(
        config.s3_origin().unwrap().domain_name(),
        "media.s3.amazonaws.com"
    );

    config.enabled = false;
    let stale = client
        .update_streaming_distribution()
        .id("EFAKE1")
        .if_match("E-stale")
        .streaming_distribution_config(config.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Some("PreconditionFailed"));
    let missing = client
        .update_streaming_distribution()
        .id("EFAKE1")
        .streaming_distribution_config(config.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("InvalidIfMatchVersion"));

    let updated = client
        .update_streaming_distribution()
        .id("EFAKE1")
        .if_match(&first)
        .streaming_distribution_config(config)
        .send()
        .await
        .unwrap();
    let second = updated.e_tag().unwrap().to_string();
    assert_ne!(second, first, "every update issues a new ETag");
    let d = updated.streaming_distribution().unwrap();
    assert_eq!(d.status(), "InProgress");
    assert!(!d.streaming_distribution_config().unwrap().enabled());

    let too_early = client
        .delete_streaming_distribution()
        .id("EFAKE1")
        .if_match(&second)
        .send()
        .await
        .unwrap_err();
    assert_eq!(too_early.code(), Some("StreamingDistributionNotDisabled"));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let got = client
            .get_streaming_distribution()
            .id("EFAKE1")
            .send()
            .await
            .unwrap();
        assert_eq!(got.e_tag(), Some(second.as_str()));
        statuses.push(got.streaming_distribution().unwrap().status().to_string());
    }
    assert_eq!(statuses, ["InProgress", "InProgress", "Deployed"]);

    let enabled = client
        .delete_streaming_distribution()
        .id("EFAKE2")
        .if_match(fake.etag("EFAKE2"))
        .send()
        .await;
    assert!(enabled.is_ok(), "a disabled, deployed distribution goes");
    client
        .delete_streaming_distribution()
        .id("EFAKE1")
        .if_match(&second)
        .send()
        .await
        .unwrap();
    let gone = client
        .get_streaming_distribution()
        .id("EFAKE1")
        .send()
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some("NoSuchStreamingDistribution"));
    assert!(
        gone.meta()
            .extra("aws_request_id")
            .or_else(|| aws_sdk_cloudfront::operation::RequestId::request_id(&gone))
            .is_some()
    );
    let puts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 3, "refused requests are recorded too");
    assert!(!body_enabled(&puts[2].body));
}

#[tokio::test]
async fn streaming_delete_disables_waits_for_deployed_and_deletes_with_the_newest_etag() {
    let fake = StreamingFake::start(3).await;
    let first = fake.add("ERTMP1", true, "lobby");
    let server = start_streaming(&fake, "50ms").await;
    let op = server
        .streams()
        .delete_stream(delete("providers/rtmp/streams/ERTMP1"))
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done, "{op:?}");
    assert_eq!(step(&op), "disabling");

    let done = wait(&server, &op).await;
    assert!(done.done, "{done:?}");
    let Some(pb::operation::Result::DeleteStream(deleted)) = &done.result else {
        panic!("{done:?}");
    };
    assert!(deleted.existed);
    assert!(!fake.exists("ERTMP1"));

    let requests = fake.requests();
    let lines: Vec<String> = requests.iter().map(|r| r.line()).collect();
    let mut expected = vec![
        "GET /streaming-distribution/ERTMP1/config".to_string(),
        "PUT /streaming-distribution/ERTMP1/config".to_string(),
    ];
    // Three polls see InProgress, the fourth Deployed.
    expected.extend(std::iter::repeat_n(
        "GET /streaming-distribution/ERTMP1".to_string(),
        4,
    ));
    expected.push("DELETE /streaming-distribution/ERTMP1".to_string());
    assert_eq!(lines, expected);
    assert_eq!(requests[1].if_match.as_deref(), Some(first.as_str()));
    assert!(!body_enabled(&requests[1].body), "{}", requests[1].body);
    assert!(requests[1].body.contains("<Comment>lobby</Comment>"));
    let put_etag = "E0002ETAG";
    assert_eq!(requests[6].if_match.as_deref(), Some(put_etag));
}

#[tokio::test]
async fn a_disabled_distribution_is_not_put_again() {
    let fake = StreamingFake::start(0).await;
    let etag = fake.add("EOFF", false, "");
    let server = start_streaming(&fake, "50ms").await;
    let op = server
        .streams()
        .delete_stream(delete("providers/rtmp/streams/EOFF"))
        .await
        .unwrap()
        .into_inner();
    assert!(wait(&server, &op).await.done);
    let lines: Vec<String> = fake.requests().iter().map(|r| r.line()).collect();
    assert_eq!(
        lines,
        [
            "GET /streaming-distribution/EOFF/config",
            "GET /streaming-distribution/EOFF",
            "DELETE /streaming-distribution/EOFF"
        ]
    );
    assert_eq!(fake.requests()[2].if_match, Some(etag));
}

#[tokio::test]
async fn a_stale_caller_etag_is_aborted_and_nothing_changes() {
    let fake = StreamingFake::start(1).await;
    fake.add("ESTALE", true, "");
    let server = start_streaming(&fake, "50ms").await;
    let op = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: "providers/rtmp/streams/ESTALE".into(),
            etag: "E-not-current".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let op = wait(&server, &op).await;
    let (code, why, message) = failure(&op);
    assert_eq!((code, why.as_str()), (Code::Aborted, "ETAG_MISMATCH"));
    assert!(message.contains("E-not-current"), "{message}");
    assert!(fake.is_enabled("ESTALE"));
    assert_eq!(fake.requests().len(), 1, "only the read");

    // The current etag passes.
    let current = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: "providers/rtmp/streams/ESTALE".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let op = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: "providers/rtmp/streams/ESTALE".into(),
            etag: current.etag,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        wait(&server, &op).await.result,
        Some(pb::operation::Result::DeleteStream(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_only_ids_are_refused_before_the_provider() {
    let fake = StreamingFake::start(0).await;
    let server = start_streaming(&fake, "50ms").await;
    for id in [".", ".."] {
        let name = format!("providers/rtmp/streams/{id}");
        let get = server
            .streams()
            .get_stream(pb::GetStreamRequest {
                name: name.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(get.code(), Code::InvalidArgument, "{id}: {get:?}");
        let delete = server
            .streams()
            .delete_stream(delete(&name))
            .await
            .unwrap_err();
        assert_eq!(delete.code(), Code::InvalidArgument, "{id}: {delete:?}");
    }
    assert_eq!(fake.requests(), [], "no request reached the provider");
}

#[tokio::test]
async fn missing_distributions_are_not_found_unless_allowed() {
    let fake = StreamingFake::start(0).await;
    let server = start_streaming(&fake, "50ms").await;
    let op = server
        .streams()
        .delete_stream(delete("providers/rtmp/streams/ENONE"))
        .await
        .unwrap()
        .into_inner();
    let (code, why, _) = failure(&wait(&server, &op).await);
    assert_eq!((code, why.as_str()), (Code::NotFound, "STREAM_NOT_FOUND"));
    let op = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: "providers/rtmp/streams/ENONE".into(),
            allow_missing: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::operation::Result::DeleteStream(result)) = wait(&server, &op).await.result else {
        panic!("allow_missing");
    };
    assert!(!result.existed);
    let status = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: "providers/rtmp/streams/ENONE".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "STREAM_NOT_FOUND");
    assert_eq!(
        info_metadata(&status, "provider_code"),
        "NoSuchStreamingDistribution"
    );
    assert!(info_metadata(&status, "provider_request_id").starts_with("fake-"));
}

#[tokio::test]
async fn an_etag_moving_under_the_workflow_is_re_read_a_bounded_number_of_times() {
    let fake = StreamingFake::start(0).await;
    fake.add("ERACE", true, "");
    fake.add("ELOST", true, "");
    let server = start_streaming(&fake, "50ms").await;

    // Two lost races, then the PUT goes through.
    fake.contend_puts(2);
    let op = server
        .streams()
        .delete_stream(delete("providers/rtmp/streams/ERACE"))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        wait(&server, &op).await.result,
        Some(pb::operation::Result::DeleteStream(_))
    ));
    let lines: Vec<String> = fake.requests().iter().map(|r| r.line()).collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("PUT")).count(),
        3,
        "{lines:#?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.ends_with("/config") && l.starts_with("GET"))
            .count(),
        3,
        "a re-read before each retry: {lines:#?}"
    );

    // Every race lost: ABORTED after the bound, still enabled.
    fake.clear_requests();
    fake.contend_puts(100);
    let op = server
        .streams()
        .delete_stream(delete("providers/rtmp/streams/ELOST"))
        .await
        .unwrap()
        .into_inner();
    let op = wait(&server, &op).await;
    let (code, why, message) = failure(&op);
    assert_eq!((code, why.as_str()), (Code::Aborted, "ETAG_MISMATCH"));
    assert!(message.contains("kept changing"), "{message}");
    let puts = fake.requests().iter().filter(|r| r.method == "PUT").count();
    assert_eq!(puts, 4, "the first try and three re-reads");
    assert!(fake.is_enabled("ELOST"));
}

#[tokio::test]
async fn a_distribution_enabled_again_while_waiting_is_disabled_again() {
    let fake = StreamingFake::start(1000).await;
    fake.add("EAGAIN", true, "");
    let server = start_streaming(&fake, "50ms").await;
    let op = server
        .streams()
        .delete_stream(delete("providers/rtmp/streams/EAGAIN"))
        .await
        .unwrap()
        .into_inner();
    until_step(&server, &op.name, "waiting").await;
    // Someone enables it behind the gateway's back; it deploys soon after.
    fake.set_polls_after_change(2);
    fake.touch("EAGAIN", true);
    fake.deploy_after("EAGAIN", 1);
    let done = wait(&server, &op).await;
    assert!(
        matches!(done.result, Some(pb::operation::Result::DeleteStream(_))),
        "{done:?}"
    );
    let puts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 2, "disabled again after the re-enable");
    assert!(puts.iter().all(|p| !body_enabled(&p.body)));
    assert!(!fake.exists("EAGAIN"));
}

#[tokio::test]
async fn the_wait_for_deployed_is_bounded_by_deploy_timeout() {
    let fake = StreamingFake::start(1000).await;
    fake.add("ESLOW", true, "");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in_env(
        dir,
        &streaming_provider_with_timeout(&fake, "50ms", "400ms"),
        &AWS_ENV,
    )
    .await;
    let op = server
        .streams()
        .delete_stream(delete("providers/rtmp/streams/ESLOW"))
        .await
        .unwrap()
        .into_inner();
    let done = wait(&server, &op).await;
    let (code, why, message) = failure(&done);
    assert_eq!(
        (code, why.as_str()),
        (Code::DeadlineExceeded, "DEADLINE_EXCEEDED")
    );
    assert!(message.contains("stays disabled"), "{message}");
    let polls = fake
        .requests()
        .iter()
        .filter(|r| r.line() == "GET /streaming-distribution/ESLOW")
        .count();
    assert!(
        (5..=12).contains(&polls),
        "about 400ms / 50ms polls: {polls}"
    );
    assert!(fake.exists("ESLOW") && !fake.is_enabled("ESLOW"));
}

#[tokio::test]
async fn a_delete_refused_for_a_while_after_deployed_is_tried_again_until_taken() {
    let fake = StreamingFake::start(2).await;
    fake.add("ESETTLE", true, "");
    // CloudFront's window after Deployed: longer than the three re-reads of a conflict.
    fake.settle_after_deploy(Duration::from_secs(3));
    let server = start_streaming(&fake, "100ms").await;
    let op = server
        .streams()
        .delete_stream(delete("providers/rtmp/streams/ESETTLE"))
        .await
        .unwrap()
        .into_inner();
    let done = wait(&server, &op).await;
    assert!(
        matches!(done.result, Some(pb::operation::Result::DeleteStream(_))),
        "{done:?}"
    );
    assert!(!fake.exists("ESETTLE"));
    let deletes = fake
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .count();
    assert!(
        deletes >= 3,
        "refused a while, then taken: {deletes} DELETEs"
    );
}

#[tokio::test]
async fn a_distribution_deleted_by_someone_else_is_allow_missings_success() {
    let fake = StreamingFake::start(1000).await;
    fake.add("EGONE", true, "");
    let server = start_streaming(&fake, "50ms").await;
    let op = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: "providers/rtmp/streams/EGONE".into(),
            allow_missing: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    until_step(&server, &op.name, "waiting").await;
    fake.remove("EGONE");
    let done = wait(&server, &op).await;
    let Some(pb::operation::Result::DeleteStream(deleted)) = &done.result else {
        panic!("allow_missing: {done:?}");
    };
    assert!(!deleted.existed, "this delete found it gone");
}

#[tokio::test]
async fn a_failure_after_the_disable_says_the_distribution_stays_disabled() {
    let fake = StreamingFake::start(0).await;
    fake.add("EDENIED", true, "");
    fake.fail_next("DELETE", 403, "AccessDenied");
    let server = start_streaming(&fake, "50ms").await;
    let op = server
        .streams()
        .delete_stream(delete("providers/rtmp/streams/EDENIED"))
        .await
        .unwrap()
        .into_inner();
    let (code, _, message) = failure(&wait(&server, &op).await);
    assert_eq!(code, Code::PermissionDenied, "{message}");
    assert!(message.contains("EDENIED stays disabled"), "{message}");
    assert!(fake.exists("EDENIED") && !fake.is_enabled("EDENIED"));
}

#[tokio::test]
async fn watchers_see_the_changes_made_through_the_gateway() {
    let fake = StreamingFake::start(0).await;
    let etag = fake.add("EWATCH", true, "");
    let server = start_streaming(&fake, "50ms").await;
    let mut watch = server
        .streams()
        .watch_stream(pb::WatchStreamRequest {
            name: "providers/rtmp/streams/EWATCH".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let initial = watch.message().await.unwrap().unwrap();
    assert_eq!(initial.stream.unwrap().state, State::Active as i32);
    let op = server
        .streams()
        .update_stream(pb::UpdateStreamRequest {
            stream: Some(pb::Stream {
                name: "providers/rtmp/streams/EWATCH".into(),
                etag,
                details: Some(pb::stream::Details::Cloudfront(
                    pb::CloudFrontStreamDetails {
                        enabled: false,
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["cloudfront.enabled".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(op.done, "an update is one PUT: {op:?}");
    let updated = watch.message().await.unwrap().unwrap();
    assert_eq!(updated.stream.unwrap().state, State::Disabled as i32);
    let op = server
        .streams()
        .delete_stream(delete("providers/rtmp/streams/EWATCH"))
        .await
        .unwrap()
        .into_inner();
    wait(&server, &op).await;
    let deleted = watch.message().await.unwrap().unwrap();
    assert_eq!(
        deleted.change_type,
        pb::watch_stream_response::ChangeType::Deleted as i32
    );
}

#[tokio::test]
async fn cancel_while_waiting_stops_before_the_delete_and_says_it_stays_disabled() {
    let fake = StreamingFake::start(1000).await;
    fake.add("ECANCEL", true, "");
    let server = start_streaming(&fake, "50ms").await;
    let op = server
        .streams()
        .delete_stream(delete("providers/rtmp/streams/ECANCEL"))
        .await
        .unwrap()
        .into_inner();
    until_step(&server, &op.name, "waiting").await;
    let cancelled = server
        .operations()
        .cancel_operation(pb::CancelOperationRequest {
            name: op.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let cancelled = if cancelled.done {
        cancelled
    } else {
        wait(&server, &cancelled).await
    };
    let (code, why, message) = failure(&cancelled);
    assert_eq!((code, why.as_str()), (Code::Cancelled, "CANCELLED"));
    assert!(message.contains("stays disabled"), "{message}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fake.exists("ECANCEL"));
    assert!(!fake.is_enabled("ECANCEL"));
    assert!(!fake.requests().iter().any(|r| r.method == "DELETE"));
}

#[tokio::test]
async fn batch_delete_runs_one_workflow_per_name() {
    let fake = StreamingFake::start(2).await;
    fake.add("EB1", true, "");
    fake.add("EB2", false, "");
    let server = start_streaming(&fake, "50ms").await;
    let op = server
        .streams()
        .batch_delete_streams(pb::BatchDeleteStreamsRequest {
            parent: "providers/rtmp".into(),
            names: vec![
                "providers/rtmp/streams/EB1".into(),
                "providers/rtmp/streams/EB2".into(),
                "providers/rtmp/streams/EB3".into(),
            ],
            request_id: "batch-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done);
    let done = wait(&server, &op).await;
    let Some(pb::operation::Result::BatchDeleteStreams(batch)) = done.result else {
        panic!("{done:?}");
    };
    let outcome: Vec<(bool, String)> = batch
        .results
        .iter()
        .map(|r| {
            (
                r.deleted,
                r.error
                    .as_ref()
                    .map(|e| e.reason.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            (true, String::new()),
            (true, String::new()),
            (false, "STREAM_NOT_FOUND".to_string())
        ]
    );
    assert_eq!(
        batch.results[2].error.as_ref().unwrap().provider_code,
        "NoSuchStreamingDistribution"
    );
    assert!(!fake.exists("EB1") && !fake.exists("EB2"));
    let puts: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(puts, ["/streaming-distribution/EB1/config"]);
}

#[tokio::test]
async fn streaming_distributions_read_list_update_and_refuse_create() {
    let fake = StreamingFake::start(1).await;
    for (id, enabled) in [("EL1", true), ("EL2", false), ("EL3", true)] {
        fake.add(id, enabled, &format!("comment {id}"));
    }
    let server = start_streaming(&fake, "50ms").await;
    let mut streams = server.streams();
    let got = streams
        .get_stream(pb::GetStreamRequest {
            name: "providers/rtmp/streams/EL1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.state, State::Active as i32);
    assert_eq!(got.etag, fake.etag("EL1"));
    assert_eq!(
        got.provider_uid,
        "arn:aws:cloudfront::123456789012:streaming-distribution/EL1"
    );
    let details = cloudfront(&got);
    assert_eq!(details.domain_name, "sel1.cloudfront.net");
    assert_eq!(details.status, "Deployed");
    assert_eq!(details.comment, "comment EL1");
    let origin = details.origin.as_ref().unwrap();
    assert_eq!(origin.r#type, pb::cloud_front_origin::Type::S3 as i32);
    assert_eq!(origin.domain_name, "media.s3.amazonaws.com");

    // Pages follow CloudFront's markers through opaque tokens.
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = streams
            .list_streams(pb::ListStreamsRequest {
                parent: "providers/rtmp".into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        names.extend(page.streams.iter().map(|s| s.name.clone()));
        if page.next_page_token.is_empty() {
            break;
        }
        // Opaque: not CloudFront's marker (a distribution id, e.g. EL2) in the clear. (Two
        // letters alone occur in a random base64 token every few dozen runs.)
        assert!(
            !["EL1", "EL2", "EL3"]
                .iter()
                .any(|id| page.next_page_token.contains(id)),
            "opaque token: {}",
            page.next_page_token
        );
        token = page.next_page_token;
    }
    assert_eq!(
        names,
        [
            "providers/rtmp/streams/EL1",
            "providers/rtmp/streams/EL2",
            "providers/rtmp/streams/EL3"
        ]
    );
    let disabled = streams
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/rtmp".into(),
            filter: "state = DISABLED".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disabled.streams.len(), 1);
    assert_eq!(disabled.streams[0].name, "providers/rtmp/streams/EL2");

    // UpdateStream: the etag is sent as If-Match; a stale one is ABORTED.
    let update = |etag: &str, enabled: bool| pb::UpdateStreamRequest {
        stream: Some(pb::Stream {
            name: "providers/rtmp/streams/EL1".into(),
            etag: etag.into(),
            details: Some(pb::stream::Details::Cloudfront(
                pb::CloudFrontStreamDetails {
                    enabled,
                    comment: "paused".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["cloudfront.enabled".into(), "cloudfront.comment".into()],
        }),
        ..Default::default()
    };
    fake.clear_requests();
    let op = streams
        .update_stream(update(&got.etag, false))
        .await
        .unwrap()
        .into_inner();
    let op = if op.done {
        op
    } else {
        wait(&server, &op).await
    };
    let Some(pb::operation::Result::Stream(updated)) = op.result else {
        panic!("{op:?}");
    };
    assert_eq!(updated.state, State::Disabled as i32);
    assert_eq!(cloudfront(&updated).comment, "paused");
    assert_eq!(cloudfront(&updated).status, "InProgress");
    assert_ne!(updated.etag, got.etag);
    let put = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "PUT")
        .unwrap();
    assert_eq!(put.if_match, Some(got.etag.clone()));
    let op = streams
        .update_stream(update(&got.etag, true))
        .await
        .unwrap()
        .into_inner();
    let op = if op.done {
        op
    } else {
        wait(&server, &op).await
    };
    let (code, why, _) = failure(&op);
    assert_eq!((code, why.as_str()), (Code::Aborted, "ETAG_MISMATCH"));
    assert!(!fake.is_enabled("EL1"));

    let neutral = streams
        .update_stream(pb::UpdateStreamRequest {
            stream: Some(pb::Stream {
                name: "providers/rtmp/streams/EL1".into(),
                device_name: "cam".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(neutral.code(), Code::InvalidArgument);

    let create = streams
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/rtmp".into(),
            stream_id: "new".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(create.code(), Code::Unimplemented);
    assert_eq!(reason(&create), "CAPABILITY_UNSUPPORTED");
    let provider = server
        .providers()
        .get_provider(pb::GetProviderRequest {
            name: "providers/rtmp".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(provider.kind, "cloudfront-streaming");
    let methods = provider.capabilities.unwrap().methods;
    assert!(!methods.contains(&"CreateStream".to_string()));
    assert!(methods.contains(&"DeleteStream".to_string()));
}

fn s3_create(request_id: &str, bucket: &str) -> pb::CreateStreamRequest {
    pb::CreateStreamRequest {
        parent: "providers/web".into(),
        stream_id: "vod-edge".into(),
        stream: Some(pb::Stream {
            details: Some(pb::stream::Details::Cloudfront(
                pb::CloudFrontStreamDetails {
                    comment: "hls edge".into(),
                    origin: Some(pb::CloudFrontOrigin {
                        r#type: pb::cloud_front_origin::Type::S3 as i32,
                        domain_name: bucket.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        request_id: request_id.into(),
        ..Default::default()
    }
}

async fn created(
    server: &TestServer,
    request: pb::CreateStreamRequest,
) -> (pb::Operation, pb::Stream) {
    let op = server
        .streams()
        .create_stream(request)
        .await
        .unwrap()
        .into_inner();
    let op = if op.done { op } else { wait(server, &op).await };
    match &op.result {
        Some(pb::operation::Result::Stream(s)) => {
            let s = s.clone();
            (op, s)
        }
        other => panic!("create ended with {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_distributions_on_moto_create_read_list_update() {
    let moto = Moto::start();
    let providers = web_provider(&moto, "50ms");
    let server = TestServer::start_in_env(tempfile::tempdir().unwrap(), &providers, &AWS_ENV).await;

    let (op, stream) = created(&server, s3_create("create-1", "media.s3.amazonaws.com")).await;
    assert!(
        stream.name.starts_with("providers/web/streams/"),
        "{stream:?}"
    );
    assert_ne!(
        stream.name, "providers/web/streams/vod-edge",
        "CloudFront assigns the Id"
    );
    assert_eq!(stream.state, State::Active as i32);
    assert!(stream.provider_uid.contains(":distribution/"));
    let details = cloudfront(&stream);
    assert_eq!(details.comment, "hls edge");
    assert!(details.domain_name.ends_with(".cloudfront.net"));
    assert_eq!(
        details.origin.as_ref().unwrap().domain_name,
        "media.s3.amazonaws.com"
    );

    // The same request_id is the same operation.
    let again = server
        .streams()
        .create_stream(s3_create("create-1", "media.s3.amazonaws.com"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.name, op.name);
    // Even a gateway that lost its store makes no second distribution: the CallerReference
    // comes from the request_id, and CloudFront knows it.
    let amnesiac =
        TestServer::start_in_env(tempfile::tempdir().unwrap(), &providers, &AWS_ENV).await;
    let (_, same) = created(&amnesiac, s3_create("create-1", "media.s3.amazonaws.com")).await;
    assert_eq!(same.name, stream.name);

    let (_, custom) = created(
        &server,
        pb::CreateStreamRequest {
            stream: Some(pb::Stream {
                details: Some(pb::stream::Details::Cloudfront(
                    pb::CloudFrontStreamDetails {
                        origin: Some(pb::CloudFrontOrigin {
                            r#type: pb::cloud_front_origin::Type::Custom as i32,
                            domain_name: "packager.example.com".into(),
                            origin_path: "/live".into(),
                            origin_protocol_policy: "https-only".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            ..s3_create("create-2", "")
        },
    )
    .await;
    let origin = cloudfront(&custom).origin.clone().unwrap();
    assert_eq!(origin.r#type, pb::cloud_front_origin::Type::Custom as i32);
    assert_eq!(origin.origin_path, "/live");
    assert_eq!(origin.origin_protocol_policy, "https-only");

    let bad = server
        .streams()
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/web".into(),
            stream_id: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    let got = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: stream.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!got.etag.is_empty());
    let first = server
        .streams()
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/web".into(),
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.streams.len(), 1);
    assert!(!first.next_page_token.is_empty());
    let second = server
        .streams()
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/web".into(),
            page_size: 1,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.streams.len(), 1);
    let mut listed = vec![
        first.streams[0].name.clone(),
        second.streams[0].name.clone(),
    ];
    listed.sort();
    let mut expected = vec![stream.name.clone(), custom.name.clone()];
    expected.sort();
    assert_eq!(listed, expected);

    let op = server
        .streams()
        .update_stream(pb::UpdateStreamRequest {
            stream: Some(pb::Stream {
                name: stream.name.clone(),
                etag: got.etag.clone(),
                details: Some(pb::stream::Details::Cloudfront(
                    pb::CloudFrontStreamDetails {
                        comment: "renamed".into(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["cloudfront.comment".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let op = if op.done {
        op
    } else {
        wait(&server, &op).await
    };
    let Some(pb::operation::Result::Stream(updated)) = op.result else {
        panic!("{op:?}");
    };
    assert_eq!(cloudfront(&updated).comment, "renamed");
    assert_eq!(updated.state, State::Active as i32, "still enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_distribution_delete_on_moto_waits_for_deployed_and_resumes_after_a_restart() {
    let moto = Moto::start();
    // Stays InProgress through create, the read, the PUT and several polls.
    moto.keep_distributions_in_progress(12);
    let providers = web_provider(&moto, "300ms");
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in_env(dir, &providers, &AWS_ENV).await;
    let (_, stream) = created(&server, s3_create("to-delete", "media.s3.amazonaws.com")).await;
    assert_eq!(cloudfront(&stream).status, "InProgress");

    let op = server
        .streams()
        .delete_stream(delete(&stream.name))
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done);
    assert_eq!(step(&op), "disabling");
    until_step(&server, &op.name, "waiting").await;
    // Moto now has the distribution disabled and still InProgress.
    let seen = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: stream.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.state, State::Disabled as i32);

    // Restart the gateway on the same store while it waits.
    let dir = server.stop_keeping_dir().await;
    let server = TestServer::start_in_env(dir, &providers, &AWS_ENV).await;
    let done = wait(&server, &op).await;
    assert!(done.done, "{done:?}");
    assert!(matches!(
        done.result,
        Some(pb::operation::Result::DeleteStream(_))
    ));
    assert!(done.metadata.unwrap().attempts >= 4);
    let gone = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: stream.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(info_metadata(&gone, "provider_code"), "NoSuchDistribution");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_deletes_a_streaming_distribution_through_grpcurl_and_survives_kill_9() {
    let fake = StreamingFake::start(4).await;
    let first_etag = fake.add("EBIN1", true, "first");
    fake.add("EBIN2", true, "second");
    // A slow DELETE keeps the operation visibly in its deleting step.
    fake.delay_deletes(Duration::from_millis(1200));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("streamgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndrain_timeout = \"2s\"\n[store]\nurl = \"sqlite://{}/state/sg.db\"\n{}",
            dir.path().display(),
            streaming_provider(&fake, "250ms")
        ),
    )
    .unwrap();
    let mut gateway = support::Binary::spawn_with_env(&config, dir.path(), "first", &AWS_ENV);
    gateway.ready().await;
    let addr = gateway.addr.to_string();

    let op = grpcurl_json(
        &addr,
        "StreamService/DeleteStream",
        r#"{"name": "providers/rtmp/streams/EBIN1"}"#,
    );
    assert_ne!(op["done"], true, "{op}");
    let mut steps = vec![op["metadata"]["step"].as_str().unwrap().to_string()];
    let name = op["name"].as_str().unwrap().to_string();
    let done = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            let done = grpcurl_follow(&addr, &name, &mut steps);
            (done, steps)
        }
    })
    .await
    .unwrap();
    let (done, steps) = done;
    assert_eq!(
        steps,
        ["disabling", "waiting", "deleting", "done"],
        "{done}"
    );
    assert_eq!(done["deleteStream"]["name"], "providers/rtmp/streams/EBIN1");
    assert_eq!(done["deleteStream"]["existed"], true);

    let seen: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("EBIN1"))
        .collect();
    let lines: Vec<String> = seen.iter().map(|r| r.line()).collect();
    let mut expected = vec![
        "GET /streaming-distribution/EBIN1/config".to_string(),
        "PUT /streaming-distribution/EBIN1/config".to_string(),
    ];
    expected.extend(std::iter::repeat_n(
        "GET /streaming-distribution/EBIN1".to_string(),
        5,
    ));
    expected.push("DELETE /streaming-distribution/EBIN1".to_string());
    assert_eq!(lines, expected);
    assert_eq!(seen[1].if_match.as_deref(), Some(first_etag.as_str()));
    assert!(!body_enabled(&seen[1].body));
    let put_etag = seen[1].answered_etag.clone().unwrap();
    assert_ne!(put_etag, first_etag);
    assert_eq!(seen[7].if_match.as_deref(), Some(put_etag.as_str()));

    // The second one is still waiting for Deployed when the gateway is killed.
    fake.set_polls_after_change(1000);
    let op = grpcurl_json(
        &addr,
        "StreamService/DeleteStream",
        r#"{"name": "providers/rtmp/streams/EBIN2", "request_id": "kill-9"}"#,
    );
    let name = op["name"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = grpcurl_json(
            &addr,
            "OperationService/GetOperation",
            &format!(r#"{{"name": "{name}"}}"#),
        );
        if now["metadata"]["step"] == "waiting" {
            break;
        }
        assert!(Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    gateway.signal("KILL");
    assert!(!gateway.wait_exit(Duration::from_secs(5)).await.success());
    let puts = |fake: &StreamingFake| {
        fake.requests()
            .into_iter()
            .filter(|r| r.method == "PUT" && r.path.contains("EBIN2"))
            .collect::<Vec<_>>()
    };
    assert_eq!(puts(&fake).len(), 1);
    let before_restart = fake.requests().len();
    fake.deploy_after("EBIN2", 2);

    let mut second = support::Binary::spawn_with_env(&config, dir.path(), "second", &AWS_ENV);
    second.ready().await;
    let addr = second.addr.to_string();
    let done = tokio::task::spawn_blocking(move || {
        grpcurl_json(
            &addr,
            "OperationService/WaitOperation",
            &format!(r#"{{"name": "{name}", "timeout": "30s"}}"#),
        )
    })
    .await
    .unwrap();
    assert_eq!(done["done"], true, "{done}");
    assert_eq!(done["deleteStream"]["existed"], true, "{done}");
    assert!(!fake.exists("EBIN2"));
    let put = puts(&fake);
    assert_eq!(put.len(), 1, "no second PUT after the restart");
    let after: Vec<String> = fake.requests()[before_restart..]
        .iter()
        .map(|r| r.line())
        .collect();
    assert_eq!(
        after,
        [
            "GET /streaming-distribution/EBIN2",
            "GET /streaming-distribution/EBIN2",
            "GET /streaming-distribution/EBIN2",
            "DELETE /streaming-distribution/EBIN2"
        ],
        "the restarted gateway resumes polling, then deletes"
    );
    let delete = fake.requests().last().unwrap().clone();
    assert_eq!(delete.if_match, put[0].answered_etag);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_deletes_a_web_distribution_on_moto_through_grpcurl_and_survives_kill_9() {
    let moto = Moto::start();
    // InProgress through the read, the PUT and about a dozen polls.
    moto.keep_distributions_in_progress(15);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("streamgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndrain_timeout = \"2s\"\n[store]\nurl = \"sqlite://{}/state/sg.db\"\n{}",
            dir.path().display(),
            web_provider(&moto, "300ms")
        ),
    )
    .unwrap();
    let mut gateway = support::Binary::spawn_with_env(&config, dir.path(), "first", &AWS_ENV);
    gateway.ready().await;
    let addr = gateway.addr.to_string();

    let (name, created) = tokio::task::spawn_blocking({
        let addr = addr.clone();
        move || {
            let op = grpcurl_json(
                &addr,
                "StreamService/CreateStream",
                r#"{"parent": "providers/web", "stream_id": "edge", "request_id": "web-1",
                    "stream": {"cloudfront": {"comment": "hls",
                      "origin": {"type": "TYPE_S3", "domainName": "media.s3.amazonaws.com"}}}}"#,
            );
            assert_eq!(op["done"], true, "{op}");
            let stream = op["stream"]["name"].as_str().unwrap().to_string();
            let deleting = grpcurl_json(
                &addr,
                "StreamService/DeleteStream",
                &format!(r#"{{"name": "{stream}"}}"#),
            );
            assert_ne!(deleting["done"], true, "{deleting}");
            assert_eq!(deleting["metadata"]["step"], "disabling", "{deleting}");
            (deleting["name"].as_str().unwrap().to_string(), stream)
        }
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = grpcurl_json(
            &addr,
            "OperationService/GetOperation",
            &format!(r#"{{"name": "{name}"}}"#),
        );
        if now["metadata"]["step"] == "waiting" {
            break;
        }
        assert!(Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let disabled = grpcurl_json(
        &addr,
        "StreamService/GetStream",
        &format!(r#"{{"name": "{created}"}}"#),
    );
    assert_eq!(disabled["state"], "STATE_DISABLED", "{disabled}");
    assert_eq!(disabled["cloudfront"]["status"], "InProgress", "{disabled}");
    gateway.signal("KILL");
    assert!(!gateway.wait_exit(Duration::from_secs(5)).await.success());

    let mut second = support::Binary::spawn_with_env(&config, dir.path(), "second", &AWS_ENV);
    second.ready().await;
    let addr = second.addr.to_string();
    let (done, gone) = tokio::task::spawn_blocking(move || {
        let mut steps = Vec::new();
        let done = grpcurl_follow(&addr, &name, &mut steps);
        let gone = support::grpcurl(&[
            "-d",
            &format!(r#"{{"name": "{created}"}}"#),
            &addr,
            "streamgate.v1.StreamService/GetStream",
        ]);
        (done, support::output_text(&gone))
    })
    .await
    .unwrap();
    assert_eq!(done["deleteStream"]["existed"], true, "{done}");
    assert!(gone.contains("Code: NotFound"), "{gone}");
    assert!(gone.contains("NoSuchDistribution"), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_cut_off_by_kill_9_is_not_repeated_after_the_restart() {
    let fake = StreamingFake::start(2).await;
    fake.add("ECUT", true, "");
    // The PUT takes effect at once, but its answer never reaches the killed gateway.
    fake.delay_put_answers(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("streamgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndrain_timeout = \"2s\"\n[store]\nurl = \"sqlite://{}/state/sg.db\"\n{}",
            dir.path().display(),
            streaming_provider(&fake, "100ms")
        ),
    )
    .unwrap();
    let mut gateway = support::Binary::spawn_with_env(&config, dir.path(), "first", &AWS_ENV);
    gateway.ready().await;
    let addr = gateway.addr.to_string();
    let op = grpcurl_json(
        &addr,
        "StreamService/DeleteStream",
        r#"{"name": "providers/rtmp/streams/ECUT"}"#,
    );
    assert_eq!(op["metadata"]["step"], "disabling", "{op}");
    let name = op["name"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fake.requests().iter().any(|r| r.method == "PUT") {
        assert!(Instant::now() < deadline, "no PUT");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.signal("KILL");
    assert!(!gateway.wait_exit(Duration::from_secs(5)).await.success());
    assert!(!fake.is_enabled("ECUT"), "the PUT took effect");
    fake.delay_put_answers(Duration::ZERO);
    let before_restart = fake.requests().len();

    let mut second = support::Binary::spawn_with_env(&config, dir.path(), "second", &AWS_ENV);
    second.ready().await;
    let addr = second.addr.to_string();
    let (resumed, done) = tokio::task::spawn_blocking(move || {
        let resumed = grpcurl_json(
            &addr,
            "OperationService/GetOperation",
            &format!(r#"{{"name": "{name}"}}"#),
        );
        let done = grpcurl_json(
            &addr,
            "OperationService/WaitOperation",
            &format!(r#"{{"name": "{name}", "timeout": "30s"}}"#),
        );
        (resumed, done)
    })
    .await
    .unwrap();
    assert_ne!(resumed["metadata"]["step"], "accepted", "{resumed}");
    assert_eq!(done["deleteStream"]["existed"], true, "{done}");
    let after: Vec<String> = fake.requests()[before_restart..]
        .iter()
        .map(|r| r.line())
        .collect();
    assert_eq!(
        after.first().map(String::as_str),
        Some("GET /streaming-distribution/ECUT/config"),
        "the resumed disabling step reads again: {after:#?}"
    );
    assert!(!after.iter().any(|l| l.starts_with("PUT")), "{after:#?}");
    assert_eq!(
        after.last().map(String::as_str),
        Some("DELETE /streaming-distribution/ECUT")
    );
    assert!(!fake.exists("ECUT"));
}
