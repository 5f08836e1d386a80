//! Who reaches what, through the real binary: operations are their starter's own (another
//! principal's answers as a missing one; `operations = "all"` reaches everyone's; the provider
//! the id names is authorized before the lookup; a request_id is the caller's own), page tokens
//! are signed for their caller and query with the deployment's key, and a store failure answers
//! a ref, never the database's text (SQLite refusing a statement, PostgreSQL stopped); and a page
//! token key too short is refused by `check-config`.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use streamgate::pb;
use streamgate::pb::audit_service_client::AuditServiceClient;
use streamgate::pb::operation_service_client::OperationServiceClient;
use streamgate::pb::provider_service_client::ProviderServiceClient;
use streamgate::pb::stream_service_client::StreamServiceClient;
use support::postgres::Postgres;
use support::{Binary, local_provider, reason};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_types::StatusExt;

const PRINCIPALS: [&str; 4] = ["alice", "bob", "auditor", "outsider"];

const RULES: &str = "\
[[authorization]]
principal = \"{alice,bob}\"
methods = [\"StreamService/*\", \"OperationService/*\", \"ProviderService/*\"]
[[authorization]]
principal = \"alice\"
methods = [\"AuditService/*\"]
[[authorization]]
principal = \"auditor\"
methods = [\"OperationService/*\", \"AuditService/*\"]
providers = [\"local\"]
operations = \"all\"
[[authorization]]
principal = \"outsider\"
methods = [\"OperationService/*\"]
providers = [\"other\"]
";

fn sha256_hex(text: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A config file in `dir` for the store at `url`: providers `local` (creates take 30 s, so
/// operations stay unfinished) and `other`, an API key per principal (`NAME-key`), [`RULES`].
fn config(dir: &Path, url: &str) -> PathBuf {
    let keys: String = PRINCIPALS
        .iter()
        .map(|p| {
            format!(
                "[[auth.api_keys]]\nprincipal = \"{p}\"\nsha256 = \"{}\"\n",
                sha256_hex(&format!("{p}-key"))
            )
        })
        .collect();
    let text = format!(
        "[server]\ndrain_timeout = \"2s\"\n[store]\nurl = \"{url}\"\n{}{}\
         [auth]\nmode = \"api-key\"\n{keys}{RULES}",
        local_provider("local", "30s"),
        local_provider("other", "30s"),
    );
    let path = dir.join("streamgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn sqlite_config(dir: &Path) -> PathBuf {
    config(dir, &format!("sqlite://{}/sg.db", dir.display()))
}

/// `message` as `principal` calls with it.
fn from<T>(principal: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {principal}-key")).unwrap(),
    );
    request
}

async fn create(channel: &Channel, principal: &str, parent: &str, id: &str) -> pb::Operation {
    StreamServiceClient::new(channel.clone())
        .create_stream(from(
            principal,
            pb::CreateStreamRequest {
                parent: parent.into(),
                stream_id: id.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

fn get(name: &str) -> pb::GetOperationRequest {
    pb::GetOperationRequest { name: name.into() }
}

/// What a caller learns from a refusal: code, reason, message, with `name` replaced.
fn answer(status: &tonic::Status, name: &str) -> (Code, String, String) {
    (
        status.code(),
        reason(status),
        status.message().replace(name, "NAME"),
    )
}

async fn list_operations(channel: &Channel, principal: &str) -> Vec<String> {
    let mut names: Vec<String> = OperationServiceClient::new(channel.clone())
        .list_operations(from(principal, pb::ListOperationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .operations
        .into_iter()
        .map(|op| op.name)
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_are_their_starters_own_unless_a_grant_reaches_everyones() {
    let dir = tempfile::tempdir().unwrap();
    let mut binary = Binary::spawn(&sqlite_config(dir.path()), dir.path(), "scoping");
    let channel = binary.ready().await;
    let mut operations = OperationServiceClient::new(channel.clone());
    let alices = create(&channel, "alice", "providers/local", "a1").await;
    assert!(!alices.done);
    let bobs = create(&channel, "bob", "providers/local", "b1").await;
    let missing = format!("operations/local.{}", "0".repeat(32));

    // Bob: Alice's operation is as missing as one that never existed, on every method.
    for name in [&alices.name, &missing] {
        let got = operations
            .get_operation(from("bob", get(name)))
            .await
            .unwrap_err();
        let waited = operations
            .wait_operation(from(
                "bob",
                pb::WaitOperationRequest {
                    name: name.clone(),
                    timeout: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                },
            ))
            .await
            .unwrap_err();
        let cancelled = operations
            .cancel_operation(from(
                "bob",
                pb::CancelOperationRequest { name: name.clone() },
            ))
            .await
            .unwrap_err();
        for status in [&got, &waited, &cancelled] {
            assert_eq!(
                answer(status, name),
                (
                    Code::NotFound,
                    "OPERATION_NOT_FOUND".to_string(),
                    "NAME does not exist".to_string()
                ),
                "{name}"
            );
        }
    }
    let still = operations
        .get_operation(from("alice", get(&alices.name)))
        .await
        .unwrap()
        .into_inner();
    assert!(!still.done, "bob's cancel did nothing");
    assert_eq!(list_operations(&channel, "bob").await, [bobs.name.as_str()]);
    assert_eq!(
        list_operations(&channel, "alice").await,
        [alices.name.as_str()]
    );

    // The auditor reaches everyone's on `local`.
    let read = operations
        .get_operation(from("auditor", get(&alices.name)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.name, alices.name);
    let mut both = vec![alices.name.clone(), bobs.name.clone()];
    both.sort();
    assert_eq!(list_operations(&channel, "auditor").await, both);

    // No grant on the provider the name names: PERMISSION_DENIED, existing or not.
    let mut denied = Vec::new();
    for name in [&alices.name, &missing] {
        let status = operations
            .get_operation(from("outsider", get(name)))
            .await
            .unwrap_err();
        denied.push(answer(&status, name));
    }
    assert_eq!(denied[0].0, Code::PermissionDenied, "{denied:?}");
    assert_eq!(denied[0].1, "PERMISSION_DENIED");
    assert_eq!(denied[0], denied[1]);

    // A request_id is its caller's: Bob replaying Alice's gets none of hers back.
    let mut streams = StreamServiceClient::new(channel.clone());
    let replay = |stream_id: &str, validate_only: bool| pb::CreateStreamRequest {
        parent: "providers/local".into(),
        stream_id: stream_id.into(),
        request_id: "shared-rid".into(),
        validate_only,
        ..Default::default()
    };
    let first = streams
        .create_stream(from("alice", replay("r1", false)))
        .await
        .unwrap()
        .into_inner();
    let again = streams
        .create_stream(from("alice", replay("r1", false)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.name, first.name, "alice's retry finds hers");
    let bobs_same = streams
        .create_stream(from("bob", replay("r1", true)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bobs_same.name, "", "bob's is validated anew, not alice's");
    let bobs_other = streams
        .create_stream(from("bob", replay("r2", false)))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !bobs_other.name.is_empty() && bobs_other.name != first.name,
        "a new operation of bob's, no conflict naming alice's"
    );
}

/// The first page's token of ListOperations for `principal`, one operation a page.
async fn first_token(channel: &Channel, principal: &str) -> String {
    let page = OperationServiceClient::new(channel.clone())
        .list_operations(from(
            principal,
            pb::ListOperationsRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!page.next_page_token.is_empty());
    page.next_page_token
}

async fn next_operations(
    channel: &Channel,
    principal: &str,
    filter: &str,
    token: &str,
) -> Result<pb::ListOperationsResponse, tonic::Status> {
    OperationServiceClient::new(channel.clone())
        .list_operations(from(
            principal,
            pb::ListOperationsRequest {
                page_size: 1,
                filter: filter.into(),
                page_token: token.into(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

fn assert_refused_token(result: Result<impl std::fmt::Debug, tonic::Status>, says: &str) {
    let status = result.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason(&status), "INVALID_PAGE_TOKEN");
    assert!(status.message().contains(says), "{}", status.message());
    let violations = status.get_error_details().bad_request().unwrap().clone();
    assert_eq!(violations.field_violations[0].field, "page_token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_are_signed_for_their_caller_and_query_with_the_deployment_key() {
    const KEY: &str = "page-token-key-of-this-deployment-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path());
    let env = [("STREAMGATE_PAGE_TOKEN_KEY", KEY)];
    let mut binary = Binary::spawn_with_env(&config, dir.path(), "keyed", &env);
    let channel = binary.ready().await;
    for id in ["s1", "s2", "s3"] {
        create(&channel, "alice", "providers/local", &format!("a-{id}")).await;
        create(&channel, "bob", "providers/local", &format!("b-{id}")).await;
    }
    let token = first_token(&channel, "alice").await;
    let page = next_operations(&channel, "alice", "", &token)
        .await
        .unwrap();
    assert_eq!(page.operations.len(), 1);
    let foreign = "not a page token this gateway gave this caller";
    assert_refused_token(next_operations(&channel, "bob", "", &token).await, foreign);
    assert_refused_token(
        next_operations(&channel, "alice", "done = false", &token).await,
        "another parent or filter",
    );
    // Altered, or made up as tokens were before they were signed.
    let (payload, tag) = token.split_once('.').unwrap();
    let mut record: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    record["p"] = serde_json::json!("0/zzzz");
    let altered = URL_SAFE_NO_PAD.encode(record.to_string());
    assert_refused_token(
        next_operations(&channel, "alice", "", &format!("{altered}.{tag}")).await,
        foreign,
    );
    assert_refused_token(
        next_operations(&channel, "alice", "", &altered).await,
        foreign,
    );

    // The other List methods alike.
    let mut streams = StreamServiceClient::new(channel.clone());
    let list_streams = |principal: &str, parent: &str, token: &str| {
        from(
            principal,
            pb::ListStreamsRequest {
                parent: parent.into(),
                page_size: 1,
                page_token: token.into(),
                ..Default::default()
            },
        )
    };
    let streams_token = streams
        .list_streams(list_streams("alice", "providers/local", ""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert!(
        streams
            .list_streams(list_streams("alice", "providers/local", &streams_token))
            .await
            .is_ok()
    );
    assert_refused_token(
        streams
            .list_streams(list_streams("bob", "providers/local", &streams_token))
            .await,
        foreign,
    );
    assert_refused_token(
        streams
            .list_streams(list_streams("alice", "providers/other", &streams_token))
            .await,
        "another parent or filter",
    );
    let mut providers = ProviderServiceClient::new(channel.clone());
    let list_providers = |principal: &str, token: &str| {
        from(
            principal,
            pb::ListProvidersRequest {
                page_size: 1,
                page_token: token.into(),
            },
        )
    };
    let providers_token = providers
        .list_providers(list_providers("alice", ""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert_refused_token(
        providers
            .list_providers(list_providers("bob", &providers_token))
            .await,
        foreign,
    );
    let mut audit = AuditServiceClient::new(channel.clone());
    let list_audit = |principal: &str, token: &str| {
        from(
            principal,
            pb::ListAuditRecordsRequest {
                page_size: 1,
                page_token: token.into(),
                ..Default::default()
            },
        )
    };
    let audit_token = audit
        .list_audit_records(list_audit("auditor", ""))
        .await
        .unwrap()
        .into_inner()
        .next_page_token;
    assert_refused_token(
        audit
            .list_audit_records(list_audit("alice", &audit_token))
            .await,
        foreign,
    );
    drop(binary);

    // The same key after a restart (or on another replica): the token still pages.
    let mut binary = Binary::spawn_with_env(&config, dir.path(), "keyed-again", &env);
    let channel = binary.ready().await;
    assert!(next_operations(&channel, "alice", "", &token).await.is_ok());
    drop(binary);
    // No key: this process draws its own, and refuses the token.
    let mut binary = Binary::spawn(&config, dir.path(), "unkeyed");
    let channel = binary.ready().await;
    assert_refused_token(
        next_operations(&channel, "alice", "", &token).await,
        foreign,
    );
    drop(binary);
    for log in ["keyed", "keyed-again", "unkeyed"] {
        let text = std::fs::read_to_string(dir.path().join(format!("{log}.log"))).unwrap();
        assert!(!text.contains(KEY), "the key in {log}.log");
        assert!(
            !text.contains("no page token key"),
            "one SQLite process: its own key is enough"
        );
    }
}

#[test]
fn check_config_refuses_a_short_page_token_key_naming_the_variable_not_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path());
    let check = |key: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_streamgate"))
            .arg("check-config")
            .arg(&config)
            .env("STREAMGATE_PAGE_TOKEN_KEY", key)
            .output()
            .unwrap()
    };
    let short = check("hunter2-hunter2");
    let printed = support::output_text(&short);
    assert!(!short.status.success(), "{printed}");
    assert!(printed.contains("STREAMGATE_PAGE_TOKEN_KEY"), "{printed}");
    assert!(!printed.contains("hunter2"), "{printed}");
    let long = check("a-page-token-key-of-at-least-32-bytes");
    assert!(long.status.success(), "{}", support::output_text(&long));
}

/// The ref a store failure's message gives, e.g. `the store failed (ref 0a1b2c3d4e5f)`.
fn store_ref(status: &tonic::Status) -> String {
    let message = status.message();
    let (_, rest) = message
        .split_once("(ref ")
        .unwrap_or_else(|| panic!("no ref in {message:?}"));
    rest.trim_end_matches(')').to_string()
}

/// Waits until the binary's log holds a line with every one of `words`; returns it.
async fn logged(binary: &Binary, words: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&binary.log).unwrap_or_default();
        if let Some(line) = log
            .lines()
            .find(|line| words.iter().all(|w| line.contains(w)))
        {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {words:?} in:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_the_store_refuses_answers_a_ref_and_logs_its_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut binary = Binary::spawn(&sqlite_config(dir.path()), dir.path(), "sqlite");
    let channel = binary.ready().await;
    create(&channel, "alice", "providers/local", "s1").await;
    rusqlite::Connection::open(dir.path().join("sg.db"))
        .unwrap()
        .execute_batch("ALTER TABLE operations RENAME TO operations_gone")
        .unwrap();
    let mut operations = OperationServiceClient::new(channel.clone());
    let got = operations
        .get_operation(from(
            "alice",
            get(&format!("operations/local.{}", "0".repeat(32))),
        ))
        .await
        .unwrap_err();
    let listed = operations
        .list_operations(from("alice", pb::ListOperationsRequest::default()))
        .await
        .unwrap_err();
    for status in [got, listed] {
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert_eq!(reason(&status), "STORE_ERROR");
        assert!(
            status.message().starts_with("the store failed (ref "),
            "{}",
            status.message()
        );
        assert!(
            !format!("{status:?}").contains("no such table"),
            "{status:?}"
        );
        let line = logged(&binary, &[&store_ref(&status), "no such table"]).await;
        assert!(line.contains("ERROR"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_postgres_answers_store_unavailable_with_retry_info() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let mut binary = Binary::spawn(&config(dir.path(), &pg.url), dir.path(), "postgres");
    let channel = binary.ready().await;
    logged(&binary, &["WARN", "no page token key is set"]).await;
    create(&channel, "alice", "providers/local", "s1").await;
    pg.stop();
    let status = OperationServiceClient::new(channel.clone())
        .get_operation(from(
            "alice",
            get(&format!("operations/local.{}", "0".repeat(32))),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason(&status), "STORE_UNAVAILABLE");
    assert!(status.get_error_details().retry_info().is_some());
    assert!(
        status
            .message()
            .starts_with("the store cannot be reached (ref "),
        "{}",
        status.message()
    );
    logged(&binary, &[&store_ref(&status), "ERROR"]).await;
}
