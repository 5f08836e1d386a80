//! THE error taxonomy of streamgate, and the only place that builds a `tonic::Status`.
//!
//! Every failure inside the gateway is an [`Error`]: a [`Kind`] (which fixes the gRPC code and
//! the stable `ErrorInfo` reason), a [`Retry`] status that retry code looks at, and the
//! provider's own code and request id when a provider said something. [`Error::to_status`]
//! turns it into a `tonic::Status` carrying `google.rpc.ErrorInfo` (domain `streamgate`),
//! `BadRequest` field violations for bad input and `RetryInfo` for throttling.
//!
//! Errors are serde-serializable because a failed operation stores its error durably.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every error streamgate reports.
pub const DOMAIN: &str = "streamgate";

/// The most field violations an error carries; the rest are counted, not listed.
pub const MAX_VIOLATIONS: usize = 20;

/// The most bytes of a violation's field or description.
pub const MAX_VIOLATION_TEXT: usize = 256;

/// The most bytes of all the violations of an error together (fields and descriptions).
pub const MAX_VIOLATIONS_TEXT: usize = 2048;

/// The most bytes of an error's message (`grpc-message`).
pub const MAX_MESSAGE_LEN: usize = 512;

/// `text` cut to at most `max` bytes at a character boundary, with `…` when it was cut.
fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The result type of everything that can fail in streamgate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in provider-neutral terms. Each kind has one gRPC code and one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// The request is malformed; field violations say where.
    InvalidArgument,
    /// A request_id was reused for a different request (AIP-155).
    RequestIdConflict,
    /// The stream does not exist.
    StreamNotFound,
    /// The VOD video that should hold the stream does not exist.
    VideoNotFound,
    /// No provider instance has this id.
    ProviderNotFound,
    /// No operation has this id.
    OperationNotFound,
    /// The caller's etag is not the stream's current etag.
    EtagMismatch,
    /// A stream with this id exists already.
    StreamAlreadyExists,
    /// The provider refuses because the stream is in use.
    StreamInUse,
    /// The provider refuses to delete a distribution that is still enabled.
    StreamNotDisabled,
    /// The operation is done and cannot be cancelled.
    OperationDone,
    /// A signed URL was asked of a provider instance with no signing key configured.
    SigningKeyNotConfigured,
    /// The stream cannot be played back (e.g. a KVS stream that retains no data).
    StreamNotPlayable,
    /// The provider throttled us and kept doing so through our retries.
    ProviderThrottled,
    /// An account quota of the provider is used up.
    ProviderQuotaExceeded,
    /// The provider refused our credentials' permissions.
    ProviderPermissionDenied,
    /// The provider rejected the credentials themselves (bad key, bad signature).
    ProviderCredentials,
    /// The provider failed or could not be reached.
    ProviderUnavailable,
    /// The provider kind does not support the method.
    CapabilityUnsupported,
    /// The caller did not present valid credentials.
    Unauthenticated,
    /// The caller may not do this.
    PermissionDenied,
    /// The caller is over its rate.
    RateLimited,
    /// The gateway is shedding load.
    Overloaded,
    /// The caller has as many calls in flight as it may (`[server]
    /// max_in_flight_per_principal`).
    TooManyCalls,
    /// The caller, its connection or the gateway has as many long-lived calls open as it may.
    TooManyStreams,
    /// The operation was cancelled by a caller.
    Cancelled,
    /// The caller's deadline passed.
    DeadlineExceeded,
    /// A bug or an unexpected failure of the gateway itself.
    Internal,
    /// The provider's resource is not in a state that allows the call yet (a VOD video whose
    /// status is not Normal).
    StreamNotReady,
    /// The provider refuses this change of the resource as such (CloudFront IllegalUpdate).
    UpdateNotAllowed,
    /// A page token the gateway did not issue to this caller for this query: altered, made
    /// up, or replayed by another principal or with another parent or filter.
    InvalidPageToken,
    /// The store (SQLite or PostgreSQL) cannot be reached or is busy: a later call may work.
    StoreUnavailable,
    /// The store refused a statement. Its text is logged, never sent (see [`Error::store`]).
    StoreError,
}

impl Kind {
    /// The gRPC code of this kind: written once, here.
    pub fn code(self) -> Code {
        match self {
            Kind::InvalidArgument | Kind::RequestIdConflict => Code::InvalidArgument,
            Kind::StreamNotFound
            | Kind::VideoNotFound
            | Kind::ProviderNotFound
            | Kind::OperationNotFound => Code::NotFound,
            Kind::EtagMismatch => Code::Aborted,
            Kind::StreamAlreadyExists => Code::AlreadyExists,
            Kind::StreamInUse
            | Kind::StreamNotDisabled
            | Kind::OperationDone
            | Kind::SigningKeyNotConfigured
            | Kind::StreamNotPlayable
            | Kind::StreamNotReady
            | Kind::UpdateNotAllowed => Code::FailedPrecondition,
            Kind::ProviderThrottled
            | Kind::ProviderQuotaExceeded
            | Kind::RateLimited
            | Kind::Overloaded
            | Kind::TooManyCalls
            | Kind::TooManyStreams => Code::ResourceExhausted,
            Kind::ProviderPermissionDenied | Kind::PermissionDenied => Code::PermissionDenied,
            // The gateway's own credentials, not the caller's: UNAUTHENTICATED would tell the
            // caller to re-authenticate. The gateway is misconfigured; a later call may work.
            Kind::ProviderCredentials | Kind::ProviderUnavailable => Code::Unavailable,
            Kind::CapabilityUnsupported => Code::Unimplemented,
            Kind::Unauthenticated => Code::Unauthenticated,
            Kind::Cancelled => Code::Cancelled,
            Kind::DeadlineExceeded => Code::DeadlineExceeded,
            Kind::Internal => Code::Internal,
            Kind::InvalidPageToken => Code::InvalidArgument,
            Kind::StoreUnavailable => Code::Unavailable,
            Kind::StoreError => Code::Internal,
        }
    }

    /// The stable `ErrorInfo.reason` of this kind.
    pub fn reason(self) -> &'static str {
        match self {
            Kind::InvalidArgument => "INVALID_ARGUMENT",
            Kind::RequestIdConflict => "REQUEST_ID_CONFLICT",
            Kind::StreamNotFound => "STREAM_NOT_FOUND",
            Kind::VideoNotFound => "VIDEO_NOT_FOUND",
            Kind::ProviderNotFound => "PROVIDER_NOT_FOUND",
            Kind::OperationNotFound => "OPERATION_NOT_FOUND",
            Kind::EtagMismatch => "ETAG_MISMATCH",
            Kind::StreamAlreadyExists => "STREAM_ALREADY_EXISTS",
            Kind::StreamInUse => "STREAM_IN_USE",
            Kind::StreamNotDisabled => "STREAM_NOT_DISABLED",
            Kind::OperationDone => "OPERATION_DONE",
            Kind::SigningKeyNotConfigured => "SIGNING_KEY_NOT_CONFIGURED",
            Kind::StreamNotPlayable => "STREAM_NOT_PLAYABLE",
            Kind::ProviderThrottled => "PROVIDER_THROTTLED",
            Kind::ProviderQuotaExceeded => "PROVIDER_QUOTA_EXCEEDED",
            Kind::ProviderPermissionDenied => "PROVIDER_PERMISSION_DENIED",
            Kind::ProviderCredentials => "PROVIDER_CREDENTIALS_INVALID",
            Kind::ProviderUnavailable => "PROVIDER_UNAVAILABLE",
            Kind::CapabilityUnsupported => "CAPABILITY_UNSUPPORTED",
            Kind::Unauthenticated => "UNAUTHENTICATED",
            Kind::PermissionDenied => "PERMISSION_DENIED",
            Kind::RateLimited => "RATE_LIMITED",
            Kind::Overloaded => "OVERLOADED",
            Kind::TooManyCalls => "TOO_MANY_CALLS",
            Kind::TooManyStreams => "TOO_MANY_STREAMS",
            Kind::Cancelled => "CANCELLED",
            Kind::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Kind::Internal => "INTERNAL",
            Kind::StreamNotReady => "STREAM_NOT_READY",
            Kind::UpdateNotAllowed => "UPDATE_NOT_ALLOWED",
            Kind::InvalidPageToken => "INVALID_PAGE_TOKEN",
            Kind::StoreUnavailable => "STORE_UNAVAILABLE",
            Kind::StoreError => "STORE_ERROR",
        }
    }
}

/// Whether trying again may help. Retry code looks only at [`Error::is_temporary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Retry {
    /// Trying again will fail the same way.
    Permanent,
    /// Trying again (after a backoff) may succeed.
    Temporary,
    /// It was temporary, but retries ran out.
    Persistent,
}

/// One field of a request and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldViolation {
    /// The field path, e.g. `stream.tags`.
    pub field: String,
    /// What is wrong, for a human.
    pub description: String,
}

/// A streamgate error. Build it with the constructors, refine it with the `with_*` methods.
/// Boxed, so that a `Result` stays one pointer wide on the happy path.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    kind: Kind,
    message: String,
    retry: Retry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    violations: Vec<FieldViolation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
}

impl Error {
    /// A permanent error of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                message: message.into(),
                retry: Retry::Permanent,
                provider: None,
                provider_code: None,
                provider_request_id: None,
                violations: Vec::new(),
                retry_after_ms: None,
            }),
        }
    }

    /// Bad input: one violation per offending field. At most [`MAX_VIOLATIONS`] are kept, each
    /// field and description cut to [`MAX_VIOLATION_TEXT`] bytes and all of them together no
    /// more than [`MAX_VIOLATIONS_TEXT`]; a last violation says how many were left out, so that
    /// the answer stays small (a stock client reads 8 KiB of metadata) however bad the request.
    pub fn invalid(violations: Vec<FieldViolation>) -> Self {
        Error::invalid_and_more(violations, false)
    }

    /// As [`Error::invalid`], for a check that stopped counting: `more` says that violations
    /// beyond those given were found, and the error says so without a number.
    pub fn invalid_and_more(violations: Vec<FieldViolation>, more: bool) -> Self {
        let total = violations.len();
        let mut kept: Vec<FieldViolation> = Vec::new();
        let mut budget = MAX_VIOLATIONS_TEXT;
        for v in violations.into_iter().take(MAX_VIOLATIONS) {
            let v = FieldViolation {
                field: shorten(&v.field, MAX_VIOLATION_TEXT),
                description: shorten(&v.description, MAX_VIOLATION_TEXT),
            };
            let size = v.field.len() + v.description.len();
            if size > budget {
                break;
            }
            budget -= size;
            kept.push(v);
        }
        let message = match kept.as_slice() {
            [one] if total == 1 => format!("invalid {}: {}", one.field, one.description),
            many => format!(
                "invalid request: {}",
                many.iter()
                    .map(|v| v.field.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut message = shorten(&message, MAX_MESSAGE_LEN - 64);
        if total > kept.len() || more {
            let left_out = if more {
                "more".to_string()
            } else {
                format!("{} more", total - kept.len())
            };
            message.push_str(&format!(" (and {left_out} violations left out)"));
            kept.push(FieldViolation {
                field: "*".into(),
                description: format!("{left_out} violations left out"),
            });
        }
        let mut error = Error::new(Kind::InvalidArgument, message);
        error.inner.violations = kept;
        error
    }

    /// Bad input in one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::invalid(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// Adds a field violation to an error of any kind.
    pub fn with_violation(
        mut self,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        if self.inner.violations.len() < MAX_VIOLATIONS {
            self.inner.violations.push(FieldViolation {
                field: shorten(&field.into(), MAX_VIOLATION_TEXT),
                description: shorten(&description.into(), MAX_VIOLATION_TEXT),
            });
        }
        self
    }

    /// A failure of the gateway itself.
    pub fn internal(message: impl fmt::Display) -> Self {
        Error::new(Kind::Internal, message.to_string())
    }

    /// Marks the error as worth retrying.
    pub fn temporary(mut self) -> Self {
        self.inner.retry = Retry::Temporary;
        self
    }

    /// Marks a temporary error whose retries ran out.
    pub fn persistent(mut self) -> Self {
        if self.inner.retry == Retry::Temporary {
            self.inner.retry = Retry::Persistent;
        }
        self
    }

    /// Names the provider instance the error came from.
    pub fn with_provider(mut self, provider: impl Into<String>) -> Self {
        self.inner.provider = Some(provider.into());
        self
    }

    /// Records the provider's own error code, e.g. `VersionMismatchException`.
    pub fn with_provider_code(mut self, code: impl Into<String>) -> Self {
        self.inner.provider_code = Some(code.into());
        self
    }

    /// Records the provider's request id.
    pub fn with_provider_request_id(mut self, id: impl Into<String>) -> Self {
        self.inner.provider_request_id = Some(id.into());
        self
    }

    /// Tells the caller when trying again makes sense (sent as `RetryInfo`).
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.inner.retry_after_ms = Some(delay.as_millis() as u64);
        self
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.inner.kind
    }

    /// The message, for humans.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// Whether retrying may help.
    pub fn is_temporary(&self) -> bool {
        self.inner.retry == Retry::Temporary
    }

    /// The field violations of an INVALID_ARGUMENT error.
    pub fn violations(&self) -> &[FieldViolation] {
        &self.inner.violations
    }

    /// The provider's own error code, if any.
    pub fn provider_code(&self) -> Option<&str> {
        self.inner.provider_code.as_deref()
    }

    /// The provider's request id, if any.
    pub fn provider_request_id(&self) -> Option<&str> {
        self.inner.provider_request_id.as_deref()
    }

    fn error_details(&self) -> ErrorDetails {
        let mut metadata = HashMap::new();
        for (key, value) in [
            ("provider", &self.inner.provider),
            ("provider_code", &self.inner.provider_code),
            ("provider_request_id", &self.inner.provider_request_id),
        ] {
            if let Some(value) = value {
                metadata.insert(key.to_string(), value.clone());
            }
        }
        let mut details = ErrorDetails::with_error_info(self.inner.kind.reason(), DOMAIN, metadata);
        if !self.inner.violations.is_empty() {
            details.set_bad_request(
                self.inner
                    .violations
                    .iter()
                    .map(|v| {
                        tonic_types::FieldViolation::new(v.field.clone(), v.description.clone())
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let retry_after = match (self.inner.retry_after_ms, self.inner.kind) {
            (Some(ms), _) => Some(Duration::from_millis(ms)),
            (
                None,
                Kind::ProviderThrottled
                | Kind::RateLimited
                | Kind::Overloaded
                | Kind::TooManyCalls
                | Kind::TooManyStreams,
            ) => Some(Duration::from_secs(1)),
            (None, _) => None,
        };
        if let Some(delay) = retry_after {
            details.set_retry_info(Some(delay));
        }
        details
    }

    /// The `tonic::Status` a caller receives for this error.
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::with_error_details(
            self.inner.kind.code(),
            shorten(&self.inner.message, MAX_MESSAGE_LEN),
            self.error_details(),
        )
    }

    /// The `google.rpc.Status` stored in a failed operation's `error` field.
    pub fn to_rpc_status(&self) -> tonic_types::pb::Status {
        let status = self.to_status();
        tonic_types::pb::Status::decode(status.details()).unwrap_or_else(|_| {
            tonic_types::pb::Status {
                code: self.inner.kind.code() as i32,
                message: self.inner.message.clone(),
                details: Vec::new(),
            }
        })
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("message", &self.inner.message)
            .field("retry", &self.inner.retry);
        if let Some(code) = &self.inner.provider_code {
            d.field("provider_code", code);
        }
        if let Some(id) = &self.inner.provider_request_id {
            d.field("provider_request_id", id);
        }
        if !self.inner.violations.is_empty() {
            d.field("violations", &self.inner.violations);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.inner.kind.reason(), self.inner.message)?;
        if let Some(code) = &self.inner.provider_code {
            write!(f, " (provider code {code})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        error.to_status()
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Error::store(&error)
    }
}

/// Whether a store error means the database cannot be reached (or is busy) rather than that it
/// refused the statement: the pool timed out or closed, the connection failed, or the
/// database said so — PostgreSQL's connection exceptions (SQLSTATE class `08`), shutdown and
/// start-up (`57P01`-`57P03`), too many connections (`53300`); SQLite's BUSY and LOCKED
/// (primary codes 5 and 6, whatever their extended code).
fn store_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            let sqlstate = code.len() == 5 && !code.bytes().all(|b| b.is_ascii_digit());
            if sqlstate {
                code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
            } else {
                code.parse::<i64>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
            }
        }),
        _ => false,
    }
}

impl Error {
    /// A store failure as a caller may see it: `the store failed (ref …)` (INTERNAL,
    /// STORE_ERROR), or `the store cannot be reached (ref …)` (UNAVAILABLE, STORE_UNAVAILABLE,
    /// temporary, with RetryInfo). The database's own text may name tables, columns, hosts or
    /// values: it is logged once, at error level, with the same ref, and never sent.
    pub fn store(error: &sqlx::Error) -> Self {
        let reference = hex::encode(rand::random::<[u8; 6]>());
        if store_unreachable(error) {
            tracing::error!(store_ref = %reference, %error, "the store cannot be reached");
            Error::new(
                Kind::StoreUnavailable,
                format!("the store cannot be reached (ref {reference})"),
            )
            .temporary()
            .with_retry_after(Duration::from_secs(1))
        } else {
            tracing::error!(store_ref = %reference, %error, "the store failed");
            Error::new(
                Kind::StoreError,
                format!("the store failed (ref {reference})"),
            )
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(error: serde_json::Error) -> Self {
        Error::internal(format_args!("stored record is malformed: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_carries_error_info_and_violations() {
        let error = Error::invalid_field("stream_id", "must match [a-zA-Z0-9_.-]{1,256}")
            .with_provider("local");
        let status = error.to_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let info = details.error_info().expect("error info");
        assert_eq!(info.reason, "INVALID_ARGUMENT");
        assert_eq!(info.domain, "streamgate");
        assert_eq!(
            info.metadata.get("provider").map(String::as_str),
            Some("local")
        );
        let bad = details.bad_request().expect("bad request");
        assert_eq!(bad.field_violations[0].field, "stream_id");
    }

    #[test]
    fn many_violations_are_capped_and_counted() {
        let violations = (0..100_000)
            .map(|i| FieldViolation {
                field: format!("update_mask.paths[{i}]"),
                description: "x".repeat(10_000),
            })
            .collect();
        let error = Error::invalid(violations);
        assert!(error.violations().len() <= MAX_VIOLATIONS + 1);
        let last = error.violations().last().unwrap();
        assert_eq!(last.field, "*");
        assert!(last.description.starts_with(&format!(
            "{} more violations left out",
            100_000 - (error.violations().len() - 1)
        )));
        let status = error.to_status();
        assert!(status.message().len() <= MAX_MESSAGE_LEN);
        assert!(status.details().len() <= 4096, "{}", status.details().len());
    }

    #[test]
    fn throttling_carries_retry_info() {
        let status = Error::new(Kind::ProviderThrottled, "slow down")
            .with_provider_code("ClientLimitExceededException")
            .to_status();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let details = status.get_error_details();
        assert!(details.retry_info().is_some());
        assert_eq!(
            details.error_info().unwrap().metadata["provider_code"],
            "ClientLimitExceededException"
        );
    }

    #[test]
    fn the_gateways_own_credentials_refused_never_tell_the_caller_to_re_authenticate() {
        let status = Error::new(Kind::ProviderCredentials, "key refused").to_status();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "PROVIDER_CREDENTIALS_INVALID"
        );
    }

    #[test]
    fn store_errors_answer_a_ref_not_their_text() {
        let refused = Error::store(&sqlx::Error::Protocol(
            "relation \"operations\" does not exist at host db-7.internal".into(),
        ));
        let status = refused.to_status();
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(
            status.get_error_details().error_info().unwrap().reason,
            "STORE_ERROR"
        );
        assert!(
            status.message().starts_with("the store failed (ref "),
            "{}",
            status.message()
        );
        assert!(!format!("{status:?}").contains("db-7"));
        assert!(!refused.is_temporary());

        let unreachable = Error::store(&sqlx::Error::PoolTimedOut);
        let status = unreachable.to_status();
        assert_eq!(status.code(), Code::Unavailable);
        let details = status.get_error_details();
        assert_eq!(details.error_info().unwrap().reason, "STORE_UNAVAILABLE");
        assert!(details.retry_info().is_some());
        assert!(unreachable.is_temporary());
        // Each failure its own ref, to find its one log line.
        assert_ne!(
            Error::store(&sqlx::Error::PoolClosed).message(),
            Error::store(&sqlx::Error::PoolClosed).message()
        );
    }

    #[test]
    fn rpc_status_round_trips_through_json() {
        let error = Error::new(Kind::EtagMismatch, "stale").with_provider_request_id("r-1");
        let stored = serde_json::to_string(&error).unwrap();
        let back: Error = serde_json::from_str(&stored).unwrap();
        assert_eq!(back, error);
        let rpc = back.to_rpc_status();
        assert_eq!(rpc.code, Code::Aborted as i32);
        assert!(!rpc.details.is_empty());
    }
}
