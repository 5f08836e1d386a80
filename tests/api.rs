//! End-to-end tests of the whole API on the `local` provider, through `server::run` on
//! 127.0.0.1:0 and the generated tonic clients.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use streamgate::pb;
use streamgate::pb::stream::State;
use streamgate::pb::watch_stream_response::ChangeType;
use support::{TestServer, local_provider, op_error, reason, violated_fields, wait};
use tonic::Code;

fn create_request(stream_id: &str) -> pb::CreateStreamRequest {
    pb::CreateStreamRequest {
        parent: "providers/local".into(),
        stream_id: stream_id.into(),
        stream: Some(pb::Stream {
            media_type: "video/h264".into(),
            data_retention_hours: 24,
            device_name: "camera-7".into(),
            tags: HashMap::from([("team".into(), "video".into())]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn stream_name(id: &str) -> String {
    format!("providers/local/streams/{id}")
}

async fn create_active(server: &TestServer, id: &str) -> pb::Stream {
    let op = server
        .streams()
        .create_stream(create_request(id))
        .await
        .unwrap()
        .into_inner();
    match wait(server, &op).await.result {
        Some(pb::operation::Result::Stream(s)) => s,
        other => panic!("create of {id} ended with {other:?}"),
    }
}

fn error_reason(op: &pb::Operation) -> (i32, String) {
    let status = op_error(op);
    (status.code() as i32, reason(&status))
}

#[tokio::test]
async fn providers_are_listed_with_capabilities() {
    let server = TestServer::start(&format!(
        "{}[[providers]]\nid = \"readonly\"\nkind = \"local\"\ndisabled_methods = [\"CreateStream\", \"UpdateStream\"]\n",
        local_provider("local", "100ms")
    ))
    .await;
    let mut providers = server.providers();
    let list = providers
        .list_providers(pb::ListProvidersRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["providers/local", "providers/readonly"]);

    let page = providers
        .list_providers(pb::ListProvidersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.providers.len(), 1);
    let rest = providers
        .list_providers(pb::ListProvidersRequest {
            page_size: 1,
            page_token: page.next_page_token,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.providers[0].name, "providers/readonly");
    assert!(rest.next_page_token.is_empty());

    let readonly = providers
        .get_provider(pb::GetProviderRequest {
            name: "providers/readonly".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(readonly.kind, "local");
    let caps = readonly.capabilities.unwrap();
    assert!(!caps.methods.contains(&"CreateStream".to_string()));
    assert!(caps.methods.contains(&"DeleteStream".to_string()));
    assert!(caps.etags);

    let missing = providers
        .get_provider(pb::GetProviderRequest {
            name: "providers/nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "PROVIDER_NOT_FOUND");

    // A method the instance does not support: UNIMPLEMENTED / CAPABILITY_UNSUPPORTED.
    let mut request = create_request("x");
    request.parent = "providers/readonly".into();
    let unsupported = server.streams().create_stream(request).await.unwrap_err();
    assert_eq!(unsupported.code(), Code::Unimplemented);
    assert_eq!(reason(&unsupported), "CAPABILITY_UNSUPPORTED");
}

#[tokio::test]
async fn with_no_create_delay_a_stream_is_active_from_the_start() {
    let server = TestServer::start(&local_provider("local", "0s")).await;
    let mut streams = server.streams();
    let op = streams
        .create_stream(create_request("cam-0"))
        .await
        .unwrap()
        .into_inner();
    // One step: the call returns the finished operation.
    assert!(op.done, "{op:?}");
    assert_eq!(op.metadata.as_ref().unwrap().step, "done");
    let Some(pb::operation::Result::Stream(created)) = op.result.clone() else {
        panic!("no stream in {op:?}");
    };
    assert_eq!(created.state, State::Active as i32);
    assert_eq!(created.device_name, "camera-7");
    let got = streams
        .get_stream(pb::GetStreamRequest {
            name: stream_name("cam-0"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // The same stream, with the time it was read.
    assert!(got.read_time.is_some());
    assert_eq!(
        pb::Stream {
            read_time: None,
            ..got
        },
        created
    );
    let mut watch = streams
        .watch_stream(pb::WatchStreamRequest {
            name: stream_name("cam-0"),
        })
        .await
        .unwrap()
        .into_inner();
    let initial = watch.message().await.unwrap().unwrap();
    assert_eq!(initial.change_type, ChangeType::Initial as i32);
    assert_eq!(initial.stream.as_ref(), Some(&created));
    let again = streams
        .create_stream(create_request("cam-0"))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn create_goes_creating_then_active_and_get_reads_it() {
    let server = TestServer::start(&local_provider("local", "300ms")).await;
    let mut streams = server.streams();
    let op = streams
        .create_stream(create_request("cam-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done, "a create is asynchronous");
    let meta = op.metadata.clone().unwrap();
    assert_eq!(meta.verb, "CreateStream");
    assert_eq!(meta.target, stream_name("cam-1"));
    assert_eq!(meta.principal, "anonymous");
    assert_eq!(meta.step, "creating");

    let creating = streams
        .get_stream(pb::GetStreamRequest {
            name: stream_name("cam-1"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(creating.state, State::Creating as i32);

    let done = wait(&server, &op).await;
    assert!(done.done);
    let Some(pb::operation::Result::Stream(active)) = done.result else {
        panic!("no stream in {done:?}");
    };
    assert_eq!(active.state, State::Active as i32);
    assert_ne!(
        active.etag, creating.etag,
        "the etag changes on every change"
    );
    assert_eq!(active.media_type, "video/h264");
    assert_eq!(active.data_retention_hours, 24);
    assert_eq!(active.device_name, "camera-7");
    assert_eq!(active.tags["team"], "video");
    assert!(active.create_time.is_some());
    assert!(!active.provider_uid.is_empty());

    let got = streams
        .get_stream(pb::GetStreamRequest {
            name: stream_name("cam-1"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(got.read_time.is_some());
    assert_eq!(
        pb::Stream {
            read_time: None,
            ..got
        },
        active
    );

    let again = streams
        .create_stream(create_request("cam-1"))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    assert_eq!(reason(&again), "STREAM_ALREADY_EXISTS");

    let missing = streams
        .get_stream(pb::GetStreamRequest {
            name: stream_name("nope"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "STREAM_NOT_FOUND");
}

#[tokio::test]
async fn validate_only_checks_everything_and_changes_nothing() {
    let server = TestServer::start(&local_provider("local", "10ms")).await;
    let mut streams = server.streams();
    let mut request = create_request("dry");
    request.validate_only = true;
    let op = streams
        .create_stream(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(op.done);
    assert!(op.name.is_empty(), "no operation is recorded");
    let missing = streams
        .get_stream(pb::GetStreamRequest {
            name: stream_name("dry"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    request.stream.as_mut().unwrap().data_retention_hours = 90_000;
    let invalid = streams.create_stream(request).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&invalid), ["stream.data_retention_hours"]);

    let stream = create_active(&server, "kept").await;
    let deleted = streams
        .delete_stream(pb::DeleteStreamRequest {
            name: stream.name.clone(),
            validate_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.done);
    streams
        .get_stream(pb::GetStreamRequest {
            name: stream.name,
            ..Default::default()
        })
        .await
        .expect("validate_only delete leaves the stream");
}

#[tokio::test]
async fn list_pages_and_filters() {
    let server = TestServer::start(&local_provider("local", "10ms")).await;
    for id in ["a-1", "a-2", "a-3", "b-1", "b-2"] {
        create_active(&server, id).await;
    }
    let mut streams = server.streams();
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = streams
            .list_streams(pb::ListStreamsRequest {
                parent: "providers/local".into(),
                page_size: 2,
                page_token: token.clone(),
                filter: String::new(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.streams.len() <= 2);
        seen.extend(page.streams.into_iter().map(|s| s.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<_> = ["a-1", "a-2", "a-3", "b-1", "b-2"]
        .iter()
        .map(|id| stream_name(id))
        .collect();
    assert_eq!(seen, expected);

    let filtered = streams
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/local".into(),
            filter: r#"stream_id_prefix = "a-" AND state = ACTIVE"#.into(),
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.streams.len(), 2);
    let second = streams
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/local".into(),
            filter: r#"stream_id_prefix = "a-" AND state = ACTIVE"#.into(),
            page_size: 2,
            page_token: filtered.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second
            .streams
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        [stream_name("a-3")]
    );

    // A token is bound to its query.
    let replayed = streams
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/local".into(),
            filter: "state = CREATING".into(),
            page_token: filtered.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(replayed.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&replayed), ["page_token"]);

    let unknown = streams
        .list_streams(pb::ListStreamsRequest {
            parent: "providers/local".into(),
            filter: "owner = me".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&unknown), ["filter"]);
}

#[tokio::test]
async fn update_and_delete_honour_etags() {
    let server = TestServer::start(&local_provider("local", "10ms")).await;
    let stream = create_active(&server, "cam").await;
    let mut streams = server.streams();

    let update = |etag: &str, device: &str| pb::UpdateStreamRequest {
        stream: Some(pb::Stream {
            name: stream.name.clone(),
            etag: etag.into(),
            device_name: device.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["device_name".into()],
        }),
        ..Default::default()
    };
    let op = streams
        .update_stream(update(&stream.etag, "camera-8"))
        .await
        .unwrap()
        .into_inner();
    assert!(op.done, "local updates finish at once");
    let Some(pb::operation::Result::Stream(updated)) = op.result else {
        panic!("{op:?}");
    };
    assert_eq!(updated.device_name, "camera-8");
    assert_eq!(
        updated.media_type, "video/h264",
        "fields outside the mask stay"
    );
    assert_ne!(updated.etag, stream.etag);

    let stale = streams
        .update_stream(update(&stream.etag, "camera-9"))
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::Aborted);
    assert_eq!(reason(&stale), "ETAG_MISMATCH");

    let mut bad_mask = update(&updated.etag, "x");
    bad_mask.update_mask = Some(prost_types::FieldMask {
        paths: vec!["kms_key_id".into()],
    });
    let bad_mask = streams.update_stream(bad_mask).await.unwrap_err();
    assert_eq!(violated_fields(&bad_mask), ["update_mask"]);

    let stale_delete = streams
        .delete_stream(pb::DeleteStreamRequest {
            name: stream.name.clone(),
            etag: stream.etag.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(stale_delete.code(), Code::Aborted);
    assert_eq!(reason(&stale_delete), "ETAG_MISMATCH");

    let deleted = streams
        .delete_stream(pb::DeleteStreamRequest {
            name: stream.name.clone(),
            etag: updated.etag.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.done);
    assert_eq!(
        deleted.result,
        Some(pb::operation::Result::DeleteStream(
            pb::DeleteStreamResponse {
                name: stream.name.clone(),
                existed: true
            }
        ))
    );

    let gone = streams
        .delete_stream(pb::DeleteStreamRequest {
            name: stream.name.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(reason(&gone), "STREAM_NOT_FOUND");

    let allowed = streams
        .delete_stream(pb::DeleteStreamRequest {
            name: stream.name.clone(),
            allow_missing: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        allowed.result,
        Some(pb::operation::Result::DeleteStream(
            pb::DeleteStreamResponse {
                name: stream.name,
                existed: false
            }
        ))
    );
}

#[tokio::test]
async fn updating_a_creating_stream_is_refused() {
    let server = TestServer::start(&local_provider("local", "5s")).await;
    let mut streams = server.streams();
    streams.create_stream(create_request("slow")).await.unwrap();
    let refused = streams
        .update_stream(pb::UpdateStreamRequest {
            stream: Some(pb::Stream {
                name: stream_name("slow"),
                device_name: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), "STREAM_IN_USE");
}

#[tokio::test]
async fn batch_delete_reports_each_name() {
    let server = TestServer::start(&local_provider("local", "10ms")).await;
    create_active(&server, "one").await;
    create_active(&server, "two").await;
    let op = server
        .streams()
        .batch_delete_streams(pb::BatchDeleteStreamsRequest {
            parent: "providers/local".into(),
            names: vec![
                stream_name("one"),
                stream_name("missing"),
                stream_name("two"),
            ],
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(op.done);
    let Some(pb::operation::Result::BatchDeleteStreams(response)) = op.result else {
        panic!("{op:?}");
    };
    let outcome: Vec<_> = response
        .results
        .iter()
        .map(|r| {
            (
                r.name.as_str(),
                r.deleted,
                r.error.as_ref().map(|e| e.reason.as_str()),
            )
        })
        .collect();
    assert_eq!(
        outcome,
        [
            (stream_name("one").as_str(), true, None),
            (
                stream_name("missing").as_str(),
                false,
                Some("STREAM_NOT_FOUND")
            ),
            (stream_name("two").as_str(), true, None),
        ]
    );

    let foreign = server
        .streams()
        .batch_delete_streams(pb::BatchDeleteStreamsRequest {
            parent: "providers/local".into(),
            names: vec![
                stream_name("a"),
                "providers/other/streams/b".into(),
                stream_name("a"),
            ],
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(foreign.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&foreign), ["names[1]", "names[2]"]);
}

#[tokio::test]
async fn a_thousand_bad_names_answer_a_bounded_error() {
    let server = TestServer::start(&local_provider("local", "200ms")).await;
    let refused = server
        .streams()
        .batch_delete_streams(pb::BatchDeleteStreamsRequest {
            parent: "providers/local".into(),
            names: (0..1000)
                .map(|i| format!("providers/local/streams/bad name {i} {}", "x".repeat(200)))
                .collect(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let fields = violated_fields(&refused);
    assert!(fields.len() <= 21, "{fields:?}");
    assert_eq!(fields.last().map(String::as_str), Some("*"), "{fields:?}");
    assert!(refused.message().len() <= 512, "{}", refused.message());
    assert!(refused.message().contains("more violations left out"));
    assert!(
        refused.details().len() <= 4096,
        "{}",
        refused.details().len()
    );
}

#[tokio::test]
async fn watch_sends_every_change_and_ends_on_delete() {
    let server = TestServer::start(&local_provider("local", "200ms")).await;
    let mut streams = server.streams();
    let op = streams
        .create_stream(create_request("watched"))
        .await
        .unwrap()
        .into_inner();
    let mut watch = streams
        .watch_stream(pb::WatchStreamRequest {
            name: stream_name("watched"),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.change_type, ChangeType::Initial as i32);
    assert_eq!(first.stream.as_ref().unwrap().state, State::Creating as i32);

    let activated = watch.message().await.unwrap().unwrap();
    assert_eq!(activated.change_type, ChangeType::Updated as i32);
    assert_eq!(
        activated.stream.as_ref().unwrap().state,
        State::Active as i32
    );
    wait(&server, &op).await;

    streams
        .update_stream(pb::UpdateStreamRequest {
            stream: Some(pb::Stream {
                name: stream_name("watched"),
                data_retention_hours: 48,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let updated = watch.message().await.unwrap().unwrap();
    assert_eq!(updated.stream.as_ref().unwrap().data_retention_hours, 48);

    streams
        .delete_stream(pb::DeleteStreamRequest {
            name: stream_name("watched"),
            ..Default::default()
        })
        .await
        .unwrap();
    let deleted = watch.message().await.unwrap().unwrap();
    assert_eq!(deleted.change_type, ChangeType::Deleted as i32);
    assert!(watch.message().await.unwrap().is_none(), "the watch ends");

    let missing = streams
        .watch_stream(pb::WatchStreamRequest {
            name: stream_name("watched"),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
}

#[tokio::test]
async fn request_id_returns_the_same_operation() {
    let server = TestServer::start(&local_provider("local", "100ms")).await;
    let mut streams = server.streams();
    let mut request = create_request("idem");
    request.request_id = "0b7f6c1e-55a4-4d0e-9d83-3f3a3e0c9a11".into();
    let first = streams
        .create_stream(request.clone())
        .await
        .unwrap()
        .into_inner();
    let done = wait(&server, &first).await;
    // The retry after the stream exists: the same operation, not ALREADY_EXISTS.
    let retry = streams
        .create_stream(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry.name, first.name);
    assert_eq!(retry, done);

    let ops = server
        .operations()
        .list_operations(pb::ListOperationsRequest {
            filter: format!("target = \"{}\"", stream_name("idem")),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ops.operations.len(), 1, "a retry makes no second operation");

    request.stream.as_mut().unwrap().device_name = "another".into();
    let conflict = streams.create_stream(request).await.unwrap_err();
    assert_eq!(conflict.code(), Code::InvalidArgument);
    assert_eq!(reason(&conflict), "REQUEST_ID_CONFLICT");
    assert_eq!(violated_fields(&conflict), ["request_id"]);
}

#[tokio::test]
async fn concurrent_retries_with_one_request_id_make_one_operation() {
    let server = TestServer::start(&local_provider("local", "50ms")).await;
    let mut request = create_request("race");
    request.request_id = "race-1".into();
    let calls = (0..8).map(|_| {
        let mut streams = server.streams();
        let request = request.clone();
        tokio::spawn(async move { streams.create_stream(request).await })
    });
    let mut names = std::collections::HashSet::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(op) => {
                names.insert(op.into_inner().name);
            }
            // A retry that arrives after the stream exists but before the first insert is
            // visible may see the stream: that is the only other acceptable answer.
            Err(status) => assert_eq!(reason(&status), "STREAM_ALREADY_EXISTS"),
        }
    }
    assert_eq!(names.len(), 1, "{names:?}");
}

#[tokio::test]
async fn wait_honours_timeout_and_deadline_and_cancel_stops_a_create() {
    let server = TestServer::start(&local_provider("local", "30s")).await;
    let mut streams = server.streams();
    let op = streams
        .create_stream(create_request("long"))
        .await
        .unwrap()
        .into_inner();
    let mut ops = server.operations();

    let started = Instant::now();
    let waited = ops
        .wait_operation(pb::WaitOperationRequest {
            name: op.name.clone(),
            timeout: Some(prost_types::Duration {
                seconds: 0,
                nanos: 300_000_000,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let took = started.elapsed();
    assert!(!waited.done);
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(3),
        "{took:?}"
    );

    // A caller deadline shorter than the timeout: the answer comes before the deadline.
    let mut request = tonic::Request::new(pb::WaitOperationRequest {
        name: op.name.clone(),
        timeout: Some(prost_types::Duration {
            seconds: 20,
            nanos: 0,
        }),
    });
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let waited = ops.wait_operation(request).await.unwrap().into_inner();
    assert!(!waited.done);
    assert!(started.elapsed() < Duration::from_millis(500));

    let cancelled = ops
        .cancel_operation(pb::CancelOperationRequest {
            name: op.name.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(cancelled.done, "{cancelled:?}");
    assert!(cancelled.metadata.as_ref().unwrap().cancel_requested);
    assert_eq!(
        error_reason(&cancelled),
        (Code::Cancelled as i32, "CANCELLED".into())
    );
    let gone = streams
        .get_stream(pb::GetStreamRequest {
            name: stream_name("long"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        gone.code(),
        Code::NotFound,
        "a cancelled create removes its stream"
    );

    let unknown = ops
        .get_operation(pb::GetOperationRequest {
            name: "operations/0000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(reason(&unknown), "OPERATION_NOT_FOUND");
}

#[tokio::test]
async fn list_operations_pages_and_filters() {
    let server = TestServer::start(&local_provider("local", "10ms")).await;
    for id in ["o1", "o2", "o3"] {
        create_active(&server, id).await;
    }
    server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: stream_name("o1"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ops = server.operations();
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = ops
            .list_operations(pb::ListOperationsRequest {
                page_size: 3,
                page_token: token,
                filter: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        all.extend(page.operations);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(all.len(), 4);
    assert_eq!(
        all[0].metadata.as_ref().unwrap().verb,
        "DeleteStream",
        "newest first"
    );
    let deletes = ops
        .list_operations(pb::ListOperationsRequest {
            filter: "verb = DeleteStream AND done = true".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deletes.operations.len(), 1);
    let bad = ops
        .list_operations(pb::ListOperationsRequest {
            filter: "done = maybe".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violated_fields(&bad), ["filter"]);
}

#[tokio::test]
async fn bad_inputs_get_clear_errors_and_the_server_keeps_serving() {
    let server = TestServer::start(&local_provider("local", "10ms")).await;
    let mut streams = server.streams();
    let huge = "x".repeat(1 << 20);
    let get = |name: &str| pb::GetStreamRequest {
        name: name.into(),
        ..Default::default()
    };
    let create = |parent: &str, id: &str, stream: pb::Stream| pb::CreateStreamRequest {
        parent: parent.into(),
        stream_id: id.into(),
        stream: Some(stream),
        ..Default::default()
    };

    type Case = (
        &'static str,
        Result<(), tonic::Status>,
        Code,
        &'static [&'static str],
    );
    let mut cases: Vec<Case> = Vec::new();
    macro_rules! case {
        ($what:expr, $call:expr, $code:expr, $fields:expr) => {
            cases.push(($what, $call.await.map(|_| ()), $code, $fields));
        };
    }
    case!(
        "empty name",
        streams.get_stream(get("")),
        Code::InvalidArgument,
        &["name"]
    );
    case!(
        "malformed name",
        streams.get_stream(get("providers/local/cams/x")),
        Code::InvalidArgument,
        &["name"]
    );
    case!(
        "name with a space",
        streams.get_stream(get("providers/local/streams/a b")),
        Code::InvalidArgument,
        &["name"]
    );
    case!(
        "unknown provider",
        streams.get_stream(get("providers/nope/streams/a")),
        Code::NotFound,
        &[]
    );
    case!(
        "1 MiB name",
        streams.get_stream(get(&format!("providers/local/streams/{huge}"))),
        Code::InvalidArgument,
        &["name"]
    );
    case!(
        "stream_id outside the charset",
        streams.create_stream(create("providers/local", "cam/1", pb::Stream::default())),
        Code::InvalidArgument,
        &["stream_id"]
    );
    case!(
        "empty stream_id",
        streams.create_stream(create("providers/local", "", pb::Stream::default())),
        Code::InvalidArgument,
        &["stream_id"]
    );
    case!(
        "bad parent",
        streams.create_stream(create("local", "a", pb::Stream::default())),
        Code::InvalidArgument,
        &["parent"]
    );
    case!(
        "1 MiB device name",
        streams.create_stream(create(
            "providers/local",
            "a",
            pb::Stream {
                device_name: huge.clone(),
                ..Default::default()
            }
        )),
        Code::InvalidArgument,
        &["stream.device_name"]
    );
    case!(
        "several bad fields at once",
        streams.create_stream(create(
            "providers/local",
            "a",
            pb::Stream {
                media_type: "h264".into(),
                data_retention_hours: -1,
                tags: (0..51).map(|i| (format!("k{i}"), String::new())).collect(),
                ..Default::default()
            }
        )),
        Code::InvalidArgument,
        &[
            "stream.media_type",
            "stream.data_retention_hours",
            "stream.tags"
        ]
    );
    case!(
        "negative page_size",
        streams.list_streams(pb::ListStreamsRequest {
            parent: "providers/local".into(),
            page_size: -1,
            ..Default::default()
        }),
        Code::InvalidArgument,
        &["page_size"]
    );
    case!(
        "garbage page_token",
        streams.list_streams(pb::ListStreamsRequest {
            parent: "providers/local".into(),
            page_token: "!!".into(),
            ..Default::default()
        }),
        Code::InvalidArgument,
        &["page_token"]
    );
    case!(
        "1 MiB filter",
        streams.list_streams(pb::ListStreamsRequest {
            parent: "providers/local".into(),
            filter: huge.clone(),
            ..Default::default()
        }),
        Code::InvalidArgument,
        &["filter"]
    );
    case!(
        "1 MiB request_id",
        streams.delete_stream(pb::DeleteStreamRequest {
            name: stream_name("a"),
            request_id: huge.clone(),
            ..Default::default()
        }),
        Code::InvalidArgument,
        &["request_id"]
    );
    case!(
        "empty batch",
        streams.batch_delete_streams(pb::BatchDeleteStreamsRequest {
            parent: "providers/local".into(),
            ..Default::default()
        }),
        Code::InvalidArgument,
        &["names"]
    );
    case!(
        "malformed operation name",
        server.operations().get_operation(pb::GetOperationRequest {
            name: "ops/1".into()
        }),
        Code::InvalidArgument,
        &["name"]
    );

    for (what, result, code, fields) in cases {
        let status = result.expect_err(what);
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(!reason(&status).is_empty(), "{what}");
        assert_eq!(violated_fields(&status), fields, "{what}");
        assert!(
            status.message().len() < 1000,
            "{what}: the message echoes no megabyte"
        );
    }
    // Still serving.
    create_active(&server, "after").await;
}

#[tokio::test]
async fn health_reports_each_service_and_goes_not_serving_on_shutdown() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let mut server = TestServer::start(&local_provider("local", "10ms")).await;
    let mut health = server.health();
    for service in [
        "",
        "streamgate.v1.StreamService",
        "streamgate.v1.ProviderService",
        "streamgate.v1.OperationService",
        "streamgate.v1.AuditService",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let mut updates = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        updates.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    create_active(&server, "w").await;
    // An open WatchStream must not keep the server from stopping.
    let mut watch = server
        .streams()
        .watch_stream(pb::WatchStreamRequest {
            name: stream_name("w"),
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap();

    let stopping = server.begin_stop();
    assert_eq!(
        updates.message().await.unwrap().unwrap().status,
        ServingStatus::NotServing as i32
    );
    // A health Watch is a call in flight like any other: the drain would wait for it.
    drop(updates);
    let started = Instant::now();
    stopping.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drained within the bound"
    );
}

#[tokio::test]
async fn operations_survive_a_restart_of_the_server() {
    let server = TestServer::start(&local_provider("local", "1s")).await;
    let op = server
        .streams()
        .create_stream(create_request("durable"))
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done);
    let dir = server.stop_keeping_dir().await;
    let server = TestServer::start_in(dir, &local_provider("local", "1s")).await;
    let done = wait(&server, &op).await;
    assert!(done.done, "{done:?}");
    let stream = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: stream_name("durable"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.state, State::Active as i32);
}
