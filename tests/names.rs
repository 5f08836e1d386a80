//! Stream ids held to their kind's pattern, through the real binary: a `cloudfront-streaming`
//! instance (distribution Ids, `[A-Z0-9]{1,256}`) refuses a name whose id is not one with
//! INVALID_ARGUMENT in every method that takes a stream name, and its fake CloudFront sees no
//! request; an id of the pattern reaches it. Also: a mask of 100,000 paths answers a short
//! INVALID_ARGUMENT that says more were found, without counting them.

mod support;

use streamgate::pb;
use streamgate::pb::provider_service_client::ProviderServiceClient;
use streamgate::pb::stream_service_client::StreamServiceClient;
use support::cloudfront_fake::StreamingFake;
use support::{AWS_ENV, Binary, violated_fields};
use tonic::Code;

fn write_config(dir: &std::path::Path, fake: &StreamingFake) -> std::path::PathBuf {
    let path = dir.join("streamgate.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\nurl = \"sqlite://{}/sg.db\"\n\
             [[providers]]\nid = \"local\"\nkind = \"local\"\n\
             [[providers]]\nid = \"rtmp\"\nkind = \"cloudfront-streaming\"\nendpoint_url = \"{}\"\n",
            dir.display(),
            fake.url()
        ),
    )
    .unwrap();
    path
}

fn assert_refused(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(violated_fields(status), [field], "{status:?}");
    assert!(
        status.message().contains("[A-Z0-9]{1,256}"),
        "{}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_outside_the_kinds_pattern_are_refused_before_the_provider() {
    let fake = StreamingFake::start(0).await;
    fake.add("EGOOD1", true, "kept");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake);
    let mut gateway = Binary::spawn_with_env(&config, dir.path(), "gateway", &AWS_ENV);
    let channel = gateway.ready().await;
    let mut streams = StreamServiceClient::new(channel.clone());

    let advertised = ProviderServiceClient::new(channel)
        .get_provider(pb::GetProviderRequest {
            name: "providers/rtmp".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .unwrap()
        .limits
        .unwrap();
    assert_eq!(advertised.stream_id_pattern, "[A-Z0-9]{1,256}");
    assert_eq!(advertised.max_stream_id_length, 256);

    fake.clear_requests();
    // Lower case and '-': of the set every kind accepts, not of a distribution Id.
    let bad = "providers/rtmp/streams/egood-1";
    let get = streams
        .get_stream(pb::GetStreamRequest {
            name: bad.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&get, "name");
    let update = streams
        .update_stream(pb::UpdateStreamRequest {
            stream: Some(pb::Stream {
                name: bad.into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["cloudfront.enabled".into()],
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&update, "stream.name");
    let delete = streams
        .delete_stream(pb::DeleteStreamRequest {
            name: bad.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&delete, "name");
    let batch = streams
        .batch_delete_streams(pb::BatchDeleteStreamsRequest {
            parent: "providers/rtmp".into(),
            names: vec!["providers/rtmp/streams/EGOOD1".into(), bad.into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&batch, "names[1]");
    let endpoints = streams
        .get_stream_endpoints(pb::GetStreamEndpointsRequest {
            name: bad.into(),
            purposes: vec![pb::EndpointPurpose::Playback as i32],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_refused(&endpoints, "name");
    let watch = streams
        .watch_stream(pb::WatchStreamRequest { name: bad.into() })
        .await
        .unwrap_err();
    assert_refused(&watch, "name");
    assert_eq!(fake.requests(), [], "no call reached CloudFront");

    let good = streams
        .get_stream(pb::GetStreamRequest {
            name: "providers/rtmp/streams/EGOOD1".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(good.name, "providers/rtmp/streams/EGOOD1");
    assert!(!fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_mask_paths_are_refused_without_being_counted() {
    let fake = StreamingFake::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &fake);
    let mut gateway = Binary::spawn_with_env(&config, dir.path(), "gateway", &AWS_ENV);
    let mut streams = StreamServiceClient::new(gateway.ready().await)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX);
    let refused = streams
        .update_stream(pb::UpdateStreamRequest {
            stream: Some(pb::Stream {
                name: "providers/local/streams/cam-1".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: (0..100_000).map(|i| format!("no_such_field_{i}")).collect(),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().len() <= 512, "{}", refused.message());
    assert!(
        refused
            .message()
            .ends_with("(and more violations left out)"),
        "{}",
        refused.message()
    );
    let fields = violated_fields(&refused);
    assert!(fields.len() <= 21, "{fields:?}");
    assert_eq!(fields.last().map(String::as_str), Some("*"));
}
