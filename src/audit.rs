//! The audit trail of mutating calls.
//!
//! The handler of each mutating method (the table of [`crate::methods`] says which: the
//! StreamService methods that start an operation) ends with [`Audit::call`]: one row in the
//! durable `audit_records` table and one structured log line (target `audit`) with the
//! principal, method, target, request_id, operation, outcome and provider request id. When an operation is done, the
//! runner calls [`Audit`] as its [`OperationObserver`]: the final outcome (`succeeded` or the
//! error reason) and the provider request id of a failure go into `audit_completions` and
//! another `audit` log line. AuditService.ListAuditRecords reads both, joined.
//!
//! A mutating call of an authenticated caller refused before its handler, by the
//! authorization or rate-limit layer, is recorded too ([`Audit::refused`]): with the principal
//! and the refusal's reason, but no target or request_id, which are in the request body those
//! layers never read. These records are written in the background, at most
//! [`MAX_PENDING_REFUSALS`] at a time: a refusal beyond that is not recorded, and a warning
//! (at most one a second, [`Sampled`]) says how many were not. Calls refused for want of valid
//! credentials are not recorded one by one (anyone can send them, as fast as they like): the
//! authentication layer counts them (`streamgate_unauthenticated_refusals_total`) and logs a
//! line at most once a second with how many there were. Load shedding refuses without
//! recording: under overload, writing would add to it; the `streamgate_rpc_*` metrics count
//! those calls. A failed audit write is logged as a warning and does not fail the call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::domain::{Operation, now_ms};
use crate::error::Error;
use crate::operations::OperationObserver;
use crate::store::{AuditRecord, AuditStore};

/// The outcome of a call that started or found an operation.
pub const ACCEPTED: &str = "accepted";
/// The outcome of a `validate_only` call that passed every check.
pub const VALIDATED: &str = "validated";
/// At most this many records of refused calls are being written at once.
pub const MAX_PENDING_REFUSALS: usize = 64;
/// The final outcome of an operation that succeeded.
pub const SUCCEEDED: &str = "succeeded";
/// At most this many characters of a caller's target or request_id are kept: an invalid
/// request may send anything.
const MAX_FIELD_CHARS: usize = 512;

fn bounded(text: &str) -> String {
    text.chars().take(MAX_FIELD_CHARS).collect()
}

/// What a handler tells the audit trail about its call.
#[derive(Debug)]
pub struct Call<'a> {
    /// Who called.
    pub principal: String,
    /// The method, e.g. `DeleteStream`.
    pub method: &'static str,
    /// The resource the call acts on, as the caller sent it (the first 512 characters are
    /// kept).
    pub target: String,
    /// The request_id the caller sent, or empty.
    pub request_id: &'a str,
}

/// How a call ended, for the audit trail.
#[derive(Debug)]
pub enum CallOutcome<'a> {
    /// It started or found `operations/{id}`, or (with an empty name) only validated.
    Operation(&'a str),
    /// It failed with this error.
    Failed(&'a Error),
}

/// Counts events of one kind that are logged as one line at most once per second: the line
/// says how many events it stands for.
pub struct Sampled {
    // The clock of `next_ms`.
    epoch: Instant,
    // Milliseconds from `epoch` before which no line is due.
    next_ms: AtomicU64,
    // Events since the last line.
    pending: AtomicU64,
}

impl Sampled {
    /// The time between two lines.
    const INTERVAL: Duration = Duration::from_secs(1);

    /// A count whose first event is logged at once.
    pub fn new() -> Self {
        Sampled {
            epoch: Instant::now(),
            next_ms: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }

    /// Counts one event; `Some(n)` when a line is due, `n` the events since the last line,
    /// this one included.
    pub fn note(&self) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Acquire);
        if now < next {
            return None;
        }
        let later = now.saturating_add(Self::INTERVAL.as_millis() as u64);
        // One caller wins the line; the others count towards the next.
        self.next_ms
            .compare_exchange(next, later, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(self.pending.swap(0, Ordering::AcqRel))
    }
}

impl Default for Sampled {
    fn default() -> Self {
        Sampled::new()
    }
}

/// Writes the audit trail.
pub struct Audit {
    store: Arc<dyn AuditStore>,
    // Bounds the background writes of refused calls: a flood of refusals must not become as
    // many tasks and store connections waiting.
    pending_refusals: Arc<Semaphore>,
    // Refusals not recorded because `pending_refusals` was exhausted.
    dropped_refusals: Sampled,
}

impl Audit {
    /// An audit trail kept in `store`.
    pub fn new(store: Arc<dyn AuditStore>) -> Arc<Self> {
        Arc::new(Audit {
            store,
            pending_refusals: Arc::new(Semaphore::new(MAX_PENDING_REFUSALS)),
            dropped_refusals: Sampled::new(),
        })
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.store
    }

    /// Records a mutating call of `principal` refused before its handler, in the background
    /// (the refusal is answered at once), unless [`MAX_PENDING_REFUSALS`] records are being
    /// written already.
    pub fn refused(self: &Arc<Self>, method: &'static str, principal: &str, error: &Error) {
        let Ok(permit) = Arc::clone(&self.pending_refusals).try_acquire_owned() else {
            if let Some(dropped) = self.dropped_refusals.note() {
                warn!(
                    target: "audit",
                    dropped,
                    "refused calls not recorded: {MAX_PENDING_REFUSALS} records of refusals were being written"
                );
            }
            return;
        };
        let call = Call {
            principal: principal.to_string(),
            method,
            target: String::new(),
            request_id: "",
        };
        let audit = Arc::clone(self);
        let error = error.clone();
        tokio::spawn(async move {
            audit.call(call, CallOutcome::Failed(&error)).await;
            drop(permit);
        });
    }

    /// Records one mutating call and logs it.
    pub async fn call(&self, call: Call<'_>, outcome: CallOutcome<'_>) {
        let (operation, outcome, provider_request_id) = match outcome {
            CallOutcome::Operation("") => (String::new(), VALIDATED, ""),
            CallOutcome::Operation(name) => (name.to_string(), ACCEPTED, ""),
            CallOutcome::Failed(e) => (
                String::new(),
                e.kind().reason(),
                e.provider_request_id().unwrap_or_default(),
            ),
        };
        let record = AuditRecord {
            // Time-ordered, as operation ids are: see `Runner::submit`.
            id: uuid::Uuid::now_v7().simple().to_string(),
            time_ms: now_ms(),
            principal: call.principal,
            method: call.method.to_string(),
            target: bounded(&call.target),
            request_id: bounded(call.request_id),
            operation,
            outcome: outcome.to_string(),
            provider_request_id: provider_request_id.to_string(),
            ..AuditRecord::default()
        };
        info!(
            target: "audit",
            principal = %record.principal,
            method = %record.method,
            target = %record.target,
            request_id = %record.request_id,
            operation = %record.operation,
            outcome = %record.outcome,
            provider_request_id = %record.provider_request_id,
            "audit"
        );
        if let Err(e) = self.store.record(&record).await {
            warn!(target: "audit", error = %e, id = %record.id, "could not write the audit record");
        }
    }
}

#[async_trait]
impl OperationObserver for Audit {
    async fn done(&self, op: &Operation) {
        let (outcome, provider_request_id) = match &op.outcome {
            Some(Err(e)) => (
                e.kind().reason(),
                e.provider_request_id().unwrap_or_default(),
            ),
            _ => (SUCCEEDED, ""),
        };
        let operation = format!("operations/{}", op.id);
        info!(
            target: "audit",
            principal = %op.principal,
            method = %op.request.verb().as_str(),
            target = %op.request.target(),
            request_id = %op.request_id.as_deref().unwrap_or_default(),
            operation = %operation,
            outcome = %outcome,
            provider_request_id = %provider_request_id,
            "audit"
        );
        if let Err(e) = self
            .store
            .complete(&operation, now_ms(), outcome, provider_request_id)
            .await
        {
            warn!(target: "audit", error = %e, %operation, "could not write the final outcome");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::error::{Kind, Result};
    use crate::store::AuditFilter;

    /// A store whose writes never finish, counting those started.
    #[derive(Default)]
    struct Stalled {
        started: AtomicUsize,
    }

    #[async_trait]
    impl AuditStore for Stalled {
        async fn record(&self, _: &AuditRecord) -> Result<()> {
            self.started.fetch_add(1, Ordering::SeqCst);
            std::future::pending().await
        }
        async fn complete(&self, _: &str, _: i64, _: &str, _: &str) -> Result<()> {
            Ok(())
        }
        async fn list_records(
            &self,
            _: &AuditFilter,
            _: Option<(i64, String)>,
            _: usize,
        ) -> Result<Vec<AuditRecord>> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn refusals_beyond_the_pending_bound_are_not_written() {
        let store = Arc::new(Stalled::default());
        let audit = Audit::new(Arc::clone(&store) as Arc<dyn AuditStore>);
        let error = Error::new(Kind::PermissionDenied, "no rule allows it");
        for _ in 0..(3 * MAX_PENDING_REFUSALS) {
            audit.refused("DeleteStream", "viewer", &error);
        }
        // Let every spawned write start, and then some.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.started.load(Ordering::SeqCst), MAX_PENDING_REFUSALS);
        assert_eq!(audit.pending_refusals.available_permits(), 0);
    }

    #[test]
    fn a_sampled_count_logs_its_first_event_then_at_most_once_per_interval() {
        let sampled = Sampled::new();
        assert_eq!(sampled.note(), Some(1));
        for _ in 0..1000 {
            assert_eq!(sampled.note(), None);
        }
        // As if the interval had passed.
        sampled.next_ms.store(0, Ordering::Release);
        assert_eq!(sampled.note(), Some(1001));
    }
}
