//! Paging (AIP-158) and the small filter language of the List methods.
//!
//! Page tokens are opaque to callers and made by [`PageTokens`] only: the position (an
//! adapter's key, the provider's native token, a store position) and a digest of the query
//! (the method, its parent and filter), then an HMAC-SHA256 over both and the caller's
//! principal with a per-deployment key. A token altered, made up, or replayed by another
//! principal is refused, and one replayed with another parent or filter says so; the page
//! size may change between pages (AIP-158).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::stream::StreamState;
use crate::error::{Error, Kind, Result};

/// The page size used when a caller sends 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest page any List method returns; larger requests are reduced to it.
pub const MAX_PAGE_SIZE: usize = 1000;
/// The longest filter accepted.
pub const MAX_FILTER_LEN: usize = 1024;
/// The longest page token accepted.
pub const MAX_PAGE_TOKEN_LEN: usize = 4096;

/// What a page token holds besides its tag.
#[derive(Serialize, Deserialize)]
struct Position {
    #[serde(rename = "p")]
    position: String,
    #[serde(rename = "q")]
    query: String,
}

fn digest(query_parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in query_parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..8])
}

/// Makes and checks the page tokens of every List method with the deployment's key.
#[derive(Clone)]
pub struct PageTokens {
    // Keyed once; each token's tag starts from a clone.
    mac: Hmac<Sha256>,
    // Whether the key came from the configuration (the same in every replica) or was drawn
    // by this process.
    configured: bool,
}

impl std::fmt::Debug for PageTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageTokens")
            .field("configured", &self.configured)
            .finish_non_exhaustive()
    }
}

fn refused(why: &str) -> Error {
    Error::new(Kind::InvalidPageToken, format!("invalid page_token: {why}"))
        .with_violation("page_token", why)
}

impl PageTokens {
    /// Signs with `key` (every replica given the same key accepts the others' tokens).
    pub fn with_key(key: &[u8]) -> Self {
        PageTokens {
            mac: Hmac::new_from_slice(key).expect("HMAC takes keys of any length"),
            configured: true,
        }
    }

    /// Signs with a key drawn by this process: its tokens are good in this process only.
    pub fn with_random_key() -> Self {
        PageTokens {
            configured: false,
            ..PageTokens::with_key(&rand::random::<[u8; 32]>())
        }
    }

    /// Whether the key came from the configuration.
    pub fn configured(&self) -> bool {
        self.configured
    }

    fn tag(&self, principal: &str, payload: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(b"streamgate page token\0");
        mac.update(principal.as_bytes());
        mac.update(b"\0");
        mac.update(payload.as_bytes());
        mac
    }

    /// The token of `position` in the query made of `query_parts` (method, parent, filter),
    /// for `principal`.
    pub fn encode(&self, position: &str, principal: &str, query_parts: &[&str]) -> String {
        let record = Position {
            position: position.to_string(),
            query: digest(query_parts),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&record).unwrap_or_default());
        let tag = self.tag(principal, &payload).finalize().into_bytes();
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The position of a caller's token; an empty token is the first page (`None`).
    /// INVALID_ARGUMENT (reason INVALID_PAGE_TOKEN) unless this gateway made the token for
    /// `principal` and this query.
    pub fn decode(
        &self,
        token: &str,
        principal: &str,
        query_parts: &[&str],
    ) -> Result<Option<String>> {
        if token.is_empty() {
            return Ok(None);
        }
        let foreign = || {
            refused(
                "not a page token this gateway gave this caller (altered, made up, from another \
                 caller, or from before a restart); start again without one",
            )
        };
        if token.len() > MAX_PAGE_TOKEN_LEN {
            return Err(foreign());
        }
        let (payload, tag) = token.split_once('.').ok_or_else(foreign)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| foreign())?;
        self.tag(principal, payload)
            .verify_slice(&tag)
            .map_err(|_| foreign())?;
        let record: Position = URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(foreign)?;
        if record.query != digest(query_parts) {
            return Err(refused(
                "the token belongs to a request with another parent or filter",
            ));
        }
        Ok(Some(record.position))
    }
}

/// Checks a caller's page_size and applies the default and the maximum.
pub fn page_size(requested: i32, max: usize) -> Result<usize> {
    match requested {
        n if n < 0 => Err(Error::invalid_field("page_size", "must not be negative")),
        0 => Ok(DEFAULT_PAGE_SIZE.min(max)),
        n => Ok((n as usize).min(max)),
    }
}

/// Splits a filter into `(key, value)` terms: `key = value` joined by ` AND `; values may be
/// double-quoted. Every key must be one of `allowed`.
pub fn parse_filter(filter: &str, allowed: &[&str]) -> Result<Vec<(String, String)>> {
    let invalid = |why: String| Error::invalid_field("filter", why);
    if filter.len() > MAX_FILTER_LEN {
        return Err(invalid(format!("longer than {MAX_FILTER_LEN} characters")));
    }
    if filter.trim().is_empty() {
        return Ok(Vec::new());
    }
    filter
        .split(" AND ")
        .map(|term| {
            let (key, value) = term.split_once('=').ok_or_else(|| {
                invalid(format!("{:?} is not of the form key = value", term.trim()))
            })?;
            let key = key.trim();
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            if !allowed.contains(&key) {
                return Err(invalid(format!(
                    "unknown term {key:?}; accepted: {}",
                    allowed.join(", ")
                )));
            }
            Ok((key.to_string(), value.to_string()))
        })
        .collect()
}

/// A ListStreams query after validation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// At most this many streams.
    pub page_size: usize,
    /// Where the previous page ended, as the adapter encoded it.
    pub position: Option<String>,
    /// Only streams whose id starts with this.
    pub stream_id_prefix: Option<String>,
    /// Only streams in this state.
    pub state: Option<StreamState>,
}

impl ListQuery {
    /// Builds the stream filter from parsed terms (keys already checked against the capability).
    pub fn with_filter(mut self, terms: Vec<(String, String)>) -> Result<Self> {
        for (key, value) in terms {
            match key.as_str() {
                "stream_id_prefix" => self.stream_id_prefix = Some(value),
                "state" => {
                    self.state = Some(StreamState::parse(&value).ok_or_else(|| {
                        Error::invalid_field("filter", format!("unknown state {value:?}"))
                    })?)
                }
                other => {
                    return Err(Error::invalid_field(
                        "filter",
                        format!("unknown term {other:?}"),
                    ));
                }
            }
        }
        Ok(self)
    }
}

/// One page of results.
#[derive(Clone, Debug, PartialEq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Where the next page starts (adapter-encoded), if there is one.
    pub next: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<Option<String>>) -> String {
        let error = result.unwrap_err();
        assert_eq!(error.kind(), Kind::InvalidPageToken);
        assert_eq!(error.violations()[0].field, "page_token");
        error.message().to_string()
    }

    #[test]
    fn tokens_are_bound_to_their_caller_and_query_and_key() {
        let tokens = PageTokens::with_key(&[7; 32]);
        let query = ["streams", "providers/local", ""];
        let token = tokens.encode("cam-9", "ops", &query);
        assert_eq!(
            tokens.decode(&token, "ops", &query).unwrap(),
            Some("cam-9".to_string())
        );
        assert_eq!(tokens.decode("", "ops", &query).unwrap(), None);
        let other_filter = ["streams", "providers/local", "state = ACTIVE"];
        assert!(reason(tokens.decode(&token, "ops", &other_filter)).contains("another parent"));
        let foreign = reason(tokens.decode(&token, "reader", &query));
        assert!(foreign.contains("not a page token"), "{foreign}");
        assert_eq!(reason(tokens.decode("garbage!", "ops", &query)), foreign);
        // Another position under the same tag: refused.
        let (_, tag) = token.split_once('.').unwrap();
        let forged = Position {
            position: "cam-0".into(),
            query: digest(&query),
        };
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            reason(tokens.decode(&format!("{payload}.{tag}"), "ops", &query)),
            foreign
        );
        // Another deployment's key, or another process's drawn one: refused.
        assert_eq!(
            reason(PageTokens::with_key(&[8; 32]).decode(&token, "ops", &query)),
            foreign
        );
        assert_eq!(
            reason(PageTokens::with_random_key().decode(&token, "ops", &query)),
            foreign
        );
        assert!(!format!("{tokens:?}").contains("7, 7"));
    }

    #[test]
    fn filters_parse_and_reject_unknown_terms() {
        let terms = parse_filter(
            r#"stream_id_prefix = "cam-" AND state=ACTIVE"#,
            &["stream_id_prefix", "state"],
        )
        .unwrap();
        assert_eq!(terms[0], ("stream_id_prefix".into(), "cam-".into()));
        assert_eq!(terms[1], ("state".into(), "ACTIVE".into()));
        assert!(parse_filter("owner = me", &["state"]).is_err());
        assert!(parse_filter("nonsense", &["state"]).is_err());
    }

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page_size(0, 1000).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(5000, 1000).unwrap(), 1000);
        assert!(page_size(-1, 1000).is_err());
    }
}
