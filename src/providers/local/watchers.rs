//! Keeps this replica's WatchStream subscribers of one `local` instance's streams current, with
//! the changes made through any replica sharing the store.
//!
//! Every committed change of a `local` stream is announced to every replica
//! ([`Notice::StreamChanged`], published by `backend.rs`); here, a notice for a stream that has
//! subscribers in this replica makes it re-read the stream from the store and publish what it
//! found to the [`WatchHub`] (the subscribers skip a state they already sent). One re-read of a
//! stream runs at a time: notices that come during it make one more read after it, so the hub
//! gets the states in the order they were committed, and a burst of changes costs two reads.
//! While this replica does not hear the others (its listener lost) every watched stream is
//! re-read every [`FALLBACK_POLL`], and once more when it hears them again; likewise after a
//! burst of notices this task fell behind on.
//!
//! It reads the store only, never a provider's API: no outbound limit applies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tracing::warn;

use crate::domain::StreamName;
use crate::error::Kind;
use crate::providers::Provider;
use crate::store::{Notice, Notifier};
use crate::watch::{Change, WatchHub};

/// How often watched streams are re-read while notices from other replicas cannot come, and
/// how soon a re-read that failed is tried again.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// The re-reads of one instance's watched streams in this replica.
struct Watchers {
    // Held weakly: the instance goes with its registry, and this task with it.
    provider: Weak<dyn Provider>,
    // The instance's id, and `providers/{id}/streams/`, which its streams' names start with.
    id: String,
    prefix: String,
    hub: Arc<WatchHub>,
    // Streams being re-read, each with whether another notice came meanwhile (read again).
    rereading: Mutex<HashMap<String, bool>>,
}

/// Starts keeping the watchers of `provider`'s streams current, for as long as it lives.
pub(super) fn spawn(provider: &Arc<dyn Provider>, hub: &Arc<WatchHub>, notifier: &Notifier) {
    let watchers = Arc::new(Watchers {
        provider: Arc::downgrade(provider),
        id: provider.id().to_string(),
        prefix: format!("providers/{}/streams/", provider.id()),
        hub: Arc::clone(hub),
        rereading: Mutex::new(HashMap::new()),
    });
    tokio::spawn(watchers.run(notifier.subscribe(), notifier.listening()));
}

impl Watchers {
    fn rereading(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.rereading.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the notices until the notifier or the instance goes.
    async fn run(
        self: Arc<Self>,
        mut notices: broadcast::Receiver<Notice>,
        mut listening: watch::Receiver<bool>,
    ) {
        let mut poll = tokio::time::interval(FALLBACK_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while self.provider.strong_count() > 0 {
            let polling = !*listening.borrow();
            tokio::select! {
                notice = notices.recv() => match notice {
                    Ok(Notice::StreamChanged(name)) => {
                        if name.starts_with(&self.prefix) && self.hub.is_watched(&name) {
                            self.reread(name);
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => self.reread_all(),
                    Err(RecvError::Closed) => return,
                },
                changed = listening.changed() => match changed {
                    Ok(()) if *listening.borrow_and_update() => self.reread_all(),
                    Ok(()) => {}
                    Err(_) => return,
                },
                _ = poll.tick(), if polling => self.reread_all(),
            }
        }
    }

    /// Re-reads every watched stream of the instance.
    fn reread_all(self: &Arc<Self>) {
        for name in self.hub.watched(&self.prefix) {
            self.reread(name);
        }
    }

    /// Re-reads the stream `name` and publishes it: now, or after the re-read in flight.
    fn reread(self: &Arc<Self>, name: String) {
        {
            let mut rereading = self.rereading();
            if let Some(again) = rereading.get_mut(&name) {
                *again = true;
                return;
            }
            rereading.insert(name.clone(), false);
        }
        tokio::spawn(Arc::clone(self).read_until_current(name));
    }

    /// Reads `name` and publishes it, again as long as notices came during the read (and it is
    /// still watched).
    async fn read_until_current(self: Arc<Self>, name: String) {
        let stream = StreamName {
            provider: self.id.clone(),
            video: None,
            stream: name[self.prefix.len()..].to_string(),
        };
        loop {
            let Some(provider) = self.provider.upgrade() else {
                return;
            };
            match provider.get_stream(&stream).await {
                Ok(now) => self.hub.publish(&name, Change::Updated(Box::new(now))),
                Err(e) if e.kind() == Kind::StreamNotFound => {
                    self.hub.publish(&name, Change::Deleted)
                }
                Err(e) => {
                    warn!(stream = %name, error = %e, "could not re-read a watched stream; trying again");
                    tokio::time::sleep(FALLBACK_POLL).await;
                    self.rereading().insert(name.clone(), true);
                }
            }
            drop(provider);
            let mut rereading = self.rereading();
            if rereading.get(&name) == Some(&true) && self.hub.is_watched(&name) {
                rereading.insert(name.clone(), false);
            } else {
                rereading.remove(&name);
                return;
            }
        }
    }
}
