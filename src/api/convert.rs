//! Conversions between the domain model and the protobuf messages.

use crate::domain::{
    BatchItem, CloudFrontDetails, CloudFrontOrigin, Endpoint, EndpointProtocol, EndpointPurpose,
    EndpointSupport, OpRequest, OpResult, Operation, Stream, StreamDetails, StreamSpec,
    StreamState,
};
use crate::error::Error;
use crate::pb;

/// Milliseconds since the epoch as a protobuf Timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn state(state: StreamState) -> pb::stream::State {
    match state {
        StreamState::Creating => pb::stream::State::Creating,
        StreamState::Active => pb::stream::State::Active,
        StreamState::Updating => pb::stream::State::Updating,
        StreamState::Disabled => pb::stream::State::Disabled,
        StreamState::Deleting => pb::stream::State::Deleting,
    }
}

/// A stream read from its provider at `read_time_ms` (ms since the epoch), with that read
/// time (GetStream and ListStreams answers).
pub fn read_stream(s: &Stream, read_time_ms: i64) -> pb::Stream {
    pb::Stream {
        read_time: Some(timestamp(read_time_ms)),
        ..stream(s)
    }
}

/// A domain stream as the API shows it.
pub fn stream(s: &Stream) -> pb::Stream {
    pb::Stream {
        name: s.name.to_string(),
        etag: s.etag.clone(),
        state: state(s.state) as i32,
        media_type: s.spec.media_type.clone(),
        data_retention_hours: s.spec.data_retention_hours,
        device_name: s.spec.device_name.clone(),
        kms_key_id: s.spec.kms_key_id.clone(),
        tags: s.spec.tags.clone().into_iter().collect(),
        create_time: Some(timestamp(s.create_time_ms)),
        provider_uid: s.provider_uid.clone(),
        update_time: Some(timestamp(s.update_time_ms)),
        read_time: None,
        details: match &s.details {
            StreamDetails::None => None,
            StreamDetails::Local { version } => {
                Some(pb::stream::Details::Local(pb::LocalStreamDetails {
                    version: *version,
                }))
            }
            StreamDetails::AliyunVod(vod) => {
                Some(pb::stream::Details::AliyunVod(pb::AliyunVodStreamDetails {
                    video_id: vod.video_id.clone(),
                    definition: vod.definition.clone(),
                    format: vod.format.clone(),
                    stream_type: vod.stream_type.clone(),
                    status: vod.status.clone(),
                }))
            }
            StreamDetails::CloudFront(d) => Some(pb::stream::Details::Cloudfront(
                pb::CloudFrontStreamDetails {
                    domain_name: d.domain_name.clone(),
                    enabled: d.enabled,
                    comment: d.comment.clone(),
                    status: d.status.clone(),
                    origin: d.origin.as_ref().map(|o| pb::CloudFrontOrigin {
                        r#type: if o.s3 {
                            pb::cloud_front_origin::Type::S3
                        } else {
                            pb::cloud_front_origin::Type::Custom
                        } as i32,
                        domain_name: o.domain_name.clone(),
                        origin_path: o.origin_path.clone(),
                        origin_access_identity: o.origin_access_identity.clone(),
                        origin_protocol_policy: o.origin_protocol_policy.clone(),
                    }),
                },
            )),
        },
    }
}

/// The provider-specific details a caller sent with a stream. Output-only fields are ignored;
/// an origin of unspecified type counts as custom unless it names an S3 bucket.
pub fn details(s: &pb::Stream) -> StreamDetails {
    match &s.details {
        None => StreamDetails::None,
        Some(pb::stream::Details::Local(_)) => StreamDetails::Local { version: 0 },
        // Every field of a VOD stream's details is output only.
        Some(pb::stream::Details::AliyunVod(_)) => StreamDetails::None,
        Some(pb::stream::Details::Cloudfront(d)) => {
            StreamDetails::CloudFront(Box::new(CloudFrontDetails {
                enabled: d.enabled,
                comment: d.comment.clone(),
                origin: d.origin.as_ref().map(|o| CloudFrontOrigin {
                    s3: o.r#type == pb::cloud_front_origin::Type::S3 as i32,
                    domain_name: o.domain_name.clone(),
                    origin_path: o.origin_path.clone(),
                    origin_access_identity: o.origin_access_identity.clone(),
                    origin_protocol_policy: o.origin_protocol_policy.clone(),
                }),
                ..CloudFrontDetails::default()
            }))
        }
    }
}

/// The settable fields of a caller's stream.
pub fn spec(s: &pb::Stream) -> StreamSpec {
    StreamSpec {
        media_type: s.media_type.clone(),
        data_retention_hours: s.data_retention_hours,
        device_name: s.device_name.clone(),
        kms_key_id: s.kms_key_id.clone(),
        tags: s.tags.clone().into_iter().collect(),
        details: match details(s) {
            StreamDetails::None => None,
            given => Some(Box::new(given)),
        },
    }
}

/// An error in the compact form of batch results.
pub fn status_summary(e: &Error) -> pb::StatusSummary {
    pb::StatusSummary {
        code: e.kind().code() as i32,
        message: e.message().to_string(),
        reason: e.kind().reason().to_string(),
        provider_code: e.provider_code().unwrap_or_default().to_string(),
        provider_request_id: e.provider_request_id().unwrap_or_default().to_string(),
    }
}

fn batch_result(item: &BatchItem) -> pb::BatchDeleteStreamsResult {
    pb::BatchDeleteStreamsResult {
        name: item.name.to_string(),
        deleted: item.error.is_none(),
        error: item.error.as_ref().map(status_summary),
    }
}

/// The typed result of a successful operation.
pub fn result(result: &OpResult) -> pb::operation::Result {
    match result {
        OpResult::Stream(s) => pb::operation::Result::Stream(stream(s)),
        OpResult::Deleted { name, existed } => {
            pb::operation::Result::DeleteStream(pb::DeleteStreamResponse {
                name: name.to_string(),
                existed: *existed,
            })
        }
        OpResult::Batch(items) => {
            pb::operation::Result::BatchDeleteStreams(pb::BatchDeleteStreamsResponse {
                results: items.iter().map(batch_result).collect(),
            })
        }
    }
}

/// An operation as the API shows it.
pub fn operation(op: &Operation) -> pb::Operation {
    pb::Operation {
        name: format!("operations/{}", op.id),
        done: op.done(),
        metadata: Some(pb::OperationMetadata {
            target: op.request.target(),
            verb: op.request.verb().as_str().to_string(),
            step: op.step.clone(),
            create_time: Some(timestamp(op.create_time_ms)),
            update_time: Some(timestamp(op.update_time_ms)),
            attempts: op.attempts,
            principal: op.principal.clone(),
            request_id: op.request_id.clone().unwrap_or_default(),
            cancel_requested: op.cancel_requested,
            provider: format!("providers/{}", op.request.provider()),
            warnings: op.warnings.clone(),
        }),
        result: match &op.outcome {
            None => None,
            Some(Ok(r)) => Some(result(r)),
            Some(Err(e)) => Some(pb::operation::Result::Error(e.to_rpc_status())),
        },
    }
}

/// The answer to a `validate_only` request: a done operation with no name, carrying what
/// the request would produce.
pub fn validated(request: &OpRequest, verb_result: Option<OpResult>) -> pb::Operation {
    pb::Operation {
        name: String::new(),
        done: true,
        metadata: Some(pb::OperationMetadata {
            target: request.target(),
            verb: request.verb().as_str().to_string(),
            step: "validated".to_string(),
            provider: format!("providers/{}", request.provider()),
            ..Default::default()
        }),
        result: verb_result.as_ref().map(result),
    }
}

/// An endpoint purpose as the API spells it.
pub fn purpose(p: EndpointPurpose) -> pb::EndpointPurpose {
    match p {
        EndpointPurpose::Ingest => pb::EndpointPurpose::Ingest,
        EndpointPurpose::Playback => pb::EndpointPurpose::Playback,
    }
}

/// An API purpose in the domain; `None` for unspecified or unknown values.
pub fn purpose_of(value: i32) -> Option<EndpointPurpose> {
    match pb::EndpointPurpose::try_from(value).ok()? {
        pb::EndpointPurpose::Ingest => Some(EndpointPurpose::Ingest),
        pb::EndpointPurpose::Playback => Some(EndpointPurpose::Playback),
        pb::EndpointPurpose::Unspecified => None,
    }
}

/// An endpoint protocol as the API spells it.
pub fn protocol(p: EndpointProtocol) -> pb::EndpointProtocol {
    match p {
        EndpointProtocol::Hls => pb::EndpointProtocol::Hls,
        EndpointProtocol::Dash => pb::EndpointProtocol::Dash,
        EndpointProtocol::Mp4 => pb::EndpointProtocol::Mp4,
        EndpointProtocol::Rtmp => pb::EndpointProtocol::Rtmp,
        EndpointProtocol::PutMedia => pb::EndpointProtocol::PutMedia,
    }
}

/// An API protocol in the domain: `Ok(None)` for unspecified, `Err` for unknown values.
pub fn protocol_of(value: i32) -> Result<Option<EndpointProtocol>, ()> {
    Ok(
        match pb::EndpointProtocol::try_from(value).map_err(|_| ())? {
            pb::EndpointProtocol::Unspecified => None,
            pb::EndpointProtocol::Hls => Some(EndpointProtocol::Hls),
            pb::EndpointProtocol::Dash => Some(EndpointProtocol::Dash),
            pb::EndpointProtocol::Mp4 => Some(EndpointProtocol::Mp4),
            pb::EndpointProtocol::Rtmp => Some(EndpointProtocol::Rtmp),
            pb::EndpointProtocol::PutMedia => Some(EndpointProtocol::PutMedia),
        },
    )
}

/// A protobuf Timestamp as milliseconds since the epoch.
pub fn timestamp_ms(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos) / 1_000_000)
}

/// A domain endpoint as the API shows it.
pub fn endpoint(e: &Endpoint) -> pb::StreamEndpoint {
    pb::StreamEndpoint {
        purpose: purpose(e.purpose) as i32,
        protocol: protocol(e.protocol) as i32,
        uri: e.uri.clone(),
        expire_time: e.expire_time_ms.map(timestamp),
        client_requirements: e.client_requirements.clone(),
    }
}

/// What a kind serves for one purpose, as the API shows it.
pub fn endpoint_support(s: &EndpointSupport) -> pb::EndpointSupport {
    pb::EndpointSupport {
        purpose: purpose(s.purpose) as i32,
        protocols: s.protocols.iter().map(|p| protocol(*p) as i32).collect(),
    }
}
