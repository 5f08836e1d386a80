//! [`StoredStream`]: one row of the `local_streams` table as the adapter holds it, decoded by
//! `core.rs` and kept in memory by `cache.rs` (here so that neither imports the other for it).

use crate::domain::Stream;

/// A stream row and the operations that touched it.
#[derive(Clone)]
pub(super) struct StoredStream {
    pub stream: Stream,
    pub created_by: String,
    pub last_op: String,
}
