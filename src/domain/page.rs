//! Paging (AIP-158) and the small filter language of the List methods.
//!
//! Page tokens are opaque to callers: base64url of a JSON record holding the position (an
//! adapter's key or the provider's native token) and a digest of the query it belongs to, so
//! a token replayed with another parent or filter is refused.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::stream::StreamState;
use crate::error::{Error, Result};

/// The page size used when a caller sends 0.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest page any List method returns; larger requests are reduced to it.
pub const MAX_PAGE_SIZE: usize = 1000;
/// The longest filter accepted.
pub const MAX_FILTER_LEN: usize = 1024;

/// A decoded page token.
#[derive(Debug, Serialize, Deserialize)]
pub struct PageToken {
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

impl PageToken {
    /// Encodes `position` for a query made of `query_parts` (parent, filter, ...).
    pub fn encode(position: &str, query_parts: &[&str]) -> String {
        let token = PageToken {
            position: position.to_string(),
            query: digest(query_parts),
        };
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default())
    }

    /// Decodes a caller's token; an empty token is the first page (`None`).
    pub fn decode(token: &str, query_parts: &[&str]) -> Result<Option<String>> {
        if token.is_empty() {
            return Ok(None);
        }
        let invalid = || Error::invalid_field("page_token", "not a page token of this query");
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
        let token: PageToken = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if token.query != digest(query_parts) {
            return Err(Error::invalid_field(
                "page_token",
                "the token belongs to a request with another parent or filter",
            ));
        }
        Ok(Some(token.position))
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

    #[test]
    fn tokens_are_bound_to_their_query() {
        let token = PageToken::encode("cam-9", &["providers/local", ""]);
        assert_eq!(
            PageToken::decode(&token, &["providers/local", ""]).unwrap(),
            Some("cam-9".to_string())
        );
        assert!(PageToken::decode(&token, &["providers/local", "state = ACTIVE"]).is_err());
        assert!(PageToken::decode("garbage!", &["providers/local", ""]).is_err());
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
