//! KVS errors → the taxonomy, in one named function ([`parse_error`]) over a pure classifier
//! ([`classify`]) that is unit-tested on every exception of the KVS API reference.

use aws_sdk_kinesisvideo::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesisvideo::operation::RequestId;

use crate::error::{Error, Kind};

/// The KVS action that failed, where a code means different things per action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Create,
    Delete,
    Other,
}

/// The kind of a KVS error code, and whether it is worth retrying.
pub(super) fn classify(action: Action, code: Option<&str>, http_status: u16) -> (Kind, bool) {
    match code.unwrap_or_default() {
        "ResourceNotFoundException" => (Kind::StreamNotFound, false),
        "VersionMismatchException" => (Kind::EtagMismatch, false),
        "ResourceInUseException" => match action {
            Action::Create => (Kind::StreamAlreadyExists, false),
            Action::Delete => (Kind::StreamInUse, false),
            // An update while the stream is briefly UPDATING: try again.
            Action::Other => (Kind::StreamInUse, true),
        },
        "InvalidArgumentException"
        | "InvalidDeviceException"
        | "InvalidResourceFormatException" => (Kind::InvalidArgument, false),
        "ClientLimitExceededException" | "ThrottlingException" => (Kind::ProviderThrottled, true),
        // Archived media: a stream that retains nothing, or whose media HLS/DASH cannot carry.
        "NoDataRetentionException"
        | "UnsupportedStreamMediaTypeException"
        | "MissingCodecPrivateDataException"
        | "InvalidCodecPrivateDataException" => (Kind::StreamNotPlayable, false),
        "AccountStreamLimitExceededException"
        | "DeviceStreamLimitExceededException"
        | "TagsPerResourceExceededLimitException" => (Kind::ProviderQuotaExceeded, false),
        "NotAuthorizedException" | "AccessDeniedException" => {
            (Kind::ProviderPermissionDenied, false)
        }
        "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "MissingAuthenticationTokenException"
        | "ExpiredTokenException" => (Kind::ProviderCredentials, false),
        _ if http_status >= 500 => (Kind::ProviderUnavailable, true),
        _ => (Kind::Internal, false),
    }
}

/// Turns an SDK error of `action` into the taxonomy, naming the provider instance and keeping
/// the KVS code and request id.
pub(super) fn parse_error<E>(provider: &str, action: Action, error: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + RequestId + std::error::Error + Send + Sync + 'static,
{
    match &error {
        SdkError::ServiceError(context) => {
            let inner = context.err();
            let code = inner.code();
            let (kind, temporary) = classify(action, code, context.raw().status().as_u16());
            let message = match (code, inner.message()) {
                (Some(code), Some(message)) => format!("kinesis video: {code}: {message}"),
                (Some(code), None) => format!("kinesis video: {code}"),
                _ => format!(
                    "kinesis video answered HTTP {}",
                    context.raw().status().as_u16()
                ),
            };
            let mut mapped = Error::new(kind, message).with_provider(provider);
            if let Some(code) = code {
                mapped = mapped.with_provider_code(code);
            }
            if let Some(id) = inner.request_id() {
                mapped = mapped.with_provider_request_id(id);
            }
            if temporary {
                mapped.temporary()
            } else {
                mapped
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Error::new(
                Kind::ProviderUnavailable,
                format!(
                    "kinesis video unreachable: {}",
                    aws_sdk_kinesisvideo::error::DisplayErrorContext(&error)
                ),
            )
            .with_provider(provider)
            .temporary()
        }
        _ => Error::internal(format_args!(
            "kinesis video request: {}",
            aws_sdk_kinesisvideo::error::DisplayErrorContext(&error)
        ))
        .with_provider(provider),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archived_media_refusals_are_preconditions_of_the_stream() {
        for code in [
            "NoDataRetentionException",
            "UnsupportedStreamMediaTypeException",
            "MissingCodecPrivateDataException",
            "InvalidCodecPrivateDataException",
        ] {
            assert_eq!(
                classify(Action::Other, Some(code), 400),
                (Kind::StreamNotPlayable, false),
                "{code}"
            );
        }
    }

    #[test]
    fn every_documented_exception_has_its_kind() {
        let table = [
            (
                Action::Delete,
                "ClientLimitExceededException",
                Kind::ProviderThrottled,
                true,
            ),
            (
                Action::Delete,
                "InvalidArgumentException",
                Kind::InvalidArgument,
                false,
            ),
            (
                Action::Delete,
                "ResourceNotFoundException",
                Kind::StreamNotFound,
                false,
            ),
            (
                Action::Delete,
                "NotAuthorizedException",
                Kind::ProviderPermissionDenied,
                false,
            ),
            (
                Action::Delete,
                "VersionMismatchException",
                Kind::EtagMismatch,
                false,
            ),
            (
                Action::Delete,
                "ResourceInUseException",
                Kind::StreamInUse,
                false,
            ),
            (
                Action::Create,
                "AccountStreamLimitExceededException",
                Kind::ProviderQuotaExceeded,
                false,
            ),
            (
                Action::Create,
                "DeviceStreamLimitExceededException",
                Kind::ProviderQuotaExceeded,
                false,
            ),
            (
                Action::Create,
                "ResourceInUseException",
                Kind::StreamAlreadyExists,
                false,
            ),
            (
                Action::Create,
                "InvalidDeviceException",
                Kind::InvalidArgument,
                false,
            ),
            (
                Action::Create,
                "InvalidArgumentException",
                Kind::InvalidArgument,
                false,
            ),
            (
                Action::Create,
                "ClientLimitExceededException",
                Kind::ProviderThrottled,
                true,
            ),
            (
                Action::Create,
                "TagsPerResourceExceededLimitException",
                Kind::ProviderQuotaExceeded,
                false,
            ),
        ];
        for (action, code, kind, temporary) in table {
            assert_eq!(
                classify(action, Some(code), 400),
                (kind, temporary),
                "{code}"
            );
        }
    }

    #[test]
    fn server_errors_are_temporary_and_unknown_client_errors_are_not() {
        assert_eq!(
            classify(Action::Other, None, 503),
            (Kind::ProviderUnavailable, true)
        );
        assert_eq!(
            classify(Action::Other, Some("SomethingNew"), 400),
            (Kind::Internal, false)
        );
    }
}
