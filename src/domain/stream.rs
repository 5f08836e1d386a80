//! The neutral stream: what every provider kind maps its native resource to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::names::StreamName;

/// The lifecycle state of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamState {
    /// The provider is creating it.
    Creating,
    /// Ready.
    Active,
    /// A change is being applied.
    Updating,
    /// Exists but does not serve.
    Disabled,
    /// Being deleted.
    Deleting,
}

impl StreamState {
    /// The stable text form, used in filters and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Creating => "CREATING",
            StreamState::Active => "ACTIVE",
            StreamState::Updating => "UPDATING",
            StreamState::Disabled => "DISABLED",
            StreamState::Deleting => "DELETING",
        }
    }

    /// Parses the text form; the `STATE_` prefix of the protobuf enum is accepted too.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.strip_prefix("STATE_").unwrap_or(text);
        [
            StreamState::Creating,
            StreamState::Active,
            StreamState::Updating,
            StreamState::Disabled,
            StreamState::Deleting,
        ]
        .into_iter()
        .find(|state| state.as_str().eq_ignore_ascii_case(text))
    }
}

/// Details only one provider kind has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum StreamDetails {
    /// Nothing beyond the neutral fields.
    #[default]
    None,
    /// The embedded provider's version counter.
    Local {
        /// How many times the stream has changed.
        version: i64,
    },
    /// A media stream of an ApsaraVideo VOD video (boxed: most streams are of other kinds).
    AliyunVod(Box<AliyunVodDetails>),
    /// A CloudFront distribution (kinds `cloudfront` and `cloudfront-streaming`).
    CloudFront(Box<CloudFrontDetails>),
}

/// What GetPlayInfo says about a VOD media stream beyond the neutral fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliyunVodDetails {
    /// The VideoId.
    pub video_id: String,
    /// The quality (LD, SD, HD, ...).
    pub definition: String,
    /// The container format (mp4, m3u8, ...).
    pub format: String,
    /// `video` or `audio`.
    pub stream_type: String,
    /// `Normal` or `Invisible`.
    pub status: String,
}

/// What a CloudFront distribution has beyond the neutral fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudFrontDetails {
    /// The distribution's domain name (`d111111abcdef8.cloudfront.net`).
    pub domain_name: String,
    /// Whether it serves viewers.
    pub enabled: bool,
    /// Its comment.
    pub comment: String,
    /// `InProgress` or `Deployed`.
    pub status: String,
    /// Where it fetches content.
    pub origin: Option<CloudFrontOrigin>,
}

/// The origin of a CloudFront distribution.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudFrontOrigin {
    /// An S3 bucket (true) or a custom HTTP origin (false).
    pub s3: bool,
    /// The origin's domain name.
    pub domain_name: String,
    /// The path prefix added to origin requests.
    pub origin_path: String,
    /// S3: the origin access identity, or empty.
    pub origin_access_identity: String,
    /// Custom: `http-only`, `match-viewer` or `https-only`; empty means `https-only`.
    pub origin_protocol_policy: String,
}

/// A stream as a provider reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// The full name.
    pub name: StreamName,
    /// Changes on every change of the stream.
    pub etag: String,
    /// The lifecycle state.
    pub state: StreamState,
    /// The settable fields.
    pub spec: StreamSpec,
    /// Creation time, ms since the epoch.
    pub create_time_ms: i64,
    /// Last change, ms since the epoch.
    pub update_time_ms: i64,
    /// The provider's own id (ARN, JobId, ...).
    pub provider_uid: String,
    /// Provider-specific details.
    pub details: StreamDetails,
}

/// The fields a caller sets at creation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSpec {
    /// e.g. `video/h264`.
    pub media_type: String,
    /// 0 = no persistence.
    pub data_retention_hours: i32,
    /// The writing device.
    pub device_name: String,
    /// The KMS key id.
    pub kms_key_id: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Provider-specific fields of the new stream (e.g. a CloudFront origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Box<StreamDetails>>,
}

/// The fields an update changes; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPatch {
    /// New media type.
    pub media_type: Option<String>,
    /// New device name.
    pub device_name: Option<String>,
    /// New retention.
    pub data_retention_hours: Option<i32>,
    /// The new, complete tag set.
    pub tags: Option<BTreeMap<String, String>>,
    /// CloudFront: enable or disable the distribution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// CloudFront: the new comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

impl StreamPatch {
    /// Whether the patch changes any neutral field (media type, device, retention, tags).
    pub fn has_neutral_fields(&self) -> bool {
        self.media_type.is_some()
            || self.device_name.is_some()
            || self.data_retention_hours.is_some()
            || self.tags.is_some()
    }

    /// Whether the patch changes a CloudFront field (enabled, comment).
    pub fn has_cloudfront_fields(&self) -> bool {
        self.enabled.is_some() || self.comment.is_some()
    }

    /// Applies the patch to a spec.
    pub fn apply(&self, spec: &mut StreamSpec) {
        if let Some(v) = &self.media_type {
            spec.media_type = v.clone();
        }
        if let Some(v) = &self.device_name {
            spec.device_name = v.clone();
        }
        if let Some(v) = self.data_retention_hours {
            spec.data_retention_hours = v;
        }
        if let Some(v) = &self.tags {
            spec.tags = v.clone();
        }
    }
}
