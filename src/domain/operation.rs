//! Durable long-running operations: what was asked, how far it got, how it ended.

use serde::{Deserialize, Serialize};

use super::names::{ParentName, StreamName};
use super::stream::{Stream, StreamPatch, StreamSpec};
use crate::error::Error;

/// The step of an operation that has been accepted and not yet started.
pub const STEP_ACCEPTED: &str = "accepted";
/// The step of an operation that succeeded.
pub const STEP_DONE: &str = "done";

/// The method that started an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verb {
    /// CreateStream.
    CreateStream,
    /// UpdateStream.
    UpdateStream,
    /// DeleteStream.
    DeleteStream,
    /// BatchDeleteStreams.
    BatchDeleteStreams,
}

impl Verb {
    /// The method's API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::CreateStream => "CreateStream",
            Verb::UpdateStream => "UpdateStream",
            Verb::DeleteStream => "DeleteStream",
            Verb::BatchDeleteStreams => "BatchDeleteStreams",
        }
    }

    /// Parses a method's API name.
    pub fn parse(text: &str) -> Option<Self> {
        [
            Verb::CreateStream,
            Verb::UpdateStream,
            Verb::DeleteStream,
            Verb::BatchDeleteStreams,
        ]
        .into_iter()
        .find(|v| v.as_str() == text)
    }
}

/// What a mutating call asked for, validated and resolved; stored with the operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpRequest {
    /// Create `name` with `spec`.
    Create {
        /// The new stream.
        name: StreamName,
        /// Its fields.
        spec: StreamSpec,
    },
    /// Apply `patch` to `name`, if its etag is still `etag`.
    Update {
        /// The stream.
        name: StreamName,
        /// The changes.
        patch: StreamPatch,
        /// The caller's etag, if given.
        etag: Option<String>,
    },
    /// Delete `name`, if its etag is still `etag`.
    Delete {
        /// The stream.
        name: StreamName,
        /// The caller's etag, if given.
        etag: Option<String>,
        /// Succeed when the stream does not exist.
        allow_missing: bool,
    },
    /// Delete every name under `parent`.
    BatchDelete {
        /// The common parent.
        parent: ParentName,
        /// The streams.
        names: Vec<StreamName>,
    },
}

impl OpRequest {
    /// The method this request belongs to.
    pub fn verb(&self) -> Verb {
        match self {
            OpRequest::Create { .. } => Verb::CreateStream,
            OpRequest::Update { .. } => Verb::UpdateStream,
            OpRequest::Delete { .. } => Verb::DeleteStream,
            OpRequest::BatchDelete { .. } => Verb::BatchDeleteStreams,
        }
    }

    /// The provider instance it acts on.
    pub fn provider(&self) -> &str {
        match self {
            OpRequest::Create { name, .. }
            | OpRequest::Update { name, .. }
            | OpRequest::Delete { name, .. } => &name.provider,
            OpRequest::BatchDelete { parent, .. } => &parent.provider,
        }
    }

    /// The resource it acts on, as a name.
    pub fn target(&self) -> String {
        match self {
            OpRequest::Create { name, .. }
            | OpRequest::Update { name, .. }
            | OpRequest::Delete { name, .. } => name.to_string(),
            OpRequest::BatchDelete { parent, .. } => parent.to_string(),
        }
    }
}

/// The outcome of one name of a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchItem {
    /// The stream.
    pub name: StreamName,
    /// Why it was not deleted; `None` when it was.
    pub error: Option<Error>,
}

/// The typed result of a successful operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OpResult {
    /// Create and Update: the stream as it is now.
    Stream(Stream),
    /// Delete.
    Deleted {
        /// The stream.
        name: StreamName,
        /// False when it was already gone and allow_missing was set.
        existed: bool,
    },
    /// BatchDelete: one outcome per requested name, in request order.
    Batch(Vec<BatchItem>),
}

/// A durable operation, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// The id (the last segment of its name).
    pub id: String,
    /// What was asked.
    pub request: OpRequest,
    /// Who asked.
    pub principal: String,
    /// The caller's request_id, if any.
    pub request_id: Option<String>,
    /// A digest of the request, to tell a retry from a different request with the same id.
    pub fingerprint: String,
    /// The step it is in: [`STEP_ACCEPTED`] before the first, then the adapter's own names,
    /// [`STEP_DONE`] once it succeeded.
    pub step: String,
    /// Adapter-defined state carried between steps.
    pub progress: serde_json::Value,
    /// When the next step may run, ms since the epoch.
    pub next_run_ms: i64,
    /// Provider attempts made, retries included.
    pub attempts: i32,
    /// Failed attempts in a row of the current step (drives the backoff).
    pub retries: i32,
    /// Whether a caller asked to cancel.
    pub cancel_requested: bool,
    /// True when the current step may have run before: the operation was resumed after a
    /// restart, or the step is being retried. Adapters use it to recognise their own earlier
    /// effect. Never stored.
    #[serde(skip)]
    pub replayed: bool,
    /// How it ended, once done.
    pub outcome: Option<Result<OpResult, Error>>,
    /// What a successful operation could not do or read back (e.g. the tags of a created
    /// stream, when the provider refused the follow-up read): the success stands, and these
    /// say what the result does not show.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// When it was accepted.
    pub create_time_ms: i64,
    /// When it last changed.
    pub update_time_ms: i64,
}

impl Operation {
    /// Whether it has ended.
    pub fn done(&self) -> bool {
        self.outcome.is_some()
    }
}
