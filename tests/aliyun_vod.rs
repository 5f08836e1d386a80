//! The `aliyun-vod` adapter against the wire-level VOD fake (`tests/fakes/vod.rs`): the fake
//! checked with the official Python SDK, the adapter in-process through `server::run`, and the
//! real binary driven with grpcurl.

mod support;
// Shared with tests/endpoints.rs, which uses its URL authentication.
#[allow(dead_code)]
#[path = "fakes/vod.rs"]
mod vod;

use std::collections::HashSet;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use streamgate::pb;
use support::{Binary, TestServer, info_metadata, op_error, output_text, reason, venv_tool};
use tonic::Code;
use tonic_types::StatusExt;
use vod::FakeVod;

const KEY_ID: &str = "LTAI5tFakeKeyId01";
const SECRET: &str = "fake-secret-7Qz9wXk2Lm4Np";
const PROVIDER: &str = "vod-sh";

/// A fake with the gateway's key and `videos`.
async fn fake_with(videos: &[(&str, &[&str])]) -> FakeVod {
    let fake = FakeVod::start().await;
    fake.add_key(KEY_ID, SECRET, None);
    for (video, jobs) in videos {
        fake.add_video(video, jobs);
    }
    fake
}

/// The `[[providers]]` entry of an instance on `fake` signing with `secret`.
fn provider_entry(fake: &FakeVod, secret: &str, extra: &str) -> String {
    format!(
        "[[providers]]\nid = \"{PROVIDER}\"\nkind = \"aliyun-vod\"\nregion = \"cn-shanghai\"\n\
         endpoint_url = \"{}\"\naccess_key_id = \"{KEY_ID}\"\naccess_key_secret = \"{secret}\"\n{extra}",
        fake.url()
    )
}

async fn gateway(fake: &FakeVod) -> TestServer {
    TestServer::start(&provider_entry(fake, SECRET, "")).await
}

fn stream_name(video: &str, job: &str) -> String {
    format!("providers/{PROVIDER}/videos/{video}/streams/{job}")
}

fn jobs(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:02}")).collect()
}

async fn delete(server: &TestServer, name: &str) -> pb::Operation {
    let op = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: name.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    support::done(server, op).await
}

async fn batch_delete(server: &TestServer, parent: &str, names: &[String]) -> pb::Operation {
    let op = server
        .streams()
        .batch_delete_streams(pb::BatchDeleteStreamsRequest {
            parent: parent.to_string(),
            names: names.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let op = support::done(server, op).await;
    assert!(op.done, "{op:?}");
    op
}

fn batch_results(op: &pb::Operation) -> Vec<pb::BatchDeleteStreamsResult> {
    match &op.result {
        Some(pb::operation::Result::BatchDeleteStreams(r)) => r.results.clone(),
        other => panic!("not a batch result: {other:?}"),
    }
}

fn assert_all_signed(fake: &FakeVod) {
    for request in fake.requests() {
        assert!(request.signature_valid, "badly signed: {request:?}");
    }
}

fn assert_distinct_nonces(fake: &FakeVod) {
    let requests = fake.requests();
    let nonces: HashSet<_> = requests.iter().map(|r| r.param("SignatureNonce")).collect();
    assert_eq!(nonces.len(), requests.len(), "a nonce was reused");
}

// ---------------------------------------------------------------------------------------------
// The fake itself, against the official SDK.

/// The official SDKs' endpoint of every region their maps name, and of a few they do not
/// (the "regional" rule), as JSON `{region: host}`; the two SDKs' maps must agree.
const SDK_ENDPOINTS: &str = r#"
import json
from aliyunsdkvod.endpoint import endpoint_data
from alibabacloud_tea_openapi import models
from alibabacloud_vod20170321.client import Client

client = Client(models.Config(region_id="cn-hangzhou", access_key_id="k", access_key_secret="s"))
legacy = endpoint_data.getEndpointMap()
regions = set(client._endpoint_map) | set(legacy) | {"eu-west-1", "ap-south-1", "cn-shanghai"}
hosts = {
    r: client.get_endpoint("vod", r, "regional", "", "", client._endpoint_map, None)
    for r in regions
}
assert all(hosts[r] == legacy[r] for r in legacy), "the two SDKs disagree"
print(json.dumps(hosts))
"#;

#[test]
fn the_vod_host_of_every_region_is_the_official_sdks() {
    let output = Command::new(venv_tool("python"))
        .args(["-c", SDK_ENDPOINTS])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    let hosts: std::collections::BTreeMap<String, String> =
        serde_json::from_slice(&output.stdout).unwrap();
    assert!(hosts.len() > 40, "{hosts:?}");
    assert_eq!(hosts["cn-hangzhou"], "vod.cn-shanghai.aliyuncs.com");
    for (region, host) in &hosts {
        assert_eq!(
            &streamgate::providers::aliyun_vod::api_host(region),
            host,
            "{region}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_is_accepted_by_the_fake_and_refused_with_a_wrong_secret() {
    let fake = fake_with(&[("v-sdk", &["job-a", "job-b"])]).await;
    fake.set_url_authentication(Some("sdk-auth-key"));
    let script = support::repo().join("tests/py/vod_sdk.py");
    let endpoint = fake.addr.to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(venv_tool("python"))
            .arg(script)
            .args([endpoint.as_str(), KEY_ID, SECRET, "v-sdk", "job-a"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", output_text(&output));
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim_end().to_string())
        .collect();
    // The official model reads the fake's GetPlayInfo whole, and the PlayURL it reads is
    // signed for the AuthTimeout the SDK sent.
    let model: Vec<&str> = lines[1].split(' ').collect();
    assert_eq!(
        (model[0], model[1], model[2], model[4]),
        ("model", "OK", "job-a", "same"),
        "{}",
        output_text(&output)
    );
    let (url, auth_key) = model[3].split_once("?auth_key=").unwrap();
    assert_eq!(url, "https://vod.example/v-sdk/job-a.m3u8");
    let expiry: u64 = auth_key.split('-').next().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!((now + 590..=now + 610).contains(&expiry), "{expiry}");
    assert_eq!(
        lines
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 1)
            .map(|(_, line)| line.as_str())
            .collect::<Vec<_>>(),
        [
            "get OK job-a,job-b",
            // The fake answers SignatureDoesNotMatch with the string it signed; the SDK finds it
            // identical to its own and so blames the secret.
            "wrong-secret ERROR InvalidAccessKeySecret",
            "nonce-first OK",
            "nonce-reused ERROR SignatureNonceUsed",
            "stale ERROR InvalidTimeStamp.Expired",
            "delete OK",
            "after-delete OK job-b",
        ],
        "{}",
        output_text(&output)
    );
    assert_eq!(fake.streams("v-sdk").unwrap(), ["job-b"]);
    let requests = fake.requests();
    assert_eq!(requests.len(), 8);
    let badly_signed: Vec<_> = requests.iter().filter(|r| !r.signature_valid).collect();
    assert_eq!(badly_signed.len(), 1, "{requests:#?}");
    assert_eq!(
        badly_signed[0].code.as_deref(),
        Some("SignatureDoesNotMatch")
    );
}

// ---------------------------------------------------------------------------------------------
// The adapter in-process.

#[tokio::test]
async fn gets_and_lists_the_streams_of_a_video_through_get_play_info() {
    let fake = fake_with(&[("v1", &["j3", "j1", "j2"]), ("v-empty", &[])]).await;
    let server = gateway(&fake).await;
    let mut streams = server.streams();

    let got = streams
        .get_stream(pb::GetStreamRequest {
            name: stream_name("v1", "j2"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.name, stream_name("v1", "j2"));
    assert_eq!(got.provider_uid, "j2");
    assert_eq!(got.state, pb::stream::State::Active as i32);
    assert_eq!(got.media_type, "video/m3u8");
    assert_eq!(got.create_time.unwrap().seconds, 1_767_225_600);
    assert_eq!(
        got.details,
        Some(pb::stream::Details::AliyunVod(pb::AliyunVodStreamDetails {
            video_id: "v1".into(),
            definition: "LD".into(),
            format: "m3u8".into(),
            stream_type: "video".into(),
            status: "Normal".into(),
        }))
    );

    let page = |token: &str| pb::ListStreamsRequest {
        parent: format!("providers/{PROVIDER}/videos/v1"),
        page_size: 2,
        page_token: token.to_string(),
        ..Default::default()
    };
    let first = streams.list_streams(page("")).await.unwrap().into_inner();
    let names: Vec<_> = first
        .streams
        .iter()
        .map(|s| s.provider_uid.clone())
        .collect();
    assert_eq!(names, ["j1", "j2"]);
    let second = streams
        .list_streams(page(&first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.streams.len(), 1);
    assert_eq!(second.streams[0].provider_uid, "j3");
    assert!(second.next_page_token.is_empty());

    let filtered = streams
        .list_streams(pb::ListStreamsRequest {
            parent: format!("providers/{PROVIDER}/videos/v1"),
            filter: "stream_id_prefix = \"j3\" AND state = ACTIVE".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.streams.len(), 1);

    let empty = streams
        .list_streams(pb::ListStreamsRequest {
            parent: format!("providers/{PROVIDER}/videos/v-empty"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.streams.is_empty());

    let missing = streams
        .get_stream(pb::GetStreamRequest {
            name: stream_name("v1", "nope"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(reason(&missing), "STREAM_NOT_FOUND");

    let no_video = streams
        .get_stream(pb::GetStreamRequest {
            name: stream_name("gone", "j1"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&no_video), "VIDEO_NOT_FOUND");
    assert_eq!(
        info_metadata(&no_video, "provider_code"),
        "InvalidVideo.NotFound"
    );
    assert!(info_metadata(&no_video, "provider_request_id").starts_with("FAKE-"));

    let whole_provider = streams
        .list_streams(pb::ListStreamsRequest {
            parent: format!("providers/{PROVIDER}"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(whole_provider.code(), Code::InvalidArgument);
    assert_eq!(support::violated_fields(&whole_provider), ["parent"]);

    for request in fake.calls("GetPlayInfo") {
        assert_eq!(request.param("ResultType"), Some("Multiple"));
        assert_eq!(request.param("RegionId"), Some("cn-shanghai"));
        assert_eq!(request.method, "POST");
    }
    assert_all_signed(&fake);
    assert_distinct_nonces(&fake);
}

#[tokio::test]
async fn create_update_and_watch_are_not_in_the_capability() {
    let fake = fake_with(&[("v1", &["j1"])]).await;
    let server = gateway(&fake).await;
    let provider = server
        .providers()
        .get_provider(pb::GetProviderRequest {
            name: format!("providers/{PROVIDER}"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(provider.kind, "aliyun-vod");
    assert_eq!(provider.region, "cn-shanghai");
    let caps = provider.capabilities.unwrap();
    assert_eq!(
        caps.methods,
        [
            "GetStream",
            "ListStreams",
            "DeleteStream",
            "BatchDeleteStreams",
            "GetStreamEndpoints"
        ]
    );
    assert!(!caps.etags);
    assert_eq!(
        caps.stream_parent_pattern,
        "providers/{provider}/videos/{video}"
    );

    let mut streams = server.streams();
    let created = streams
        .create_stream(pb::CreateStreamRequest {
            parent: format!("providers/{PROVIDER}/videos/v1"),
            stream_id: "new".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let updated = streams
        .update_stream(pb::UpdateStreamRequest {
            stream: Some(pb::Stream {
                name: stream_name("v1", "j1"),
                device_name: "x".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let watched = streams
        .watch_stream(pb::WatchStreamRequest {
            name: stream_name("v1", "j1"),
        })
        .await
        .unwrap_err();
    for status in [created, updated, watched] {
        assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
        assert_eq!(reason(&status), "CAPABILITY_UNSUPPORTED");
    }
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn delete_stream_deletes_and_a_missing_one_is_not_found_with_the_request_id() {
    let fake = fake_with(&[("v1", &["j1", "j2"])]).await;
    let server = gateway(&fake).await;

    let op = delete(&server, &stream_name("v1", "j1")).await;
    assert!(op.done);
    let Some(pb::operation::Result::DeleteStream(done)) = &op.result else {
        panic!("{op:?}");
    };
    assert!(done.existed);
    assert_eq!(fake.streams("v1").unwrap(), ["j2"]);
    let call = &fake.calls("DeleteStream")[0];
    assert_eq!(call.param("VideoId"), Some("v1"));
    assert_eq!(call.job_ids(), ["j1"]);

    let missing = delete(&server, &stream_name("v1", "j1")).await;
    let status = op_error(&missing);
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(reason(&status), "STREAM_NOT_FOUND");
    assert_eq!(
        info_metadata(&status, "provider_code"),
        "InvalidStream.NotFound"
    );
    assert_eq!(
        info_metadata(&status, "provider_request_id"),
        fake.calls("DeleteStream")[1].request_id
    );

    let allowed = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: stream_name("v1", "j1"),
            allow_missing: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let Some(pb::operation::Result::DeleteStream(done)) = &allowed.result else {
        panic!("{allowed:?}");
    };
    assert!(!done.existed);

    let with_etag = server
        .streams()
        .delete_stream(pb::DeleteStreamRequest {
            name: stream_name("v1", "j2"),
            etag: "abc".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(support::violated_fields(&with_etag), ["etag"]);
    assert_all_signed(&fake);
}

#[tokio::test]
async fn delete_stream_failed_twice_then_succeeds_with_a_fresh_nonce_each_try() {
    let fake = fake_with(&[("v1", &["j1"])]).await;
    fake.fail_next("DeleteStream", "DeleteStreamFailed", 2);
    let server = gateway(&fake).await;
    let op = delete(&server, &stream_name("v1", "j1")).await;
    assert!(
        matches!(op.result, Some(pb::operation::Result::DeleteStream(_))),
        "{op:?}"
    );
    let calls = fake.calls("DeleteStream");
    let codes: Vec<_> = calls.iter().map(|c| c.code.as_deref()).collect();
    assert_eq!(
        codes,
        [Some("DeleteStreamFailed"), Some("DeleteStreamFailed"), None]
    );
    assert!(fake.streams("v1").unwrap().is_empty());
    assert_all_signed(&fake);
    assert_distinct_nonces(&fake);
}

#[tokio::test]
async fn a_used_nonce_is_retried_with_a_fresh_one() {
    let fake = fake_with(&[("v1", &["j1"])]).await;
    fake.fail_next("GetPlayInfo", "SignatureNonceUsed", 1);
    let server = gateway(&fake).await;
    let got = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: stream_name("v1", "j1"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.provider_uid, "j1");
    let calls = fake.calls("GetPlayInfo");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].code.as_deref(), Some("SignatureNonceUsed"));
    assert_distinct_nonces(&fake);
}

#[tokio::test]
async fn throttling_is_retried_then_reported_with_retry_info() {
    let fake = fake_with(&[("v1", &["j1"])]).await;
    fake.fail_next("GetPlayInfo", "Throttling.Api", 2);
    let server = gateway(&fake).await;
    let get = || pb::GetStreamRequest {
        name: stream_name("v1", "j1"),
        ..Default::default()
    };
    server.streams().get_stream(get()).await.unwrap();
    assert_eq!(fake.calls("GetPlayInfo").len(), 3);

    fake.fail_next("GetPlayInfo", "Throttling.User", 100);
    let status = server.streams().get_stream(get()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason(&status), "PROVIDER_THROTTLED");
    assert!(status.get_error_details().retry_info().is_some());
    // Six tries in all (the retry policy), then the caller hears of it.
    assert_eq!(fake.calls("GetPlayInfo").len(), 3 + 6);

    fake.fail_next("GetPlayInfo", "Throttling", 1);
    fake.fail_next("DeleteStream", "Throttling", 1);
    let op = delete(&server, &stream_name("v1", "j1")).await;
    assert!(
        matches!(op.result, Some(pb::operation::Result::DeleteStream(_))),
        "{op:?}"
    );
}

#[tokio::test]
async fn provider_codes_map_to_the_taxonomy() {
    let fake = fake_with(&[("v1", &["j1"])]).await;
    let server = gateway(&fake).await;
    for (code, grpc, expected) in [
        (
            "Forbidden",
            Code::PermissionDenied,
            "PROVIDER_PERMISSION_DENIED",
        ),
        (
            "OperationDenied.Suspended",
            Code::PermissionDenied,
            "PROVIDER_PERMISSION_DENIED",
        ),
        (
            "JobIdsExceededMax",
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
        ),
        ("InvalidVideo.NotFound", Code::NotFound, "VIDEO_NOT_FOUND"),
        ("Brand.NewCode", Code::Unavailable, "PROVIDER_UNAVAILABLE"),
    ] {
        fake.fail_next("DeleteStream", code, 1);
        let status = op_error(&delete(&server, &stream_name("v1", "j1")).await);
        assert_eq!(status.code(), grpc, "{code}: {status:?}");
        assert_eq!(reason(&status), expected, "{code}");
        assert_eq!(info_metadata(&status, "provider_code"), code);
        assert_eq!(info_metadata(&status, "provider"), PROVIDER);
    }
    assert_eq!(fake.streams("v1").unwrap(), ["j1"]);
}

#[tokio::test]
async fn an_unknown_code_with_a_server_error_status_is_retried_then_unavailable() {
    let fake = fake_with(&[("v1", &["j1", "j2"])]).await;
    fake.set_code_status("Brand.NewServerCode", 502);
    fake.fail_next("DeleteStream", "Brand.NewServerCode", 2);
    let server = gateway(&fake).await;
    let op = delete(&server, &stream_name("v1", "j1")).await;
    assert!(
        matches!(op.result, Some(pb::operation::Result::DeleteStream(_))),
        "{op:?}"
    );
    assert_eq!(fake.calls("DeleteStream").len(), 3);
    assert_eq!(fake.streams("v1").unwrap(), ["j2"]);

    fake.fail_next("DeleteStream", "Brand.NewServerCode", 100);
    let status = op_error(&delete(&server, &stream_name("v1", "j2")).await);
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "PROVIDER_UNAVAILABLE");
    assert!(fake.calls("DeleteStream").len() > 4);
}

#[tokio::test]
async fn a_wrong_secret_is_a_credentials_error_naming_the_instance() {
    let fake = fake_with(&[("v1", &["j1"])]).await;
    let server = TestServer::start(&provider_entry(&fake, "not-the-secret-5Xy", "")).await;
    let status = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: stream_name("v1", "j1"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    // The gateway's own key, not the caller's: never UNAUTHENTICATED.
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason(&status), "PROVIDER_CREDENTIALS_INVALID");
    assert!(status.message().contains(PROVIDER), "{}", status.message());
    assert!(!format!("{status:?}").contains("not-the-secret-5Xy"));
    // Not retried: the same signature would fail the same way.
    assert_eq!(fake.calls("GetPlayInfo").len(), 1);
}

#[tokio::test]
async fn an_sts_token_is_sent_as_security_token() {
    let fake = fake_with(&[("v1", &["j1"])]).await;
    fake.add_key("STS.TempKey", "temp-secret", Some("sts-token-value"));
    let entry = |token: &str| {
        format!(
            "[[providers]]\nid = \"{PROVIDER}\"\nkind = \"aliyun-vod\"\nregion = \"cn-shanghai\"\n\
             endpoint_url = \"{}\"\naccess_key_id = \"STS.TempKey\"\naccess_key_secret = \
             \"temp-secret\"\nsecurity_token = \"{token}\"\n",
            fake.url()
        )
    };
    let server = TestServer::start(&entry("sts-token-value")).await;
    let get = pb::GetStreamRequest {
        name: stream_name("v1", "j1"),
        ..Default::default()
    };
    server.streams().get_stream(get.clone()).await.unwrap();
    assert_eq!(
        fake.calls("GetPlayInfo")[0].param("SecurityToken"),
        Some("sts-token-value")
    );
    let stale = TestServer::start(&entry("an-expired-token")).await;
    let status = stale.streams().get_stream(get).await.unwrap_err();
    assert_eq!(reason(&status), "PROVIDER_CREDENTIALS_INVALID");
}

#[tokio::test]
async fn a_video_whose_status_is_not_normal_is_not_ready_and_its_streams_are_still_deleted() {
    let fake = fake_with(&[("v1", &["j1", "j2", "j3"])]).await;
    fake.set_video_status("v1", "Blocked");
    let server = gateway(&fake).await;
    let status = server
        .streams()
        .get_stream(pb::GetStreamRequest {
            name: stream_name("v1", "j1"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason(&status), "STREAM_NOT_READY");
    assert_eq!(
        info_metadata(&status, "provider_code"),
        "Forbidden.IllegalStatus"
    );
    assert!(!status.message().contains("RAM"), "{}", status.message());

    // DeleteStream works on such a video: a batch sends its names all the same.
    let names = [stream_name("v1", "j1"), stream_name("v1", "j2")];
    let op = batch_delete(&server, &format!("providers/{PROVIDER}/videos/v1"), &names).await;
    assert!(batch_results(&op).iter().all(|r| r.deleted), "{op:?}");
    assert_eq!(fake.calls("DeleteStream")[0].job_ids(), ["j1", "j2"]);
    assert_eq!(fake.streams("v1").unwrap(), ["j3"]);
}

#[tokio::test]
async fn a_batch_reports_every_name_truthfully_whatever_vod_does_with_unknown_ids() {
    for partial in [false, true] {
        let fake = fake_with(&[("v1", &["j1", "j2", "j3"]), ("v2", &["k1", "k2"])]).await;
        fake.set_partial_deletes(partial);
        let server = gateway(&fake).await;
        let names = [
            stream_name("v1", "j1"),
            stream_name("v1", "unknown"),
            stream_name("v2", "k1"),
            stream_name("no-such-video", "x"),
            stream_name("v1", "j2"),
        ];
        let op = batch_delete(&server, &format!("providers/{PROVIDER}"), &names).await;
        let results = batch_results(&op);
        let summary: Vec<_> = results
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    r.deleted,
                    r.error.as_ref().map(|e| e.reason.clone()),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (names[0].clone(), true, None),
                (names[1].clone(), false, Some("STREAM_NOT_FOUND".into())),
                (names[2].clone(), true, None),
                (names[3].clone(), false, Some("VIDEO_NOT_FOUND".into())),
                (names[4].clone(), true, None),
            ],
            "partial deletes: {partial}"
        );
        assert_eq!(fake.streams("v1").unwrap(), ["j3"]);
        assert_eq!(fake.streams("v2").unwrap(), ["k2"]);
        // One call per video, and an unknown id is never sent.
        let calls = fake.calls("DeleteStream");
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].job_ids(), ["j1", "j2"]);
        assert_eq!(calls[1].job_ids(), ["k1"]);

        // VOD refuses a call after the batch was inspected: GetPlayInfo tells what happened.
        fake.add_video("v3", &["m1", "m2"]);
        fake.fail_next("DeleteStream", "InvalidStream.NotFound", 1);
        let op = batch_delete(
            &server,
            &format!("providers/{PROVIDER}/videos/v3"),
            &[stream_name("v3", "m1"), stream_name("v3", "m2")],
        )
        .await;
        assert!(
            batch_results(&op).iter().all(|r| r.deleted),
            "partial deletes: {partial}: {op:?}"
        );
        assert!(fake.streams("v3").unwrap().is_empty());
        let v3_calls = fake
            .calls("DeleteStream")
            .into_iter()
            .filter(|c| c.param("VideoId") == Some("v3"))
            .count();
        // Refused whole: sent again; deleted before the refusal: nothing left to send.
        assert_eq!(v3_calls, if partial { 1 } else { 2 });
        assert_all_signed(&fake);
        assert_distinct_nonces(&fake);
    }
}

#[tokio::test]
async fn outbound_limits_space_delete_stream_calls() {
    let videos: Vec<String> = (0..4).map(|i| format!("v{i}")).collect();
    let fake = FakeVod::start().await;
    fake.add_key(KEY_ID, SECRET, None);
    for video in &videos {
        fake.add_video(video, &["j"]);
    }
    let server = TestServer::start(&provider_entry(&fake, SECRET, "delete_stream_qps = 5\n")).await;
    let names: Vec<String> = videos.iter().map(|v| stream_name(v, "j")).collect();
    let started = Instant::now();
    batch_delete(&server, &format!("providers/{PROVIDER}"), &names).await;
    // Four calls at 5 per second: the first at once, then one every 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(590),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.calls("DeleteStream").len(), 4);
}

#[tokio::test]
async fn the_published_delete_stream_qps_is_kept_by_default_and_enforced_by_the_fake() {
    let videos: Vec<String> = (0..120).map(|i| format!("q{i:03}")).collect();
    let fake_of = || async {
        let fake = FakeVod::start().await;
        fake.add_key(KEY_ID, SECRET, None);
        for video in &videos {
            fake.add_video(video, &["j"]);
        }
        fake.enforce_quotas();
        fake
    };
    let names: Vec<String> = videos.iter().map(|v| stream_name(v, "j")).collect();
    let throttled = |fake: &FakeVod| {
        fake.calls("DeleteStream")
            .iter()
            .filter(|r| r.code.as_deref() == Some("Throttling.User"))
            .count()
    };

    // The default outbound limit is the published quota (50 a second): never throttled.
    let fake = fake_of().await;
    let server = gateway(&fake).await;
    let done = batch_delete(&server, &format!("providers/{PROVIDER}"), &names).await;
    assert!(batch_results(&done).iter().all(|r| r.error.is_none()));
    assert_eq!(throttled(&fake), 0);
    assert_eq!(fake.calls("DeleteStream").len(), 120);

    // An instance configured over the quota meets VOD's throttling.
    let fake = fake_of().await;
    let server =
        TestServer::start(&provider_entry(&fake, SECRET, "delete_stream_qps = 1000\n")).await;
    batch_delete(&server, &format!("providers/{PROVIDER}"), &names).await;
    assert!(throttled(&fake) > 0, "the fake holds VOD's 50 a second");
}

// ---------------------------------------------------------------------------------------------
// The real binary, driven with grpcurl.

/// A gateway binary on `fake`, configured with `entry`, logging at debug level.
async fn binary(dir: &std::path::Path, entry: &str, env: &[(&str, &str)]) -> Binary {
    let config = dir.join("streamgate.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\nurl = \"sqlite://{}/sg.db\"\n[telemetry]\nlog_filter = \"debug\"\n{entry}",
            dir.display()
        ),
    )
    .unwrap();
    let mut gateway = Binary::spawn_with_env(&config, dir, "gateway", env);
    gateway.ready().await;
    gateway
}

/// grpcurl's output of `streamgate.v1.{method}` on `addr`, off the runtime's threads.
async fn grpcurl(addr: std::net::SocketAddr, method: &str, body: String) -> Output {
    let method = format!("streamgate.v1.{method}");
    tokio::task::spawn_blocking(move || {
        support::grpcurl(&["-d", &body, &addr.to_string(), &method])
    })
    .await
    .unwrap()
}

/// [`support::grpcurl_json`], off the runtime's threads.
async fn grpcurl_json(addr: std::net::SocketAddr, method: &str, body: String) -> serde_json::Value {
    let method = method.to_string();
    tokio::task::spawn_blocking(move || support::grpcurl_json(&addr.to_string(), &method, &body))
        .await
        .unwrap()
}

/// The finished operation, waited for with grpcurl.
async fn grpcurl_done(addr: std::net::SocketAddr, op: serde_json::Value) -> serde_json::Value {
    if op["done"] == true {
        return op;
    }
    let name = op["name"].as_str().unwrap();
    let done = grpcurl_json(
        addr,
        "OperationService/WaitOperation",
        format!(r#"{{"name": "{name}", "timeout": "30s"}}"#),
    )
    .await;
    assert_eq!(done["done"], true, "{done}");
    done
}

/// DeleteStream of `name` with grpcurl, and its finished operation.
async fn grpcurl_delete(addr: std::net::SocketAddr, name: &str) -> serde_json::Value {
    let op = grpcurl_json(
        addr,
        "StreamService/DeleteStream",
        format!(r#"{{"name": "{name}"}}"#),
    )
    .await;
    grpcurl_done(addr, op).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_grpcurl_batch_delete_of_45_streams_makes_three_signed_calls() {
    let ids = jobs("job-", 45);
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let fake = fake_with(&[("video-45", &refs)]).await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = binary(dir.path(), &provider_entry(&fake, SECRET, ""), &[]).await;
    let names: Vec<String> = ids.iter().map(|j| stream_name("video-45", j)).collect();
    let body = serde_json::json!({
        "parent": format!("providers/{PROVIDER}/videos/video-45"),
        "names": names,
    });
    let op = grpcurl_json(
        gateway.addr,
        "StreamService/BatchDeleteStreams",
        body.to_string(),
    )
    .await;
    let done = grpcurl_done(gateway.addr, op).await;
    let results = done["batchDeleteStreams"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 45);
    for (result, name) in results.iter().zip(&names) {
        assert_eq!(result["name"], name.as_str());
        assert_eq!(result["deleted"], true, "{result}");
    }
    let calls = fake.calls("DeleteStream");
    assert_eq!(calls.len(), 3, "{calls:#?}");
    let sizes: Vec<usize> = calls.iter().map(|c| c.job_ids().len()).collect();
    assert_eq!(sizes, [20, 20, 5]);
    let sent: Vec<String> = calls.iter().flat_map(|c| c.job_ids()).collect();
    assert_eq!(sent, ids);
    assert!(calls.iter().all(|c| c.signature_valid && c.code.is_none()));
    assert_all_signed(&fake);
    assert_distinct_nonces(&fake);
    assert!(fake.streams("video-45").unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_grpcurl_missing_stream_is_not_found_with_provider_code_and_request_id() {
    let fake = fake_with(&[("v1", &["j1"])]).await;
    let dir = tempfile::tempdir().unwrap();
    let gateway = binary(dir.path(), &provider_entry(&fake, SECRET, ""), &[]).await;
    let done = grpcurl_delete(gateway.addr, &stream_name("v1", "missing")).await;
    let error = &done["error"];
    assert_eq!(error["code"], 5, "{done}");
    let info = &error["details"][0];
    assert_eq!(info["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
    assert_eq!(info["reason"], "STREAM_NOT_FOUND");
    assert_eq!(info["metadata"]["provider_code"], "InvalidStream.NotFound");
    let call = &fake.calls("DeleteStream")[0];
    assert_eq!(
        info["metadata"]["provider_request_id"],
        call.request_id.as_str()
    );
    assert!(call.signature_valid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_grpcurl_delete_stream_failed_twice_then_succeeds() {
    let fake = fake_with(&[("v1", &["j1", "j2"])]).await;
    fake.fail_next("DeleteStream", "DeleteStreamFailed", 2);
    let dir = tempfile::tempdir().unwrap();
    let gateway = binary(dir.path(), &provider_entry(&fake, SECRET, ""), &[]).await;
    let done = grpcurl_delete(gateway.addr, &stream_name("v1", "j1")).await;
    assert_eq!(done["deleteStream"]["existed"], true, "{done}");
    assert!(done.get("error").is_none(), "{done}");
    let codes: Vec<_> = fake
        .calls("DeleteStream")
        .iter()
        .map(|c| c.code.clone())
        .collect();
    assert_eq!(
        codes,
        [
            Some("DeleteStreamFailed".to_string()),
            Some("DeleteStreamFailed".to_string()),
            None
        ]
    );
    assert_eq!(fake.streams("v1").unwrap(), ["j2"]);
    assert_all_signed(&fake);
    assert_distinct_nonces(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_grpcurl_wrong_secret_from_the_environment_is_a_credentials_error_never_shown() {
    let wrong = "wrong-secret-from-env-Zq81";
    let fake = fake_with(&[("v1", &["j1"])]).await;
    let dir = tempfile::tempdir().unwrap();
    let entry = format!(
        "[[providers]]\nid = \"{PROVIDER}\"\nkind = \"aliyun-vod\"\nregion = \"cn-shanghai\"\n\
         endpoint_url = \"{}\"\n",
        fake.url()
    );
    let mut gateway = binary(
        dir.path(),
        &entry,
        &[
            ("ALIBABA_CLOUD_ACCESS_KEY_ID", KEY_ID),
            ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", wrong),
        ],
    )
    .await;
    let got = grpcurl(
        gateway.addr,
        "StreamService/GetStream",
        format!(r#"{{"name": "{}"}}"#, stream_name("v1", "j1")),
    )
    .await;
    let printed = output_text(&got);
    assert!(!got.status.success(), "{printed}");
    assert!(printed.contains("Code: Unavailable"), "{printed}");
    assert!(
        printed.contains(r#""reason":"PROVIDER_CREDENTIALS_INVALID""#),
        "{printed}"
    );
    assert!(printed.contains(PROVIDER), "{printed}");

    let done = grpcurl_delete(gateway.addr, &stream_name("v1", "j1")).await;
    assert_eq!(done["error"]["code"], 14, "{done}");
    assert_eq!(
        done["error"]["details"][0]["metadata"]["provider_code"],
        "SignatureDoesNotMatch"
    );

    gateway.signal("TERM");
    gateway.wait_exit(Duration::from_secs(10)).await;
    let log = std::fs::read_to_string(&gateway.log).unwrap();
    assert!(
        log.contains("vod call failed"),
        "the debug log shows the calls:\n{log}"
    );
    for output in [printed, done.to_string(), log] {
        assert!(!output.contains(wrong), "the secret leaked:\n{output}");
    }
    assert_eq!(fake.streams("v1").unwrap(), ["j1"]);
    assert!(fake.requests().iter().all(|r| !r.signature_valid));
}

// ---------------------------------------------------------------------------------------------
// Steps replayed after a crash, driven on the provider directly.

fn provider_on(fake: &FakeVod) -> streamgate::providers::aliyun_vod::AliyunVodProvider {
    let config = streamgate::config::Config::from_toml(&provider_entry(fake, SECRET, ""))
        .unwrap()
        .providers
        .remove(0);
    streamgate::providers::aliyun_vod::AliyunVodProvider::new(
        &config,
        &streamgate::config::Environment::default(),
    )
    .unwrap()
}

fn operation(request: streamgate::domain::OpRequest) -> streamgate::domain::Operation {
    streamgate::domain::Operation {
        id: "op-1".into(),
        request,
        principal: "anonymous".into(),
        request_id: None,
        fingerprint: String::new(),
        step: "accepted".into(),
        progress: serde_json::Value::Null,
        next_run_ms: 0,
        attempts: 0,
        retries: 0,
        cancel_requested: false,
        replayed: false,
        outcome: None,
        warnings: Vec::new(),
        create_time_ms: 0,
        update_time_ms: 0,
    }
}

fn domain_name(video: &str, job: &str) -> streamgate::domain::StreamName {
    streamgate::domain::StreamName::parse(&stream_name(video, job), "name").unwrap()
}

#[tokio::test]
async fn a_step_replayed_after_a_crash_reports_what_its_earlier_try_deleted() {
    use streamgate::domain::{OpRequest, OpResult, ParentName};
    use streamgate::providers::{Provider, Step};

    let fake = fake_with(&[("v1", &["j1", "j2", "j3"])]).await;
    let provider = provider_on(&fake);
    let names = vec![domain_name("v1", "j1"), domain_name("v1", "j2")];
    let mut op = operation(OpRequest::BatchDelete {
        parent: ParentName::parse(&format!("providers/{PROVIDER}/videos/v1"), "parent").unwrap(),
        names,
    });
    let Step::Continue { step, progress, .. } = provider.advance(&op).await.unwrap() else {
        panic!("the batch should go on to deleting");
    };
    op.step = step;
    op.progress = progress;
    // The deleting step runs, and the gateway dies before it records the outcome.
    provider.advance(&op).await.unwrap();
    assert_eq!(fake.streams("v1").unwrap(), ["j3"]);
    op.replayed = true;
    let Step::Done(OpResult::Batch(items)) = provider.advance(&op).await.unwrap() else {
        panic!("the replayed step should finish the batch");
    };
    assert!(items.iter().all(|item| item.error.is_none()), "{items:?}");
    let calls = fake.calls("DeleteStream");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].code.as_deref(), Some("InvalidStream.NotFound"));

    // A single delete replayed after its stream went: the earlier try deleted it.
    let mut single = operation(OpRequest::Delete {
        name: domain_name("v1", "j1"),
        etag: None,
        allow_missing: false,
    });
    single.replayed = true;
    let Step::Done(OpResult::Deleted { existed, .. }) = provider.advance(&single).await.unwrap()
    else {
        panic!("a replayed delete of a gone stream succeeds");
    };
    assert!(existed);
    single.replayed = false;
    let error = provider.advance(&single).await.unwrap_err();
    assert_eq!(error.provider_code(), Some("InvalidStream.NotFound"));
}
