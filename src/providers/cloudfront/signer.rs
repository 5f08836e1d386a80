//! CloudFront signed URLs: the policy statement, its RSA signature (PKCS#1 v1.5 with SHA-1,
//! CloudFront's algorithm, from the `rsa` crate) and the query that carries them, in
//! CloudFront's URL-safe base64 (`+` → `-`, `=` → `_`, `/` → `~`).
//!
//! A canned policy (only an expiry) travels as `Expires`, `Signature`, `Key-Pair-Id`; a custom
//! one (an IP range, a start time) as `Policy`, `Signature`, `Key-Pair-Id`. The policy JSON is
//! written exactly as AWS documents it — and as botocore's `CloudFrontSigner` writes it, which
//! the endpoints suite checks byte for byte. The private key never reaches `Debug` or a log.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use sha1::{Digest, Sha1};

use super::config::CloudFrontSettings;
use crate::config::Environment;
use crate::domain::CustomPolicy;
use crate::error::{Error, Result};

/// The key pair that signs one instance's URLs.
pub(super) struct UrlSigner {
    key_id: String,
    key: RsaPrivateKey,
}

impl fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UrlSigner")
            .field("key_id", &self.key_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// CloudFront's URL-safe base64.
fn url_b64(bytes: &[u8]) -> String {
    STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            c => c,
        })
        .collect()
}

/// The policy statement of `resource`: DateLessThan, then IpAddress and DateGreaterThan when
/// set (a bare address is a /32). `resource` is printable ASCII without `"` or `\`, as the
/// request checks made it, so it needs no JSON escaping.
fn policy(resource: &str, expires_s: i64, custom: &CustomPolicy) -> String {
    let mut condition = format!("\"DateLessThan\":{{\"AWS:EpochTime\":{expires_s}}}");
    if let Some(range) = &custom.ip_range {
        let range = if range.contains('/') {
            range.clone()
        } else {
            format!("{range}/32")
        };
        condition.push_str(&format!(",\"IpAddress\":{{\"AWS:SourceIp\":\"{range}\"}}"));
    }
    if let Some(start_ms) = custom.start_ms {
        condition.push_str(&format!(
            ",\"DateGreaterThan\":{{\"AWS:EpochTime\":{}}}",
            start_ms.div_euclid(1000)
        ));
    }
    format!("{{\"Statement\":[{{\"Resource\":\"{resource}\",\"Condition\":{{{condition}}}}}]}}")
}

impl UrlSigner {
    /// The instance's signer, if it has a key pair configured: the PEM key (PKCS#1 or PKCS#8)
    /// from `signing_private_key_file` or the variable `signing_private_key_env` names.
    pub fn load(
        provider: &str,
        settings: &CloudFrontSettings,
        environment: &Environment,
    ) -> Result<Option<Self>> {
        let Some(key_id) = &settings.signing_key_id else {
            return Ok(None);
        };
        let pem = match (
            &settings.signing_private_key_file,
            &settings.signing_private_key_env,
        ) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|e| {
                Error::internal(format_args!(
                    "provider {provider:?}: signing_private_key_file {path:?}: {e}"
                ))
            })?,
            (None, Some(var)) => environment.get(var).map(str::to_string).ok_or_else(|| {
                Error::internal(format_args!(
                    "provider {provider:?}: signing_private_key_env: {var} is not set"
                ))
            })?,
            (None, None) => {
                return Err(Error::internal(format_args!(
                    "provider {provider:?}: signing_key_id without a private key"
                )));
            }
        };
        // The parse errors say nothing of the key's content.
        let key = RsaPrivateKey::from_pkcs1_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs8_pem(&pem))
            .map_err(|_| {
                Error::internal(format_args!(
                    "provider {provider:?}: the signing private key is not an RSA key in PEM \
                     (PKCS#1 or PKCS#8)"
                ))
            })?;
        Ok(Some(UrlSigner {
            key_id: key_id.clone(),
            key,
        }))
    }

    /// `url` signed for `resource` (the URL itself, or an RTMP stream name) until `expires_s`
    /// (seconds since the epoch): a canned policy when `custom` is empty, else a custom one.
    pub fn sign(
        &self,
        url: &str,
        resource: &str,
        expires_s: i64,
        custom: &CustomPolicy,
    ) -> Result<String> {
        let statement = policy(resource, expires_s, custom);
        let digest = Sha1::digest(statement.as_bytes());
        let signature = self
            .key
            .sign(Pkcs1v15Sign::new::<Sha1>(), &digest)
            .map_err(|e| Error::internal(format_args!("signing a CloudFront URL: {e}")))?;
        let first = if custom.is_empty() {
            format!("Expires={expires_s}")
        } else {
            format!("Policy={}", url_b64(statement.as_bytes()))
        };
        let separator = if url.contains('?') { '&' } else { '?' };
        Ok(format!(
            "{url}{separator}{first}&Signature={}&Key-Pair-Id={}",
            url_b64(&signature),
            self.key_id
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_never_reaches_debug() {
        // A textbook key (p = 61, q = 53): only its formatting is under test.
        let small = |n: u32| rsa::BigUint::from(n);
        let key = RsaPrivateKey::from_components(
            small(3233),
            small(17),
            small(2753),
            vec![small(61), small(53)],
        )
        .unwrap();
        let signer = UrlSigner {
            key_id: "K2JCJMDEHXQW5F".into(),
            key,
        };
        let shown = format!("{signer:?}");
        assert_eq!(
            shown,
            "UrlSigner { key_id: \"K2JCJMDEHXQW5F\", key: \"<redacted>\" }"
        );
    }

    #[test]
    fn url_safe_base64_swaps_the_three_characters() {
        assert_eq!(url_b64(&[0xfb, 0xff]), "-~8_");
    }

    #[test]
    fn policies_follow_the_documented_statement() {
        // The canned policy statement of AWS's "Creating a signed URL using a canned policy".
        assert_eq!(
            policy(
                "https://d111111abcdef8.cloudfront.net/image.jpg",
                1357034400,
                &CustomPolicy::default()
            ),
            "{\"Statement\":[{\"Resource\":\"https://d111111abcdef8.cloudfront.net/image.jpg\",\
             \"Condition\":{\"DateLessThan\":{\"AWS:EpochTime\":1357034400}}}]}"
        );
        let custom = CustomPolicy {
            ip_range: Some("192.0.2.10".into()),
            start_ms: Some(1_357_000_000_999),
        };
        assert_eq!(
            policy("a.mp4", 1357034400, &custom),
            "{\"Statement\":[{\"Resource\":\"a.mp4\",\"Condition\":{\"DateLessThan\":\
             {\"AWS:EpochTime\":1357034400},\"IpAddress\":{\"AWS:SourceIp\":\"192.0.2.10/32\"},\
             \"DateGreaterThan\":{\"AWS:EpochTime\":1357000000}}}]}"
        );
    }
}
