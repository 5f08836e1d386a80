//! The in-process fan-out of stream changes to WatchStream subscribers.
//!
//! Adapters that see changes themselves (the `local` provider) publish every change here; one
//! broadcast channel exists per watched stream while it has subscribers. A subscriber that
//! falls behind is told so (`Lagged`) and re-reads the stream instead of missing the change.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use crate::domain::Stream;

/// How many changes a slow subscriber may fall behind before it must re-read.
const BUFFER: usize = 16;

/// One change of a stream.
#[derive(Clone, Debug)]
pub enum Change {
    /// The stream as it is after the change.
    Updated(Box<Stream>),
    /// The stream is gone.
    Deleted,
}

/// Subscriptions by stream name.
#[derive(Default)]
pub struct WatchHub {
    // Stream name → sender; an entry lives while someone subscribes to that stream.
    channels: Mutex<HashMap<String, broadcast::Sender<Change>>>,
}

impl WatchHub {
    /// Subscribes to the changes of the stream named `name`.
    pub fn subscribe(&self, name: &str) -> broadcast::Receiver<Change> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(name.to_string())
            .or_insert_with(|| broadcast::channel(BUFFER).0)
            .subscribe()
    }

    /// Tells the subscribers of `name` about a change; forgets channels nobody listens to.
    pub fn publish(&self, name: &str, change: Change) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = channels.get(name)
            && sender.send(change).is_err()
        {
            channels.remove(name);
        }
    }

    /// Drops the channel of `name` if its last subscriber left.
    pub fn release(&self, name: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if channels.get(name).is_some_and(|s| s.receiver_count() == 0) {
            channels.remove(name);
        }
    }
}
