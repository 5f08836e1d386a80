//! Stream endpoints: where a producer sends a stream's media and where a player reads it
//! (GetStreamEndpoints, docs/design.md §2). What a caller asks for ([`EndpointsRequest`]), what
//! a kind answers ([`Endpoint`]), what a kind declares it serves ([`EndpointSupport`]). The
//! checks of a request against that declaration are in `validate.rs`. No URI is built here:
//! each adapter builds its own.

use std::time::Duration;

/// The lifetime asked for when the caller gives none (or the kind's maximum, if shorter).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The most purposes one request names (each at most once).
pub const MAX_PURPOSES: usize = 2;
/// The longest CloudFront object path accepted.
pub const MAX_PATH_LEN: usize = 1024;

/// What an endpoint is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointPurpose {
    /// Where a producer sends the media.
    Ingest,
    /// Where a player reads it.
    Playback,
}

impl EndpointPurpose {
    /// The purpose's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointPurpose::Ingest => "INGEST",
            EndpointPurpose::Playback => "PLAYBACK",
        }
    }
}

/// The protocol an endpoint speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EndpointProtocol {
    /// HTTP Live Streaming.
    Hls,
    /// MPEG-DASH.
    Dash,
    /// A progressive MP4 file.
    Mp4,
    /// RTMP.
    Rtmp,
    /// Kinesis Video Streams PutMedia over HTTPS.
    PutMedia,
}

impl EndpointProtocol {
    /// The protocol's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointProtocol::Hls => "HLS",
            EndpointProtocol::Dash => "DASH",
            EndpointProtocol::Mp4 => "MP4",
            EndpointProtocol::Rtmp => "RTMP",
            EndpointProtocol::PutMedia => "PUT_MEDIA",
        }
    }
}

/// How a Kinesis Video playback session reads the stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PlaybackMode {
    /// The latest media, as it arrives.
    #[default]
    Live,
    /// From a start time on, then live.
    LiveReplay {
        /// Where it starts, ms since the epoch.
        start_ms: i64,
    },
    /// The recorded media of a time range.
    OnDemand {
        /// Where it starts, ms since the epoch.
        start_ms: i64,
        /// Where it ends, ms since the epoch.
        end_ms: i64,
    },
}

/// A CloudFront custom policy's conditions besides the expiry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CustomPolicy {
    /// Only clients from this IPv4 range (CIDR).
    pub ip_range: Option<String>,
    /// Not valid before this time, ms since the epoch.
    pub start_ms: Option<i64>,
}

impl CustomPolicy {
    /// Whether any condition is set (else a canned policy serves).
    pub fn is_empty(&self) -> bool {
        self.ip_range.is_none() && self.start_ms.is_none()
    }
}

/// The CloudFront object of a playback endpoint and how to sign it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudFrontTarget {
    /// The object's path on the distribution, without a leading `/`.
    pub path: String,
    /// Whether the caller requires a signed URL.
    pub signed: bool,
    /// Custom policy conditions; empty: a canned policy.
    pub policy: CustomPolicy,
}

/// One GetStreamEndpoints request, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointsRequest {
    /// The endpoints wanted, in request order, each once.
    pub purposes: Vec<EndpointPurpose>,
    /// The protocol asked for; `None`: the kind's default for each purpose.
    pub protocol: Option<EndpointProtocol>,
    /// How long the endpoints should stay valid (within the kind's maximum).
    pub lifetime: Duration,
    /// KVS playback mode.
    pub playback: PlaybackMode,
    /// CloudFront: the object and its policy.
    pub cloudfront: Option<CloudFrontTarget>,
}

impl EndpointsRequest {
    /// The protocol to serve `purpose` with: the one asked for, or the kind's default.
    pub fn protocol_for(
        &self,
        support: &[EndpointSupport],
        purpose: EndpointPurpose,
    ) -> Option<EndpointProtocol> {
        self.protocol.or_else(|| {
            support
                .iter()
                .find(|s| s.purpose == purpose)
                .and_then(|s| s.protocols.first().copied())
        })
    }
}

/// One place to send or read a stream's media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// What it is for.
    pub purpose: EndpointPurpose,
    /// The protocol it speaks.
    pub protocol: EndpointProtocol,
    /// The URI.
    pub uri: String,
    /// When it stops working, ms since the epoch; `None` if it does not expire.
    pub expire_time_ms: Option<i64>,
    /// What the client must add to use it, or empty.
    pub client_requirements: String,
}

/// The protocols a kind serves for one purpose; the first is the default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSupport {
    /// The purpose.
    pub purpose: EndpointPurpose,
    /// Its protocols, the default first.
    pub protocols: Vec<EndpointProtocol>,
}
