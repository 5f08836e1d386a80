//! The audit trail of mutating calls.
//!
//! The handler of each mutating method (the table of [`crate::methods`] says which: the
//! StreamService methods that start an operation) opens its call's record with
//! [`Audit::begin`] and ends with [`Pending::finish`]: one row in the durable `audit_records`
//! table and one structured log line (target `audit`) with the principal, method, target,
//! request_id, operation, outcome and provider request id. When an operation is done, the
//! runner calls [`Audit`] as its [`OperationObserver`]: the final outcome (`succeeded` or the
//! error reason) and the provider request id of a failure go into `audit_completions` and
//! another `audit` log line. AuditService.ListAuditRecords reads both, joined.
//!
//! # Durability
//!
//! A call that starts an operation hands its record to the runner ([`Pending::with_operation`]),
//! which writes it in the same transaction as the operation: neither exists without the other.
//! Every other row (a call that failed, only validated or found an earlier operation, a
//! refusal, a final outcome) is written by the call or the runner; when that write fails (the
//! store is unreachable) or is cut short (the call's deadline ended it), the row goes to a
//! backlog in memory, which one task writes, retrying with backoff (up to 5 s apart) until the
//! store takes each row. Rows are written idempotently, so a write whose answer was lost is
//! made again harmlessly. The backlog holds at most [`MAX_BACKLOG`] rows: past that a row is
//! not recorded, and a warning (at most one a second, [`Sampled`]) says how many were not; the
//! `audit` log line of every call is written either way. At shutdown the backlog is written
//! for as long as the drain bound allows ([`Audit::flush`]); rows still in it when the process
//! ends are lost (the log has them).
//!
//! A mutating call of an authenticated caller refused before its handler, by the
//! authorization or rate-limit layer, is recorded too ([`Audit::refused`]): with the principal
//! and the refusal's reason, but no target or request_id, which are in the request body those
//! layers never read. These records go to the backlog at once (the refusal is answered
//! without waiting for the store). Calls refused for want of valid credentials are not
//! recorded one by one (anyone can send them, as fast as they like): the authentication layer
//! counts them (`streamgate_unauthenticated_refusals_total`) and logs a line at most once a
//! second with how many there were. Load shedding refuses without recording: under overload,
//! writing would add to it; the `streamgate_rpc_*` metrics count those calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::join_all;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::domain::{Operation, now_ms};
use crate::error::{Error, Kind};
use crate::operations::OperationObserver;
use crate::store::{AuditRecord, AuditStore};

/// The outcome of a call that started or found an operation.
pub const ACCEPTED: &str = "accepted";
/// The outcome of a `validate_only` call that passed every check.
pub const VALIDATED: &str = "validated";
/// At most this many rows wait in the backlog for the store to take them.
pub const MAX_BACKLOG: usize = 10_000;
/// The final outcome of an operation that succeeded.
pub const SUCCEEDED: &str = "succeeded";
/// At most this many characters of a caller's target or request_id are kept: an invalid
/// request may send anything.
const MAX_FIELD_CHARS: usize = 512;
/// The backlog's writer writes up to this many rows at once.
const BATCH: usize = 64;
/// The longest pause of the backlog's writer between two tries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

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

/// The record of one mutating call, from the start of its handler until [`Pending::finish`].
/// Dropped unfinished (the call's deadline passed, or its caller went away, while its
/// handler ran), it is recorded with outcome `CANCELLED` through the backlog, unless the
/// runner wrote it with the call's operation already (then that row stays as it is).
pub struct Pending<'a> {
    audit: &'a Audit,
    // Taken by `finish`.
    record: Option<AuditRecord>,
}

impl Pending<'_> {
    /// The record as the runner writes it with the operation the call starts: outcome
    /// `accepted`, and the runner names the operation. Once that operation is the call's
    /// answer, [`Pending::finish`] knows its record is written.
    pub fn with_operation(&mut self) -> &mut AuditRecord {
        let record = self.record.get_or_insert_with(AuditRecord::default);
        record.outcome = ACCEPTED.to_string();
        record
    }

    /// Records how the call ended, unless its record was written with the operation it
    /// started, and logs it.
    pub async fn finish(mut self, outcome: CallOutcome<'_>) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        let written = matches!(outcome, CallOutcome::Operation(name)
            if !name.is_empty() && name == record.operation);
        settle(&mut record, outcome);
        log(&record);
        if !written {
            Unsaved {
                audit: self.audit,
                row: Some(Row::Call(record)),
            }
            .write()
            .await;
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if let Some(mut record) = self.record.take() {
            let cut = Error::new(Kind::Cancelled, "the call ended before its handler did");
            settle(&mut record, CallOutcome::Failed(&cut));
            log(&record);
            self.audit.queue(Row::Call(record));
        }
    }
}

/// One row of the audit trail not yet written.
#[derive(Debug)]
enum Row {
    /// A call.
    Call(AuditRecord),
    /// The final outcome of an operation.
    Completion {
        operation: String,
        time_ms: i64,
        outcome: &'static str,
        provider_request_id: String,
    },
}

/// Writes `row` into `store`.
async fn write(store: &dyn AuditStore, row: &Row) -> crate::error::Result<()> {
    match row {
        Row::Call(record) => store.record(record).await,
        Row::Completion {
            operation,
            time_ms,
            outcome,
            provider_request_id,
        } => {
            store
                .complete(operation, *time_ms, outcome, provider_request_id)
                .await
        }
    }
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
    // Rows whose write failed or was cut short, for the writer task (`write_backlog`) to
    // retry until the store takes them; bounded, so an outage costs at most so much memory.
    backlog: mpsc::Sender<Row>,
    // Rows handed to the backlog and not yet written, for `flush`.
    unwritten: Arc<AtomicUsize>,
    // Rows not recorded because the backlog was full.
    lost: Sampled,
}

/// A row being written by a call or the runner: handed to the backlog unless the write
/// succeeds, also when the write is dropped unfinished (its call's deadline passed).
struct Unsaved<'a> {
    audit: &'a Audit,
    row: Option<Row>,
}

impl Unsaved<'_> {
    async fn write(mut self) {
        let Some(row) = &self.row else { return };
        match write(self.audit.store.as_ref(), row).await {
            Ok(()) => self.row = None,
            Err(e) => {
                warn!(target: "audit", error = %e, "could not write an audit row; it waits in the backlog")
            }
        }
    }
}

impl Drop for Unsaved<'_> {
    fn drop(&mut self) {
        if let Some(row) = self.row.take() {
            self.audit.queue(row);
        }
    }
}

/// Writes the rows of the backlog, a batch at a time, each retried with backoff until the
/// store takes it. Ends when the [`Audit`] is dropped and its backlog is written.
async fn write_backlog(
    store: Arc<dyn AuditStore>,
    mut backlog: mpsc::Receiver<Row>,
    unwritten: Arc<AtomicUsize>,
) {
    let mut rows = Vec::with_capacity(BATCH);
    while backlog.recv_many(&mut rows, BATCH).await > 0 {
        let mut tries = 0u32;
        while !rows.is_empty() {
            let results = join_all(rows.iter().map(|row| write(store.as_ref(), row))).await;
            let mut error = None;
            let before = rows.len();
            rows = rows
                .into_iter()
                .zip(results)
                .filter_map(|(row, result)| match result {
                    Ok(()) => None,
                    Err(e) => {
                        error.get_or_insert(e);
                        Some(row)
                    }
                })
                .collect();
            unwritten.fetch_sub(before - rows.len(), Ordering::AcqRel);
            if let Some(error) = error {
                tries += 1;
                let delay =
                    MAX_RETRY_DELAY.min(Duration::from_millis(100) * 2u32.pow(tries.min(6)));
                warn!(
                    target: "audit",
                    %error,
                    waiting = rows.len(),
                    backlog = unwritten.load(Ordering::Acquire),
                    ?delay,
                    "the store did not take audit rows; retrying"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

impl Audit {
    /// An audit trail kept in `store`. Starts the backlog's writer on the current runtime.
    pub fn new(store: Arc<dyn AuditStore>) -> Arc<Self> {
        let (backlog, rows) = mpsc::channel(MAX_BACKLOG);
        let unwritten = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write_backlog(
            Arc::clone(&store),
            rows,
            Arc::clone(&unwritten),
        ));
        Arc::new(Audit {
            store,
            backlog,
            unwritten,
            lost: Sampled::new(),
        })
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.store
    }

    /// Hands `row` to the backlog, unless it is full.
    fn queue(&self, row: Row) {
        // Counted first: the writer may write it (and count it off) before try_send returns.
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        if self.backlog.try_send(row).is_err() {
            self.unwritten.fetch_sub(1, Ordering::AcqRel);
            if let Some(lost) = self.lost.note() {
                warn!(
                    target: "audit",
                    lost,
                    "audit rows not recorded: the backlog of {MAX_BACKLOG} rows the store has not taken yet is full"
                );
            }
        }
    }

    /// Waits until the backlog is written, or `bound` passed; whether it was.
    pub async fn flush(&self, bound: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + bound;
        while self.unwritten.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                warn!(
                    target: "audit",
                    lost = self.unwritten.load(Ordering::Acquire),
                    "audit rows the store has not taken at shutdown are lost (the log has them)"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Records a mutating call of `principal` refused before its handler: its row goes to the
    /// backlog (the refusal is answered at once).
    pub fn refused(&self, method: &'static str, principal: &str, error: &Error) {
        let mut pending = self.begin(Call {
            principal: principal.to_string(),
            method,
            target: String::new(),
            request_id: "",
        });
        if let Some(mut record) = pending.record.take() {
            settle(&mut record, CallOutcome::Failed(error));
            log(&record);
            self.queue(Row::Call(record));
        }
    }

    /// Opens the record of a mutating call, when its handler starts.
    pub fn begin(&self, call: Call<'_>) -> Pending<'_> {
        Pending {
            audit: self,
            record: Some(AuditRecord {
                // Time-ordered, as operation ids are: see `Runner::submit`.
                id: uuid::Uuid::now_v7().simple().to_string(),
                time_ms: now_ms(),
                principal: call.principal,
                method: call.method.to_string(),
                target: bounded(&call.target),
                request_id: bounded(call.request_id),
                ..AuditRecord::default()
            }),
        }
    }
}

/// Fills in how the call of `record` ended.
fn settle(record: &mut AuditRecord, outcome: CallOutcome<'_>) {
    let (operation, outcome, provider_request_id) = match outcome {
        CallOutcome::Operation("") => (String::new(), VALIDATED, ""),
        CallOutcome::Operation(name) => (name.to_string(), ACCEPTED, ""),
        CallOutcome::Failed(e) => (
            String::new(),
            e.kind().reason(),
            e.provider_request_id().unwrap_or_default(),
        ),
    };
    record.operation = operation;
    record.outcome = outcome.to_string();
    record.provider_request_id = provider_request_id.to_string();
}

/// The `audit` log line of a call.
fn log(record: &AuditRecord) {
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
        Unsaved {
            audit: self,
            row: Some(Row::Completion {
                operation,
                time_ms: now_ms(),
                outcome,
                provider_request_id: provider_request_id.to_string(),
            }),
        }
        .write()
        .await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::error::Result;
    use crate::store::AuditFilter;

    /// A store that keeps records in memory; while `down`, it refuses writes, and while
    /// `stalled`, writes never finish. Counts the writes started.
    #[derive(Default)]
    struct Memory {
        down: AtomicBool,
        stalled: AtomicBool,
        started: AtomicUsize,
        records: Mutex<Vec<AuditRecord>>,
        completions: Mutex<Vec<String>>,
    }

    impl Memory {
        async fn writing(&self) -> Result<()> {
            self.started.fetch_add(1, Ordering::SeqCst);
            if self.stalled.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::new(Kind::StoreUnavailable, "store is down"));
            }
            Ok(())
        }

        fn ids(&self) -> Vec<String> {
            let mut ids: Vec<String> = (self.records.lock().unwrap().iter())
                .map(|r| r.id.clone())
                .collect();
            ids.sort();
            ids
        }
    }

    #[async_trait]
    impl AuditStore for Memory {
        async fn record(&self, record: &AuditRecord) -> Result<()> {
            self.writing().await?;
            self.records.lock().unwrap().push(record.clone());
            Ok(())
        }
        async fn complete(&self, operation: &str, _: i64, _: &str, _: &str) -> Result<()> {
            self.writing().await?;
            self.completions.lock().unwrap().push(operation.to_string());
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

    fn call(principal: &str) -> Call<'static> {
        Call {
            principal: principal.into(),
            method: "DeleteStream",
            target: "providers/local/streams/s".into(),
            request_id: "",
        }
    }

    /// Waits (at most 20 s) until `store` holds `n` records.
    async fn until_recorded(store: &Memory, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while store.records.lock().unwrap().len() < n {
            assert!(Instant::now() < deadline, "{:?}", store.ids());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn rows_the_store_refused_are_written_once_it_takes_them() {
        let store = Arc::new(Memory::default());
        let audit = Audit::new(Arc::clone(&store) as Arc<dyn AuditStore>);
        store.down.store(true, Ordering::SeqCst);
        let error = Error::new(Kind::PermissionDenied, "no rule allows it");
        audit.refused("DeleteStream", "viewer", &error);
        let failed = audit.begin(call("ops"));
        let failed_id = failed.record.as_ref().unwrap().id.clone();
        let unavailable = Error::new(Kind::StoreUnavailable, "store is down");
        failed.finish(CallOutcome::Failed(&unavailable)).await;
        // Give the writer a few failed tries.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(store.records.lock().unwrap().is_empty());
        assert!(!audit.flush(Duration::from_millis(10)).await);
        store.down.store(false, Ordering::SeqCst);
        until_recorded(&store, 2).await;
        assert!(audit.flush(Duration::from_secs(1)).await);
        let records = store.records.lock().unwrap().clone();
        let refusal = records.iter().find(|r| r.principal == "viewer").unwrap();
        assert_eq!(refusal.outcome, "PERMISSION_DENIED");
        let failed = records.iter().find(|r| r.id == failed_id).unwrap();
        assert_eq!(failed.outcome, "STORE_UNAVAILABLE");
    }

    #[tokio::test]
    async fn a_write_cut_short_by_the_deadline_is_finished_by_the_backlog() {
        let store = Arc::new(Memory::default());
        let audit = Audit::new(Arc::clone(&store) as Arc<dyn AuditStore>);
        store.stalled.store(true, Ordering::SeqCst);
        let pending = audit.begin(call("ops"));
        let id = pending.record.as_ref().unwrap().id.clone();
        let cut = tokio::time::timeout(
            Duration::from_millis(50),
            pending.finish(CallOutcome::Operation("operations/local.x")),
        )
        .await;
        assert!(cut.is_err(), "the write never finishes");
        store.stalled.store(false, Ordering::SeqCst);
        until_recorded(&store, 1).await;
        assert_eq!(store.ids(), [id]);
    }

    #[tokio::test]
    async fn a_record_written_with_its_operation_is_not_written_again() {
        let store = Arc::new(Memory::default());
        let audit = Audit::new(Arc::clone(&store) as Arc<dyn AuditStore>);
        let mut pending = audit.begin(call("ops"));
        // As the runner does when it writes the record with the operation.
        pending.with_operation().operation = "operations/local.new".into();
        pending
            .finish(CallOutcome::Operation("operations/local.new"))
            .await;
        // The call found an earlier operation instead: its record is written here.
        let mut pending = audit.begin(call("ops"));
        pending.with_operation().operation = "operations/local.unwritten".into();
        pending
            .finish(CallOutcome::Operation("operations/local.earlier"))
            .await;
        let records = store.records.lock().unwrap().clone();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].operation, "operations/local.earlier");
        assert_eq!(records[0].outcome, ACCEPTED);
    }

    #[tokio::test]
    async fn a_call_cut_short_in_its_handler_is_recorded_as_cancelled() {
        let store = Arc::new(Memory::default());
        let audit = Audit::new(Arc::clone(&store) as Arc<dyn AuditStore>);
        let pending = audit.begin(call("ops"));
        drop(pending);
        until_recorded(&store, 1).await;
        let records = store.records.lock().unwrap().clone();
        assert_eq!(records[0].outcome, "CANCELLED");
        assert_eq!(records[0].target, "providers/local/streams/s");
    }

    #[tokio::test]
    async fn rows_beyond_the_backlog_bound_are_not_recorded() {
        let store = Arc::new(Memory::default());
        let audit = Audit::new(Arc::clone(&store) as Arc<dyn AuditStore>);
        store.stalled.store(true, Ordering::SeqCst);
        let error = Error::new(Kind::PermissionDenied, "no rule allows it");
        // Without a yield, the writer takes none of them meanwhile.
        for _ in 0..(MAX_BACKLOG + 100) {
            audit.refused("DeleteStream", "viewer", &error);
        }
        assert_eq!(audit.backlog.capacity(), 0);
        assert_eq!(audit.unwritten.load(Ordering::SeqCst), MAX_BACKLOG);
        // Let the writer start, and then some: it writes one batch at a time.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(store.started.load(Ordering::SeqCst), BATCH);
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
