//! Durable state: the operation store, and the database both it and the `local` provider use.
//!
//! One implementation, [`SqlStore`], serves SQLite (embedded, the default) and PostgreSQL
//! (several replicas) through sqlx's `Any` driver, with portable SQL and `$n` placeholders.
//! It also holds the audit trail ([`AuditStore`], in `audit.rs`), the probe of whether a
//! PostgreSQL store answers ([`StoreProbe`], in `probe.rs`), and the retention sweep that keeps
//! both tables bounded ([`sweep`]), the notices between the replicas sharing one store
//! ([`Notifier`], in `notify.rs`), the fleet's polls of watched streams ([`PollStore`], in
//! `polls.rs`), and the outbound-limit turns the replicas of a PostgreSQL store share
//! ([`SharedBudgets`], in `budgets.rs`).

mod audit;
mod batch;
mod budgets;
mod notify;
mod polls;
mod probe;
mod sql;
pub mod sweep;

use std::time::Duration;

use async_trait::async_trait;

pub use batch::{Db, Row, Statement};
pub use budgets::{Claim, RESERVE_BOUND, SharedBudgets, Unanswered};
pub use notify::{LISTENER_NAME, Notice, Notifier};
pub use polls::{PollStore, StoredRead};
pub use probe::StoreProbe;
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

/// Who drives an operation, and for how long unless renewed. The store computes the end of a
/// lease from the database's clock (`now()` on PostgreSQL, which every replica shares; the
/// process's clock on SQLite, which one process uses), never from a replica's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The process (a runner's instance id).
    pub owner: String,
    /// How long the lease lasts from the statement that takes or renews it.
    pub length: Duration,
}

/// What a renewal of leases found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Renewed {
    /// The operations whose lease the owner still held and now holds for another lease.
    pub held: Vec<String>,
    /// Those of them whose cancellation was requested (maybe through another process).
    pub cancelled: Vec<String>,
}

/// Which unfinished operations a claim takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orphans {
    /// Those with no owner or whose lease ended (their owner, maybe the claimer itself, stopped
    /// renewing it).
    Lapsed,
    /// Every one, leases or not: the store is the claimer's alone, whoever held them is gone.
    All,
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
    /// Takes unfinished operations (`which`), at most `limit`, and leases them to `lease`;
    /// returns them as stored. On PostgreSQL in random order, skipping rows another claimer
    /// has locked, so that replicas claiming at once share the orphans; on SQLite oldest first.
    /// Two processes claiming at once never both get one.
    async fn claim(&self, lease: &Lease, which: Orphans, limit: usize) -> Result<Vec<Operation>>;
    /// Extends the lease of each unfinished operation of `ids` that `lease.owner` still holds
    /// (whether or not its lease ran out meanwhile).
    async fn renew(&self, lease: &Lease, ids: &[String]) -> Result<Renewed>;
    /// Ends the leases of `owner` (it stops): others may adopt its operations at once.
    async fn release(&self, owner: &str) -> Result<()>;
    /// Ends `owner`'s lease of the operation `id`, if it holds it: its task stopped without
    /// finishing it, and the next claim (by any process) takes it.
    async fn release_one(&self, id: &str, owner: &str) -> Result<()>;
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
