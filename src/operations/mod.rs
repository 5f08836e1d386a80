//! The durable runner of long-running operations.
//!
//! A mutating call is recorded in the [`OperationStore`] before any provider side effect; then
//! one task per operation drives it step by step, saving after every step. At start-up every
//! unfinished operation is resumed (marked `replayed`, so adapters can recognise a step that
//! already took effect). When an operation is done, the runner tells its
//! [`OperationObserver`] (the audit trail). Several processes may share one store: each
//! unfinished operation is driven by the one process that holds its lease, and the processes
//! tell each other through the [`Notifier`] when an operation is done (waiters elsewhere wake)
//! and when its cancellation is requested (the process driving it acts at once); the lease
//! renewal passes on cancellations too, for the notices a lost listener missed.
//!
//! It does not validate requests or check etags: the API layer and the adapters do.
//!
//! # Layout
//!
//! - `mod.rs`: [`Runner`], the face the API uses: submit, read, wait, cancel, resume, shut
//!   down; request fingerprints.
//! - `driver.rs`: the task per operation: steps, retries with backoff, fenced saves,
//!   [`OperationObserver`].
//! - `lease.rs`: this process's leases: claiming at start-up, renewing, adopting operations of
//!   processes that died, passing on cancellations requested elsewhere, releasing at shutdown.
//! - `finished.rs`: the bounded in-memory cache of operations this process finished lately.
//! - `waiters.rs`: WaitOperation's wait: woken by this process's task or another process's
//!   notice, polling only while notices cannot come.
//!
//! `mod.rs` uses the four others; `lease.rs` uses `driver.rs`; `driver.rs` uses `finished.rs`
//! and `waiters.rs`; those two use none.

mod driver;
mod finished;
mod lease;
mod waiters;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::domain::STEP_ACCEPTED;
use crate::domain::{OpRequest, Operation, now_ms};
use crate::error::{Error, Kind, Result};
use crate::providers::Registry;
use crate::store::{AuditRecord, Inserted, Notice, Notifier, OperationStore};
use crate::telemetry::Telemetry;
use driver::Driver;
pub use driver::OperationObserver;
use lease::Leases;

/// Drives operations to completion, durably.
pub struct Runner {
    // The tasks driving this process's operations, with the cache of finished ones and the
    // channels of their waiters.
    driver: Arc<Driver>,
    // This process as the holder of operation leases; a task keeps them (see `resume_all`).
    leases: Arc<Leases>,
    // Notices between the processes sharing the store: operations done, cancellations asked.
    notifier: Arc<Notifier>,
}

/// The id of a new operation on provider instance `provider`: `{provider}.{uuid}`. The
/// provider in the name lets a call on the operation be authorized from the name alone, before
/// anything is looked up.
fn new_id(provider: &str) -> String {
    // Time-ordered (UUIDv7, 74 random bits): the rows and index entries of operations accepted
    // together land on the same rightmost B-tree pages, so a group commit writes a few WAL
    // frames instead of one per index per operation (issue 7 (d)).
    format!("{provider}.{}", uuid::Uuid::now_v7().simple())
}

/// The provider instance an operation id names (`{provider}.{uuid}`); `None` for the ids of
/// operations from before ids named one.
pub fn named_provider(id: &str) -> Option<&str> {
    id.split_once('.')
        .map(|(provider, _)| provider)
        .filter(|provider| crate::domain::names::check_provider_id(provider).is_ok())
}

/// The answer for an operation that does not exist, and for one the caller may not see: the
/// same, so that the answer never tells another principal's operation exists.
pub fn not_found(id: &str) -> Error {
    Error::new(
        Kind::OperationNotFound,
        format!("operations/{id} does not exist"),
    )
}

/// A digest of a request, to tell a retry from a different request with the same request_id.
pub fn fingerprint(request: &OpRequest) -> String {
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    // hex::encode, not a format! per byte: that was 28k instructions a call (callgrind).
    hex::encode(Sha256::digest(&bytes))
}

impl Runner {
    /// A runner over `store` that dispatches to `registry`, tells `observer` about every
    /// operation it finishes, and the other processes sharing the store through `notifier`.
    pub fn new(
        store: Arc<dyn OperationStore>,
        registry: Arc<Registry>,
        telemetry: Arc<Telemetry>,
        observer: Arc<dyn OperationObserver>,
        lease: Duration,
        notifier: Arc<Notifier>,
    ) -> Arc<Self> {
        let leases = Leases::new(lease);
        let driver = Driver::new(
            store,
            registry,
            telemetry,
            observer,
            leases.owner().to_string(),
            Arc::clone(&notifier),
        );
        Arc::new(Runner {
            driver: Arc::new(driver),
            leases: Arc::new(leases),
            notifier,
        })
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn OperationStore> {
        &self.driver.store
    }

    /// Adopts unfinished operations no live process holds (all of them, after a restart of the
    /// only process; a share of them on a shared store, the rest in later rounds), then keeps
    /// this runner's leases: renewing them, adopting operations of processes that died, and
    /// acting on cancellations requested elsewhere; and follows the other processes' notices.
    /// Returns how many operations it adopted at first.
    pub async fn resume_all(self: &Arc<Self>) -> Result<usize> {
        self.driver
            .tasks
            .spawn(follow(Arc::clone(&self.driver), self.notifier.subscribe()));
        let count = self
            .leases
            .adopt(&self.driver, self.store().exclusive())
            .await?;
        if count > 0 {
            info!(count, "resumed unfinished operations");
        }
        let keep = Arc::clone(&self.leases).keep(Arc::clone(&self.driver));
        self.driver.tasks.spawn(keep);
        Ok(count)
    }

    /// The operation a principal started earlier with `request_id`, if any; a different
    /// request under the same id is INVALID_ARGUMENT (AIP-155).
    pub async fn find_retry(
        &self,
        principal: &str,
        request_id: &str,
        request: &OpRequest,
    ) -> Result<Option<Operation>> {
        let Some(op) = self
            .store()
            .find_by_request_id(principal, request_id)
            .await?
        else {
            return Ok(None);
        };
        if op.fingerprint != fingerprint(request) {
            return Err(Error::new(
                Kind::RequestIdConflict,
                format!(
                    "request_id {request_id:?} was used for a different request (operations/{})",
                    op.id
                ),
            )
            .with_violation("request_id", "already used for a different request"));
        }
        Ok(Some(op))
    }

    /// Records a new operation and starts it. Returns the operation after its first step
    /// (so a provider that finishes at once answers `done`), or as it is when `first_step`
    /// passes first. `audit`, the record of the call, names the new operation and is written
    /// with it, in the same transaction; when no operation is written (an error, or one with
    /// the same request_id exists) neither is the record.
    pub async fn submit(
        self: &Arc<Self>,
        principal: &str,
        request_id: Option<String>,
        request: OpRequest,
        first_step: Duration,
        audit: Option<&mut AuditRecord>,
    ) -> Result<Operation> {
        let now = now_ms();
        let op = Operation {
            id: new_id(request.provider()),
            fingerprint: fingerprint(&request),
            request,
            principal: principal.to_string(),
            request_id,
            step: STEP_ACCEPTED.to_string(),
            progress: serde_json::Value::Null,
            next_run_ms: now,
            attempts: 0,
            retries: 0,
            cancel_requested: false,
            replayed: false,
            outcome: None,
            warnings: Vec::new(),
            create_time_ms: now,
            update_time_ms: now,
        };
        let audit = audit.map(|record| {
            record.operation = format!("operations/{}", op.id);
            &*record
        });
        let sent = std::time::Instant::now();
        match self
            .store()
            .insert(&op, &self.leases.lease(), audit)
            .await?
        {
            Inserted::Existing(existing) if existing.fingerprint == op.fingerprint => {
                return Ok(*existing);
            }
            Inserted::Existing(existing) => {
                return Err(Error::new(
                    Kind::RequestIdConflict,
                    format!(
                        "request_id was used for a different request (operations/{})",
                        existing.id
                    ),
                )
                .with_violation("request_id", "already used for a different request"));
            }
            Inserted::New => {}
        }
        info!(
            operation = %op.id,
            verb = op.request.verb().as_str(),
            target = %op.request.target(),
            principal,
            "operation accepted"
        );
        let (tx, rx) = oneshot::channel();
        let fallback = op.clone();
        self.driver
            .spawn(op, Some(tx), self.leases.held_until(sent));
        match tokio::time::timeout(first_step, rx).await {
            Ok(Ok(op)) => Ok(op),
            _ => Ok(self.store().get(&fallback.id).await?.unwrap_or(fallback)),
        }
    }

    /// Reads an operation.
    pub async fn get(&self, id: &str) -> Result<Operation> {
        if let Some(op) = self.driver.finished.get(id) {
            return Ok(op);
        }
        self.store().get(id).await?.ok_or_else(|| not_found(id))
    }

    /// Waits until the operation is done or `timeout` passes; returns its latest state.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Operation> {
        self.driver
            .waiters
            .wait(
                id,
                timeout,
                &self.driver.shutdown,
                self.notifier.listening(),
                || self.get(id),
                |id| self.driver.is_running(id),
            )
            .await
    }

    /// Asks an operation to stop before its next step and returns it, after giving its task a
    /// moment to act. A done operation is returned as it is.
    pub async fn cancel(&self, id: &str) -> Result<Operation> {
        let op = self.get(id).await?;
        if op.done() {
            return Ok(op);
        }
        let requested = self.store().request_cancel(id).await?;
        if self.driver.is_running(id) {
            self.driver.cancel(id);
        } else if requested {
            // The process driving it acts at once; if it misses the notice, its next lease
            // renewal finds the flag.
            let _ = self
                .notifier
                .publish(Notice::CancelRequested(id.to_string()))
                .await;
        }
        // The request reached the store before the operation was saved done; if its task kept
        // it already (before it could see the request), the copy says so too.
        if requested {
            self.driver.finished.mark_cancel_requested(id);
        }
        info!(operation = %id, "cancellation requested");
        self.wait(id, Duration::from_secs(2)).await
    }

    /// Stops every task at its next wait and waits up to `bound` for steps in flight to save;
    /// then releases this process's leases, so that another process adopts its operations at
    /// once. A step still running at the bound keeps its lease, to run out: no other process
    /// may start that step while this one may still be in it.
    pub async fn shutdown(&self, bound: Duration) {
        if !self.driver.stop(bound).await {
            warn!(
                "operation steps still running at shutdown; their operations resume once their \
                 lease ends"
            );
            return;
        }
        self.leases.release(self.store().as_ref()).await;
    }
}

/// Until the driver shuts down: wakes the waiters of an operation done elsewhere, and the task
/// of an operation whose cancellation was asked elsewhere. Notices missed (this receiver lagged)
/// wake every waiter, to read its operation again; missed cancellations reach their task at the
/// next lease renewal.
async fn follow(driver: Arc<Driver>, mut notices: tokio::sync::broadcast::Receiver<Notice>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let notice = tokio::select! {
            notice = notices.recv() => notice,
            () = driver.shutdown.cancelled() => return,
        };
        match notice {
            Ok(Notice::OperationDone(id)) => driver.waiters.poke(&id),
            Ok(Notice::CancelRequested(id)) => driver.cancel(&id),
            Ok(Notice::StreamChanged(_) | Notice::StreamRead(_)) => {}
            Err(RecvError::Lagged(_)) => driver.waiters.poke_all(),
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::config::{Config, Environment};
    use crate::domain::{StreamName, StreamSpec};
    use crate::providers::Prepared;
    use crate::store::{Lease, OperationFilter, Orphans, Renewed, SqlStore};
    use crate::watch::WatchHub;

    /// The runner's observer in these tests: the audit trail sits above this module, and no
    /// test here looks at what an observer is told.
    struct Unobserved;

    #[async_trait]
    impl OperationObserver for Unobserved {
        async fn done(&self, _op: &Operation) {}
    }

    /// The SQL store, counting reads of one operation and refusing saves on demand (as when
    /// another process adopted the operation).
    struct Probe {
        inner: SqlStore,
        gets: AtomicUsize,
        adopted_elsewhere: AtomicBool,
        // When set, a cancellation request, once in the store, waits until an operation was
        // saved done: the race of a cancel with the last step, in the order that matters.
        hold_cancel: AtomicBool,
        saved_done: tokio::sync::Notify,
        // When set, the next save panics (as a bug in a task would), once.
        panic_next_save: AtomicBool,
    }

    #[async_trait]
    impl OperationStore for Probe {
        async fn insert(
            &self,
            op: &Operation,
            lease: &Lease,
            audit: Option<&AuditRecord>,
        ) -> Result<Inserted> {
            self.inner.insert(op, lease, audit).await
        }
        async fn get(&self, id: &str) -> Result<Option<Operation>> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.inner.get(id).await
        }
        async fn find_by_request_id(
            &self,
            principal: &str,
            request_id: &str,
        ) -> Result<Option<Operation>> {
            self.inner.find_by_request_id(principal, request_id).await
        }
        async fn save(&self, op: &Operation, owner: &str) -> Result<bool> {
            if self.panic_next_save.swap(false, Ordering::SeqCst) {
                panic!("a bug in the task");
            }
            if self.adopted_elsewhere.load(Ordering::SeqCst) {
                return Ok(false);
            }
            let saved = self.inner.save(op, owner).await;
            if op.done() {
                self.saved_done.notify_one();
            }
            saved
        }
        async fn request_cancel(&self, id: &str) -> Result<bool> {
            let requested = self.inner.request_cancel(id).await;
            if self.hold_cancel.load(Ordering::SeqCst) {
                self.saved_done.notified().await;
            }
            requested
        }
        async fn list(
            &self,
            filter: &OperationFilter,
            after: Option<(i64, String)>,
            limit: usize,
        ) -> Result<Vec<Operation>> {
            self.inner.list(filter, after, limit).await
        }
        async fn unfinished(&self) -> Result<Vec<Operation>> {
            self.inner.unfinished().await
        }
        async fn claim(
            &self,
            lease: &Lease,
            which: Orphans,
            limit: usize,
        ) -> Result<Vec<Operation>> {
            self.inner.claim(lease, which, limit).await
        }
        async fn renew(&self, lease: &Lease, ids: &[String]) -> Result<Renewed> {
            self.inner.renew(lease, ids).await
        }
        async fn release(&self, owner: &str) -> Result<()> {
            self.inner.release(owner).await
        }
        async fn release_one(&self, id: &str, owner: &str) -> Result<()> {
            self.inner.release_one(id, owner).await
        }
        fn exclusive(&self) -> bool {
            self.inner.exclusive()
        }
    }

    async fn runner_with(delay: &str) -> (tempfile::TempDir, Arc<Probe>, Arc<Runner>) {
        runner_leased(delay, Duration::from_secs(30)).await
    }

    async fn runner_leased(
        delay: &str,
        lease: Duration,
    ) -> (tempfile::TempDir, Arc<Probe>, Arc<Runner>) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_toml(&format!(
            "[[providers]]\nid = \"local\"\nkind = \"local\"\ncreate_delay = \"{delay}\"\n"
        ))
        .unwrap();
        let sql = SqlStore::open(&format!("sqlite://{}/ops.db", dir.path().display()))
            .await
            .unwrap();
        let environment = Environment::default();
        let hub = Arc::new(WatchHub::default());
        let notifier = Notifier::in_process();
        let registry = Arc::new(
            Registry::build(
                Prepared::prepare(&config.providers, &environment).unwrap(),
                &sql,
                &hub,
                &notifier,
            )
            .await
            .unwrap(),
        );
        let probe = Arc::new(Probe {
            inner: sql,
            gets: AtomicUsize::new(0),
            adopted_elsewhere: AtomicBool::new(false),
            hold_cancel: AtomicBool::new(false),
            saved_done: tokio::sync::Notify::new(),
            panic_next_save: AtomicBool::new(false),
        });
        let runner = Runner::new(
            Arc::clone(&probe) as Arc<dyn OperationStore>,
            registry,
            Telemetry::new(crate::telemetry::otel::OtelSettings::from_env(&environment).unwrap())
                .unwrap(),
            Arc::new(Unobserved),
            lease,
            notifier,
        );
        (dir, probe, runner)
    }

    fn create(stream: &str) -> OpRequest {
        OpRequest::Create {
            name: StreamName {
                provider: "local".into(),
                video: None,
                stream: stream.into(),
            },
            spec: StreamSpec::default(),
        }
    }

    #[tokio::test]
    async fn a_finished_operation_is_read_from_memory_as_it_is_stored() {
        let (_dir, probe, runner) = runner_with("0s").await;
        let op = runner
            .submit("tester", None, create("s1"), Duration::from_secs(5), None)
            .await
            .unwrap();
        assert!(op.done(), "no create delay: done in its first step");
        let before = probe.gets.load(Ordering::SeqCst);
        let got = runner.get(&op.id).await.unwrap();
        let waited = runner.wait(&op.id, Duration::from_secs(1)).await.unwrap();
        assert_eq!(probe.gets.load(Ordering::SeqCst), before, "no read");
        let stored = probe.inner.get(&op.id).await.unwrap().unwrap();
        assert_eq!(got, stored);
        assert_eq!(waited, stored);
    }

    #[tokio::test]
    async fn a_finished_batch_is_read_from_the_store() {
        let (_dir, probe, runner) = runner_with("0s").await;
        let batch = OpRequest::BatchDelete {
            parent: crate::domain::ParentName {
                provider: "local".into(),
                video: None,
            },
            names: Vec::new(),
        };
        let op = runner
            .submit("tester", None, batch, Duration::from_secs(5), None)
            .await
            .unwrap();
        assert!(op.done(), "{op:?}");
        let before = probe.gets.load(Ordering::SeqCst);
        let got = runner.get(&op.id).await.unwrap();
        assert_eq!(probe.gets.load(Ordering::SeqCst), before + 1, "read");
        assert_eq!(got, probe.inner.get(&op.id).await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn a_cancelled_operation_kept_in_memory_says_so_as_the_store_does() {
        let (_dir, probe, runner) = runner_with("30s").await;
        let op = runner
            .submit("tester", None, create("s2"), Duration::from_secs(5), None)
            .await
            .unwrap();
        assert!(!op.done(), "CREATING for 30 s");
        let cancelled = runner.cancel(&op.id).await.unwrap();
        assert!(cancelled.done(), "{cancelled:?}");
        let before = probe.gets.load(Ordering::SeqCst);
        let got = runner.get(&op.id).await.unwrap();
        assert_eq!(probe.gets.load(Ordering::SeqCst), before, "no read");
        let stored = probe.inner.get(&op.id).await.unwrap().unwrap();
        assert!(stored.cancel_requested);
        assert_eq!(got, stored);
        assert_eq!(cancelled, stored);
    }

    #[tokio::test]
    async fn a_cancel_that_raced_the_last_step_is_in_the_kept_copy() {
        let (_dir, probe, runner) = runner_with("300ms").await;
        let op = runner
            .submit("tester", None, create("s3"), Duration::from_secs(5), None)
            .await
            .unwrap();
        assert!(!op.done());
        // The request reaches the store while the operation is unfinished; the task then
        // saves it done (never having seen the request) and keeps it, and only then does the
        // cancel go on.
        probe.hold_cancel.store(true, Ordering::SeqCst);
        let cancelled = runner.cancel(&op.id).await.unwrap();
        let stored = probe.inner.get(&op.id).await.unwrap().unwrap();
        assert!(stored.done());
        assert!(
            matches!(stored.outcome, Some(Ok(_))),
            "the step had run: {stored:?}"
        );
        assert!(stored.cancel_requested, "the request is in the store");
        let before = probe.gets.load(Ordering::SeqCst);
        let got = runner.get(&op.id).await.unwrap();
        assert_eq!(probe.gets.load(Ordering::SeqCst), before, "no read");
        assert_eq!(got, stored);
        assert_eq!(cancelled, stored);
    }

    #[tokio::test]
    async fn a_waiter_polls_calmly_once_the_operation_is_driven_elsewhere() {
        let (_dir, probe, runner) = runner_with("500ms").await;
        let op = runner
            .submit("tester", None, create("s1"), Duration::from_secs(5), None)
            .await
            .unwrap();
        assert!(!op.done(), "CREATING for 500 ms first");
        // The next save finds the operation adopted by another process: this process's task
        // stops driving it, and the operation stays unfinished here.
        probe.adopted_elsewhere.store(true, Ordering::SeqCst);
        let before = probe.gets.load(Ordering::SeqCst);
        let waited = runner
            .wait(&op.id, Duration::from_millis(2500))
            .await
            .unwrap();
        assert!(!waited.done());
        let reads = probe.gets.load(Ordering::SeqCst) - before;
        // One read at the start, then one per WAIT_POLL (1 s) once the task stopped; a waiter
        // that spun on a closed channel read thousands of times.
        assert!(reads <= 6, "{reads} reads of the operation in 2.5 s");
    }

    #[tokio::test]
    async fn an_operation_whose_task_panicked_is_adopted_again_and_finishes() {
        let (_dir, probe, runner) = runner_leased("300ms", Duration::from_millis(600)).await;
        runner.resume_all().await.unwrap();
        probe.panic_next_save.store(true, Ordering::SeqCst);
        let op = runner
            .submit("tester", None, create("s1"), Duration::from_secs(5), None)
            .await
            .unwrap();
        assert!(!op.done(), "its first save panicked");
        // The task released the operation as it ended; the next adoption round (about a third of
        // the lease later) takes it again, from the store, and finishes it.
        let done = runner.wait(&op.id, Duration::from_secs(10)).await.unwrap();
        assert!(matches!(done.outcome, Some(Ok(_))), "{done:?}");
        assert!(!probe.panic_next_save.load(Ordering::SeqCst));
    }
}
