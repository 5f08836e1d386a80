//! Waiting for an operation to be done (WaitOperation).
//!
//! A waiter subscribes to the operation's channel here; the task driving the operation in this
//! process publishes each state it saved, so the waiter wakes at once without reading the
//! store. An operation driven by another process (or no longer by this one) is read again every
//! second (`WAIT_POLL`) instead. It does not read the store itself: the caller says how.

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

    /// Drops the channel of `id`: its task stopped driving it here, waiters poll from now on.
    pub(super) fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Waits until the operation `id` is done or `timeout` passes (or `shutdown` is
    /// cancelled); returns its latest state. `read` reads it (from memory or the store);
    /// `running` says whether this process's task still drives an operation.
    pub(super) async fn wait<R, F>(
        &self,
        id: &str,
        timeout: Duration,
        shutdown: &CancellationToken,
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
        // Whether the task stopped driving it here (its sender gone): poll the store then.
        let mut closed = false;
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
            let poll = (tokio::time::Instant::now() + WAIT_POLL).min(deadline);
            tokio::select! {
                changed = changes.changed(), if !closed => match changed {
                    Ok(()) => saved = changes.borrow_and_update().clone(),
                    Err(_) => closed = true,
                },
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
