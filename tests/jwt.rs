//! The keys of `[auth.jwt] jwks_file`, end to end: a key removed from the file is refused once
//! the keys are older than `jwks_refresh`, a key added is accepted at once (a token's unknown
//! `kid` re-reads the file, at most once per `jwks_min_refresh_interval`: counted through the
//! real binary's log), a file that no longer reads keeps the keys read before, keys without
//! `kid` beside others are refused, and a JWK's `use` and `alg` are honoured. Keys are made at
//! test time (EC P-256 with rcgen; the RSA key is a fixed one).

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use streamgate::pb;
use support::{TestServer, local_provider};
use tonic::Code;
use tonic::metadata::MetadataValue;

const OPS_EVERYTHING: &str = "[[authorization]]\nprincipal = \"ops\"\nmethods = [\"*\"]\n";

/// A signing key made now: its private half, and its public half as a JWK (without `kid`).
struct Key {
    encoding: EncodingKey,
    jwk: serde_json::Value,
}

impl Key {
    fn ec() -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        Key {
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            jwk: serde_json::json!({
                "kty": "EC", "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
            }),
        }
    }

    /// The RSA key of [`RSA_KEY`] (rcgen's backend here makes no RSA keys).
    fn rsa() -> Self {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(RSA_KEY).unwrap();
        Key {
            encoding: EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap(),
            jwk: serde_json::json!({
                "kty": "RSA",
                "n": URL_SAFE_NO_PAD.encode(private.n().to_bytes_be()),
                "e": URL_SAFE_NO_PAD.encode(private.e().to_bytes_be()),
            }),
        }
    }

    /// The JWK with `fields` (`kid`, `alg`, `use`) added.
    fn jwk(&self, fields: serde_json::Value) -> serde_json::Value {
        let mut jwk = self.jwk.clone();
        for (name, value) in fields.as_object().unwrap() {
            jwk[name] = value.clone();
        }
        jwk
    }

    /// A valid token of principal `ops`, signed with `algorithm`, naming `kid`.
    fn token(&self, algorithm: Algorithm, kid: Option<&str>) -> String {
        let mut header = Header::new(algorithm);
        header.kid = kid.map(str::to_string);
        let exp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 300;
        let claims = serde_json::json!({
            "sub": "ops", "iss": "https://issuer.test", "aud": "streamgate", "exp": exp,
        });
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

/// A 2048-bit RSA key made for these tests with `openssl genpkey -algorithm RSA`.
const RSA_KEY: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQCs40udUa84Dtje\n\
iBEMoZ6Pn49p7fRjuNOp9YorODoUsu4pX8vRlQRr02TCJdZLjWVuQw5rjpP0HL2o\n\
F80hMNxlZXyoDxQgKdD6qpq6YlJ6anOHF8TGrK0fefsOjyvAcpo1MghNpk8OuMeo\n\
Bka4cgMfVff02/7Pn+d8dAmyuQjgeGEBo4h6XcvMDEO9BAMT7fqyBg5oZLsXk9Qx\n\
xImeQWJNkoN6KgHtVo19WSdf5MXY1fA32sJBTa3DPK25NjDQKERzsh/7pOpqQeFd\n\
TmNxpP3d+mz3NhLOndfGGcupPJnYQgRISr+fx+97NxvnX/b5OZ0I8LvhNk4CBniG\n\
QjOWoKNpAgMBAAECggEAFFbmxM6w9p8/ihmXqOTkNLkkvAV9vpQmWazMiSZjpd8B\n\
mB5AKitWAnHznQgqyIdtXw4WRpbW5u2RLfMD4+Nd0HOCuXpRp7GHt4/F5YbO9X4r\n\
0oE8OhPjR6xX+gfjsa/B3t+AnNMDosOgII9Bd25ZWfDJG7ZciVRifVCg+fTdG5w4\n\
a1/XMNVwEhgog4ea5rZcTUg8DZp6i4Ilzm8HSjSVovU47/Ev8FB5SNWbisc8ijrS\n\
5EY3dRdxFjXi/Zanrcc+GMqzW+ZP8AiQjcyM3MTw/FJEggp2GJr+EDlGv9Adleay\n\
Uaeeby/oJlLJIGx2nhCYlK5bSXIZ22LQRzawj57IcQKBgQDUs4C6fLNxbmpuRuIY\n\
ur66ri1LsvsAhadVVXXvCTy9Xy79byTX/dcUJxR2FnbyF55lo6k3qCDacRJ63DBx\n\
oUGpFOB92DC+pufjnRbxTa7aJ/i5WDbbY+liZhoyFvSASV/eXJhTuPvQo8BCLolu\n\
rzZMWqTfFKNzJjORpb2tXQc/0QKBgQDQFQBbwhYmZt8itvQTolnx0jcWdeT5R1Sw\n\
WNpqJcq9OeW0Nvw4M0sTgmx5U6m06QLgjya/MbrlRT3NdkIY1XIsBc3Qa5cSoztK\n\
xAs/R4H8koh+yfNHkWIyRc1n8CjZzbG8H7yP5E/4okRJuLgEcm49qsIVSt2G5IRz\n\
MDCHKTboGQKBgEQOHw0MIzoS8xjPsz3oWmhOnI2Q+cCkAvNJwc82rGmHD/jk2+wD\n\
+xImouRZsbsqFXM910HImKJr9Va8Jv/kcabQ2DdLueT2cFGijJmumliQ24MqF3tA\n\
z4a9VnpaX+bAE12JUO/Qyzlpe3VxgGWayAvMIN6Dsvx/55YdasASeORRAoGBAMDj\n\
twFYWdAfbJlxn7DTvy08AXUAtNGgHhGbTF05y0a+dQEqN4Shh+b98DBILflWRySD\n\
jxeNsgL2vOPJzFvZAY1tk+ywz8qnJj+YnBR85TKNY5qk+rBNRQn1SwQezL+avjf1\n\
84YvzzJcuZDdezgkG61urZuvWsvA6kcdVN72hb+BAoGAFvp5P+AE9tqYqB8RZMNL\n\
eNGJE2foeNRDzi4szbnOMnmrknLfchioiZ9z2FCTU+Sr0RGiUdEaC8UJYjbNFS/S\n\
DbLVTPal6sYPwcI1Yz7wv0yXp0nBGDfFyA1Z6A3p4JMVEFsPwOhvhD2sENQtTA3Z\n\
e+w1VecwZhjovvdttusH7SU=\n\
-----END PRIVATE KEY-----\n\
";

fn write_jwks(path: &Path, keys: &[serde_json::Value]) {
    // Written aside and renamed, so the gateway never reads half a file.
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, serde_json::json!({ "keys": keys }).to_string()).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// `[auth]` of mode jwt with the JWKS file `jwks` and `extra` lines in `[auth.jwt]`.
fn jwt_config(jwks: &Path, extra: &str) -> String {
    format!(
        "{}[auth]\nmode = \"jwt\"\n[auth.jwt]\nissuer = \"https://issuer.test\"\n\
         audience = \"streamgate\"\njwks_file = \"{}\"\nleeway = \"0s\"\n{extra}\n{OPS_EVERYTHING}",
        local_provider("local", "1s"),
        jwks.display()
    )
}

/// Lists the providers with `token`: `Ok` or the refusal.
async fn call(server: &TestServer, token: &str) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(pb::ListProvidersRequest::default());
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    server.providers().list_providers(request).await.map(drop)
}

async fn refused(server: &TestServer, token: &str, why: &str) {
    let status = call(server, token).await.expect_err(why);
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains(why), "{status:?}");
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_file_is_refused_after_jwks_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let (old, kept) = (Key::ec(), Key::ec());
    write_jwks(
        &path,
        &[
            old.jwk(serde_json::json!({"kid": "old"})),
            kept.jwk(serde_json::json!({"kid": "kept"})),
        ],
    );
    let config = jwt_config(
        &path,
        "jwks_refresh = \"1s\"\njwks_min_refresh_interval = \"1h\"",
    );
    let server = TestServer::start_configured("", &config, &[]).await;
    call(&server, &old.token(Algorithm::ES256, Some("old")))
        .await
        .unwrap();

    write_jwks(&path, &[kept.jwk(serde_json::json!({"kid": "kept"}))]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    refused(
        &server,
        &old.token(Algorithm::ES256, Some("old")),
        "not in the JWKS",
    )
    .await;
    call(&server, &kept.token(Algorithm::ES256, Some("kept")))
        .await
        .unwrap();

    // A file that no longer reads keeps the keys read before.
    std::fs::write(&path, "{not json").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    call(&server, &kept.token(Algorithm::ES256, Some("kept")))
        .await
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    call(&server, &kept.token(Algorithm::ES256, Some("kept")))
        .await
        .unwrap();
    // So does a set whose keys a token could not tell apart.
    write_jwks(
        &path,
        &[
            old.jwk(serde_json::json!({})),
            kept.jwk(serde_json::json!({})),
        ],
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    call(&server, &kept.token(Algorithm::ES256, Some("kept")))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_key_added_to_the_jwks_file_is_accepted_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let (first, added) = (Key::ec(), Key::ec());
    write_jwks(&path, &[first.jwk(serde_json::json!({"kid": "first"}))]);
    let config = jwt_config(
        &path,
        "jwks_refresh = \"1h\"\njwks_min_refresh_interval = \"1s\"",
    );
    let server = TestServer::start_configured("", &config, &[]).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    write_jwks(
        &path,
        &[
            first.jwk(serde_json::json!({"kid": "first"})),
            added.jwk(serde_json::json!({"kid": "added"})),
        ],
    );
    call(&server, &added.token(Algorithm::ES256, Some("added")))
        .await
        .unwrap();
}

#[tokio::test]
async fn tokens_with_unknown_kids_read_the_jwks_file_at_most_once_per_interval_in_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let key = Key::ec();
    write_jwks(&path, &[key.jwk(serde_json::json!({"kid": "k1"}))]);
    let config = dir.path().join("streamgate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndrain_timeout = \"2s\"\n[store]\nurl = \"sqlite://{}/sg.db\"\n{}",
            dir.path().display(),
            jwt_config(&path, "jwks_min_refresh_interval = \"1s\"")
        ),
    )
    .unwrap();
    let mut binary = support::Binary::spawn_with_env(
        &config,
        dir.path(),
        "jwks",
        &[("STREAMGATE_LOG", "info,streamgate::middleware=debug")],
    );
    let channel = binary.ready().await;
    let mut providers = pb::provider_service_client::ProviderServiceClient::new(channel);

    // 2.5 s of tokens naming kids no file holds: a read per token without the interval.
    let started = std::time::Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        let kid = format!("made-up-{calls}");
        let mut request = tonic::Request::new(pb::ListProvidersRequest::default());
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!(
                "Bearer {}",
                key.token(Algorithm::ES256, Some(&kid))
            ))
            .unwrap(),
        );
        let status = providers.list_providers(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        calls += 1;
    }
    binary.signal("TERM");
    binary.wait_exit(Duration::from_secs(10)).await;
    let log = std::fs::read_to_string(&binary.log).unwrap();
    let reads = log.matches("read the JWKS file").count();
    assert!(calls > 20, "{calls} calls");
    assert!((1..=4).contains(&reads), "{reads} reads for {calls} calls");
}

#[tokio::test]
async fn keys_without_kid_are_refused_beside_others_and_allowed_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let (one, two) = (Key::ec(), Key::ec());
    write_jwks(
        &path,
        &[
            one.jwk(serde_json::json!({})),
            two.jwk(serde_json::json!({"kid": "two"})),
        ],
    );
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{}/sg.db\"\n{}",
        dir.path().display(),
        jwt_config(&path, "")
    );
    let config = streamgate::config::Config::from_toml(&text).unwrap();
    let error = streamgate::server::Parts::build(&config)
        .err()
        .expect("a kid-less key beside another")
        .to_string();
    assert!(error.contains("without kid"), "{error}");

    write_jwks(&path, &[one.jwk(serde_json::json!({}))]);
    let server = TestServer::start_configured("", &jwt_config(&path, ""), &[]).await;
    call(&server, &one.token(Algorithm::ES256, None))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_jwks_use_and_alg_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let (signing, encrypting, rsa) = (Key::ec(), Key::ec(), Key::rsa());
    write_jwks(
        &path,
        &[
            signing.jwk(serde_json::json!({"kid": "sig", "use": "sig", "alg": "ES256"})),
            encrypting.jwk(serde_json::json!({"kid": "enc", "use": "enc"})),
            rsa.jwk(serde_json::json!({"kid": "pss", "alg": "PS256"})),
            rsa.jwk(serde_json::json!({"kid": "rsa"})),
        ],
    );
    let server = TestServer::start_configured("", &jwt_config(&path, ""), &[]).await;
    call(&server, &signing.token(Algorithm::ES256, Some("sig")))
        .await
        .unwrap();
    refused(
        &server,
        &encrypting.token(Algorithm::ES256, Some("enc")),
        "not in the JWKS",
    )
    .await;
    call(&server, &rsa.token(Algorithm::PS256, Some("pss")))
        .await
        .unwrap();
    // Signed by the right key, with an algorithm the key's `alg` does not name.
    refused(
        &server,
        &rsa.token(Algorithm::RS256, Some("pss")),
        "does not fit its key",
    )
    .await;
    // Without `alg`, any RSA signature algorithm, and none of another key type.
    call(&server, &rsa.token(Algorithm::RS512, Some("rsa")))
        .await
        .unwrap();
    refused(
        &server,
        &signing.token(Algorithm::ES256, Some("rsa")),
        "does not fit its key",
    )
    .await;

    // A key whose `alg` does not fit its type is a configuration error.
    write_jwks(
        &path,
        &[signing.jwk(serde_json::json!({"kid": "sig", "alg": "RS256"}))],
    );
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"sqlite://{}/sg.db\"\n{}",
        dir.path().display(),
        jwt_config(&path, "")
    );
    let config = streamgate::config::Config::from_toml(&text).unwrap();
    let error = streamgate::server::Parts::build(&config)
        .err()
        .expect("an ES key with alg RS256")
        .to_string();
    assert!(error.contains("does not fit"), "{error}");
}
