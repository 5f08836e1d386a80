//! Resource names (docs/design.md §2): `providers/{provider}`,
//! `providers/{provider}/streams/{stream}`, `providers/{provider}/videos/{video}/streams/{stream}`
//! and `operations/{operation}`. Parsing checks the form and the segments' characters; the
//! provider's own limits (e.g. a shorter id) are checked by its capability.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The longest stream, video or provider segment any kind allows.
pub const MAX_SEGMENT_LEN: usize = 256;
/// The longest provider instance id.
pub const MAX_PROVIDER_ID_LEN: usize = 63;

/// `providers/{provider}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProviderName(pub String);

/// A stream's parent: a provider, or a VOD video of a provider.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ParentName {
    /// The provider instance id.
    pub provider: String,
    /// The VOD video id, for `aliyun-vod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<String>,
}

/// A stream's full name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamName {
    /// The provider instance id.
    pub provider: String,
    /// The VOD video id, for `aliyun-vod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<String>,
    /// The stream id (KVS StreamName, distribution Id, VOD JobId, local stream_id).
    pub stream: String,
}

/// `operations/{operation}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OperationName(pub String);

/// Checks a provider instance id: `[a-z][a-z0-9-]*`, at most 63 characters.
pub fn check_provider_id(id: &str) -> std::result::Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= MAX_PROVIDER_ID_LEN
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "provider id must be 1-{MAX_PROVIDER_ID_LEN} characters of [a-z0-9-], starting with a letter"
        ))
    }
}

/// Checks a stream or video id: 1-256 characters of `[a-zA-Z0-9_.-]`, the set every kind
/// accepts, not made only of dots (`.` and `..` are paths, not ids, to a provider's URL).
pub fn check_segment(id: &str, what: &str) -> std::result::Result<(), String> {
    let valid = !id.is_empty()
        && id.len() <= MAX_SEGMENT_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !valid {
        Err(format!(
            "{what} must be 1-{MAX_SEGMENT_LEN} characters of [a-zA-Z0-9_.-]"
        ))
    } else if id.bytes().all(|b| b == b'.') {
        Err(format!("{what} must not be made only of dots"))
    } else {
        Ok(())
    }
}

fn invalid(field: &str, value: &str, form: &str) -> Error {
    let shown: String = value.chars().take(80).collect();
    let shown = if shown.len() < value.len() {
        format!("{shown}…")
    } else {
        shown
    };
    Error::invalid_field(field, format!("{shown:?} is not of the form {form}"))
}

impl ProviderName {
    /// Parses `providers/{provider}`; `field` names the request field in errors.
    pub fn parse(value: &str, field: &str) -> Result<Self> {
        let form = "providers/{provider}";
        match value.split('/').collect::<Vec<_>>().as_slice() {
            ["providers", id] => check_provider_id(id)
                .map(|()| ProviderName((*id).to_string()))
                .map_err(|why| Error::invalid_field(field, why)),
            _ => Err(invalid(field, value, form)),
        }
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "providers/{}", self.0)
    }
}

impl ParentName {
    /// Parses `providers/{provider}` or `providers/{provider}/videos/{video}`.
    pub fn parse(value: &str, field: &str) -> Result<Self> {
        let form = "providers/{provider} or providers/{provider}/videos/{video}";
        let (provider, video) = match value.split('/').collect::<Vec<_>>().as_slice() {
            ["providers", p] => (*p, None),
            ["providers", p, "videos", v] => (*p, Some(*v)),
            _ => return Err(invalid(field, value, form)),
        };
        check_provider_id(provider).map_err(|why| Error::invalid_field(field, why))?;
        if let Some(video) = video {
            check_segment(video, "video id").map_err(|why| Error::invalid_field(field, why))?;
        }
        Ok(ParentName {
            provider: provider.to_string(),
            video: video.map(str::to_string),
        })
    }

    /// Whether `name` lies under this parent: the same provider, and the same video when the
    /// parent names one.
    pub fn contains(&self, name: &StreamName) -> bool {
        self.provider == name.provider && (self.video.is_none() || self.video == name.video)
    }

    /// The stream name of `stream` under this parent.
    pub fn child(&self, stream: &str) -> StreamName {
        StreamName {
            provider: self.provider.clone(),
            video: self.video.clone(),
            stream: stream.to_string(),
        }
    }
}

impl fmt::Display for ParentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "providers/{}", self.provider)?;
        if let Some(video) = &self.video {
            write!(f, "/videos/{video}")?;
        }
        Ok(())
    }
}

impl StreamName {
    /// Parses `providers/{p}/streams/{s}` or `providers/{p}/videos/{v}/streams/{s}`.
    pub fn parse(value: &str, field: &str) -> Result<Self> {
        let form = "providers/{provider}/streams/{stream} or providers/{provider}/videos/{video}/streams/{stream}";
        let (provider, video, stream) = match value.split('/').collect::<Vec<_>>().as_slice() {
            ["providers", p, "streams", s] => (*p, None, *s),
            ["providers", p, "videos", v, "streams", s] => (*p, Some(*v), *s),
            _ => return Err(invalid(field, value, form)),
        };
        check_provider_id(provider).map_err(|why| Error::invalid_field(field, why))?;
        if let Some(video) = video {
            check_segment(video, "video id").map_err(|why| Error::invalid_field(field, why))?;
        }
        check_segment(stream, "stream id").map_err(|why| Error::invalid_field(field, why))?;
        Ok(StreamName {
            provider: provider.to_string(),
            video: video.map(str::to_string),
            stream: stream.to_string(),
        })
    }

    /// The parent of this stream.
    pub fn parent(&self) -> ParentName {
        ParentName {
            provider: self.provider.clone(),
            video: self.video.clone(),
        }
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/streams/{}", self.parent(), self.stream)
    }
}

impl OperationName {
    /// Parses `operations/{operation}`.
    pub fn parse(value: &str, field: &str) -> Result<Self> {
        match value.split('/').collect::<Vec<_>>().as_slice() {
            ["operations", id] if check_segment(id, "operation id").is_ok() => {
                Ok(OperationName((*id).to_string()))
            }
            _ => Err(invalid(field, value, "operations/{operation}")),
        }
    }
}

impl fmt::Display for OperationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "operations/{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_names() {
        let name = StreamName::parse("providers/local/streams/cam-1", "name").unwrap();
        assert_eq!(name.provider, "local");
        assert_eq!(name.stream, "cam-1");
        assert_eq!(name.to_string(), "providers/local/streams/cam-1");
        let vod = StreamName::parse("providers/vod/videos/v1/streams/j1", "name").unwrap();
        assert_eq!(vod.video.as_deref(), Some("v1"));
        assert_eq!(vod.parent().to_string(), "providers/vod/videos/v1");
    }

    #[test]
    fn rejects_malformed_names() {
        for bad in [
            "",
            "providers/local",
            "providers//streams/a",
            "providers/Local/streams/a",
            "providers/local/streams/a b",
            "providers/local/streams/",
            "providers/local/streams/a/extra",
            "streams/a",
            "providers/local/streams/.",
            "providers/local/streams/..",
            "providers/vod/videos/../streams/a",
        ] {
            let error = StreamName::parse(bad, "name").unwrap_err();
            assert_eq!(error.violations()[0].field, "name", "{bad:?}");
        }
        let long = format!("providers/local/streams/{}", "a".repeat(257));
        assert!(StreamName::parse(&long, "name").is_err());
    }
}
