//! Authentication: who calls. Bearer API keys (configured as SHA-256 hashes, compared in
//! constant time), JWTs (HS256 with a secret from the environment; RSA and EC signatures with
//! keys from a JWKS file, re-read on a period and on an unknown `kid`; issuer, audience, expiry,
//! lifetime and principal checked), or client certificates verified by the TLS handshake
//! (mTLS; the name is read by [`crate::tls::principal`]). The principal goes into the request
//! extensions as [`Principal`]; public services (health by default) pass without credentials.
//! A refused call is counted (`streamgate_unauthenticated_refusals_total`) and logged one line
//! a second at most, with the count since the last line; it is not audited.
//! Async-capable as a layer, not an interceptor, so that later key sources can await.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::gate::{Gate, GateLayer, Gated};
use super::is_public;
use crate::audit::Sampled;
use crate::config::{AuthConfig, AuthMode, ConfigError, Environment, JwtConfig};
use crate::error::{Error, Kind};
use crate::identity::{ANONYMOUS, Principal};
use crate::telemetry::RpcName;

/// Checks the credentials of a call.
pub struct Authenticator {
    mode: AuthMode,
    public: Vec<String>,
    // (principal, SHA-256 of the key)
    keys: Vec<(Arc<str>, [u8; 32])>,
    anonymous: Arc<str>,
    jwt: Option<JwtChecker>,
    // Calls refused for want of valid credentials are logged as one line a second at most:
    // anyone can send them, as fast as they like.
    refusals: Sampled,
}

struct JwtChecker {
    config: JwtConfig,
    hs256: Option<DecodingKey>,
    jwks: Option<Jwks>,
}

fn unauthenticated(why: &str) -> Error {
    Error::new(Kind::Unauthenticated, why)
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// The verification keys of a JWKS file by `kid` (a key without one under ""), each with the
/// token algorithms it verifies.
type KeySet = HashMap<String, JwksKey>;

/// One verification key of the JWKS file.
struct JwksKey {
    key: DecodingKey,
    // The header `alg`s this key verifies: its `alg` alone when the JWK names one, else every
    // algorithm of its type (and curve).
    algorithms: Vec<Algorithm>,
}

/// The JWKS file and the keys last read from it. The file is re-read when a token is checked
/// and the keys are older than `[auth.jwt] jwks_refresh`, or when a token names a `kid` the
/// keys lack and the last read is older than `jwks_min_refresh_interval` (so that a new key is
/// accepted at once, and tokens with made-up `kid`s cannot make every call read the file). A
/// read that fails keeps the keys read before.
struct Jwks {
    path: PathBuf,
    refresh: Duration,
    min_refresh_interval: Duration,
    // The clock of `last_read_ms`.
    epoch: Instant,
    // Milliseconds from `epoch` to the start of the last read of the file (successful or not),
    // checked on every token without taking a lock.
    last_read_ms: AtomicU64,
    // Held by the one caller re-reading the file: the others check against the keys they have
    // rather than read it too.
    reading: Mutex<()>,
    keys: RwLock<Arc<KeySet>>,
}

/// Why the JWKS file is re-read.
#[derive(Clone, Copy, Debug)]
enum Refresh {
    Period,
    UnknownKid,
}

/// The algorithms a JWK of this type verifies, or `None` for a key that verifies no token
/// accepted here (HMAC or Ed25519 keys, other curves).
fn algorithms_of_type(jwk: &Jwk) -> Option<&'static [Algorithm]> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(&[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ]),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(&[Algorithm::ES256]),
            EllipticCurve::P384 => Some(&[Algorithm::ES384]),
            _ => None,
        },
        AlgorithmParameters::OctetKey(_) | AlgorithmParameters::OctetKeyPair(_) => None,
    }
}

/// The keys of a JWKS document that verify signatures: keys whose `use` is not `sig`, whose
/// `alg` is not a signature algorithm, or of a type no token here is signed with are left out.
/// Refused: a key whose `alg` does not fit its type, a key without `kid` beside others (a
/// token could not say which key signed it), two keys with one `kid`, a key that does not
/// parse.
fn parse_jwks(text: &str) -> Result<KeySet, String> {
    let set: JwkSet = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut usable = Vec::new();
    for jwk in &set.keys {
        let kid = jwk.common.key_id.as_deref().unwrap_or_default();
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
        {
            continue;
        }
        let Some(of_type) = algorithms_of_type(jwk) else {
            continue;
        };
        let algorithms = match &jwk.common.key_algorithm {
            None => of_type.to_vec(),
            Some(named) => match named.to_string().parse::<Algorithm>() {
                // An encryption algorithm: not a signing key.
                Err(_) => continue,
                Ok(algorithm) if of_type.contains(&algorithm) => vec![algorithm],
                Ok(algorithm) => {
                    return Err(format!(
                        "key {kid:?}: alg {algorithm:?} does not fit the key's type"
                    ));
                }
            },
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
        usable.push((kid, JwksKey { key, algorithms }));
    }
    if usable.len() > 1 && usable.iter().any(|(kid, _)| kid.is_empty()) {
        return Err("a key without kid beside other keys: every key needs a kid".into());
    }
    let mut keys = HashMap::new();
    for (kid, key) in usable {
        if keys.insert(kid.to_string(), key).is_some() {
            return Err(format!("two keys with kid {kid:?}"));
        }
    }
    Ok(keys)
}

/// Reads and parses the JWKS file.
fn read_jwks(path: &Path) -> Result<KeySet, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
    parse_jwks(&text)
}

impl Jwks {
    /// Reads the file once; a failure is a configuration error.
    fn open(config: &JwtConfig, path: &Path) -> Result<Self, ConfigError> {
        let invalid =
            |what: &str| ConfigError::Invalid(format!("[auth.jwt] {what} must be above zero"));
        if config.jwks_refresh.is_zero() {
            return Err(invalid("jwks_refresh"));
        }
        if config.jwks_min_refresh_interval.is_zero() {
            return Err(invalid("jwks_min_refresh_interval"));
        }
        let keys = read_jwks(path).map_err(|e| {
            ConfigError::Invalid(format!("[auth.jwt] jwks_file {}: {e}", path.display()))
        })?;
        Ok(Jwks {
            path: path.to_path_buf(),
            refresh: config.jwks_refresh,
            min_refresh_interval: config.jwks_min_refresh_interval,
            epoch: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            reading: Mutex::new(()),
            keys: RwLock::new(Arc::new(keys)),
        })
    }

    fn current(&self) -> Arc<KeySet> {
        // A poisoned lock only means a panic elsewhere while swapping; the set is whole.
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn has_keys(&self) -> bool {
        !self.current().is_empty()
    }

    /// The keys to check a token naming `kid` against, re-read first when due.
    fn keys_for(&self, kid: &str) -> Arc<KeySet> {
        self.refresh_if_older(self.refresh, Refresh::Period);
        let keys = self.current();
        if keys.contains_key(kid) {
            return keys;
        }
        if self.refresh_if_older(self.min_refresh_interval, Refresh::UnknownKid) {
            return self.current();
        }
        keys
    }

    /// Re-reads the file if its last read started more than `age` ago and no other caller
    /// is reading it; whether it did. The read blocks this call's thread: the file is a local
    /// one of a few keys, and is read at most once per `age`.
    fn refresh_if_older(&self, age: Duration, why: Refresh) -> bool {
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let now_ms = || u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let due = || now_ms().saturating_sub(self.last_read_ms.load(Ordering::Acquire)) >= age_ms;
        if !due() {
            return false;
        }
        let Ok(_reading) = self.reading.try_lock() else {
            return false;
        };
        // Another caller may have read it between the check and the lock.
        if !due() {
            return false;
        }
        self.last_read_ms.store(now_ms(), Ordering::Release);
        match read_jwks(&self.path) {
            Ok(keys) => {
                tracing::debug!(path = %self.path.display(), keys = keys.len(), ?why, "read the JWKS file");
                *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
            }
            Err(error) => tracing::warn!(
                path = %self.path.display(),
                %error,
                ?why,
                "could not re-read the JWKS file; keeping the keys read before"
            ),
        }
        true
    }
}

impl JwtChecker {
    fn new(config: &JwtConfig, environment: &Environment) -> Result<Self, ConfigError> {
        let hs256 = match &config.hs256_secret_env {
            Some(var) => Some(DecodingKey::from_secret(
                environment
                    .get(var)
                    .ok_or_else(|| {
                        ConfigError::Invalid(format!(
                            "[auth.jwt] hs256_secret_env: {var} is not set"
                        ))
                    })?
                    .as_bytes(),
            )),
            None => None,
        };
        let jwks = config
            .jwks_file
            .as_deref()
            .map(|path| Jwks::open(config, path))
            .transpose()?;
        if hs256.is_none() && !jwks.as_ref().is_some_and(Jwks::has_keys) {
            return Err(ConfigError::Invalid(
                "[auth.jwt] needs hs256_secret_env or a jwks_file with RSA or EC signing keys"
                    .into(),
            ));
        }
        Ok(JwtChecker {
            config: config.clone(),
            hs256,
            jwks,
        })
    }

    fn check(&self, token: &str) -> Result<String, Error> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthenticated("the bearer token is not a JWT"))?;
        // Keeps the keys read for this token alive while it is checked.
        let keys;
        let key = match (header.alg, &self.jwks) {
            (Algorithm::HS256, _) => self
                .hs256
                .as_ref()
                .ok_or_else(|| unauthenticated("HS256 tokens are not accepted"))?,
            (Algorithm::HS384 | Algorithm::HS512 | Algorithm::EdDSA, _) | (_, None) => {
                return Err(unauthenticated("the token's algorithm is not accepted"));
            }
            (_, Some(jwks)) => {
                let kid = header.kid.as_deref().unwrap_or_default();
                keys = jwks.keys_for(kid);
                let key = keys
                    .get(kid)
                    .ok_or_else(|| unauthenticated("the token's key is not in the JWKS"))?;
                if !key.algorithms.contains(&header.alg) {
                    return Err(unauthenticated(
                        "the token's algorithm does not fit its key",
                    ));
                }
                &key.key
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            key,
            &validation,
        )
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            unauthenticated(match e.kind() {
                K::ExpiredSignature => "the token has expired",
                K::InvalidIssuer => "the token's issuer is not accepted",
                K::InvalidAudience => "the token's audience is not accepted",
                K::ImmatureSignature => "the token is not valid yet",
                K::InvalidSignature => "the token's signature is invalid",
                _ => "the token is invalid",
            })
        })?;
        self.check_lifetime(&data.claims)?;
        let principal = data
            .claims
            .get(&self.config.principal_claim)
            .and_then(|v| v.as_str())
            .filter(|p| !p.is_empty())
            .ok_or_else(|| unauthenticated("the token names no principal"))?;
        check_principal(principal)?;
        Ok(principal.to_string())
    }

    /// Refuses a token issued in the future (beyond the leeway) or living longer than
    /// `max_lifetime` (`exp - iat`, or `exp - now` without `iat`). `exp` was checked present.
    fn check_lifetime(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), Error> {
        let now = jsonwebtoken::get_current_timestamp();
        let leeway = self.config.leeway.as_secs();
        let number = |name: &str| claims.get(name).and_then(serde_json::Value::as_u64);
        let iat = number("iat");
        if iat.is_some_and(|iat| iat > now.saturating_add(leeway)) {
            return Err(unauthenticated("the token was issued in the future"));
        }
        let exp = number("exp").unwrap_or(u64::MAX);
        let lifetime = exp.saturating_sub(iat.unwrap_or(now));
        if lifetime > self.config.max_lifetime.as_secs().saturating_add(leeway) {
            return Err(unauthenticated(
                "the token lives longer than [auth.jwt] max_lifetime",
            ));
        }
        Ok(())
    }
}

/// The longest principal a token may name.
const MAX_PRINCIPAL_LEN: usize = 256;

/// Refuses a principal claim that is too long, holds control characters, or is the reserved
/// identity of unauthenticated callers: it reaches audit rows, logs and metric labels.
fn check_principal(principal: &str) -> Result<(), Error> {
    if principal.len() > MAX_PRINCIPAL_LEN {
        return Err(unauthenticated(
            "the token's principal is longer than 256 bytes",
        ));
    }
    if principal.chars().any(char::is_control) {
        return Err(unauthenticated(
            "the token's principal holds control characters",
        ));
    }
    if principal == ANONYMOUS {
        return Err(unauthenticated("the token's principal is reserved"));
    }
    Ok(())
}

impl Authenticator {
    /// Builds the checker of `[auth]`; the environment holds the HS256 secret, if any.
    pub fn from_config(auth: &AuthConfig, environment: &Environment) -> Result<Self, ConfigError> {
        let mut keys = Vec::new();
        for key in &auth.api_keys {
            let hash = parse_hash(&key.sha256).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "[[auth.api_keys]] of {:?}: sha256 must be 64 hex digits",
                    key.principal
                ))
            })?;
            keys.push((Arc::from(key.principal.as_str()), hash));
        }
        let jwt = match (&auth.jwt, auth.mode) {
            (Some(jwt), _) => Some(JwtChecker::new(jwt, environment)?),
            (None, AuthMode::Jwt) => {
                return Err(ConfigError::Invalid(
                    "auth mode jwt needs [auth.jwt]".into(),
                ));
            }
            (None, _) => None,
        };
        if auth.mode == AuthMode::ApiKey && keys.is_empty() {
            return Err(ConfigError::Invalid(
                "auth mode api-key needs [[auth.api_keys]]".into(),
            ));
        }
        Ok(Authenticator {
            mode: auth.mode,
            public: auth.public.clone(),
            keys,
            anonymous: Arc::from(ANONYMOUS),
            jwt,
            refusals: Sampled::new(),
        })
    }

    /// The principal of a call with these headers and request extensions (where the
    /// connection's TLS information is) to `path`.
    pub fn authenticate(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<Arc<str>, Error> {
        if self.mode == AuthMode::None || is_public(&self.public, path) {
            return Ok(Arc::clone(&self.anonymous));
        }
        if self.mode == AuthMode::Mtls {
            return crate::tls::principal(extensions)
                .map(Arc::from)
                .map_err(unauthenticated);
        }
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| unauthenticated("no bearer token in the authorization metadata"))?;
        match self.mode {
            AuthMode::ApiKey => {
                let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
                // Every key is compared, so the time taken says nothing about which matched.
                let mut found: Option<&Arc<str>> = None;
                for (principal, hash) in &self.keys {
                    if bool::from(hash.ct_eq(&presented)) {
                        found = Some(principal);
                    }
                }
                found
                    .map(Arc::clone)
                    .ok_or_else(|| unauthenticated("the API key is not valid"))
            }
            AuthMode::Jwt => match &self.jwt {
                Some(jwt) => jwt.check(token).map(Arc::from),
                None => Err(unauthenticated("JWTs are not configured")),
            },
            AuthMode::None | AuthMode::Mtls => Ok(Arc::clone(&self.anonymous)),
        }
    }
}

impl Authenticator {
    /// Counts a call to `path` refused with `error`, and logs it with those since the last
    /// line when a line is due.
    fn refused(&self, path: &str, error: &Error) {
        crate::telemetry::call::unauthenticated_refusal(path);
        if let Some(refused) = self.refusals.note() {
            let name = RpcName::parse(path);
            tracing::info!(
                refused,
                rpc.service = name.service,
                rpc.method = name.method,
                reason = error.message(),
                "calls refused for want of valid credentials (the last one's method and reason)"
            );
        }
    }
}

impl Gate for Authenticator {
    fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &mut http::Extensions,
    ) -> Result<(), Error> {
        let principal = self
            .authenticate(path, headers, extensions)
            .inspect_err(|error| self.refused(path, error))?;
        extensions.insert(Principal(principal));
        Ok(())
    }
}

/// Authenticates every call.
pub type AuthnLayer = GateLayer<Authenticator>;

/// The service of [`AuthnLayer`].
pub type Authn<S> = Gated<S, Authenticator>;

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::config::Config;

    /// A P-256 public key made now, as a JWK with `fields` added.
    fn ec_jwk(fields: serde_json::Value) -> serde_json::Value {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = pair.public_key_raw();
        let mut jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&raw[33..65]),
        });
        for (name, value) in fields.as_object().unwrap() {
            jwk[name] = value.clone();
        }
        jwk
    }

    fn parse(keys: &[serde_json::Value]) -> Result<KeySet, String> {
        parse_jwks(&serde_json::json!({ "keys": keys }).to_string())
    }

    #[test]
    fn a_jwks_keeps_only_unambiguous_signing_keys() {
        let keys = parse(&[
            ec_jwk(serde_json::json!({"kid": "sig", "use": "sig"})),
            ec_jwk(serde_json::json!({"kid": "enc", "use": "enc"})),
            ec_jwk(serde_json::json!({"kid": "oaep", "alg": "RSA-OAEP"})),
            ec_jwk(serde_json::json!({"kid": "any"})),
        ])
        .unwrap();
        let mut kids: Vec<_> = keys.keys().map(String::as_str).collect();
        kids.sort();
        assert_eq!(kids, ["any", "sig"]);
        assert_eq!(keys["any"].algorithms, [Algorithm::ES256]);

        let twice = parse(&[
            ec_jwk(serde_json::json!({"kid": "k"})),
            ec_jwk(serde_json::json!({"kid": "k"})),
        ]);
        assert!(twice.err().unwrap().contains("two keys"));
        let kidless = parse(&[
            ec_jwk(serde_json::json!({})),
            ec_jwk(serde_json::json!({"kid": "k"})),
        ]);
        assert!(kidless.err().unwrap().contains("without kid"));
        // Beside a key that verifies nothing, a key without kid is the only one.
        let alone = parse(&[
            ec_jwk(serde_json::json!({})),
            ec_jwk(serde_json::json!({"kid": "enc", "use": "enc"})),
        ])
        .unwrap();
        assert!(alone.contains_key(""));
    }

    #[test]
    fn jwks_refresh_intervals_must_be_above_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let jwks = serde_json::json!({ "keys": [ec_jwk(serde_json::json!({"kid": "k"}))] });
        std::fs::write(&path, jwks.to_string()).unwrap();
        for (key, accepted) in [
            ("jwks_refresh = \"1s\"", true),
            ("jwks_refresh = \"0s\"", false),
            ("jwks_min_refresh_interval = \"0s\"", false),
        ] {
            let config = Config::from_toml(&format!(
                "[auth]\nmode = \"jwt\"\n[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\n\
                 jwks_file = \"{}\"\n{key}\n",
                path.display()
            ))
            .unwrap();
            let built = Authenticator::from_config(&config.auth, &config.environment);
            assert_eq!(built.is_ok(), accepted, "{key}");
        }
    }
}
