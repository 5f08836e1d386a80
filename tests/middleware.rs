//! The security middleware end to end: authentication (API keys, JWTs with HS256 and ES256
//! from a JWKS file generated at test time), authorization, inbound rate limits, load shedding
//! and the server's default deadline — through `server::run` with tonic clients, and through
//! grpcurl with `-H 'authorization: Bearer …'`.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use streamgate::pb;
use support::{TestServer, grpcurl, local_provider, output_text, reason};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic_types::StatusExt;

const KEY: &str = "sg-test-key-0123456789";

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    request
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn providers() -> String {
    format!(
        "{}{}",
        local_provider("local", "30s"),
        local_provider("secret", "1s")
    )
}

fn api_key_config(rules: &str) -> String {
    format!(
        "{}[auth]\nmode = \"api-key\"\n[[auth.api_keys]]\nprincipal = \"ops\"\nsha256 = \"{}\"\n\
         [[auth.api_keys]]\nprincipal = \"reader\"\nsha256 = \"{}\"\n{rules}",
        providers(),
        sha256_hex(KEY),
        sha256_hex("reader-key")
    )
}

const OPS_EVERYTHING: &str = "[[authorization]]\nprincipal = \"ops\"\nmethods = [\"*\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_authenticate_and_health_stays_public() {
    let server = TestServer::start_configured("", &api_key_config(OPS_EVERYTHING), &[]).await;
    let mut providers = server.providers();
    let none = providers
        .list_providers(pb::ListProvidersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    assert_eq!(reason(&none), "UNAUTHENTICATED");
    let bad = providers
        .list_providers(with_token(pb::ListProvidersRequest::default(), "wrong"))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::Unauthenticated);
    let good = providers
        .list_providers(with_token(pb::ListProvidersRequest::default(), KEY))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(good.providers.len(), 2);

    let health = server
        .health()
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no credentials");
    assert_eq!(health.into_inner().status, 1);

    // The same through grpcurl: reflection and the call with the header, and without.
    let addr = server.addr.to_string();
    let header = format!("authorization: Bearer {KEY}");
    let ok = grpcurl(&[
        "-H",
        &header,
        "-d",
        "{}",
        &addr,
        "streamgate.v1.ProviderService/ListProviders",
    ]);
    assert!(ok.status.success(), "{}", output_text(&ok));
    assert!(output_text(&ok).contains("providers/local"));
    let refused = grpcurl(&["-H", "authorization: Bearer nope", &addr, "list"]);
    assert!(!refused.status.success());
    assert!(
        output_text(&refused).contains("Unauthenticated"),
        "{}",
        output_text(&refused)
    );
}

#[tokio::test]
async fn authorization_denies_by_default_and_never_tells_existence() {
    let rules = "[[authorization]]\nprincipal = \"reader\"\n\
                 methods = [\"StreamService/Get*\", \"StreamService/List*\", \"ProviderService/*\"]\n\
                 providers = [\"local\"]\n";
    let server = TestServer::start_configured("", &api_key_config(rules), &[]).await;
    let listed = server
        .providers()
        .list_providers(with_token(
            pb::ListProvidersRequest::default(),
            "reader-key",
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .providers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        ["providers/local"],
        "only the providers the caller may use"
    );
    let delete = server
        .streams()
        .delete_stream(with_token(
            pb::DeleteStreamRequest {
                name: "providers/local/streams/a".into(),
                ..Default::default()
            },
            "reader-key",
        ))
        .await
        .unwrap_err();
    assert_eq!(delete.code(), Code::PermissionDenied);
    assert_eq!(reason(&delete), "PERMISSION_DENIED");
    assert!(
        delete.message().contains("StreamService/DeleteStream"),
        "{}",
        delete.message()
    );

    let mut denials = Vec::new();
    for provider in ["secret", "does-not-exist"] {
        let status = server
            .streams()
            .get_stream(with_token(
                pb::GetStreamRequest {
                    name: format!("providers/{provider}/streams/a"),
                    ..Default::default()
                },
                "reader-key",
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{provider}");
        denials.push(status.message().replace(provider, "P"));
    }
    assert_eq!(
        denials[0], denials[1],
        "an existing and a missing provider look the same"
    );

    // ops has no rule at all here: deny by default.
    let ops = server
        .providers()
        .list_providers(with_token(pb::ListProvidersRequest::default(), KEY))
        .await
        .unwrap_err();
    assert_eq!(ops.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn update_checks_the_provider_grant_before_the_body() {
    let rules = "[[authorization]]\nprincipal = \"reader\"\n\
                 methods = [\"StreamService/*\"]\nproviders = [\"local\"]\n";
    let server = TestServer::start_configured("", &api_key_config(rules), &[]).await;
    let refused = server
        .streams()
        .update_stream(with_token(
            pb::UpdateStreamRequest {
                stream: Some(pb::Stream {
                    name: "providers/secret/streams/a".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: (0..1000).map(|i| format!("bad_{i}")).collect(),
                }),
                ..Default::default()
            },
            "reader-key",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
}

#[tokio::test]
async fn list_operations_fills_each_page_with_operations_the_caller_may_see() {
    let rules = format!(
        "{OPS_EVERYTHING}[[authorization]]\nprincipal = \"reader\"\n\
         methods = [\"OperationService/*\"]\nproviders = [\"local\"]\noperations = \"all\"\n"
    );
    let server = TestServer::start_configured("", &api_key_config(&rules), &[]).await;
    // 3 operations on `secret` between each pair on `local`, newest first when listed.
    let mut local = Vec::new();
    for i in 0..5 {
        for (provider, n) in [("local", 1), ("secret", 3)] {
            for j in 0..n {
                let op = server
                    .streams()
                    .create_stream(with_token(
                        pb::CreateStreamRequest {
                            parent: format!("providers/{provider}"),
                            stream_id: format!("s{i}-{j}"),
                            ..Default::default()
                        },
                        KEY,
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                if provider == "local" {
                    local.push(op.name);
                }
            }
        }
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = Vec::new();
    loop {
        let page = server
            .operations()
            .list_operations(with_token(
                pb::ListOperationsRequest {
                    page_size: 2,
                    page_token: token.clone(),
                    ..Default::default()
                },
                "reader-key",
            ))
            .await
            .unwrap()
            .into_inner();
        pages.push(page.operations.len());
        seen.extend(page.operations.into_iter().map(|op| op.name));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    // (Operations made in the same millisecond list in id order, so compare as sets.)
    let distinct: std::collections::BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(distinct.len(), seen.len(), "no operation twice: {seen:?}");
    local.sort();
    assert_eq!(
        distinct.into_iter().collect::<Vec<_>>(),
        local,
        "every operation on local, none on secret"
    );
    assert_eq!(pages, [2, 2, 1], "full pages");
}

fn jwt_config(jwks: &std::path::Path) -> String {
    format!(
        "{}[auth]\nmode = \"jwt\"\n[auth.jwt]\nissuer = \"https://issuer.test\"\naudience = \"streamgate\"\n\
         hs256_secret_env = \"SG_JWT_SECRET\"\njwks_file = \"{}\"\nleeway = \"0s\"\n{OPS_EVERYTHING}",
        providers(),
        jwks.display()
    )
}

fn claims(sub: &str, exp: u64, aud: &str) -> serde_json::Value {
    serde_json::json!({"sub": sub, "iss": "https://issuer.test", "aud": aud, "exp": exp})
}

/// `claims` with `name` set to `value`.
fn with(mut claims: serde_json::Value, name: &str, value: u64) -> serde_json::Value {
    claims[name] = value.into();
    claims
}

#[tokio::test]
async fn jwts_are_checked_for_signature_issuer_audience_expiry_lifetime_and_principal() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let dir = tempfile::tempdir().unwrap();
    // An ES256 key made now, published in a JWKS file.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = key.public_key_raw();
    let jwks = serde_json::json!({"keys": [{
        "kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig",
        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
        "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
    }]});
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).unwrap();
    let server = TestServer::start_configured(
        "",
        &jwt_config(&jwks_path),
        &[("SG_JWT_SECRET", "hs256-test-secret")],
    )
    .await;
    let hs = EncodingKey::from_secret(b"hs256-test-secret");
    let es = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let mut es_header = Header::new(Algorithm::ES256);
    es_header.kid = Some("k1".into());
    let hs_header = Header::new(Algorithm::HS256);
    let sign = |header: &Header, key: &EncodingKey, claims: serde_json::Value| {
        encode(header, &claims, key).unwrap()
    };
    let cases = [
        (
            "valid HS256",
            sign(&hs_header, &hs, claims("ops", now() + 300, "streamgate")),
            None,
        ),
        (
            "valid ES256",
            sign(&es_header, &es, claims("ops", now() + 300, "streamgate")),
            None,
        ),
        (
            "expired",
            sign(&hs_header, &hs, claims("ops", now() - 60, "streamgate")),
            Some("expired"),
        ),
        (
            "wrong audience",
            sign(&hs_header, &hs, claims("ops", now() + 300, "other")),
            Some("audience"),
        ),
        (
            "wrong secret",
            sign(
                &hs_header,
                &EncodingKey::from_secret(b"guess"),
                claims("ops", now() + 300, "streamgate"),
            ),
            Some("signature"),
        ),
        ("not a JWT", "abc.def".to_string(), Some("not a JWT")),
        (
            "nbf a day ahead",
            sign(
                &hs_header,
                &hs,
                with(
                    claims("ops", now() + 300, "streamgate"),
                    "nbf",
                    now() + 86_400,
                ),
            ),
            Some("not valid yet"),
        ),
        (
            "iat a year ahead",
            sign(
                &hs_header,
                &hs,
                with(
                    claims("ops", now() + 300, "streamgate"),
                    "iat",
                    now() + 365 * 86_400,
                ),
            ),
            Some("issued in the future"),
        ),
        (
            "exp 100 years away",
            sign(
                &hs_header,
                &hs,
                claims("ops", now() + 100 * 365 * 86_400, "streamgate"),
            ),
            Some("max_lifetime"),
        ),
        (
            "iat and exp two days apart",
            sign(
                &hs_header,
                &hs,
                with(
                    claims("ops", now() + 300, "streamgate"),
                    "iat",
                    now() - 2 * 86_400,
                ),
            ),
            Some("max_lifetime"),
        ),
        (
            "valid with iat and nbf",
            sign(
                &hs_header,
                &hs,
                with(
                    with(claims("ops", now() + 300, "streamgate"), "iat", now()),
                    "nbf",
                    now(),
                ),
            ),
            None,
        ),
        (
            "sub anonymous",
            sign(
                &hs_header,
                &hs,
                claims("anonymous", now() + 300, "streamgate"),
            ),
            Some("reserved"),
        ),
        (
            "sub with a newline",
            sign(
                &hs_header,
                &hs,
                claims("ops\nINFO audit", now() + 300, "streamgate"),
            ),
            Some("control characters"),
        ),
        (
            "sub of 6 KB",
            sign(
                &hs_header,
                &hs,
                claims(&"o".repeat(6 * 1024), now() + 300, "streamgate"),
            ),
            Some("longer than 256"),
        ),
    ];
    for (what, token, refusal) in cases {
        let result = server
            .providers()
            .list_providers(with_token(pb::ListProvidersRequest::default(), &token))
            .await;
        match refusal {
            None => {
                result.unwrap_or_else(|e| panic!("{what}: {e:?}"));
            }
            Some(why) => {
                let status = result.expect_err(what);
                assert_eq!(status.code(), Code::Unauthenticated, "{what}");
                assert!(
                    status.message().contains(why),
                    "{what}: {}",
                    status.message()
                );
            }
        }
    }
}

#[tokio::test]
async fn a_caller_over_its_rate_gets_rate_limited_with_retry_info() {
    let rest = format!(
        "{}[rate_limits]\nper_second = 1000\n[[rate_limits.rules]]\nprincipal = \"ops\"\n\
         method = \"ProviderService/GetProvider\"\nper_second = 1\nburst = 2\n\
         [[rate_limits.rules]]\nprincipal = \"anonymous\"\nper_second = 1\nburst = 1\n",
        api_key_config(OPS_EVERYTHING)
    );
    let server = TestServer::start_configured("", &rest, &[]).await;
    let get = || {
        with_token(
            pb::GetProviderRequest {
                name: "providers/local".into(),
            },
            KEY,
        )
    };
    let mut providers = server.providers();
    providers.get_provider(get()).await.unwrap();
    providers.get_provider(get()).await.unwrap();
    let limited = providers.get_provider(get()).await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert_eq!(reason(&limited), "RATE_LIMITED");
    let retry = limited
        .get_error_details()
        .retry_info()
        .cloned()
        .expect("RetryInfo");
    assert!(retry.retry_delay.unwrap() <= Duration::from_secs(1));
    // Health has no rate, even where a rule covers it (the anonymous prober's budget is 1).
    for _ in 0..5 {
        server
            .health()
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health is not rate limited");
    }
    // Another method has its own bucket.
    providers
        .list_providers(with_token(pb::ListProvidersRequest::default(), KEY))
        .await
        .unwrap();
}

#[tokio::test]
async fn calls_beyond_the_in_flight_bound_are_shed() {
    let server = TestServer::start_configured("max_in_flight = 1", &providers(), &[]).await;
    let op = server
        .streams()
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/local".into(),
            stream_id: "slow".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut ops = server.operations();
    let waiting = tokio::spawn(async move {
        ops.wait_operation(pb::WaitOperationRequest {
            name: op.name,
            timeout: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let shed = server
        .providers()
        .list_providers(pb::ListProvidersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(shed.code(), Code::ResourceExhausted);
    assert_eq!(reason(&shed), "OVERLOADED");
    // Health is never shed: an overloaded gateway is alive, and its prober must see so.
    let health = server
        .health()
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers while calls are shed");
    assert_eq!(health.into_inner().status, 1);
    waiting.await.unwrap().unwrap();
    server
        .providers()
        .list_providers(pb::ListProvidersRequest::default())
        .await
        .expect("served again once the slot is free");
}

#[tokio::test]
async fn the_server_default_deadline_bounds_calls_that_send_none() {
    let server =
        TestServer::start_configured("default_deadline = \"400ms\"", &providers(), &[]).await;
    let op = server
        .streams()
        .create_stream(pb::CreateStreamRequest {
            parent: "providers/local".into(),
            stream_id: "s".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let started = Instant::now();
    let waited = server
        .operations()
        .wait_operation(pb::WaitOperationRequest {
            name: op.name,
            timeout: Some(prost_types::Duration {
                seconds: 20,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!waited.done);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

/// Writes a config file into `dir` with an SQLite store there; returns its path.
fn config_file(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("streamgate.toml");
    let full = format!(
        "[server]\ndrain_timeout = \"2s\"\n[store]\nurl = \"sqlite://{}/sg.db\"\n{text}",
        dir.display()
    );
    std::fs::write(&path, full).unwrap();
    path
}

/// What grpcurl printed for a refused call: its code, and the `reason` of its ErrorInfo.
fn assert_refused(output: &std::process::Output, code: &str, reason: &str, message: &str) {
    let printed = output_text(output);
    assert!(!output.status.success(), "{printed}");
    assert!(printed.contains(&format!("Code: {code}")), "{printed}");
    assert!(
        printed.contains(&format!(r#""reason":"{reason}""#)),
        "{printed}"
    );
    assert!(printed.contains(message), "{printed}");
}

const PUBLIC_REFLECTION: &str = "public = [\"grpc.health.v1.Health\", \
     \"grpc.reflection.v1.ServerReflection\", \"grpc.reflection.v1alpha.ServerReflection\"]\n";

#[tokio::test]
async fn the_binary_refuses_each_bad_caller_with_its_code_and_reason_through_grpcurl() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        dir.path(),
        &format!(
            "{}[auth]\nmode = \"jwt\"\n{PUBLIC_REFLECTION}[auth.jwt]\n\
             issuer = \"https://issuer.test\"\naudience = \"streamgate\"\n\
             hs256_secret_env = \"SG_JWT_SECRET\"\nleeway = \"0s\"\n{OPS_EVERYTHING}\
             [[authorization]]\nprincipal = \"reader\"\n\
             methods = [\"ProviderService/*\", \"StreamService/Get*\"]\nproviders = [\"local\"]\n\
             [rate_limits]\nper_second = 1000\n[[rate_limits.rules]]\nprincipal = \"ops\"\n\
             method = \"ProviderService/GetProvider\"\nper_second = 1\nburst = 2\n",
            providers()
        ),
    );
    let mut binary = support::Binary::spawn_with_env(
        &config,
        dir.path(),
        "jwt",
        &[("SG_JWT_SECRET", "hs256-binary-secret")],
    );
    binary.ready().await;
    let addr = binary.addr.to_string();
    let key = EncodingKey::from_secret(b"hs256-binary-secret");
    let token = |sub: &str, exp: u64| {
        encode(&Header::default(), &claims(sub, exp, "streamgate"), &key).unwrap()
    };
    let (ops, reader, expired) = (
        token("ops", now() + 300),
        token("reader", now() + 300),
        token("ops", now() - 60),
    );
    let call = |token: Option<&str>, data: &str, method: &str| {
        let header = token.map(|t| format!("authorization: Bearer {t}"));
        let mut args = Vec::new();
        if let Some(header) = &header {
            args.extend(["-H", header.as_str()]);
        }
        args.extend(["-d", data, addr.as_str(), method]);
        grpcurl(&args)
    };
    const LIST: &str = "streamgate.v1.ProviderService/ListProviders";
    const GET: &str = "streamgate.v1.ProviderService/GetProvider";

    assert_refused(
        &call(None, "{}", LIST),
        "Unauthenticated",
        "UNAUTHENTICATED",
        "no bearer token",
    );
    assert_refused(
        &call(Some("not-a-token"), "{}", LIST),
        "Unauthenticated",
        "UNAUTHENTICATED",
        "not a JWT",
    );
    assert_refused(
        &call(Some(&expired), "{}", LIST),
        "Unauthenticated",
        "UNAUTHENTICATED",
        "expired",
    );
    // Outside its allow-list: a method it may not call, a provider it may not use.
    assert_refused(
        &call(
            Some(&reader),
            r#"{"name": "providers/local/streams/cam-1"}"#,
            "streamgate.v1.StreamService/DeleteStream",
        ),
        "PermissionDenied",
        "PERMISSION_DENIED",
        "DeleteStream",
    );
    assert_refused(
        &call(Some(&reader), r#"{"name": "providers/secret"}"#, GET),
        "PermissionDenied",
        "PERMISSION_DENIED",
        "secret",
    );
    let allowed = call(Some(&reader), r#"{"name": "providers/local"}"#, GET);
    assert!(allowed.status.success(), "{}", output_text(&allowed));

    // ops may read GetProvider twice at once, then once a second.
    let mut outputs = Vec::new();
    for _ in 0..8 {
        let output = call(Some(&ops), r#"{"name": "providers/local"}"#, GET);
        let limited = !output.status.success();
        outputs.push(output);
        if limited {
            break;
        }
    }
    assert!(outputs[0].status.success(), "{}", output_text(&outputs[0]));
    let last = outputs.last().unwrap();
    assert_refused(
        last,
        "ResourceExhausted",
        "RATE_LIMITED",
        "google.rpc.RetryInfo",
    );
    // Another method keeps its own budget.
    let listed = call(Some(&ops), "{}", LIST);
    assert!(
        output_text(&listed).contains("providers/secret"),
        "{}",
        output_text(&listed)
    );
}

/// mTLS with a client CA; with client certificates optional, health and reflection are
/// public (a prober and grpcurl without a certificate).
fn mtls_config(pki: &support::pki::Pki, server: &support::pki::Pair, optional: bool) -> String {
    let public = if optional { PUBLIC_REFLECTION } else { "" };
    format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n\
         client_auth_optional = {optional}\n{}[auth]\nmode = \"mtls\"\n{public}\
         [[authorization]]\nprincipal = \"spiffe://streamgate.test/ops\"\nmethods = [\"*\"]\n\
         [[authorization]]\nprincipal = \"spiffe://streamgate.test/reader\"\n\
         methods = [\"ProviderService/*\", \"grpc.reflection.*\"]\nproviders = [\"local\"]\n",
        server.cert.display(),
        server.key.display(),
        pki.ca_file.display(),
        providers()
    )
}

#[tokio::test]
async fn mtls_names_the_caller_by_its_certificate_and_refuses_a_client_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::Pki::new(dir.path(), "trusted");
    let server = pki.server("server");
    let ops = pki.client("ops", "spiffe://streamgate.test/ops");
    let reader = pki.client("reader", "spiffe://streamgate.test/reader");
    let rogue =
        support::pki::Pki::new(dir.path(), "rogue").client("rogue", "spiffe://streamgate.test/ops");
    let config = config_file(dir.path(), &mtls_config(&pki, &server, false));
    let mut binary = support::Binary::spawn(&config, dir.path(), "mtls");
    binary.ready_tls(&pki.ca_file, Some(&ops)).await;
    let addr = binary.addr.to_string();
    let ca = pki.ca_file.to_str().unwrap();
    let call = |pair: Option<&support::pki::Pair>, data: &str, method: &str| {
        // grpc-go redials a refused handshake until the connect timeout (default 10 s).
        let mut args = vec!["-connect-timeout", "3", "-cacert", ca];
        if let Some(pair) = pair {
            let (cert, key) = pair.paths();
            args.extend(["-cert", cert, "-key", key]);
        }
        args.extend(["-d", data, addr.as_str(), method]);
        support::grpcurl_tls(&args)
    };

    let listed = call(
        Some(&ops),
        "{}",
        "streamgate.v1.ProviderService/ListProviders",
    );
    let printed = output_text(&listed);
    assert!(listed.status.success(), "{printed}");
    assert!(printed.contains("providers/secret"), "{printed}");
    // The principal is the certificate's URI SAN: reader's allow-list applies to reader.
    let denied = call(
        Some(&reader),
        r#"{"name": "providers/secret"}"#,
        "streamgate.v1.ProviderService/GetProvider",
    );
    assert_refused(&denied, "PermissionDenied", "PERMISSION_DENIED", "secret");
    // No certificate, or one from another CA: the handshake fails, nothing is served.
    for (what, pair) in [("no certificate", None), ("another CA", Some(&rogue))] {
        let refused = call(pair, "{}", "grpc.health.v1.Health/Check");
        let printed = output_text(&refused);
        assert!(!refused.status.success(), "{what}: {printed}");
        assert!(!printed.contains("SERVING"), "{what}: {printed}");
    }
    // Plaintext is not served either.
    let plaintext = grpcurl(&["-d", "{}", &addr, "grpc.health.v1.Health/Check"]);
    assert!(!plaintext.status.success(), "{}", output_text(&plaintext));
    drop(binary);

    // With client certificates optional, a prober without one gets health (public), and a
    // caller without one is refused UNAUTHENTICATED, ErrorInfo and all.
    let config = config_file(dir.path(), &mtls_config(&pki, &server, true));
    let mut binary = support::Binary::spawn(&config, dir.path(), "mtls-optional");
    binary.ready_tls(&pki.ca_file, None).await;
    let addr = binary.addr.to_string();
    let bare = |data: &str, method: &str| {
        support::grpcurl_tls(&["-cacert", ca, "-d", data, &addr, method])
    };
    let health = bare("{}", "grpc.health.v1.Health/Check");
    assert!(
        output_text(&health).contains("\"SERVING\""),
        "{}",
        output_text(&health)
    );
    assert_refused(
        &bare("{}", "streamgate.v1.ProviderService/ListProviders"),
        "Unauthenticated",
        "UNAUTHENTICATED",
        "no certificate",
    );
    let (cert, key) = ops.paths();
    let with_cert = support::grpcurl_tls(&[
        "-cacert",
        ca,
        "-cert",
        cert,
        "-key",
        key,
        "-d",
        "{}",
        &addr,
        "streamgate.v1.ProviderService/ListProviders",
    ]);
    assert!(with_cert.status.success(), "{}", output_text(&with_cert));
}
