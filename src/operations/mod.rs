//! The durable runner of long-running operations.
//!
//! A mutating call is recorded in the [`OperationStore`] before any provider side effect; then
//! one task per operation calls [`Provider::advance`] step by step, saving the step, the
//! adapter's progress and the outcome after every call. At start-up every unfinished
//! operation is resumed (marked `replayed`, so adapters can recognise a step that already
//! took effect). Temporary errors are retried with exponential backoff and jitter (backon);
//! anything else ends the operation with its error.
//!
//! Each operation task runs in a telemetry context of its own (provider-call spans under the
//! call that started it, if any) and counts in `streamgate_operations_in_flight` while it runs.
//!
//! When an operation is done, the runner tells its [`OperationObserver`] (the audit trail).
//!
//! Several processes may share one store (PostgreSQL): each unfinished operation is driven by
//! one process at a time, the holder of its lease ([`Lease`]). A runner renews the leases of
//! its operations every third of the lease, and on each renewal also adopts operations whose
//! lease ran out (their process died) and picks up cancellations requested through another
//! process. Every save is fenced by the owner: a runner that lost an operation (it stalled
//! longer than the lease and another adopted it) writes nothing more and lets it go. A runner
//! that stops cleanly releases its leases, so others adopt its operations at once.
//!
//! It does not validate requests or check etags: the API layer and the adapters do.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::BackoffBuilder;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, warn};

use crate::domain::{OpRequest, Operation, now_ms};
use crate::error::{Error, Kind, Result};
use crate::providers::{Registry, Step};
use crate::store::{Inserted, Lease, OperationStore};
use crate::telemetry::Telemetry;
use crate::telemetry::call::CallContext;

/// The step of an operation that has been accepted and not yet started.
pub const STEP_ACCEPTED: &str = "accepted";
/// The step of an operation that succeeded.
pub const STEP_DONE: &str = "done";
/// How many times in a row a step is retried after a temporary error.
const MAX_STEP_RETRIES: i32 = 8;
/// How often a waiter re-reads an operation another process may be driving.
const WAIT_POLL: Duration = Duration::from_secs(1);
/// The most finished operations kept in memory: usually a kilobyte or two each, at most ~40 KB
/// (50 tags of full length, in the request and again in the result), so ≤ ~10 MiB. Batch
/// deletes, which carry every name and its outcome, are not kept.
const FINISHED_KEPT: usize = 256;
/// How many operations one adoption round takes at most.
const CLAIM_BATCH: usize = 256;
/// The default lease of an operation (`[store] operation_lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Told about every operation this runner finishes (after it is saved).
#[async_trait::async_trait]
pub trait OperationObserver: Send + Sync {
    /// `op` is done: it succeeded or failed for good.
    async fn done(&self, op: &Operation);
}

/// What a running operation's task listens to.
#[derive(Default)]
struct Control {
    wake: Notify,
    cancel: AtomicBool,
}

/// Drives operations to completion, durably.
pub struct Runner {
    store: Arc<dyn OperationStore>,
    registry: Arc<Registry>,
    // Operations this process is driving, so that none is driven twice and a cancel can wake
    // its task out of a wait.
    running: Mutex<HashMap<String, Arc<Control>>>,
    // Per operation that someone waits on (WaitOperation): the operation as this process last
    // saved it.
    progress: Mutex<HashMap<String, watch::Sender<Option<Arc<Operation>>>>>,
    // Operations this process finished lately (not batches), as it saved them. A finished
    // operation never changes again (its cancel_requested column is settled: see `cancel`), so
    // GetOperation and WaitOperation of one — the usual WaitOperation after a create — skip
    // the store.
    finished: Mutex<HashMap<String, Arc<Operation>>>,
    // Stops every task at its next wait; their operations resume at the next start.
    shutdown: CancellationToken,
    tasks: TaskTracker,
    // The server's tracer and instruments, for the tasks' spans and the in-flight gauge.
    telemetry: Arc<Telemetry>,
    // Told when an operation is done.
    observer: Arc<dyn OperationObserver>,
    // This process, as the owner of the operations it drives.
    instance: String,
    // How long an operation stays this process's without a renewal.
    lease: Duration,
}

/// A digest of a request, to tell a retry from a different request with the same request_id.
pub fn fingerprint(request: &OpRequest) -> String {
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    // hex::encode, not a format! per byte: that was 28k instructions a call (callgrind).
    hex::encode(Sha256::digest(&bytes))
}

fn backoff(retry: i32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(retry.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(30))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Runner {
    /// A runner over `store` that dispatches to `registry` and tells `observer` about every
    /// operation it finishes.
    pub fn new(
        store: Arc<dyn OperationStore>,
        registry: Arc<Registry>,
        telemetry: Arc<Telemetry>,
        observer: Arc<dyn OperationObserver>,
        lease: Duration,
    ) -> Arc<Self> {
        Arc::new(Runner {
            store,
            registry,
            running: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashMap::new()),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            telemetry,
            observer,
            instance: uuid::Uuid::new_v4().simple().to_string(),
            lease: lease.max(Duration::from_millis(300)),
        })
    }

    fn lease_from(&self, now: i64) -> Lease {
        Lease {
            owner: self.instance.clone(),
            until_ms: now + self.lease.as_millis() as i64,
        }
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn OperationStore> {
        &self.store
    }

    /// Adopts every unfinished operation no live process holds (all of them, after a restart
    /// of the only process), then keeps this runner's leases: renewing them, adopting
    /// operations of processes that died, and acting on cancellations requested elsewhere.
    /// Returns how many operations it adopted at first.
    pub async fn resume_all(self: &Arc<Self>) -> Result<usize> {
        let count = self.adopt(self.store.exclusive()).await?;
        if count > 0 {
            info!(count, "resumed unfinished operations");
        }
        let runner = Arc::clone(self);
        self.tasks.spawn(async move { runner.keep_leases().await });
        Ok(count)
    }

    /// Takes the unfinished operations whose lease ended (every one when `all`: the store is
    /// this process's alone) and starts driving them.
    async fn adopt(self: &Arc<Self>, all: bool) -> Result<usize> {
        let mut count = 0;
        loop {
            let now = now_ms();
            let ended_before = if all { i64::MAX } else { now };
            let claimed = self
                .store
                .claim(&self.lease_from(now), ended_before, CLAIM_BATCH)
                .await?;
            let n = claimed.len();
            for mut op in claimed {
                op.replayed = true;
                self.spawn(op, None);
            }
            count += n;
            if n < CLAIM_BATCH {
                return Ok(count);
            }
        }
    }

    async fn keep_leases(self: Arc<Self>) {
        let period = self.lease / 3;
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = self.shutdown.cancelled() => return,
            }
            match self.store.renew(&self.lease_from(now_ms())).await {
                Ok(cancelled) => {
                    for id in cancelled {
                        let control = lock(&self.running).get(&id).cloned();
                        if let Some(control) = control
                            && !control.cancel.swap(true, Ordering::SeqCst)
                        {
                            control.wake.notify_one();
                        }
                    }
                }
                Err(e) => warn!(error = %e, "could not renew the operation leases"),
            }
            match self.adopt(false).await {
                Ok(0) => {}
                Ok(count) => info!(count, "adopted operations whose process stopped"),
                Err(e) => warn!(error = %e, "could not adopt orphaned operations"),
            }
        }
    }

    /// The operation a principal started earlier with `request_id`, if any; a different
    /// request under the same id is INVALID_ARGUMENT (AIP-155).
    pub async fn find_retry(
        &self,
        principal: &str,
        request_id: &str,
        request: &OpRequest,
    ) -> Result<Option<Operation>> {
        let Some(op) = self.store.find_by_request_id(principal, request_id).await? else {
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
    /// passes first.
    pub async fn submit(
        self: &Arc<Self>,
        principal: &str,
        request_id: Option<String>,
        request: OpRequest,
        first_step: Duration,
    ) -> Result<Operation> {
        let now = now_ms();
        let op = Operation {
            // Time-ordered (UUIDv7, 74 random bits): the rows and index entries of operations
            // accepted together land on the same rightmost B-tree pages, so a group commit
            // writes a few WAL frames instead of one per index per operation (issue 7 (d)).
            id: uuid::Uuid::now_v7().simple().to_string(),
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
            create_time_ms: now,
            update_time_ms: now,
        };
        match self.store.insert(&op, &self.lease_from(now)).await? {
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
        self.spawn(op, Some(tx));
        match tokio::time::timeout(first_step, rx).await {
            Ok(Ok(op)) => Ok(op),
            _ => Ok(self.store.get(&fallback.id).await?.unwrap_or(fallback)),
        }
    }

    fn spawn(self: &Arc<Self>, op: Operation, first: Option<oneshot::Sender<Operation>>) {
        let control = {
            let mut running = lock(&self.running);
            if running.contains_key(&op.id) {
                return;
            }
            let control = Arc::new(Control::default());
            control.cancel.store(op.cancel_requested, Ordering::SeqCst);
            running.insert(op.id.clone(), Arc::clone(&control));
            control
        };
        let span = tracing::info_span!("operation", operation = %op.id);
        let context = CallContext::spawned(&self.telemetry);
        let in_flight = self
            .telemetry
            .metrics()
            .operation_in_flight(op.request.provider(), op.request.verb().as_str());
        let runner = Arc::clone(self);
        self.tasks.spawn(
            context.scope(
                async move {
                    runner.drive(op, control, first).await;
                    drop(in_flight);
                }
                .instrument(span),
            ),
        );
    }

    async fn drive(
        self: Arc<Self>,
        mut op: Operation,
        control: Arc<Control>,
        mut first: Option<oneshot::Sender<Operation>>,
    ) {
        loop {
            let delay = op.next_run_ms - now_ms();
            if delay > 0 && !control.cancel.load(Ordering::SeqCst) {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(delay as u64)) => {}
                    () = control.wake.notified() => {}
                    () = self.shutdown.cancelled() => break,
                }
            }
            if self.shutdown.is_cancelled() {
                break;
            }
            op.cancel_requested |= control.cancel.load(Ordering::SeqCst);
            self.step(&mut op).await;
            match self.save(&op).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(
                        "another process adopted the operation (this one held it past its \
                         lease); leaving it to that process"
                    );
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "could not save the operation; another process or the next start resumes it");
                    break;
                }
            }
            self.notify(&op);
            if let Some(tx) = first.take() {
                let _ = tx.send(op.clone());
            }
            if op.done() {
                self.keep_finished(&op, &control);
                match &op.outcome {
                    Some(Err(e)) => {
                        info!(step = %op.step, error = %e, "operation failed")
                    }
                    _ => info!("operation done"),
                }
                self.observer.done(&op).await;
                break;
            }
        }
        lock(&self.running).remove(&op.id);
        lock(&self.progress).remove(&op.id);
    }

    /// Keeps `op`, just saved done, for reads. A cancellation requested while its last step
    /// ran is in the store's column (set while the operation was not done) but maybe not in
    /// `op`: taken from `control` here, or marked by `cancel` after this, under the same lock.
    fn keep_finished(&self, op: &Operation, control: &Control) {
        if matches!(op.request, OpRequest::BatchDelete { .. }) {
            return;
        }
        let mut kept = op.clone();
        kept.cancel_requested |= control.cancel.load(Ordering::SeqCst);
        let mut finished = lock(&self.finished);
        if finished.len() >= FINISHED_KEPT {
            finished.clear();
        }
        finished.insert(kept.id.clone(), Arc::new(kept));
    }

    /// Runs one step and records its outcome in `op` (not yet saved).
    async fn step(&self, op: &mut Operation) {
        op.attempts += 1;
        let outcome = match self.registry.get(op.request.provider()) {
            Err(e) => Err(Error::new(
                Kind::Internal,
                format!(
                    "the operation's provider is no longer configured: {}",
                    e.message()
                ),
            )),
            Ok(provider) if op.cancel_requested => match provider.cancel(op).await {
                Ok(Some(error)) => Err(error),
                Ok(None) => provider.advance(op).await,
                Err(e) => Err(e),
            },
            Ok(provider) => provider.advance(op).await,
        };
        let now = now_ms();
        op.update_time_ms = now;
        match outcome {
            Ok(Step::Continue {
                step,
                progress,
                after,
            }) => {
                op.step = step;
                op.progress = progress;
                op.next_run_ms = now + after.as_millis() as i64;
                op.retries = 0;
                op.replayed = false;
            }
            Ok(Step::Done(result)) => {
                op.step = STEP_DONE.to_string();
                op.outcome = Some(Ok(result));
            }
            Err(e) if e.is_temporary() && op.retries < MAX_STEP_RETRIES => {
                op.retries += 1;
                op.replayed = true;
                let delay = backoff(op.retries);
                warn!(step = %op.step, error = %e, retry = op.retries, ?delay, "step failed; retrying");
                op.next_run_ms = now + delay.as_millis() as i64;
            }
            Err(e) => op.outcome = Some(Err(e.persistent())),
        }
    }

    async fn save(&self, op: &Operation) -> Result<bool> {
        let mut retry = 0;
        loop {
            match self.store.save(op, &self.instance).await {
                Err(e) if e.is_temporary() && retry < MAX_STEP_RETRIES => {
                    retry += 1;
                    tokio::time::sleep(backoff(retry)).await;
                }
                other => return other,
            }
        }
    }

    fn notify(&self, op: &Operation) {
        if let Some(tx) = lock(&self.progress).get(&op.id) {
            tx.send_replace(Some(Arc::new(op.clone())));
        }
    }

    /// Reads an operation.
    pub async fn get(&self, id: &str) -> Result<Operation> {
        if let Some(op) = lock(&self.finished).get(id) {
            return Ok(Operation::clone(op));
        }
        self.store.get(id).await?.ok_or_else(|| {
            Error::new(
                Kind::OperationNotFound,
                format!("operations/{id} does not exist"),
            )
        })
    }

    /// Waits until the operation is done or `timeout` passes; returns its latest state.
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Operation> {
        let mut changes = lock(&self.progress)
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        // The state this process's task just saved, when a change woke the wait: no need to
        // read it back from the store.
        let mut saved: Option<Arc<Operation>> = None;
        // Whether the task stopped driving it here (its sender gone): poll the store then.
        let mut closed = false;
        let result = loop {
            let op = match saved.take() {
                Some(op) => Operation::clone(&op),
                None => match self.get(id).await {
                    Ok(op) => op,
                    Err(e) => break Err(e),
                },
            };
            if op.done() || tokio::time::Instant::now() >= deadline {
                break Ok(op);
            }
            let poll = (tokio::time::Instant::now() + WAIT_POLL).min(deadline);
            tokio::select! {
                changed = changes.changed(), if !closed => match changed {
                    Ok(()) => saved = changes.borrow_and_update().clone(),
                    Err(_) => closed = true,
                },
                () = tokio::time::sleep_until(poll) => {}
                () = self.shutdown.cancelled() => {}
            }
            if self.shutdown.is_cancelled() {
                break self.get(id).await;
            }
        };
        drop(changes);
        let mut progress = lock(&self.progress);
        if progress.get(id).is_some_and(|tx| tx.receiver_count() == 0)
            && !lock(&self.running).contains_key(id)
        {
            progress.remove(id);
        }
        result
    }

    /// Asks an operation to stop before its next step and returns it, after giving its task a
    /// moment to act. A done operation is returned as it is.
    pub async fn cancel(&self, id: &str) -> Result<Operation> {
        let op = self.get(id).await?;
        if op.done() {
            return Ok(op);
        }
        let requested = self.store.request_cancel(id).await?;
        let control = lock(&self.running).get(id).cloned();
        if let Some(control) = control {
            control.cancel.store(true, Ordering::SeqCst);
            control.wake.notify_one();
        }
        // The request reached the store before the operation was saved done; if its task kept
        // it already (before it could see `control`), the copy says so too.
        if requested && let Some(op) = lock(&self.finished).get_mut(id) {
            Arc::make_mut(op).cancel_requested = true;
        }
        info!(operation = %id, "cancellation requested");
        self.wait(id, Duration::from_secs(2)).await
    }

    /// Stops every task at its next wait and waits up to `bound` for steps in flight to save;
    /// then releases this process's leases, so that another process adopts its operations at
    /// once. A step still running at the bound keeps its lease, to run out: no other process
    /// may start that step while this one may still be in it.
    pub async fn shutdown(&self, bound: Duration) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(bound, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                "operation steps still running at shutdown; their operations resume once their \
                 lease ends"
            );
            return;
        }
        if let Err(e) = self.store.release(&self.instance).await {
            warn!(error = %e, "could not release the operation leases; they run out instead");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;

    use super::*;
    use crate::audit::Audit;
    use crate::config::{Config, Environment};
    use crate::domain::{StreamName, StreamSpec};
    use crate::store::{OperationFilter, SqlStore};
    use crate::watch::WatchHub;

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
    }

    #[async_trait]
    impl OperationStore for Probe {
        async fn insert(&self, op: &Operation, lease: &Lease) -> Result<Inserted> {
            self.inner.insert(op, lease).await
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
        async fn claim(&self, lease: &Lease, now_ms: i64, limit: usize) -> Result<Vec<Operation>> {
            self.inner.claim(lease, now_ms, limit).await
        }
        async fn renew(&self, lease: &Lease) -> Result<Vec<String>> {
            self.inner.renew(lease).await
        }
        async fn release(&self, owner: &str) -> Result<()> {
            self.inner.release(owner).await
        }
        fn exclusive(&self) -> bool {
            self.inner.exclusive()
        }
    }

    async fn runner_with(delay: &str) -> (tempfile::TempDir, Arc<Probe>, Arc<Runner>) {
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
        let registry = Arc::new(
            Registry::build_from_configs(&config.providers, &environment, &sql, &hub)
                .await
                .unwrap(),
        );
        let probe = Arc::new(Probe {
            inner: sql.clone(),
            gets: AtomicUsize::new(0),
            adopted_elsewhere: AtomicBool::new(false),
            hold_cancel: AtomicBool::new(false),
            saved_done: tokio::sync::Notify::new(),
        });
        let runner = Runner::new(
            Arc::clone(&probe) as Arc<dyn OperationStore>,
            registry,
            Telemetry::start(&environment).unwrap(),
            Audit::new(Arc::new(sql)),
            Duration::from_secs(30),
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
            .submit("tester", None, create("s1"), Duration::from_secs(5))
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
            .submit("tester", None, batch, Duration::from_secs(5))
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
            .submit("tester", None, create("s2"), Duration::from_secs(5))
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
            .submit("tester", None, create("s3"), Duration::from_secs(5))
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
            .submit("tester", None, create("s1"), Duration::from_secs(5))
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
}
