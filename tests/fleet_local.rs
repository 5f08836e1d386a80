//! How one replica shares a provider's quotas among many callers (issue 19, the parts a single
//! process does alone), through the real binary against the KVS wire-level fake: a call whose
//! turn under an outbound limit would come after its deadline is answered at once
//! PROVIDER_THROTTLED with RetryInfo, never left to time out in the queue; a change is not
//! queued behind the tag reads of readers; concurrent readers of one stream share its provider
//! reads; and the watchers of a stream share one poller, which also shows them the changes made
//! to a CloudFront distribution outside the gateway.

mod support;

use std::time::Duration;

use streamgate::pb;
use streamgate::pb::watch_stream_response::ChangeType;
use support::cloudfront_fake::StreamingFake;
use support::kvs_fake::{KvsFake, RunningKvsFake, kvs_client};
use support::{AWS_ENV, TestServer, reason};
use tonic::Code;
use tonic_types::StatusExt;

async fn gateway(fake: &RunningKvsFake, limits: &str) -> TestServer {
    gateway_with(fake, "", limits).await
}

/// A gateway of one KVS instance with `keys` and outbound `limits` of its own.
async fn gateway_with(fake: &RunningKvsFake, keys: &str, limits: &str) -> TestServer {
    let config = format!(
        "[[providers]]\nid = \"kvs\"\nkind = \"kinesis-video\"\nregion = \"us-east-1\"\n\
         endpoint_url = \"{}\"\n{keys}\n[providers.outbound_limits]\n{limits}",
        fake.url
    );
    TestServer::start_env(&config, &AWS_ENV).await
}

/// GetStream of `id` with a deadline of `timeout`.
async fn get(
    server: &TestServer,
    id: &str,
    timeout: Duration,
) -> Result<pb::Stream, tonic::Status> {
    let mut request = tonic::Request::new(pb::GetStreamRequest {
        name: format!("providers/kvs/streams/{id}"),
        ..Default::default()
    });
    request.set_timeout(timeout);
    server
        .streams()
        .get_stream(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn readers_beyond_the_quota_are_throttled_at_once_not_timed_out() {
    let kvs = KvsFake::start().await;
    kvs.fake.add_stream("busy");
    let server = gateway(&kvs, "describe_stream_per_stream = 2").await;
    let calls = (0..200).map(|_| get(&server, "busy", Duration::from_secs(1)));
    let answers = futures::future::join_all(calls).await;
    let mut ok = 0;
    for answer in answers {
        match answer {
            Ok(stream) => {
                assert_eq!(stream.name, "providers/kvs/streams/busy");
                ok += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert_eq!(reason(&status), "PROVIDER_THROTTLED");
                let retry = status.get_details_retry_info().expect("RetryInfo");
                assert!(retry.retry_delay.is_some_and(|d| d > Duration::ZERO));
            }
        }
    }
    assert!(ok >= 1, "no reader was answered");
    // Only the calls given a turn reached the provider, within the limit.
    assert!(kvs.fake.requests_of("describeStream").len() <= 3);
}

#[tokio::test]
async fn a_change_does_not_queue_behind_tag_reads() {
    let kvs = KvsFake::start().await;
    kvs.fake.add_stream("changed");
    let server = gateway(&kvs, "other = 2").await;
    // Eight readers of eight streams queue their tag reads 0.5 s apart on `other`'s rate.
    let readers: Vec<_> = (0..8)
        .map(|i| {
            kvs.fake.add_stream(&format!("read-{i}"));
            let mut client = server.streams();
            tokio::spawn(async move {
                let mut request = tonic::Request::new(pb::GetStreamRequest {
                    name: format!("providers/kvs/streams/read-{i}"),
                    ..Default::default()
                });
                request.set_timeout(Duration::from_secs(30));
                client.get_stream(request).await.map(|_| ())
            })
        })
        .collect();
    while kvs.fake.requests_of("listTagsForStream").is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let update = server
        .streams()
        .update_stream(pb::UpdateStreamRequest {
            stream: Some(pb::Stream {
                name: "providers/kvs/streams/changed".into(),
                data_retention_hours: 48,
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["data_retention_hours".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for reader in readers {
        reader.await.unwrap().unwrap();
    }
    let done = support::wait(&server, &update).await;
    assert!(
        matches!(done.result, Some(pb::operation::Result::Stream(_))),
        "{done:?}"
    );
    // The change was sent while the readers' tag reads were still queued.
    let changed = kvs.fake.requests_of("updateDataRetention");
    let last_read = kvs.fake.requests_of("listTagsForStream");
    assert_eq!(changed.len(), 1);
    assert!(
        changed[0].at < last_read[7].at,
        "the change waited for the tag reads"
    );
}

#[tokio::test]
async fn concurrent_readers_of_one_stream_share_its_reads() {
    let kvs = KvsFake::start().await;
    kvs.fake.add_stream("popular");
    kvs.fake.set_latency(Duration::from_millis(50));
    let server = gateway(&kvs, "").await;
    let calls = (0..200).map(|_| get(&server, "popular", Duration::from_secs(5)));
    for answer in futures::future::join_all(calls).await {
        assert_eq!(answer.unwrap().name, "providers/kvs/streams/popular");
    }
    let reads = kvs.fake.requests_of("describeStream").len();
    assert!(reads <= 20, "{reads} DescribeStream calls for 200 readers");
}

#[tokio::test]
async fn watchers_of_one_stream_share_one_poller() {
    let kvs = KvsFake::start().await;
    kvs.fake.add_stream("watched");
    // Limits well above the polls, so that only the sharing keeps them down.
    let server = gateway_with(
        &kvs,
        "watch_poll_interval = \"300ms\"",
        "describe_stream_per_stream = 100",
    )
    .await;
    // Opened in ten groups spread over one poll interval.
    let server = &server;
    let open = (0..100u32).map(|i| async move {
        tokio::time::sleep(Duration::from_millis(30) * (i / 10)).await;
        let mut watch = server
            .streams()
            .watch_stream(pb::WatchStreamRequest {
                name: "providers/kvs/streams/watched".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let initial = watch.message().await.unwrap().unwrap();
        assert_eq!(initial.change_type, ChangeType::Initial as i32);
        watch
    });
    let mut watches = futures::future::join_all(open).await;
    // Five poll intervals with every watcher open: one poll of each kind per interval, the
    // first of them perhaps still in flight when counting starts.
    let (describes, tag_reads) = (
        kvs.fake.requests_of("describeStream").len(),
        kvs.fake.requests_of("listTagsForStream").len(),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let polled = kvs.fake.requests_of("describeStream").len() - describes;
    let tags_polled = kvs.fake.requests_of("listTagsForStream").len() - tag_reads;
    assert!(
        polled <= 6,
        "{polled} DescribeStream calls in five intervals"
    );
    assert!(
        tags_polled <= 6,
        "{tags_polled} ListTagsForStream calls in five intervals"
    );
    // A change made in KVS reaches every watcher.
    let version = kvs.fake.stream("watched").unwrap().version;
    kvs_client(&kvs.url)
        .update_stream()
        .stream_name("watched")
        .current_version(version)
        .device_name("camera-9")
        .send()
        .await
        .unwrap();
    for watch in &mut watches {
        let change = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("the change within five seconds")
            .unwrap()
            .unwrap();
        assert_eq!(change.change_type, ChangeType::Updated as i32);
        assert_eq!(change.stream.unwrap().device_name, "camera-9");
    }
}

#[tokio::test]
async fn cloudfront_watchers_see_changes_made_outside_the_gateway() {
    let fake = StreamingFake::start(0).await;
    fake.add("EOUTSIDE", true, "");
    let config = format!(
        "[[providers]]\nid = \"rtmp\"\nkind = \"cloudfront-streaming\"\nendpoint_url = \"{}\"\n\
         watch_poll_interval = \"100ms\"\n",
        fake.url()
    );
    let server = TestServer::start_env(&config, &AWS_ENV).await;
    let mut watch = server
        .streams()
        .watch_stream(pb::WatchStreamRequest {
            name: "providers/rtmp/streams/EOUTSIDE".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let initial = watch.message().await.unwrap().unwrap();
    assert_eq!(
        initial.stream.unwrap().state,
        pb::stream::State::Active as i32
    );
    fake.touch("EOUTSIDE", false);
    let changed = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the change within five seconds")
        .unwrap()
        .unwrap();
    assert_eq!(changed.change_type, ChangeType::Updated as i32);
    assert_eq!(
        changed.stream.unwrap().state,
        pb::stream::State::Disabled as i32
    );
}
