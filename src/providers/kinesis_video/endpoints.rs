//! The endpoints of a KVS stream. PLAYBACK: an HLS (default) or DASH streaming session URL,
//! LIVE unless the caller asks for LIVE_REPLAY or ON_DEMAND, expiring after the requested
//! lifetime (KVS `Expires`: 300 s to 12 h). INGEST: the PUT_MEDIA data endpoint, which a
//! producer calls with PutMedia, signed with SigV4 — the gateway signs nothing for it.

use std::time::Duration;

use crate::domain::{Endpoint, EndpointProtocol, EndpointPurpose, EndpointSupport, now_ms};
use crate::error::{Error, Kind, Result};

/// The longest session KVS gives (`Expires` at most 43,200 s).
pub(super) const MAX_LIFETIME: Duration = Duration::from_secs(43_200);
/// The shortest (`Expires` at least 300 s).
const MIN_LIFETIME: Duration = Duration::from_secs(300);

/// Playback over HLS (the default) or DASH; ingest with PutMedia.
pub(super) fn support() -> Vec<EndpointSupport> {
    vec![
        EndpointSupport {
            purpose: EndpointPurpose::Playback,
            protocols: vec![EndpointProtocol::Hls, EndpointProtocol::Dash],
        },
        EndpointSupport {
            purpose: EndpointPurpose::Ingest,
            protocols: vec![EndpointProtocol::PutMedia],
        },
    ]
}

/// KVS's own bound on a session's lifetime, below the capability's maximum.
pub(super) fn check_lifetime(lifetime: Duration) -> Result<i32> {
    if lifetime < MIN_LIFETIME {
        return Err(Error::invalid_field(
            "lifetime",
            format!(
                "at least {}s for kinesis-video playback (KVS Expires)",
                MIN_LIFETIME.as_secs()
            ),
        ));
    }
    Ok(lifetime.as_secs().min(MAX_LIFETIME.as_secs()) as i32)
}

/// FAILED_PRECONDITION unless the stream retains data: KVS plays back only stored media.
pub(super) fn check_retention(provider: &str, stream: &str, retention_hours: i32) -> Result<()> {
    if retention_hours > 0 {
        return Ok(());
    }
    Err(Error::new(
        Kind::StreamNotPlayable,
        format!(
            "stream {stream} retains no data (DataRetentionInHours 0): KVS serves HLS and DASH \
             only from stored media; raise its data_retention_hours"
        ),
    )
    .with_provider(provider))
}

/// A playback session URL as an endpoint.
pub(super) fn playback(protocol: EndpointProtocol, uri: String, lifetime_s: i32) -> Endpoint {
    Endpoint {
        purpose: EndpointPurpose::Playback,
        protocol,
        uri,
        expire_time_ms: Some(now_ms() + i64::from(lifetime_s) * 1000),
        client_requirements: String::new(),
    }
}

/// The PutMedia endpoint of the stream `arn` in `region`.
pub(super) fn ingest(data_endpoint: &str, arn: &str, region: &str) -> Endpoint {
    Endpoint {
        purpose: EndpointPurpose::Ingest,
        protocol: EndpointProtocol::PutMedia,
        uri: data_endpoint.to_string(),
        expire_time_ms: None,
        client_requirements: format!(
            "sign with SigV4 (service kinesisvideo, region {region}) as PutMedia requires: \
             POST {data_endpoint}/putMedia with x-amzn-stream-arn: {arn}"
        ),
    }
}
