//! The cases, each written once for every kind, and what each needs of a kind's capability.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use streamgate::pb;
use streamgate::pb::stream::State;
use streamgate::pb::watch_stream_response::ChangeType;
use tonic::Code;
use tonic_types::StatusExt;

use crate::kinds::{BadRequest, Kind, Peer, Subject, local_stream, web_stream};
use crate::support::kvs_fake::Windows;
use crate::support::{
    Binary, TestServer, done, info_metadata, op_error, reason, step, until_on, violated_fields,
    wait_on,
};

type Run = fn(Subject) -> Pin<Box<dyn Future<Output = ()> + Send>>;
type Applies = fn(Kind, &pb::Capabilities) -> Result<(), String>;

/// One behaviour every kind shares.
pub struct Case {
    pub name: &'static str,
    /// `Err(why)` when the kind's capability (or its lack of a provider) rules the case out.
    pub applies: Applies,
    pub run: Run,
}

/// Every case, in the table's row order.
pub const ALL: [Case; 13] = [
    Case {
        name: "get and list",
        applies: |_, c| methods(c, &["GetStream", "ListStreams"]),
        run: |s| Box::pin(get_and_list(s)),
    },
    Case {
        name: "missing → NOT_FOUND + provider_code",
        applies: |_, c| methods(c, &["GetStream"]),
        run: |s| Box::pin(missing_is_not_found(s)),
    },
    Case {
        name: "stale etag → ABORTED",
        applies: |_, c| {
            if !c.etags {
                return Err("etags = false".into());
            }
            methods(c, &["GetStream", "UpdateStream", "DeleteStream"])
        },
        run: |s| Box::pin(stale_etag_is_aborted(s)),
    },
    Case {
        name: "allow_missing delete",
        applies: |_, c| methods(c, &["DeleteStream"]),
        run: |s| Box::pin(allow_missing_delete(s)),
    },
    Case {
        name: "request_id replay",
        applies: |_, c| methods(c, &["DeleteStream"]),
        run: |s| Box::pin(request_id_replay(s)),
    },
    Case {
        name: "validate_only: no provider call, same verdict",
        applies: |_, c| methods(c, &["DeleteStream"]),
        run: |s| Box::pin(validate_only(s)),
    },
    Case {
        name: "id outside the kind's pattern → INVALID_ARGUMENT, no provider call",
        applies: |_, c| methods(c, &["GetStream", "DeleteStream"]),
        run: |s| Box::pin(id_outside_the_pattern(s)),
    },
    Case {
        name: "batch delete: outcome per name",
        applies: |_, c| methods(c, &["BatchDeleteStreams"]),
        run: |s| Box::pin(batch_outcome_per_name(s)),
    },
    Case {
        name: "throttling retried; constant → RESOURCE_EXHAUSTED + RetryInfo",
        applies: |k, c| {
            provider(k)?;
            methods(c, &["GetStream"])
        },
        run: |s| Box::pin(throttling(s)),
    },
    Case {
        name: "provider 5xx retried",
        applies: |k, c| {
            provider(k)?;
            methods(c, &["GetStream"])
        },
        run: |s| Box::pin(server_error_retried(s)),
    },
    Case {
        name: "WatchStream initial / updated / deleted",
        applies: |_, c| methods(c, &["WatchStream", "UpdateStream", "DeleteStream"]),
        run: |s| Box::pin(watch(s)),
    },
    Case {
        name: "state windows waited out",
        applies: |k, _| match k {
            Kind::Local | Kind::AliyunVod => Err("no passing states".into()),
            _ => Ok(()),
        },
        run: |s| Box::pin(state_windows(s)),
    },
    // Last: on moto it makes new distributions stay InProgress, which the cases sharing moto
    // must not see.
    Case {
        name: "kill -9 mid-operation resumes (binary)",
        applies: |_, _| Ok(()),
        run: |s| Box::pin(kill_9_resumes(s)),
    },
];

/// `Err` naming the first of `needed` the capability lacks.
fn methods(caps: &pb::Capabilities, needed: &[&str]) -> Result<(), String> {
    match needed
        .iter()
        .find(|m| !caps.methods.iter().any(|c| c == *m))
    {
        Some(missing) => Err(format!("no {missing}")),
        None => Ok(()),
    }
}

/// `Err` for the kind without a provider.
fn provider(kind: Kind) -> Result<(), String> {
    if kind.has_provider() {
        Ok(())
    } else {
        Err("no provider".into())
    }
}

async fn get(server: &TestServer, name: &str) -> Result<pb::Stream, tonic::Status> {
    server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: name.to_string(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn delete(server: &TestServer, request: pb::DeleteStreamRequest) -> pb::Operation {
    let op = server
        .streams()
        .delete_stream(request)
        .await
        .unwrap()
        .into_inner();
    done(server, op).await
}

fn delete_request(name: &str) -> pb::DeleteStreamRequest {
    pb::DeleteStreamRequest {
        name: name.to_string(),
        ..Default::default()
    }
}

/// Whether a finished delete found the stream (panics if it failed).
fn existed(op: &pb::Operation) -> bool {
    match &op.result {
        Some(pb::operation::Result::DeleteStream(deleted)) => deleted.existed,
        other => panic!("the delete did not succeed: {other:?}"),
    }
}

/// The error a call ended with: its own status when refused at once, else its operation's
/// (a kind may find a failure while the caller waits, or in the operation's first step).
async fn refusal(
    server: &TestServer,
    answer: Result<tonic::Response<pb::Operation>, tonic::Status>,
) -> tonic::Status {
    match answer {
        Err(status) => status,
        Ok(op) => op_error(&done(server, op.into_inner()).await),
    }
}

async fn update(server: &TestServer, request: pb::UpdateStreamRequest) -> pb::Operation {
    let op = server
        .streams()
        .update_stream(request)
        .await
        .unwrap()
        .into_inner();
    done(server, op).await
}

async fn get_and_list(s: Subject) {
    let server = s.gateway().await;
    let name = s.seed(&server, "1").await;
    let got = get(&server, &name).await.unwrap();
    assert_eq!(got.name, name);
    assert_eq!(got.state, State::Active as i32, "{got:?}");
    let mut listed = Vec::new();
    let mut token = String::new();
    loop {
        let page = server
            .streams()
            .list_streams(pb::ListStreamsRequest {
                parent: s.parent(),
                page_size: 1,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.streams.len() <= 1, "a page of one");
        listed.extend(page.streams.into_iter().map(|s| s.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert!(listed.contains(&name), "{listed:?}");
    let mut distinct = listed.clone();
    distinct.dedup();
    assert_eq!(distinct, listed, "no stream listed twice");
}

async fn missing_is_not_found(s: Subject) {
    let server = s.gateway().await;
    let (name, why, code) = s.missing();
    let status = get(&server, &name).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(reason(&status), why);
    if let Some(code) = code {
        assert_eq!(info_metadata(&status, "provider_code"), code, "{status:?}");
        assert!(
            !info_metadata(&status, "provider_request_id").is_empty(),
            "{status:?}"
        );
    }
}

async fn stale_etag_is_aborted(s: Subject) {
    let server = s.gateway().await;
    let name = s.seed(&server, "1").await;
    let stale = get(&server, &name).await.unwrap().etag;
    assert!(!stale.is_empty());
    let changed = update(&server, s.change(&name, &stale, 1)).await;
    let Some(pb::operation::Result::Stream(changed)) = &changed.result else {
        panic!("{changed:?}");
    };
    let stale = s.stale_etag(&stale, &changed.etag);
    let deleted = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            etag: stale.clone(),
            ..delete_request(&name)
        })
        .await;
    let status = refusal(&server, deleted).await;
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(reason(&status), "ETAG_MISMATCH");
    let updated = server
        .streams()
        .update_stream(s.change(&name, &stale, 2))
        .await;
    let status = refusal(&server, updated).await;
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(reason(&status), "ETAG_MISMATCH");
    get(&server, &name)
        .await
        .expect("the stream is still there");
}

async fn allow_missing_delete(s: Subject) {
    let server = s.gateway().await;
    let (name, ..) = s.missing();
    let op = delete(
        &server,
        pb::DeleteStreamRequest {
            allow_missing: true,
            ..delete_request(&name)
        },
    )
    .await;
    assert!(!existed(&op), "{op:?}");
    let refused = server.streams().delete_stream(delete_request(&name)).await;
    let status = refusal(&server, refused).await;
    assert_eq!(
        status.code(),
        Code::NotFound,
        "without allow_missing: {status:?}"
    );
}

async fn request_id_replay(s: Subject) {
    let server = s.gateway().await;
    let name = s.seed(&server, "1").await;
    let request = pb::DeleteStreamRequest {
        request_id: "replay-1".into(),
        ..delete_request(&name)
    };
    let first = server
        .streams()
        .delete_stream(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(!first.name.is_empty());
    let again = server
        .streams()
        .delete_stream(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.name, first.name, "a retry is the same operation");
    let finished = done(&server, first).await;
    assert!(existed(&finished), "{finished:?}");
    let calls = s.requests();
    let late = server
        .streams()
        .delete_stream(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(late.name, finished.name, "a retry after the end too");
    assert!(late.done);
    assert!(existed(&late), "the first answer, not a second delete");
    assert_eq!(s.requests(), calls, "the replay calls no provider");
}

async fn validate_only(s: Subject) {
    let server = s.gateway().await;
    let name = s.seed(&server, "1").await;
    let before = s.requests();
    let dry = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            validate_only: true,
            ..delete_request(&name)
        })
        .await
        .unwrap()
        .into_inner();
    assert!(dry.done && dry.name.is_empty(), "{dry:?}");
    assert_eq!(dry.metadata.unwrap().step, "validated");
    assert_eq!(s.requests(), before, "validate_only calls no provider");
    get(&server, &name).await.expect("still there");

    let (bad, field) = s.bad_request();
    let before = s.requests();
    let send = |validate_only: bool| {
        let mut streams = server.streams();
        let bad = match &bad {
            BadRequest::Create(r) => BadRequest::Create(Box::new(pb::CreateStreamRequest {
                validate_only,
                ..(**r).clone()
            })),
            BadRequest::Delete(r) => BadRequest::Delete(pb::DeleteStreamRequest {
                validate_only,
                ..r.clone()
            }),
        };
        async move {
            match bad {
                BadRequest::Create(r) => streams.create_stream(*r).await,
                BadRequest::Delete(r) => streams.delete_stream(r).await,
            }
            .map(tonic::Response::into_inner)
        }
    };
    let dry = send(true).await;
    assert_eq!(s.requests(), before, "validate_only calls no provider");
    let real = send(false).await;
    let verdict = |answer: Result<pb::Operation, tonic::Status>| match answer {
        Ok(op) => format!("accepted: {op:?}"),
        Err(status) => format!("{:?} {:?}", status.code(), violated_fields(&status)),
    };
    let (dry, real) = (verdict(dry), verdict(real));
    assert_eq!(dry, real, "validate_only and the real call agree");
    assert_eq!(
        real,
        format!("{:?} {:?}", Code::InvalidArgument, [field]),
        "refused, naming {field}"
    );
}

async fn id_outside_the_pattern(s: Subject) {
    let server = s.gateway().await;
    let provider = server
        .providers()
        .get_provider(pb::GetProviderRequest {
            name: format!("providers/{}", s.kind.id()),
        })
        .await
        .unwrap()
        .into_inner();
    let (pattern, id) = s.outside_pattern();
    let limits = provider.capabilities.unwrap().limits.unwrap();
    assert_eq!(
        limits.stream_id_pattern, pattern,
        "the kind's advertised pattern"
    );
    let name = s.name(id);
    let before = s.requests();
    let read = get(&server, &name).await.unwrap_err();
    assert_eq!(
        (read.code(), violated_fields(&read)),
        (Code::InvalidArgument, vec!["name".to_string()]),
        "GetStream: {read:?}"
    );
    for validate_only in [true, false] {
        let answer = server
            .streams()
            .delete_stream(pb::DeleteStreamRequest {
                validate_only,
                ..delete_request(&name)
            })
            .await;
        let status = refusal(&server, answer).await;
        assert_eq!(
            (status.code(), violated_fields(&status)),
            (Code::InvalidArgument, vec!["name".to_string()]),
            "DeleteStream (validate_only = {validate_only}): {status:?}"
        );
    }
    assert_eq!(s.requests(), before, "refused before any provider call");
}

async fn batch_outcome_per_name(s: Subject) {
    let server = s.gateway().await;
    let present = s.seed(&server, "1").await;
    let absent = s.absent_sibling();
    let op = server
        .streams()
        .batch_delete_streams(pb::BatchDeleteStreamsRequest {
            parent: s.parent(),
            names: vec![present.clone(), absent.clone()],
            request_id: "batch-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let op = done(&server, op).await;
    let Some(pb::operation::Result::BatchDeleteStreams(batch)) = &op.result else {
        panic!("{op:?}");
    };
    let outcome: Vec<(String, bool, String)> = batch
        .results
        .iter()
        .map(|r| {
            (
                r.name.clone(),
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
            (present.clone(), true, String::new()),
            (absent, false, "STREAM_NOT_FOUND".to_string()),
        ]
    );
    assert_eq!(
        get(&server, &present).await.unwrap_err().code(),
        Code::NotFound
    );
}

async fn throttling(s: Subject) {
    let server = s.gateway().await;
    let name = s.seed(&server, "1").await;
    let before = s.reads();
    s.throttle_reads(2);
    get(&server, &name)
        .await
        .expect("retried past two throttles");
    assert!(
        s.reads() >= before + 3,
        "two throttled reads, then one more"
    );

    // No deadline of the caller's: the retry policy's attempts end the call, not a timer
    // racing the gateway's answer on a loaded machine.
    let code = s.throttle_reads(1000);
    let status = get(&server, &name).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason(&status), "PROVIDER_THROTTLED");
    assert_eq!(info_metadata(&status, "provider_code"), code);
    assert!(
        status.get_error_details().retry_info().is_some(),
        "RetryInfo: {status:?}"
    );
}

async fn server_error_retried(s: Subject) {
    let server = s.gateway().await;
    let name = s.seed(&server, "1").await;
    let before = s.reads();
    s.fail_read_5xx();
    get(&server, &name).await.expect("retried past a 5xx");
    assert!(s.reads() >= before + 2, "the 5xx, then one more");
}

async fn watch(s: Subject) {
    let server = s.gateway().await;
    let name = s.seed(&server, "1").await;
    let mut watch = server
        .streams()
        .watch_stream(pb::WatchStreamRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    let initial = next(&mut watch).await.expect("the initial state");
    assert_eq!(initial.change_type, ChangeType::Initial as i32);
    let etag = initial.stream.unwrap().etag;
    let changed = update(&server, s.change(&name, &etag, 1)).await;
    assert!(
        matches!(changed.result, Some(pb::operation::Result::Stream(_))),
        "{changed:?}"
    );
    let updated = next(&mut watch).await.expect("the change");
    assert_eq!(updated.change_type, ChangeType::Updated as i32);
    let deleted = delete(&server, delete_request(&name)).await;
    assert!(existed(&deleted));
    // A delete may pass through states (CloudFront disables first); each is an update.
    loop {
        let change = next(&mut watch).await.expect("the deletion");
        if change.change_type == ChangeType::Deleted as i32 {
            break;
        }
        assert_eq!(change.change_type, ChangeType::Updated as i32);
    }
}

async fn state_windows(s: Subject) {
    match &s.peer {
        Peer::Kvs(fake) => {
            let window = Duration::from_millis(300);
            fake.fake.set_windows(Windows {
                invisible: window,
                creating: window,
                updating: window,
                deleting: window,
            });
            let server = s.gateway().await;
            let op = server
                .streams()
                .create_stream(pb::CreateStreamRequest {
                    parent: s.parent(),
                    stream_id: "windows".into(),
                    stream: Some(local_stream()),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let created = done(&server, op).await;
            let Some(pb::operation::Result::Stream(stream)) = &created.result else {
                panic!("invisible, then CREATING, waited out: {created:?}");
            };
            let mut change = s.change(&stream.name, &stream.etag, 1);
            let body = change.stream.as_mut().unwrap();
            body.data_retention_hours = 48;
            change
                .update_mask
                .as_mut()
                .unwrap()
                .paths
                .push("data_retention_hours".into());
            let updated = update(&server, change).await;
            assert!(
                matches!(updated.result, Some(pb::operation::Result::Stream(_))),
                "UPDATING between the steps waited out: {updated:?}"
            );
            let first = delete(&server, delete_request(&stream.name)).await;
            assert!(existed(&first));
            assert_eq!(fake.fake.status("windows"), Some("DELETING"));
            let second = delete(
                &server,
                pb::DeleteStreamRequest {
                    allow_missing: true,
                    ..delete_request(&stream.name)
                },
            )
            .await;
            assert!(!existed(&second), "DELETING counts as deleted");
        }
        Peer::Streaming(fake) => {
            fake.set_polls_after_change(2);
            fake.settle_after_deploy(Duration::from_millis(1500));
            let server = s.gateway().await;
            let name = s.seed(&server, "1").await;
            let op = delete(&server, delete_request(&name)).await;
            assert!(
                existed(&op),
                "refused after Deployed for a while, then taken"
            );
            let refused = fake
                .requests()
                .iter()
                .filter(|r| r.method == "DELETE")
                .count();
            assert!(refused >= 2, "{refused} DELETEs");
        }
        Peer::Moto(_, proxy) => {
            let server = s.gateway().await;
            let name = s.seed(&server, "1").await;
            // moto deletes as soon as Deployed; the proxy plays CloudFront's window after it.
            proxy.fail_next(
                axum::http::Method::DELETE,
                409,
                "DistributionNotDisabled",
                4,
            );
            let op = delete(&server, delete_request(&name)).await;
            assert!(
                existed(&op),
                "refused after Deployed for a while, then taken"
            );
        }
        Peer::None | Peer::Vod(_) => unreachable!("gated"),
    }
}

/// The next message of a watch (at most 10 s away).
async fn next(
    watch: &mut tonic::Streaming<pb::WatchStreamResponse>,
) -> Option<pb::WatchStreamResponse> {
    tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("a change within 10 s")
        .unwrap()
}

async fn kill_9_resumes(s: Subject) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("streamgate.toml");
    let mut providers = s.providers();
    match s.kind {
        Kind::Local => {
            providers = providers.replace("create_delay = \"0s\"", "create_delay = \"1500ms\"")
        }
        // One DeleteStream call a second: a batch of three calls lasts two seconds.
        Kind::AliyunVod => providers.push_str("delete_stream_qps = 1\n"),
        _ => {}
    }
    std::fs::write(
        &config,
        format!(
            "[server]\ndrain_timeout = \"2s\"\n[store]\nurl = \"sqlite://{}/sg.db\"\n{providers}",
            dir.path().display()
        ),
    )
    .unwrap();
    let env = s.env();
    let mut first = Binary::spawn_with_env(&config, dir.path(), "first", env);
    let channel = first.ready().await;
    let mut streams =
        streamgate::pb::stream_service_client::StreamServiceClient::new(channel.clone());
    let create = |parent: String, id: &str, stream: pb::Stream| pb::CreateStreamRequest {
        parent,
        stream_id: id.to_string(),
        stream: Some(stream),
        request_id: format!("kill-{id}"),
        ..Default::default()
    };
    // Start the kind's long-running workflow and bring it to where it waits.
    let op = match &s.peer {
        Peer::None => {
            let op = streams
                .create_stream(create(s.parent(), "crash", local_stream()))
                .await
                .unwrap()
                .into_inner();
            until_on(&channel, &op.name, |op| step(op) == "creating").await
        }
        Peer::Kvs(fake) => {
            fake.fake.set_windows(Windows {
                creating: Duration::from_secs(2),
                ..Windows::default()
            });
            let op = streams
                .create_stream(create(s.parent(), "crash", local_stream()))
                .await
                .unwrap()
                .into_inner();
            until_on(&channel, &op.name, |op| !op.done && fake.fake.has("crash")).await
        }
        Peer::Streaming(fake) => {
            fake.add("ECRASH", true, "");
            fake.set_polls_after_change(1000);
            let op = streams
                .delete_stream(delete_request(&s.name("ECRASH")))
                .await
                .unwrap()
                .into_inner();
            until_on(&channel, &op.name, |op| step(op) == "waiting").await
        }
        Peer::Moto(moto, _) => {
            moto.keep_distributions_in_progress(40);
            let op = streams
                .create_stream(create(s.parent(), "crash", web_stream("crash")))
                .await
                .unwrap()
                .into_inner();
            let op = if op.done {
                op
            } else {
                wait_on(&channel, &op).await
            };
            let Some(pb::operation::Result::Stream(stream)) = op.result else {
                panic!("{op:?}");
            };
            let op = streams
                .delete_stream(delete_request(&stream.name))
                .await
                .unwrap()
                .into_inner();
            until_on(&channel, &op.name, |op| step(op) == "waiting").await
        }
        Peer::Vod(fake) => {
            let jobs: Vec<String> = (0..45).map(|i| format!("job-{i:02}")).collect();
            fake.add_video("v1", &jobs.iter().map(String::as_str).collect::<Vec<_>>());
            let op = streams
                .batch_delete_streams(pb::BatchDeleteStreamsRequest {
                    parent: s.parent(),
                    names: jobs.iter().map(|j| s.name(j)).collect(),
                    request_id: "kill-batch".into(),
                })
                .await
                .unwrap()
                .into_inner();
            until_on(&channel, &op.name, |_| {
                !fake.calls("DeleteStream").is_empty()
            })
            .await
        }
    };
    assert!(!op.done, "killed mid-operation: {op:?}");
    first.signal("KILL");
    assert!(!first.wait_exit(Duration::from_secs(5)).await.success());
    let changes_before = match &s.peer {
        Peer::Streaming(fake) => {
            fake.deploy_after("ECRASH", 2);
            fake.requests().iter().filter(|r| r.method == "PUT").count()
        }
        Peer::Kvs(fake) => fake.fake.requests_of("createStream").len(),
        Peer::Vod(fake) => {
            let left = fake.streams("v1").unwrap_or_default();
            assert!(!left.is_empty(), "killed before the batch's last call");
            0
        }
        _ => 0,
    };

    let mut second = Binary::spawn_with_env(&config, dir.path(), "second", env);
    let channel = second.ready().await;
    let finished = wait_on(&channel, &op).await;
    assert!(finished.done, "{finished:?}");
    match &s.peer {
        Peer::None | Peer::Kvs(_) => {
            let Some(pb::operation::Result::Stream(stream)) = &finished.result else {
                panic!("{finished:?}");
            };
            assert_eq!(stream.state, State::Active as i32);
        }
        Peer::Streaming(_) | Peer::Moto(..) => assert!(existed(&finished), "{finished:?}"),
        Peer::Vod(fake) => {
            let Some(pb::operation::Result::BatchDeleteStreams(batch)) = &finished.result else {
                panic!("{finished:?}");
            };
            assert_eq!(batch.results.len(), 45);
            assert!(batch.results.iter().all(|r| r.deleted), "{batch:?}");
            assert_eq!(fake.streams("v1"), Some(vec![]), "every stream deleted");
        }
    }
    match &s.peer {
        Peer::Streaming(fake) => {
            let puts = fake.requests().iter().filter(|r| r.method == "PUT").count();
            assert_eq!(puts, changes_before, "no second PUT after the restart");
            assert!(!fake.exists("ECRASH"));
        }
        Peer::Kvs(fake) => {
            let creates = fake.fake.requests_of("createStream").len();
            assert_eq!(creates, changes_before, "no second CreateStream");
        }
        _ => {}
    }
}
