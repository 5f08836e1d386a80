//! The playback endpoint of a VOD stream: its PlayURL from GetPlayInfo, asked with
//! `AuthTimeout` = the requested lifetime. The stream's own format is its protocol (`m3u8` →
//! HLS, `mpd` → DASH, `mp4` → MP4). The URL expires only where URL authentication is on for the
//! playback domain — then it carries `auth_key` — and otherwise never.

use std::time::Duration;

use super::core::PlayInfo;
use crate::domain::{
    Endpoint, EndpointProtocol, EndpointPurpose, EndpointSupport, EndpointsRequest, now_ms,
};
use crate::error::{Error, Result};

/// The longest AuthTimeout the gateway asks for: 30 days.
pub(super) const MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Playback over the stream's own format.
pub(super) fn support() -> Vec<EndpointSupport> {
    vec![EndpointSupport {
        purpose: EndpointPurpose::Playback,
        protocols: vec![
            EndpointProtocol::Hls,
            EndpointProtocol::Dash,
            EndpointProtocol::Mp4,
        ],
    }]
}

/// The protocol of a VOD stream format, if it is one a player streams.
fn protocol_of(format: &str) -> Option<EndpointProtocol> {
    match format {
        "m3u8" => Some(EndpointProtocol::Hls),
        "mpd" => Some(EndpointProtocol::Dash),
        "mp4" => Some(EndpointProtocol::Mp4),
        _ => None,
    }
}

/// The playback endpoint of `info`, the stream named `name`.
pub(super) fn playback(
    name: &str,
    info: &PlayInfo,
    request: &EndpointsRequest,
) -> Result<Endpoint> {
    let format = protocol_of(&info.format);
    let protocol = match (request.protocol, format) {
        (Some(asked), Some(format)) if asked == format => asked,
        (None, Some(format)) => format,
        _ => {
            return Err(Error::invalid_field(
                "protocol",
                format!(
                    "stream {name} is in format {:?}; ask for its own protocol (HLS for m3u8, \
                     DASH for mpd, MP4 for mp4) or leave it unspecified",
                    info.format
                ),
            ));
        }
    };
    let signed = info.play_url.contains("auth_key=");
    Ok(Endpoint {
        purpose: EndpointPurpose::Playback,
        protocol,
        uri: info.play_url.clone(),
        expire_time_ms: signed.then(|| now_ms() + request.lifetime.as_millis() as i64),
        client_requirements: String::new(),
    })
}
