//! Authentication: who calls. Bearer API keys (configured as SHA-256 hashes, compared in
//! constant time), JWTs (HS256 with a secret from the environment; RS256 / ES256 with keys
//! from a JWKS file; issuer, audience and expiry checked), or client certificates verified by
//! the TLS handshake (mTLS; the name is read by [`crate::tls::principal`]). The principal goes into the request
//! extensions as [`Principal`]; public services (health by default) pass without credentials.
//! Async-capable as a layer, not an interceptor, so that later key sources can await.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::gate::{Gate, GateLayer, Gated};
use super::is_public;
use crate::config::{AuthConfig, AuthMode, ConfigError, Environment, JwtConfig};
use crate::error::{Error, Kind};
use crate::identity::{ANONYMOUS, Principal};

/// Checks the credentials of a call.
pub struct Authenticator {
    mode: AuthMode,
    public: Vec<String>,
    // (principal, SHA-256 of the key)
    keys: Vec<(Arc<str>, [u8; 32])>,
    anonymous: Arc<str>,
    jwt: Option<JwtChecker>,
}

struct JwtChecker {
    config: JwtConfig,
    hs256: Option<DecodingKey>,
    // kid → (key, algorithm); a key without kid is stored under "".
    jwks: HashMap<String, (DecodingKey, Algorithm)>,
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
        let mut jwks = HashMap::new();
        if let Some(path) = &config.jwks_file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text).map_err(|e| {
                ConfigError::Invalid(format!("[auth.jwt] jwks_file {}: {e}", path.display()))
            })?;
            for jwk in &set.keys {
                let algorithm = match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    _ => continue,
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                    ConfigError::Invalid(format!("[auth.jwt] jwks_file {}: {e}", path.display()))
                })?;
                jwks.insert(
                    jwk.common.key_id.clone().unwrap_or_default(),
                    (key, algorithm),
                );
            }
        }
        if hs256.is_none() && jwks.is_empty() {
            return Err(ConfigError::Invalid(
                "[auth.jwt] needs hs256_secret_env or a jwks_file with RSA or EC keys".into(),
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
        let (key, algorithm) = match header.alg {
            Algorithm::HS256 => (
                self.hs256
                    .as_ref()
                    .ok_or_else(|| unauthenticated("HS256 tokens are not accepted"))?,
                Algorithm::HS256,
            ),
            Algorithm::RS256 | Algorithm::ES256 => {
                let kid = header.kid.unwrap_or_default();
                let (key, algorithm) = self
                    .jwks
                    .get(&kid)
                    .ok_or_else(|| unauthenticated("the token's key is not in the JWKS"))?;
                if *algorithm != header.alg {
                    return Err(unauthenticated(
                        "the token's algorithm does not fit its key",
                    ));
                }
                (key, *algorithm)
            }
            _ => return Err(unauthenticated("the token's algorithm is not accepted")),
        };
        let mut validation = Validation::new(algorithm);
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

impl Gate for Authenticator {
    fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &mut http::Extensions,
    ) -> Result<(), Error> {
        let principal = self
            .authenticate(path, headers, extensions)
            .inspect_err(|error| {
                tracing::info!(path, reason = error.message(), "unauthenticated call");
            })?;
        extensions.insert(Principal(principal));
        Ok(())
    }
}

/// Authenticates every call.
pub type AuthnLayer = GateLayer<Authenticator>;

/// The service of [`AuthnLayer`].
pub type Authn<S> = Gated<S, Authenticator>;
