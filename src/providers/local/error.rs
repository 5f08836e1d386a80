//! What can go wrong in the `local` adapter, and its mapping to the taxonomy.

use crate::domain::StreamName;
use crate::error::{Error, Kind};

/// A refusal of the local store.
#[derive(Debug, thiserror::Error)]
pub(super) enum LocalError {
    #[error("stream {0} does not exist")]
    NotFound(StreamName),
    #[error("stream {0} has changed since the etag was read")]
    EtagMismatch(StreamName),
    #[error("stream {0} exists already")]
    AlreadyExists(StreamName),
    #[error("stream {0} is still being created")]
    Creating(StreamName),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// Turns a local refusal into the taxonomy, naming the provider instance.
pub(super) fn parse_error(provider: &str, error: LocalError) -> Error {
    let kind = match &error {
        LocalError::NotFound(_) => Kind::StreamNotFound,
        LocalError::EtagMismatch(_) => Kind::EtagMismatch,
        LocalError::AlreadyExists(_) => Kind::StreamAlreadyExists,
        LocalError::Creating(_) => Kind::StreamInUse,
        LocalError::Store(_) => Kind::Internal,
    };
    match error {
        LocalError::Store(e) => Error::from(e),
        refusal => Error::new(kind, refusal.to_string()),
    }
    .with_provider(provider)
}
