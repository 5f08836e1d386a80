//! Alibaba Cloud RPC signature V1 (HMAC-SHA1), as the official SDKs compute it: the canonical
//! query, the string to sign, and the signature. It owns no I/O and no credentials handling
//! beyond taking the secret for one signature.
//!
//! The rules (docs/design.md §1): sort every parameter but `Signature` by name; percent-encode
//! names and values per RFC 3986 over UTF-8 (unreserved `A-Z a-z 0-9 - _ . ~` kept, so a space
//! is `%20` and `*` is `%2A`); join as `k=v&…`; StringToSign = `METHOD&%2F&` + encode(query);
//! Signature = Base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign)).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;

/// Everything but the RFC 3986 unreserved characters is encoded.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes `text` per RFC 3986 (UTF-8, unreserved characters kept).
pub(super) fn encode(text: &str) -> String {
    utf8_percent_encode(text, RFC3986).to_string()
}

/// The canonical query of `params`: sorted by name, `Signature` left out, names and values
/// encoded, joined with `&`.
pub(super) fn canonical_query<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(name, _)| *name != "Signature")
        .collect();
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The string to sign of a request with `method` (`GET` or `POST`) and `params`.
pub(super) fn string_to_sign<'a>(
    method: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    format!("{method}&%2F&{}", encode(&canonical_query(params)))
}

/// The signature of `string_to_sign` under `access_key_secret`.
pub(super) fn signature(access_key_secret: &str, string_to_sign: &str) -> String {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = Hmac::<Sha1>::new_from_slice(format!("{access_key_secret}&").as_bytes())
        .expect("hmac takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        name: String,
        method: String,
        access_key_secret: String,
        signed_params: std::collections::BTreeMap<String, String>,
        string_to_sign: String,
        signature: String,
    }

    fn vectors() -> Vec<Vector> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/peers/aliyun-signature-vectors.json");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "the official SDK's signature vectors are missing at {}: {e}; they come with \
                 the project's shared folder (shared/peers/aliyun-signature-vectors.json)",
                path.display()
            )
        });
        let parsed: Vectors = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is malformed: {e}", path.display()));
        assert!(
            !parsed.vectors.is_empty(),
            "{} has no vectors",
            path.display()
        );
        parsed.vectors
    }

    #[test]
    fn signs_every_vector_of_the_official_sdk() {
        for v in vectors() {
            let params = v
                .signed_params
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()));
            let to_sign = string_to_sign(&v.method, params);
            assert_eq!(to_sign, v.string_to_sign, "string to sign of {}", v.name);
            assert_eq!(
                signature(&v.access_key_secret, &to_sign),
                v.signature,
                "signature of {}",
                v.name
            );
        }
    }

    #[test]
    fn encodes_per_rfc_3986() {
        assert_eq!(encode("a b*c~d/e+f"), "a%20b%2Ac~d%2Fe%2Bf");
        assert_eq!(encode("视"), "%E8%A7%86");
        assert_eq!(encode("A-Z_a.z0"), "A-Z_a.z0");
    }

    #[test]
    fn signature_is_left_out_of_the_canonical_query() {
        let query = canonical_query([("b", "2"), ("Signature", "x"), ("a", "1")]);
        assert_eq!(query, "a=1&b=2");
    }
}
