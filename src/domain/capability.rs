//! What a provider kind supports, the endpoints it gives included, and the stream ids it takes.
//! Dispatch checks it before calling an adapter; callers read it through ProviderService. No
//! shared test suite is gated on it yet.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::endpoint::EndpointSupport;

/// A StreamService method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Method {
    /// CreateStream.
    CreateStream,
    /// GetStream.
    GetStream,
    /// ListStreams.
    ListStreams,
    /// UpdateStream.
    UpdateStream,
    /// DeleteStream.
    DeleteStream,
    /// BatchDeleteStreams.
    BatchDeleteStreams,
    /// WatchStream.
    WatchStream,
    /// GetStreamEndpoints: supported only where the kind also declares endpoints.
    GetStreamEndpoints,
}

impl Method {
    /// Every method, in the order the API declares them.
    pub const ALL: [Method; 8] = [
        Method::CreateStream,
        Method::GetStream,
        Method::ListStreams,
        Method::UpdateStream,
        Method::DeleteStream,
        Method::BatchDeleteStreams,
        Method::WatchStream,
        Method::GetStreamEndpoints,
    ];

    /// The method's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::CreateStream => "CreateStream",
            Method::GetStream => "GetStream",
            Method::ListStreams => "ListStreams",
            Method::UpdateStream => "UpdateStream",
            Method::DeleteStream => "DeleteStream",
            Method::BatchDeleteStreams => "BatchDeleteStreams",
            Method::WatchStream => "WatchStream",
            Method::GetStreamEndpoints => "GetStreamEndpoints",
        }
    }

    /// Parses a method's API name.
    pub fn parse(text: &str) -> Option<Self> {
        Method::ALL.into_iter().find(|m| m.as_str() == text)
    }
}

/// The capability of one provider instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capability {
    /// Supported methods.
    pub methods: Vec<Method>,
    /// Whether etags guard update and delete.
    pub etags: bool,
    /// The most names per BatchDeleteStreams call.
    pub max_batch_size: usize,
    /// Accepted ListStreams filter terms.
    pub list_filters: Vec<&'static str>,
    /// The parent pattern of streams.
    pub stream_parent_pattern: &'static str,
    /// The stream ids the kind takes; a name whose id does not match is refused when parsed.
    pub stream_id_pattern: IdPattern,
    /// Whether the provider assigns a new stream's id (CreateStream's `stream_id` is then not
    /// the stream's id, and is not held to the pattern).
    pub assigns_stream_ids: bool,
    /// The longest retention in hours.
    pub max_data_retention_hours: i32,
    /// The most tags per stream.
    pub max_tags: usize,
    /// The largest ListStreams page.
    pub max_page_size: usize,
    /// The endpoints GetStreamEndpoints gives, per purpose; empty: none.
    pub endpoints: Vec<EndpointSupport>,
    /// The longest lifetime GetStreamEndpoints accepts.
    pub max_endpoint_lifetime: Duration,
}

impl Capability {
    /// Whether `method` is supported. GetStreamEndpoints needs declared endpoints too, so a
    /// kind that lists every method but serves no endpoint does not claim it.
    pub fn supports(&self, method: Method) -> bool {
        self.methods.contains(&method)
            && (method != Method::GetStreamEndpoints || !self.endpoints.is_empty())
    }

    /// The supported methods, in the order the API declares them.
    pub fn supported_methods(&self) -> impl Iterator<Item = Method> + '_ {
        self.methods.iter().copied().filter(|m| self.supports(*m))
    }

    /// Checks the id of a stream name or of a stream to create against the kind's pattern;
    /// the error is a violation's description.
    pub fn check_stream_id(&self, id: &str) -> std::result::Result<(), String> {
        if self.stream_id_pattern.matches(id) {
            Ok(())
        } else {
            Err(format!(
                "this provider's stream ids match {}",
                self.stream_id_pattern.regex()
            ))
        }
    }
}

/// The characters of a kind's stream ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdChars {
    /// `[a-zA-Z0-9_.-]`: ASCII letters, digits, `_`, `.` and `-`.
    Name,
    /// `[A-Z0-9]`: upper-case ASCII letters and digits.
    UpperAlphanumeric,
}

impl IdChars {
    fn contains(self, b: u8) -> bool {
        match self {
            IdChars::Name => b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'),
            IdChars::UpperAlphanumeric => b.is_ascii_uppercase() || b.is_ascii_digit(),
        }
    }

    fn class(self) -> &'static str {
        match self {
            IdChars::Name => "[a-zA-Z0-9_.-]",
            IdChars::UpperAlphanumeric => "[A-Z0-9]",
        }
    }
}

/// A kind's stream id pattern: 1 to `max_len` characters of one set. It is data rather than a
/// regular expression so that the check and the expression advertised to callers
/// ([`IdPattern::regex`]) cannot disagree, and a check costs one pass over the id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdPattern {
    chars: IdChars,
    max_len: usize,
}

impl IdPattern {
    /// 1 to `max_len` characters of `chars`.
    pub const fn new(chars: IdChars, max_len: usize) -> Self {
        IdPattern { chars, max_len }
    }

    /// The longest id.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Whether `id` matches the whole pattern.
    pub fn matches(&self, id: &str) -> bool {
        (1..=self.max_len).contains(&id.len()) && id.bytes().all(|b| self.chars.contains(b))
    }

    /// The pattern as a regular expression matching whole ids, e.g. `[A-Z0-9]{1,256}`.
    pub fn regex(&self) -> String {
        format!("{}{{1,{}}}", self.chars.class(), self.max_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_patterns_match_whole_ids_of_their_set_and_length() {
        let name = IdPattern::new(IdChars::Name, 8);
        assert_eq!(name.regex(), "[a-zA-Z0-9_.-]{1,8}");
        for good in ["a", "cam-1_x.", "Y2345678"] {
            assert!(name.matches(good), "{good:?}");
        }
        for bad in ["", "123456789", "a b", "a/b", "a,b", "é", "a\n"] {
            assert!(!name.matches(bad), "{bad:?}");
        }
        let upper = IdPattern::new(IdChars::UpperAlphanumeric, 256);
        assert_eq!(upper.regex(), "[A-Z0-9]{1,256}");
        assert!(upper.matches("E2QWRUHAPOMQZL"));
        for bad in ["e2qwruhapomqzl", "E-1", "vod-edge", "E.", ""] {
            assert!(!upper.matches(bad), "{bad:?}");
        }
        assert!(!upper.matches(&"E".repeat(257)));
    }
}
