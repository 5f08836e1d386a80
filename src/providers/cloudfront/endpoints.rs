//! The playback endpoints of both CloudFront kinds: `https://{domain}/{path}` on a web
//! distribution, `rtmp://{domain}/cfx/st/{path}` on a streaming one, the path given by the
//! caller. With the instance's key pair configured, every URL is signed ([`UrlSigner`]): a
//! canned policy, or a custom one when the caller sets an IP range or a start time. Without
//! it, a caller that asks for a signed URL gets FAILED_PRECONDITION / SIGNING_KEY_NOT_CONFIGURED.

use std::time::Duration;

use super::Variant;
use super::signer::UrlSigner;
use crate::domain::{
    CloudFrontTarget, Endpoint, EndpointProtocol, EndpointPurpose, EndpointSupport,
    EndpointsRequest, now_ms,
};
use crate::error::{Error, Kind, Result};

/// The longest lifetime of a signed URL the gateway gives (CloudFront sets none): 7 days.
pub(super) const MAX_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// Web distributions play HLS (the default), DASH or MP4; streaming ones RTMP.
pub(super) fn support(variant: Variant) -> Vec<EndpointSupport> {
    let protocols = match variant {
        Variant::Web => vec![
            EndpointProtocol::Hls,
            EndpointProtocol::Dash,
            EndpointProtocol::Mp4,
        ],
        Variant::Streaming => vec![EndpointProtocol::Rtmp],
    };
    vec![EndpointSupport {
        purpose: EndpointPurpose::Playback,
        protocols,
    }]
}

/// The caller's target, checked before any provider call: a path is required, and a signed
/// URL needs a key pair.
pub(super) fn target<'a>(
    provider: &str,
    signer: Option<&UrlSigner>,
    request: &'a EndpointsRequest,
) -> Result<&'a CloudFrontTarget> {
    let target = request
        .cloudfront
        .as_ref()
        .ok_or_else(|| Error::invalid_field("cloudfront.path", "required"))?;
    if signer.is_none() && (target.signed || !target.policy.is_empty()) {
        return Err(Error::new(
            Kind::SigningKeyNotConfigured,
            format!(
                "providers/{provider} has no signing key pair (signing_key_id), so it cannot \
                 sign URLs; ask for an unsigned URL or configure one"
            ),
        )
        .with_provider(provider));
    }
    Ok(target)
}

/// The protocol of a web path the caller named none for: by its extension, HLS otherwise.
fn protocol_of_path(path: &str) -> EndpointProtocol {
    if path.ends_with(".mpd") {
        EndpointProtocol::Dash
    } else if path.ends_with(".mp4") {
        EndpointProtocol::Mp4
    } else {
        EndpointProtocol::Hls
    }
}

/// The playback endpoint of `target` on the distribution at `domain`.
pub(super) fn playback(
    variant: Variant,
    domain: &str,
    signer: Option<&UrlSigner>,
    target: &CloudFrontTarget,
    request: &EndpointsRequest,
) -> Result<Endpoint> {
    let (url, resource, protocol) = match variant {
        Variant::Web => {
            let url = format!("https://{domain}/{}", target.path);
            let protocol = request
                .protocol
                .unwrap_or_else(|| protocol_of_path(&target.path));
            (url.clone(), url, protocol)
        }
        // An RTMP policy names the stream, not the URL.
        Variant::Streaming => (
            target.path.clone(),
            target.path.clone(),
            EndpointProtocol::Rtmp,
        ),
    };
    let (uri, expire_time_ms) = match signer {
        Some(signer) => {
            let expires_s = (now_ms() + request.lifetime.as_millis() as i64).div_euclid(1000);
            let signed = signer.sign(&url, &resource, expires_s, &target.policy)?;
            (signed, Some(expires_s * 1000))
        }
        None => (url, None),
    };
    let uri = match variant {
        Variant::Web => uri,
        Variant::Streaming => format!("rtmp://{domain}/cfx/st/{uri}"),
    };
    let client_requirements = match &target.policy.ip_range {
        Some(range) if signer.is_some() => format!("request from an address in {range}"),
        _ => String::new(),
    };
    Ok(Endpoint {
        purpose: EndpointPurpose::Playback,
        protocol,
        uri,
        expire_time_ms,
        client_requirements,
    })
}
