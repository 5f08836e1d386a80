//! The endpoints of a `local` stream: placeholders a client can be developed against, under the
//! `local://` scheme, which nothing serves (docs/providers.md). Their shape is that of a real
//! kind's: one URI per purpose and protocol, an expiry from the requested lifetime, written
//! into the URI as `expires` (seconds since the epoch) the way signed URLs carry it.

use std::time::Duration;

use crate::domain::{
    Endpoint, EndpointProtocol, EndpointPurpose, EndpointSupport, EndpointsRequest, StreamName,
    now_ms,
};
use crate::error::{Error, Result};

/// The longest lifetime, as `kinesis-video`'s (12 h), the strictest kind.
pub(super) const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// What it tells the client.
const REQUIREMENTS: &str = "a placeholder: nothing serves local:// URIs; develop against its shape, \
     then point the client at a cloud kind";

/// Playback over HLS (the default), DASH or MP4; ingest over RTMP.
pub(super) fn support() -> Vec<EndpointSupport> {
    vec![
        EndpointSupport {
            purpose: EndpointPurpose::Playback,
            protocols: vec![
                EndpointProtocol::Hls,
                EndpointProtocol::Dash,
                EndpointProtocol::Mp4,
            ],
        },
        EndpointSupport {
            purpose: EndpointPurpose::Ingest,
            protocols: vec![EndpointProtocol::Rtmp],
        },
    ]
}

/// The placeholder endpoints of `name`, for a stream known to exist.
pub(super) fn endpoints(name: &StreamName, request: &EndpointsRequest) -> Result<Vec<Endpoint>> {
    let expire_ms = now_ms() + request.lifetime.as_millis() as i64;
    let support = support();
    request
        .purposes
        .iter()
        .map(|&purpose| {
            let protocol = request
                .protocol_for(&support, purpose)
                .ok_or_else(|| Error::internal("local: a purpose without a protocol"))?;
            let file = match protocol {
                EndpointProtocol::Hls => "index.m3u8",
                EndpointProtocol::Dash => "manifest.mpd",
                EndpointProtocol::Mp4 => "video.mp4",
                EndpointProtocol::Rtmp | EndpointProtocol::PutMedia => "ingest",
            };
            Ok(Endpoint {
                purpose,
                protocol,
                uri: format!(
                    "local://{}/streams/{}/{file}?expires={}",
                    name.provider,
                    name.stream,
                    expire_ms / 1000
                ),
                expire_time_ms: Some(expire_ms),
                client_requirements: REQUIREMENTS.to_string(),
            })
        })
        .collect()
}
