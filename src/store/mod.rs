//! Durable state: the operation store, and the database both it and the `local` provider use.
//!
//! One implementation, [`SqlStore`], serves SQLite (embedded, the default) and PostgreSQL
//! (several replicas) through sqlx's `Any` driver, with portable SQL and `$n` placeholders.

mod sql;

use async_trait::async_trait;

pub use sql::SqlStore;

use crate::domain::Operation;
use crate::error::Result;

/// What inserting an operation did.
#[derive(Debug)]
pub enum Inserted {
    /// The operation is new.
    New,
    /// An operation with the same principal and request_id exists already: this one.
    Existing(Box<Operation>),
}

/// Filters of ListOperations.
#[derive(Clone, Debug, Default)]
pub struct OperationFilter {
    /// Only done (true) or unfinished (false) operations.
    pub done: Option<bool>,
    /// Only operations of this method.
    pub verb: Option<String>,
    /// Only operations on this resource.
    pub target: Option<String>,
}

/// Where the durable operations live.
#[async_trait]
pub trait OperationStore: Send + Sync {
    /// Records a new operation, unless one with its principal and request_id exists.
    async fn insert(&self, op: &Operation) -> Result<Inserted>;
    /// Reads one operation.
    async fn get(&self, id: &str) -> Result<Option<Operation>>;
    /// Reads the operation a principal started with a request_id.
    async fn find_by_request_id(
        &self,
        principal: &str,
        request_id: &str,
    ) -> Result<Option<Operation>>;
    /// Writes the runner's progress (not the cancel flag).
    async fn save(&self, op: &Operation) -> Result<()>;
    /// Sets the cancel flag; false if there is no such unfinished operation.
    async fn request_cancel(&self, id: &str) -> Result<bool>;
    /// Newest first, after `after` (a `(create_time_ms, id)` position).
    async fn list(
        &self,
        filter: &OperationFilter,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<Operation>>;
    /// Every operation that is not done, oldest first.
    async fn unfinished(&self) -> Result<Vec<Operation>>;
}
