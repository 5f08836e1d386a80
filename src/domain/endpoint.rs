//! Stream endpoints: where a producer sends a stream's media and where a player reads it
//! (GetStreamEndpoints, docs/design.md §2). What a caller asks for ([`EndpointsRequest`]), what
//! a kind answers ([`Endpoint`]), what a kind declares it serves ([`EndpointSupport`]), and the
//! checks of a request against that declaration. No URI is built here: each adapter builds its
//! own.

use std::time::Duration;

use super::validate::Violations;

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

/// Checks what the kind cannot serve: an unsupported purpose or protocol, a lifetime beyond
/// `max_lifetime`. Shape checks (purposes given, lifetime > 0) are the handler's.
pub fn check_request(
    request: &EndpointsRequest,
    support: &[EndpointSupport],
    max_lifetime: Duration,
    v: &mut Violations,
) {
    for (i, purpose) in request.purposes.iter().enumerate() {
        let Some(served) = support.iter().find(|s| s.purpose == *purpose) else {
            v.add(
                format!("purposes[{i}]"),
                format!("this provider serves no {} endpoint", purpose.as_str()),
            );
            continue;
        };
        if let Some(protocol) = request.protocol
            && !served.protocols.contains(&protocol)
        {
            v.add(
                "protocol",
                format!(
                    "this provider serves {} over {}, not {}",
                    purpose.as_str(),
                    served
                        .protocols
                        .iter()
                        .map(|p| p.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    protocol.as_str()
                ),
            );
        }
    }
    if request.lifetime > max_lifetime {
        v.add(
            "lifetime",
            format!(
                "at most {}s for this provider, got {}s",
                max_lifetime.as_secs(),
                request.lifetime.as_secs()
            ),
        );
    }
}

/// Checks a CloudFront target's own shape: a path of printable characters without a query or
/// fragment, and an IPv4 CIDR range.
pub fn check_cloudfront(target: &CloudFrontTarget, field: &str, v: &mut Violations) {
    let path = &target.path;
    if path.is_empty() {
        v.add(format!("{field}.path"), "required");
    } else if path.len() > MAX_PATH_LEN {
        v.add(
            format!("{field}.path"),
            format!("at most {MAX_PATH_LEN} bytes, got {}", path.len()),
        );
    } else if path.starts_with('/')
        || path
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '?' | '#'))
    {
        v.add(
            format!("{field}.path"),
            "a path without a leading '/', spaces, control characters, '?' or '#'",
        );
    }
    if let Some(range) = &target.policy.ip_range
        && !is_ipv4_cidr(range)
    {
        v.add(
            format!("{field}.ip_range"),
            "an IPv4 range in CIDR notation, e.g. 192.0.2.0/24",
        );
    }
}

fn is_ipv4_cidr(text: &str) -> bool {
    let Some((address, bits)) = text.split_once('/') else {
        return false;
    };
    address.parse::<std::net::Ipv4Addr>().is_ok()
        && !bits.starts_with('+')
        && bits.parse::<u8>().is_ok_and(|b| b <= 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn support() -> Vec<EndpointSupport> {
        vec![EndpointSupport {
            purpose: EndpointPurpose::Playback,
            protocols: vec![EndpointProtocol::Hls, EndpointProtocol::Dash],
        }]
    }

    fn request(
        purposes: Vec<EndpointPurpose>,
        protocol: Option<EndpointProtocol>,
    ) -> EndpointsRequest {
        EndpointsRequest {
            purposes,
            protocol,
            lifetime: Duration::from_secs(60),
            playback: PlaybackMode::Live,
            cloudfront: None,
        }
    }

    fn fields(request: &EndpointsRequest, max: Duration) -> Vec<String> {
        let mut v = Violations::default();
        check_request(request, &support(), max, &mut v);
        match v.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.violations().iter().map(|f| f.field.clone()).collect(),
        }
    }

    #[test]
    fn cloudfront_targets_need_a_clean_path_and_a_cidr_range() {
        let check = |path: &str, ip_range: Option<&str>| {
            let mut v = Violations::default();
            let target = CloudFrontTarget {
                path: path.to_string(),
                signed: false,
                policy: CustomPolicy {
                    ip_range: ip_range.map(str::to_string),
                    start_ms: None,
                },
            };
            check_cloudfront(&target, "cloudfront", &mut v);
            v.finish()
                .err()
                .map(|e| {
                    e.violations()
                        .iter()
                        .map(|f| f.field.clone())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        assert!(check("live/cam-7/index.m3u8", Some("192.0.2.0/24")).is_empty());
        assert_eq!(check("", None), ["cloudfront.path"]);
        assert_eq!(check("/a", None), ["cloudfront.path"]);
        assert_eq!(check("a?b=1", None), ["cloudfront.path"]);
        assert_eq!(check("a", Some("192.0.2.0")), ["cloudfront.ip_range"]);
        assert_eq!(check("a", Some("192.0.2.0/33")), ["cloudfront.ip_range"]);
    }

    #[test]
    fn the_default_protocol_is_the_first_the_kind_lists() {
        let r = request(vec![EndpointPurpose::Playback], None);
        assert_eq!(
            r.protocol_for(&support(), EndpointPurpose::Playback),
            Some(EndpointProtocol::Hls)
        );
        assert!(fields(&r, Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn unserved_purposes_protocols_and_lifetimes_are_violations() {
        let r = request(
            vec![EndpointPurpose::Ingest, EndpointPurpose::Playback],
            Some(EndpointProtocol::Rtmp),
        );
        assert_eq!(
            fields(&r, Duration::from_secs(59)),
            ["purposes[0]", "protocol", "lifetime"]
        );
    }
}
