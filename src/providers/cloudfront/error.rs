//! What can go wrong in the CloudFront adapter, and [`parse_error`]: the one place that turns
//! CloudFront's answers into the taxonomy (docs/design.md §3), keeping the provider's code and
//! request id.

use aws_sdk_cloudfront::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudfront::operation::RequestId;

use crate::error::{Error, Kind};

/// A failed CloudFront call.
#[derive(Debug, thiserror::Error)]
pub(super) enum CloudFrontError {
    /// CloudFront answered with an error document.
    #[error("cloudfront refused with {code}: {message}")]
    Service {
        code: String,
        message: String,
        request_id: Option<String>,
        status: u16,
    },
    /// No answer: connection failure or timeout.
    #[error("cloudfront could not be reached: {0}")]
    Unreachable(String),
    /// An answer the SDK could not read.
    #[error("cloudfront answered with something unreadable: {0}")]
    Unreadable(String),
    /// The request could not be built.
    #[error("the cloudfront request could not be built: {0}")]
    Request(String),
}

/// Reads an SDK error of any CloudFront operation.
pub(super) fn from_sdk<E>(
    error: SdkError<E, aws_sdk_cloudfront::config::http::HttpResponse>,
) -> CloudFrontError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let request_id = error
        .request_id()
        .or_else(|| error.meta().request_id())
        .map(str::to_string);
    match &error {
        SdkError::ServiceError(context) => CloudFrontError::Service {
            code: error.code().unwrap_or("Unknown").to_string(),
            message: error.message().unwrap_or_default().to_string(),
            request_id,
            status: context.raw().status().as_u16(),
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
            CloudFrontError::Unreachable(chain(&error))
        }
        SdkError::ResponseError(context) if context.raw().status().is_server_error() => {
            CloudFrontError::Service {
                code: format!("HTTP{}", context.raw().status().as_u16()),
                message: chain(&error),
                request_id,
                status: context.raw().status().as_u16(),
            }
        }
        SdkError::ResponseError(_) => CloudFrontError::Unreadable(chain(&error)),
        _ => CloudFrontError::Request(chain(&error)),
    }
}

/// An error with its sources, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Turns a CloudFront failure into the taxonomy (docs/design.md §3), naming the provider
/// instance and keeping CloudFront's code and request id.
pub(super) fn parse_error(provider: &str, error: CloudFrontError) -> Error {
    let (code, message, request_id, status) = match error {
        CloudFrontError::Service {
            code,
            message,
            request_id,
            status,
        } => (code, message, request_id, status),
        CloudFrontError::Unreachable(_) => {
            return Error::new(Kind::ProviderUnavailable, error.to_string())
                .with_provider(provider)
                .temporary();
        }
        CloudFrontError::Unreadable(_) => {
            return Error::new(Kind::ProviderUnavailable, error.to_string())
                .with_provider(provider);
        }
        CloudFrontError::Request(_) => {
            return Error::internal(error).with_provider(provider);
        }
    };
    let (kind, temporary) = match code.as_str() {
        "NoSuchDistribution" | "NoSuchStreamingDistribution" => (Kind::StreamNotFound, false),
        "PreconditionFailed" | "InvalidIfMatchVersion" => (Kind::EtagMismatch, false),
        "DistributionNotDisabled" | "StreamingDistributionNotDisabled" => {
            (Kind::StreamNotDisabled, false)
        }
        // 409: a distribution still in use (e.g. by a continuous deployment policy, or as a
        // staging distribution).
        "ResourceInUse" | "StagingDistributionInUse" => (Kind::StreamInUse, false),
        // 400: a change CloudFront does not allow on this distribution at all.
        "IllegalUpdate" => (Kind::UpdateNotAllowed, false),
        "AccessDenied" => (Kind::ProviderPermissionDenied, false),
        "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredToken" => (Kind::ProviderCredentials, false),
        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
            (Kind::ProviderThrottled, true)
        }
        "DistributionAlreadyExists"
        | "StreamingDistributionAlreadyExists"
        | "CNAMEAlreadyExists" => (Kind::StreamAlreadyExists, false),
        "ServiceUnavailable" | "InternalError" | "InternalFailure" => {
            (Kind::ProviderUnavailable, true)
        }
        quota if quota.starts_with("TooMany") => (Kind::ProviderQuotaExceeded, false),
        invalid if invalid.starts_with("Invalid") || invalid.starts_with("Missing") => {
            (Kind::InvalidArgument, false)
        }
        _ if status >= 500 => (Kind::ProviderUnavailable, true),
        _ => (Kind::Internal, false),
    };
    let shown = if message.is_empty() {
        format!("cloudfront refused with {code}")
    } else {
        format!("cloudfront: {message}")
    };
    let mut error = Error::new(kind, shown)
        .with_provider(provider)
        .with_provider_code(code);
    if let Some(id) = request_id {
        error = error.with_provider_request_id(id);
    }
    if temporary { error.temporary() } else { error }
}

#[cfg(test)]
mod tests {
    use aws_credential_types::Credentials;
    use aws_sdk_cloudfront::config::{BehaviorVersion, Region};
    use aws_smithy_http_client::test_util::infallible_client_fn;

    use super::*;

    /// A client whose every call gets `status` with the error document `body`, as CloudFront
    /// sends it (restXml `ErrorResponse`, request id in a header).
    fn answering(status: u16, body: &'static str) -> aws_sdk_cloudfront::Client {
        let http = infallible_client_fn(move |_request| {
            http::Response::builder()
                .status(status)
                .header("content-type", "text/xml")
                .header("x-amz-request-id", "5b3a9c17-0000-4d7e-9f1b-6a2c0e8d4f11")
                .body(body)
                .unwrap()
        });
        let config = aws_sdk_cloudfront::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKID", "SECRET", None, None, "test"))
            .http_client(http)
            .build();
        aws_sdk_cloudfront::Client::from_conf(config)
    }

    fn document(code: &str, message: &str) -> &'static str {
        Box::leak(
            format!(
                "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"http://cloudfront.amazonaws.com/doc/2020-05-31/\">\
                 <Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>\
                 <RequestId>5b3a9c17-0000-4d7e-9f1b-6a2c0e8d4f11</RequestId></ErrorResponse>"
            )
            .into_boxed_str(),
        )
    }

    async fn delete_streaming(status: u16, code: &str, message: &str) -> Error {
        let error = answering(status, document(code, message))
            .delete_streaming_distribution()
            .id("EDFDVBD632BHDS5")
            .if_match("E2QWRUHAPOMQZL")
            .send()
            .await
            .unwrap_err();
        parse_error("cf-rtmp", from_sdk(error))
    }

    async fn delete_web(status: u16, code: &str, message: &str) -> Error {
        let error = answering(status, document(code, message))
            .delete_distribution()
            .id("EDFDVBD632BHDS5")
            .if_match("E2QWRUHAPOMQZL")
            .send()
            .await
            .unwrap_err();
        parse_error("cf-web", from_sdk(error))
    }

    fn check(error: &Error, kind: Kind, code: &str) {
        assert_eq!(error.kind(), kind, "{error:?}");
        assert_eq!(error.provider_code(), Some(code), "{error:?}");
        assert_eq!(
            error.provider_request_id(),
            Some("5b3a9c17-0000-4d7e-9f1b-6a2c0e8d4f11"),
            "{error:?}"
        );
        assert!(!error.is_temporary(), "{error:?}");
    }

    #[tokio::test]
    async fn the_design_table_of_streaming_distributions() {
        let cases = [
            (
                403,
                "AccessDenied",
                "Access denied.",
                Kind::ProviderPermissionDenied,
            ),
            (
                409,
                "StreamingDistributionNotDisabled",
                "The specified CloudFront distribution has not been disabled.",
                Kind::StreamNotDisabled,
            ),
            (
                400,
                "InvalidIfMatchVersion",
                "The If-Match version is missing or not valid for the resource.",
                Kind::EtagMismatch,
            ),
            (
                404,
                "NoSuchStreamingDistribution",
                "The specified streaming distribution does not exist.",
                Kind::StreamNotFound,
            ),
            (
                412,
                "PreconditionFailed",
                "The precondition given in one or more of the request-header fields evaluated to false.",
                Kind::EtagMismatch,
            ),
        ];
        for (status, code, message, kind) in cases {
            let error = delete_streaming(status, code, message).await;
            check(&error, kind, code);
            assert!(error.message().contains(message), "{error:?}");
        }
    }

    #[tokio::test]
    async fn the_design_table_of_web_distributions() {
        let error = delete_web(
            409,
            "DistributionNotDisabled",
            "The distribution you are trying to delete has not been disabled.",
        )
        .await;
        check(&error, Kind::StreamNotDisabled, "DistributionNotDisabled");
        assert_eq!(error.to_status().code(), tonic::Code::FailedPrecondition);
        let error = delete_web(
            404,
            "NoSuchDistribution",
            "The specified distribution does not exist.",
        )
        .await;
        check(&error, Kind::StreamNotFound, "NoSuchDistribution");
        assert_eq!(error.to_status().code(), tonic::Code::NotFound);
        let error = delete_web(412, "PreconditionFailed", "The precondition given in one or more of the request-header fields evaluated to false.").await;
        check(&error, Kind::EtagMismatch, "PreconditionFailed");
        assert_eq!(error.to_status().code(), tonic::Code::Aborted);
        let error = delete_web(403, "AccessDenied", "Access denied.").await;
        assert_eq!(error.to_status().code(), tonic::Code::PermissionDenied);
    }

    #[tokio::test]
    async fn resources_in_use_and_illegal_updates_are_preconditions() {
        let cases = [
            (
                409,
                "ResourceInUse",
                "Cannot delete this resource because it is in use.",
                Kind::StreamInUse,
                "STREAM_IN_USE",
            ),
            (
                409,
                "StagingDistributionInUse",
                "A continuous deployment policy for this staging distribution already exists.",
                Kind::StreamInUse,
                "STREAM_IN_USE",
            ),
            (
                400,
                "IllegalUpdate",
                "The update contains modifications that are not allowed.",
                Kind::UpdateNotAllowed,
                "UPDATE_NOT_ALLOWED",
            ),
        ];
        for (status, code, message, kind, reason) in cases {
            let error = delete_web(status, code, message).await;
            check(&error, kind, code);
            assert_eq!(
                error.to_status().code(),
                tonic::Code::FailedPrecondition,
                "{code}"
            );
            assert_eq!(error.kind().reason(), reason);
            assert!(error.message().contains(message), "{error:?}");
        }
    }

    #[tokio::test]
    async fn refused_gateway_credentials_never_answer_unauthenticated() {
        let cases = [
            (
                403,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            ),
            (
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            ),
        ];
        for (status, code, message) in cases {
            let error = delete_web(status, code, message).await;
            check(&error, Kind::ProviderCredentials, code);
            assert_eq!(error.to_status().code(), tonic::Code::Unavailable, "{code}");
            assert_eq!(error.kind().reason(), "PROVIDER_CREDENTIALS_INVALID");
        }
    }

    #[tokio::test]
    async fn unknown_codes_are_temporary_only_with_a_server_error_status() {
        let error = delete_web(502, "SomethingNew", "Bad gateway.").await;
        assert_eq!(error.kind(), Kind::ProviderUnavailable);
        assert!(error.is_temporary());
        assert_eq!(error.to_status().code(), tonic::Code::Unavailable);
        let error = delete_web(400, "SomethingNew", "No.").await;
        assert_eq!(error.kind(), Kind::Internal);
        assert!(!error.is_temporary());
    }

    #[tokio::test]
    async fn throttling_and_server_errors_are_temporary() {
        let error = delete_web(400, "Throttling", "Rate exceeded").await;
        assert_eq!(error.kind(), Kind::ProviderThrottled);
        assert!(error.is_temporary());
        let error = delete_web(503, "ServiceUnavailable", "Please try again.").await;
        assert_eq!(error.kind(), Kind::ProviderUnavailable);
        assert!(error.is_temporary());
        let error = delete_web(
            400,
            "TooManyDistributions",
            "Your request contains more distributions than are allowed per AWS account.",
        )
        .await;
        assert_eq!(error.kind(), Kind::ProviderQuotaExceeded);
        assert!(!error.is_temporary());
    }
}
