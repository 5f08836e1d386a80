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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::domain::{OpRequest, OpResult, ParentName};

    const ID: &str = "local.1";

    fn operation(done: bool) -> Operation {
        Operation {
            id: ID.to_string(),
            request: OpRequest::BatchDelete {
                parent: ParentName {
                    provider: "local".into(),
                    video: None,
                },
                names: Vec::new(),
            },
            principal: "tester".into(),
            request_id: None,
            fingerprint: String::new(),
            step: "accepted".into(),
            progress: serde_json::Value::Null,
            next_run_ms: 0,
            attempts: 0,
            retries: 0,
            cancel_requested: false,
            replayed: false,
            outcome: done.then(|| Ok(OpResult::Batch(Vec::new()))),
            warnings: Vec::new(),
            create_time_ms: 0,
            update_time_ms: 0,
        }
    }

    /// The store as a waiter of an operation driven by another process sees it: reads counted,
    /// done once `done` is set.
    #[derive(Default)]
    struct Elsewhere {
        reads: AtomicUsize,
        done: AtomicBool,
    }

    impl Elsewhere {
        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
    }

    /// Starts a wait of up to 10 s on the operation `Elsewhere` holds.
    fn wait(
        waiters: &Arc<Waiters>,
        store: &Arc<Elsewhere>,
        listening: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<Result<Operation>> {
        let (waiters, store) = (Arc::clone(waiters), Arc::clone(store));
        tokio::spawn(async move {
            let shutdown = CancellationToken::new();
            let read = || {
                store.reads.fetch_add(1, Ordering::SeqCst);
                let done = store.done.load(Ordering::SeqCst);
                async move { Ok(operation(done)) }
            };
            waiters
                .wait(
                    ID,
                    Duration::from_secs(10),
                    &shutdown,
                    listening,
                    read,
                    |_| false,
                )
                .await
        })
    }

    #[tokio::test]
    async fn while_listening_a_waiter_reads_once_then_only_when_poked() {
        let (waiters, store) = (Arc::new(Waiters::default()), Arc::new(Elsewhere::default()));
        let (_listening, heard) = watch::channel(true);
        let waiting = wait(&waiters, &store, heard);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(store.reads(), 1, "no polling while notices come");
        store.done.store(true, Ordering::SeqCst);
        waiters.poke(ID);
        let done = waiting.await.unwrap().unwrap();
        assert!(done.done());
        assert_eq!(store.reads(), 2);
    }

    #[tokio::test]
    async fn a_waiter_polls_while_the_listener_is_lost_and_reads_once_when_it_is_back() {
        let (waiters, store) = (Arc::new(Waiters::default()), Arc::new(Elsewhere::default()));
        let (listening, heard) = watch::channel(true);
        let waiting = wait(&waiters, &store, heard);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(store.reads(), 1);
        listening.send_replace(false);
        // Lost: a read at once, then one a second.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(store.reads(), 4);
        listening.send_replace(true);
        // Back: one read, then none until a poke.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(store.reads(), 5);
        assert!(!waiting.is_finished());
        store.done.store(true, Ordering::SeqCst);
        waiters.poke(ID);
        assert!(waiting.await.unwrap().unwrap().done());
    }
}
