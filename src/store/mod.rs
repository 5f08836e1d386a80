//! Durable state: the operation store, and the database both it and the `local` provider use.
//!
//! One implementation, [`SqlStore`], serves SQLite (embedded, the default) and PostgreSQL
//! (several replicas) through sqlx's `Any` driver, with portable SQL and `$n` placeholders.
//! It also holds the audit trail ([`AuditStore`], in `audit.rs`), and the retention sweep that
//! keeps both tables bounded ([`sweep`]).

mod audit;
mod batch;
mod sql;
pub mod sweep;

use async_trait::async_trait;

pub use batch::{Db, Row, Statement};
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

/// Who drives an operation, and until when unless renewed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The process (a runner's instance id).
    pub owner: String,
    /// Milliseconds since the epoch.
    pub until_ms: i64,
}

/// Filters of ListOperations.
#[derive(Clone, Debug, Default)]
pub struct OperationFilter {
    /// Only operations this principal started.
    pub principal: Option<String>,
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
    /// Records a new operation, leased to `lease`, unless one with its principal and
    /// request_id exists; with it, in the same transaction, `audit`: the record of the call
    /// that started it (written only if the operation is, so neither is ever without the other).
    async fn insert(
        &self,
        op: &Operation,
        lease: &Lease,
        audit: Option<&AuditRecord>,
    ) -> Result<Inserted>;
    /// Reads one operation.
    async fn get(&self, id: &str) -> Result<Option<Operation>>;
    /// Reads the operation a principal started with a request_id.
    async fn find_by_request_id(
        &self,
        principal: &str,
        request_id: &str,
    ) -> Result<Option<Operation>>;
    /// Writes the runner's progress (not the cancel flag), if `owner` still holds the
    /// operation; false when another process adopted it meanwhile (then nothing is written).
    async fn save(&self, op: &Operation, owner: &str) -> Result<bool>;
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
    /// Takes every unfinished operation that has no owner, or another owner whose lease ended
    /// before `now_ms`, at most `limit`, oldest first: they are leased to `lease` and
    /// returned. Two processes claiming at once never both get one.
    async fn claim(&self, lease: &Lease, now_ms: i64, limit: usize) -> Result<Vec<Operation>>;
    /// Extends the lease of every unfinished operation `lease.owner` holds; returns the ids of
    /// those whose cancellation was requested (maybe through another process).
    async fn renew(&self, lease: &Lease) -> Result<Vec<String>>;
    /// Ends the leases of `owner` (it stops): others may adopt its operations at once.
    async fn release(&self, owner: &str) -> Result<()>;
    /// Whether one process only uses this store (embedded SQLite): then a process starting
    /// takes every unfinished operation at once, leases or not, since whoever held them is gone.
    fn exclusive(&self) -> bool;
}

/// One mutating call, as the audit trail holds it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditRecord {
    /// A unique id.
    pub id: String,
    /// When the call reached its handler, in milliseconds since the epoch.
    pub time_ms: i64,
    /// Who called.
    pub principal: String,
    /// The method, e.g. `DeleteStream`.
    pub method: String,
    /// The resource the call acts on (a stream, or a parent for a batch).
    pub target: String,
    /// The request_id of the call, or empty.
    pub request_id: String,
    /// `operations/{id}` of the operation the call started or found, or empty.
    pub operation: String,
    /// `accepted`, `validated`, or the error reason of the call.
    pub outcome: String,
    /// The provider's request id of the call's failure, or empty.
    pub provider_request_id: String,
    /// Once the operation is done: `succeeded` or its error reason (read only; see
    /// [`AuditStore::complete`]).
    pub final_outcome: String,
    /// The provider's request id of the operation's failure, or empty (read only).
    pub final_provider_request_id: String,
}

/// Filters of ListAuditRecords: every one given must match exactly.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    /// Only calls of this principal.
    pub principal: Option<String>,
    /// Only calls of this method.
    pub method: Option<String>,
    /// Only calls on this resource.
    pub target: Option<String>,
    /// Only calls that started or found this operation (`operations/{id}`).
    pub operation: Option<String>,
}

/// Where the audit trail lives.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Records a call (its `final_*` fields are ignored); recording one already there (the
    /// same id) changes nothing, so a write whose answer was lost can be made again.
    async fn record(&self, record: &AuditRecord) -> Result<()>;
    /// Records the final outcome of `operation` (`operations/{id}`); the first one wins.
    async fn complete(
        &self,
        operation: &str,
        time_ms: i64,
        outcome: &str,
        provider_request_id: &str,
    ) -> Result<()>;
    /// Newest first, after `after` (a `(time_ms, id)` position), with the final outcomes.
    async fn list_records(
        &self,
        filter: &AuditFilter,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>>;
}
