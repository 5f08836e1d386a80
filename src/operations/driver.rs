//! Driving operations: one task per operation, step by step.
//!
//! Each task calls [`Provider::advance`] (or `cancel`, once asked to) and saves the step, the
//! adapter's progress and the outcome after every call, fenced by this process as the owner:
//! a save the store refuses (another process adopted the operation) ends the task. Temporary
//! errors of a step are retried with exponential backoff and jitter (backon); anything else
//! ends the operation with its error.
//!
//! Before each step and each save, a task checks that its lease still holds: the local
//! deadline `lease.rs` set when it last took or renewed the lease, which ends before the
//! lease does on the database's clock. A task whose lease lapsed makes no provider call and
//! no save any more. Whatever stops a task before its operation is done (a lapsed lease, a
//! save that keeps failing, a panic, in a step or not) releases the operation's lease,
//! fenced by the owner, so that the next adoption round (of any process, this one included)
//! reads it again from the store and drives it; only the shutdown keeps leases, released all
//! at once by the runner.
//!
//! Each task runs in a telemetry context of its own and counts in
//! `streamgate_operations_in_flight` while it runs. A finished operation goes to the
//! [`Finished`] cache and to the [`OperationObserver`], and is announced to the other processes
//! ([`Notice::OperationDone`]); every saved state goes to its [`Waiters`].
//!
//! It does not take or renew leases (`lease.rs`) nor record new operations (`mod.rs`).
//!
//! [`Provider::advance`]: crate::providers::Provider::advance

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use futures::FutureExt;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, error, info, warn};

use super::finished::Finished;
use super::waiters::Waiters;
use crate::domain::{Operation, STEP_DONE, now_ms};
use crate::error::{Error, Kind};
use crate::providers::{Registry, Step};
use crate::store::{Notice, Notifier, OperationStore};
use crate::telemetry::Telemetry;
use crate::telemetry::call::CallContext;

/// How many times in a row a step is retried after a temporary error.
const MAX_STEP_RETRIES: i32 = 8;

/// Told about every operation this runner finishes (after it is saved).
#[async_trait::async_trait]
pub trait OperationObserver: Send + Sync {
    /// `op` is done: it succeeded or failed for good.
    async fn done(&self, op: &Operation);
}

/// What a running operation's task listens to.
struct Control {
    wake: Notify,
    cancel: AtomicBool,
    // Until when this process surely holds the operation's lease, on this process's monotonic
    // clock: set from the moment the statement that took or renewed the lease was sent, less a
    // margin, so it ends before the lease does on the database's clock. Once passed, never
    // extended again: another process may have adopted the operation meanwhile.
    held_until: Mutex<Instant>,
}

impl Control {
    fn held_until(&self) -> MutexGuard<'_, Instant> {
        self.held_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the lease still holds.
    fn holds(&self) -> bool {
        Instant::now() < *self.held_until()
    }
}

/// Why a task stopped before its operation was done.
enum Stop {
    /// The driver shuts down: the runner releases every lease at once.
    Shutdown,
    /// Another process holds the operation now.
    Adopted,
    /// This process's hold on the operation ended: its lease lapsed, or it could not save.
    Lost,
}

type Running = HashMap<String, Arc<Control>>;

/// The tasks that drive operations, and what they share with the runner's calls.
pub(super) struct Driver {
    pub(super) store: Arc<dyn OperationStore>,
    registry: Arc<Registry>,
    // Operations this process is driving, so that none is driven twice and a cancel can wake
    // its task out of a wait.
    running: Mutex<Running>,
    // Where each task publishes the states it saved, for WaitOperation.
    pub(super) waiters: Waiters,
    // Where each task keeps its operation once done, for GetOperation and WaitOperation.
    pub(super) finished: Finished,
    // Stops every task at its next wait; their operations resume at the next start.
    pub(super) shutdown: CancellationToken,
    pub(super) tasks: TaskTracker,
    // The server's tracer and instruments, for the tasks' spans and the in-flight gauge.
    telemetry: Arc<Telemetry>,
    // Told when an operation is done.
    observer: Arc<dyn OperationObserver>,
    // This process, as the owner of the operations it drives: every save is fenced by it.
    owner: String,
    // Tells the other processes sharing the store that an operation is done.
    notifier: Arc<Notifier>,
}

/// A task found its lease lapsed (`when`): it stops, to be adopted again.
fn lapsed(when: &str) -> Stop {
    warn!(
        "the operation's lease lapsed {when} (the store was unreachable, or this process was \
         paused); stopping, to be adopted again from the store"
    );
    Stop::Lost
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

impl Driver {
    /// A driver that saves to `store` as `owner`, dispatches to `registry` and tells
    /// `observer` about every operation it finishes.
    pub(super) fn new(
        store: Arc<dyn OperationStore>,
        registry: Arc<Registry>,
        telemetry: Arc<Telemetry>,
        observer: Arc<dyn OperationObserver>,
        owner: String,
        notifier: Arc<Notifier>,
    ) -> Self {
        Driver {
            store,
            registry,
            running: Mutex::new(HashMap::new()),
            waiters: Waiters::default(),
            finished: Finished::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            telemetry,
            observer,
            owner,
            notifier,
        }
    }

    fn running(&self) -> MutexGuard<'_, Running> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a task of this process drives the operation `id`.
    pub(super) fn is_running(&self, id: &str) -> bool {
        self.running().contains_key(id)
    }

    /// Asks the task driving `id` here, if any, to cancel before its next step, and wakes it
    /// out of its wait.
    pub(super) fn cancel(&self, id: &str) {
        let control = self.running().get(id).cloned();
        if let Some(control) = control
            && !control.cancel.swap(true, Ordering::SeqCst)
        {
            control.wake.notify_one();
        }
    }

    /// The operations whose task runs here and whose lease still holds: those to renew. A task
    /// whose lease lapsed is woken, to stop now rather than at the end of its wait.
    pub(super) fn held(&self) -> Vec<String> {
        let mut held = Vec::new();
        for (id, control) in self.running().iter() {
            if control.holds() {
                held.push(id.clone());
            } else {
                control.wake.notify_one();
            }
        }
        held
    }

    /// The lease of `id` was renewed: it holds until `until`, unless it lapsed meanwhile (then
    /// the task stops anyway, and its operation is read again by the next adoption).
    pub(super) fn extend(&self, id: &str, until: Instant) {
        if let Some(control) = self.running().get(id) {
            let mut held_until = control.held_until();
            if Instant::now() < *held_until {
                *held_until = until.max(*held_until);
            }
        }
    }

    /// This process no longer holds the lease of `id` (another process adopted it): its task
    /// stops before its next provider call.
    pub(super) fn lose(&self, id: &str) {
        if let Some(control) = self.running().get(id) {
            *control.held_until() = Instant::now();
            control.wake.notify_one();
        }
    }

    /// Starts a task driving `op`, whose lease this process holds until `held_until`, unless
    /// one of this process drives it already. `first`, if given, gets the operation after its
    /// first step.
    pub(super) fn spawn(
        self: &Arc<Self>,
        op: Operation,
        first: Option<oneshot::Sender<Operation>>,
        held_until: Instant,
    ) {
        let control = {
            let mut running = self.running();
            if running.contains_key(&op.id) {
                // A task of this process whose lease lapsed, still stopping: it releases the
                // operation, and a later round adopts it again.
                return;
            }
            let control = Arc::new(Control {
                wake: Notify::new(),
                cancel: AtomicBool::new(op.cancel_requested),
                held_until: Mutex::new(held_until),
            });
            running.insert(op.id.clone(), Arc::clone(&control));
            control
        };
        let span = tracing::info_span!("operation", operation = %op.id);
        let context = CallContext::spawned(&self.telemetry);
        let in_flight = self
            .telemetry
            .metrics()
            .operation_in_flight(op.request.provider(), op.request.verb().as_str());
        let driver = Arc::clone(self);
        self.tasks.spawn(
            context.scope(
                async move {
                    let id = op.id.clone();
                    let stop = AssertUnwindSafe(Arc::clone(&driver).drive(op, control, first))
                        .catch_unwind()
                        .await
                        .unwrap_or_else(|_| {
                            error!("the operation's task panicked; releasing the operation");
                            Some(Stop::Lost)
                        });
                    driver.end(&id, stop).await;
                    drop(in_flight);
                }
                .instrument(span),
            ),
        );
    }

    /// Drives `op` until it is done (`None`) or the task must stop.
    async fn drive(
        self: Arc<Self>,
        mut op: Operation,
        control: Arc<Control>,
        mut first: Option<oneshot::Sender<Operation>>,
    ) -> Option<Stop> {
        loop {
            let delay = op.next_run_ms - now_ms();
            if delay > 0 && !control.cancel.load(Ordering::SeqCst) {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(delay as u64)) => {}
                    () = control.wake.notified() => {}
                    () = self.shutdown.cancelled() => return Some(Stop::Shutdown),
                }
            }
            if self.shutdown.is_cancelled() {
                return Some(Stop::Shutdown);
            }
            if !control.holds() {
                return Some(lapsed("before its next step"));
            }
            op.cancel_requested |= control.cancel.load(Ordering::SeqCst);
            self.step(&mut op).await;
            if let Err(stop) = self.save(&op, &control).await {
                return Some(stop);
            }
            self.waiters.publish(&op);
            if let Some(tx) = first.take() {
                let _ = tx.send(op.clone());
            }
            if op.done() {
                // Waiters in other processes wake on it (a failure is logged and counted; they
                // find the operation done at their next read).
                let _ = self
                    .notifier
                    .publish(Notice::OperationDone(op.id.clone()))
                    .await;
                // A cancellation requested while the last step ran is in the store's column
                // (set while the operation was not done) but maybe not in `op`: taken from
                // `control` here, or marked by the runner's `cancel` after this.
                self.finished
                    .keep(&op, control.cancel.load(Ordering::SeqCst));
                match &op.outcome {
                    Some(Err(e)) => {
                        info!(step = %op.step, error = %e, "operation failed")
                    }
                    _ => info!("operation done"),
                }
                self.observer.done(&op).await;
                return None;
            }
        }
    }

    /// After the task of `id` stopped (`stop`, or done): releases the operation's lease when
    /// this process lost its hold on it, then forgets the task. In that order: a lease released
    /// after forgetting could be one this process just took again, for a new task.
    async fn end(&self, id: &str, stop: Option<Stop>) {
        if let Some(Stop::Lost) = stop
            && let Err(e) = self.store.release_one(id, &self.owner).await
        {
            warn!(error = %e, "could not release the operation; its lease runs out instead");
        }
        self.running().remove(id);
        self.waiters.close(id);
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
            Ok(Step::DoneWithWarnings { result, warnings }) => {
                op.step = STEP_DONE.to_string();
                op.outcome = Some(Ok(result));
                op.warnings = warnings;
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

    /// Saves `op` as this process's, retrying any failure with backoff while the lease holds
    /// (at most [`MAX_STEP_RETRIES`] times). The reason to stop when it cannot.
    async fn save(&self, op: &Operation, control: &Control) -> std::result::Result<(), Stop> {
        let mut retry = 0;
        loop {
            if !control.holds() {
                return Err(lapsed("before saving its step"));
            }
            match self.store.save(op, &self.owner).await {
                Ok(true) => return Ok(()),
                Ok(false) => {
                    warn!(
                        "another process adopted the operation (this one held it past its \
                         lease); leaving it to that process"
                    );
                    return Err(Stop::Adopted);
                }
                Err(e) if retry < MAX_STEP_RETRIES => {
                    retry += 1;
                    let delay = backoff(retry);
                    warn!(error = %e, retry, ?delay, "could not save the operation; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    warn!(
                        error = %e,
                        "could not save the operation; releasing it, to be adopted again"
                    );
                    return Err(Stop::Lost);
                }
            }
        }
    }

    /// Stops every task at its next wait and waits up to `bound` for steps in flight to save.
    /// Whether they all did.
    pub(super) async fn stop(&self, bound: Duration) -> bool {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(bound, self.tasks.wait()).await.is_ok()
    }
}
