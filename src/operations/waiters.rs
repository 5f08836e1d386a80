//! Waiting for an operation to be done (WaitOperation).
//!
//! A waiter subscribes to the operation's channel here; the task driving the operation in this
//! process publishes each state it saved, so the waiter wakes at once without reading the
//! store. An operation driven by another process is finished there, which tells every replica
//! ([`Notice::OperationDone`](crate::store::Notice)): the runner pokes the channel, and the
//! waiter reads the store once. Only while this process does not hear the other replicas (its
//! listener lost) does a waiter of an operation driven elsewhere read it again every second
//! (`WAIT_POLL`), and once more when the listener is back. It does not read the store itself:
//! the caller says how.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::domain::Operation;
use crate::error::Result;

/// How often a waiter re-reads an operation another process may be driving.
const WAIT_POLL: Duration = Duration::from_secs(1);

/// Per operation: the state this process's task saved last, or `None` when a waiter should read
/// the store (nothing saved here yet, or a poke: it changed elsewhere).
type Channels = HashMap<String, watch::Sender<Option<Arc<Operation>>>>;

/// Per operation that someone waits on: the operation as this process last saved it.
#[derive(Default)]
pub(super) struct Waiters {
    channels: Mutex<Channels>,
}

impl Waiters {
    fn lock(&self) -> MutexGuard<'_, Channels> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the waiters of `op`, if any, the state just saved.
    pub(super) fn publish(&self, op: &Operation) {
        if let Some(tx) = self.lock().get(&op.id) {
            tx.send_replace(Some(Arc::new(op.clone())));
        }
    }

    /// Wakes the waiters of `id`, if any, to read it from the store: it changed elsewhere.
    pub(super) fn poke(&self, id: &str) {
        if let Some(tx) = self.lock().get(id) {
            tx.send_replace(None);
        }
    }

    /// Wakes every waiter to read its operation from the store: changes may have been missed.
    pub(super) fn poke_all(&self) {
        for tx in self.lock().values() {
            tx.send_replace(None);
        }
    }

    /// Its task stopped driving `id` here: its waiters read it from the store once, then wait
    /// for a notice from the process driving it now. Drops the channel if nobody waits.
    pub(super) fn close(&self, id: &str) {
        let mut channels = self.lock();
        if let Some(tx) = channels.get(id) {
            if tx.receiver_count() == 0 {
                channels.remove(id);
            } else {
                tx.send_replace(None);
            }
        }
    }

    /// Waits until the operation `id` is done or `timeout` passes (or `shutdown` is
    /// cancelled); returns its latest state. `read` reads it (from memory or the store);
    /// `running` says whether this process's task still drives an operation; `listening`
    /// whether this process hears the other replicas' notices (else it polls).
    pub(super) async fn wait<R, F>(
        &self,
        id: &str,
        timeout: Duration,
        shutdown: &CancellationToken,
        mut listening: watch::Receiver<bool>,
        read: R,
        running: impl Fn(&str) -> bool,
    ) -> Result<Operation>
    where
        R: Fn() -> F,
        F: Future<Output = Result<Operation>>,
    {
        let mut changes = self
            .lock()
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(None).0)
            .subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        // The state this process's task just saved, when a change woke the wait: no need to
        // read it back from the store.
        let mut saved: Option<Arc<Operation>> = None;
        let result = loop {
            let op = match saved.take() {
                Some(op) => Operation::clone(&op),
                None => match read().await {
                    Ok(op) => op,
                    Err(e) => break Err(e),
                },
            };
            if op.done() || tokio::time::Instant::now() >= deadline {
                break Ok(op);
            }
            // Driven elsewhere while no notice can come: poll.
            let poll = if *listening.borrow_and_update() || running(id) {
                deadline
            } else {
                (tokio::time::Instant::now() + WAIT_POLL).min(deadline)
            };
            tokio::select! {
                // The sender lives in `channels` while this receiver does.
                Ok(()) = changes.changed() => saved = changes.borrow_and_update().clone(),
                // Heard again or lost: read once, and see whether to poll.
                Ok(()) = listening.changed() => {}
                () = tokio::time::sleep_until(poll) => {}
                () = shutdown.cancelled() => {}
            }
            if shutdown.is_cancelled() {
                break read().await;
            }
        };
        drop(changes);
        let mut channels = self.lock();
        if channels.get(id).is_some_and(|tx| tx.receiver_count() == 0) && !running(id) {
            channels.remove(id);
        }
        result
    }
}
