//! What can go wrong in the `aliyun-vod` adapter, and [`parse_error`], the one place that turns
//! it into the taxonomy (docs/design.md §3).
//!
//! VOD answers a failure with a JSON body `{RequestId, HostId, Code, Message, Recommend}`.
//! Classification looks at `Code`, and at the HTTP status only for a code it does not know (a
//! 5xx is the service's failure: temporary); `RequestId` becomes the error's
//! `provider_request_id`.

use serde::Deserialize;

use crate::error::{Error, Kind};

/// The body of a failed VOD call.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub request_id: Option<String>,
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// A failed VOD call.
#[derive(Debug, thiserror::Error)]
pub(super) enum VodError {
    #[error("{action} could not reach the VOD endpoint: {source}")]
    Transport {
        action: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("{action} answered something that is not a VOD response: {why}")]
    Malformed { action: &'static str, why: String },
    #[error("{action} failed: {} ({})", body.message, body.code)]
    Api {
        action: &'static str,
        /// The HTTP status of the answer.
        status: u16,
        body: ErrorBody,
    },
}

/// How a VOD error `Code` (answered with HTTP `status`) maps to the taxonomy, and whether
/// trying again may help.
fn classify(code: &str, status: u16) -> (Kind, bool) {
    let family = |prefix: &str| code == prefix || code.starts_with(&format!("{prefix}."));
    match code {
        "JobIdsExceededMax" => (Kind::InvalidArgument, false),
        "InvalidVideo.NotFound" => (Kind::VideoNotFound, false),
        "InvalidStream.NotFound" | "InvalidVideo.NoneStream" => (Kind::StreamNotFound, false),
        "DeleteStreamFailed" | "InternalError" | "ServiceUnavailable" => {
            (Kind::ProviderUnavailable, true)
        }
        // The nonce is fresh on every try, so a retry is a new request.
        "SignatureNonceUsed" => (Kind::ProviderUnavailable, true),
        "SignatureDoesNotMatch" | "IncompleteSignature" => (Kind::ProviderCredentials, false),
        "InvalidTimeStamp.Expired" | "InvalidTimeStamp.Format" => (Kind::Internal, false),
        // A video whose status is not Normal (HTTP 403, but not a permission problem).
        "Forbidden.IllegalStatus" => (Kind::StreamNotReady, false),
        _ if family("Throttling") => (Kind::ProviderThrottled, true),
        _ if family("InvalidAccessKeyId") || family("InvalidSecurityToken") => {
            (Kind::ProviderCredentials, false)
        }
        _ if family("Forbidden") || family("OperationDenied") => {
            (Kind::ProviderPermissionDenied, false)
        }
        _ if family("MissingParameter") || family("InvalidParameter") => {
            (Kind::InvalidArgument, false)
        }
        _ if status >= 500 => (Kind::ProviderUnavailable, true),
        _ => (Kind::ProviderUnavailable, false),
    }
}

/// Turns a failed VOD call of provider instance `provider` into the taxonomy.
pub(super) fn parse_error(provider: &str, error: &VodError) -> Error {
    let (body, status) = match error {
        VodError::Transport { .. } | VodError::Malformed { .. } => {
            return Error::new(Kind::ProviderUnavailable, error.to_string())
                .with_provider(provider)
                .temporary();
        }
        VodError::Api { body, status, .. } => (body, *status),
    };
    let (kind, temporary) = classify(&body.code, status);
    let message = match kind {
        // The provider's message may echo the string it signed (with an STS token in it):
        // only the code is repeated.
        Kind::ProviderCredentials => format!(
            "Alibaba Cloud rejected the credentials of provider instance {provider:?} ({}): \
             check its access_key_id and access_key_secret, or ALIBABA_CLOUD_ACCESS_KEY_ID and \
             ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            body.code
        ),
        Kind::Internal => format!(
            "provider instance {provider:?}: VOD refused the request time ({}): the gateway's \
             clock must be within 15 minutes of UTC",
            body.code
        ),
        _ => error.to_string(),
    };
    let mut parsed = Error::new(kind, message)
        .with_provider(provider)
        .with_provider_code(&body.code);
    if let Some(id) = &body.request_id {
        parsed = parsed.with_provider_request_id(id);
    }
    if temporary {
        parsed.temporary()
    } else {
        parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Error bodies as VOD sends them (shapes and messages from the VOD API reference and
    /// the Alibaba Cloud common error codes).
    fn sample(code: &str, message: &str) -> VodError {
        let text = format!(
            r#"{{"RequestId":"25818875-5F78-4A13-BEF6-D7393642CA58","HostId":"vod.cn-shanghai.aliyuncs.com","Code":"{code}","Message":"{message}","Recommend":"https://api.aliyun.com/troubleshoot?q={code}"}}"#
        );
        VodError::Api {
            action: "DeleteStream",
            status: 400,
            body: serde_json::from_str(&text).unwrap(),
        }
    }

    #[test]
    fn classifies_the_documented_codes() {
        let cases = [
            (
                "JobIdsExceededMax",
                "The JobIds exceeded maximum.",
                Kind::InvalidArgument,
                false,
            ),
            (
                "InvalidVideo.NotFound",
                "The video does not exist.",
                Kind::VideoNotFound,
                false,
            ),
            (
                "InvalidStream.NotFound",
                "The stream does not exist.",
                Kind::StreamNotFound,
                false,
            ),
            (
                "DeleteStreamFailed",
                "Deleting stream has failed due to some unknown error.",
                Kind::ProviderUnavailable,
                true,
            ),
            (
                "Throttling",
                "Request was denied due to request throttling.",
                Kind::ProviderThrottled,
                true,
            ),
            (
                "Throttling.User",
                "Request was denied due to user flow control.",
                Kind::ProviderThrottled,
                true,
            ),
            (
                "Throttling.Api",
                "Request was denied due to api flow control.",
                Kind::ProviderThrottled,
                true,
            ),
            (
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
                Kind::ProviderUnavailable,
                true,
            ),
            (
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation.",
                Kind::ProviderCredentials,
                false,
            ),
            (
                "InvalidAccessKeyId.NotFound",
                "Specified access key is not found.",
                Kind::ProviderCredentials,
                false,
            ),
            (
                "InvalidAccessKeyId.Inactive",
                "Specified access key is disabled.",
                Kind::ProviderCredentials,
                false,
            ),
            (
                "Forbidden.IllegalStatus",
                "Status of the video is illegal.",
                Kind::StreamNotReady,
                false,
            ),
            (
                "InvalidTimeStamp.Expired",
                "Specified time stamp or date value is expired.",
                Kind::Internal,
                false,
            ),
            (
                "Forbidden",
                "User not authorized to operate on the specified resource.",
                Kind::ProviderPermissionDenied,
                false,
            ),
            (
                "Forbidden.RAM",
                "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
                Kind::ProviderPermissionDenied,
                false,
            ),
            (
                "OperationDenied.Suspended",
                "Your account has been suspended.",
                Kind::ProviderPermissionDenied,
                false,
            ),
            (
                "SomethingNew.Unheard",
                "A code this adapter has never seen.",
                Kind::ProviderUnavailable,
                false,
            ),
        ];
        for (code, message, kind, temporary) in cases {
            let error = parse_error("vod-sh", &sample(code, message));
            assert_eq!(error.kind(), kind, "{code}");
            assert_eq!(error.is_temporary(), temporary, "{code}");
            assert_eq!(error.provider_code(), Some(code));
            assert_eq!(
                error.provider_request_id(),
                Some("25818875-5F78-4A13-BEF6-D7393642CA58"),
                "{code}"
            );
        }
    }

    #[test]
    fn throttling_reaches_the_caller_with_retry_info() {
        let status = parse_error("vod-sh", &sample("Throttling.User", "slow down"))
            .persistent()
            .to_status();
        use tonic_types::StatusExt;
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let details = status.get_error_details();
        assert!(details.retry_info().is_some());
        assert_eq!(details.error_info().unwrap().reason, "PROVIDER_THROTTLED");
    }

    #[test]
    fn credentials_errors_name_the_instance_and_hide_the_signed_string() {
        let error = parse_error(
            "vod-sh",
            &sample(
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&SecurityToken%3Dsts-secret",
            ),
        );
        assert!(
            error.message().contains("\"vod-sh\""),
            "{}",
            error.message()
        );
        assert!(
            !error.message().contains("sts-secret"),
            "{}",
            error.message()
        );
        assert_eq!(error.to_status().code(), tonic::Code::Unavailable);
    }

    #[test]
    fn a_body_without_request_id_still_classifies() {
        let body: ErrorBody = serde_json::from_str(r#"{"Code":"InvalidVideo.NotFound"}"#).unwrap();
        let error = parse_error(
            "vod-sh",
            &VodError::Api {
                action: "GetPlayInfo",
                status: 404,
                body,
            },
        );
        assert_eq!(error.kind(), Kind::VideoNotFound);
        assert_eq!(error.provider_request_id(), None);
    }

    #[test]
    fn an_unknown_code_is_temporary_only_with_a_server_error_status() {
        assert_eq!(
            classify("Brand.NewCode", 502),
            (Kind::ProviderUnavailable, true)
        );
        assert_eq!(
            classify("Brand.NewCode", 400),
            (Kind::ProviderUnavailable, false)
        );
        // A known code keeps its meaning whatever the status.
        assert_eq!(
            classify("InvalidVideo.NotFound", 500),
            (Kind::VideoNotFound, false)
        );
    }

    #[test]
    fn malformed_answers_are_temporary_unavailability() {
        let error = parse_error(
            "vod-sh",
            &VodError::Malformed {
                action: "GetPlayInfo",
                why: "expected value at line 1 column 1".into(),
            },
        );
        assert_eq!(error.kind(), Kind::ProviderUnavailable);
        assert!(error.is_temporary());
    }
}
