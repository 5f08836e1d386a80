//! The in-process fan-out of stream changes to WatchStream subscribers, and the sharing of
//! concurrent reads of one stream.
//!
//! Adapters that see changes themselves (the `local` provider) publish every change here; one
//! broadcast channel exists per watched stream while it has subscribers. A subscriber that
//! falls behind is told so (`Lagged`) and re-reads the stream instead of missing the change.
//!
//! Reads of one stream are shared ([`WatchHub::read`]): a caller joins the read that has not
//! started yet, or queues one to start when the read in flight ends. A caller never joins a
//! read that started before it arrived, so its answer is the provider's state at some moment
//! after it asked; and however many callers read a stream at once, at most two reads of it are
//! made at a time, one in flight and one waiting.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use tokio::sync::broadcast;

use crate::domain::Stream;
use crate::error::Result;

/// How many changes a slow subscriber may fall behind before it must re-read.
const BUFFER: usize = 16;

/// One change of a stream.
#[derive(Clone, Debug)]
pub enum Change {
    /// The stream as it is after the change.
    Updated(Box<Stream>),
    /// The stream is gone.
    Deleted,
    /// Polling the stream failed; its watches end with the error.
    Failed(crate::error::Error),
}

/// One read of a stream, shared by the callers who joined it.
type Read = Shared<BoxFuture<'static, Result<Stream>>>;

/// The shared reads of one stream, each numbered, held weakly: a read nobody awaits any more
/// is dropped, and its entry counts as absent.
#[derive(Default)]
struct Reads {
    in_flight: Option<(u64, WeakShared<BoxFuture<'static, Result<Stream>>>)>,
    waiting: Option<(u64, WeakShared<BoxFuture<'static, Result<Stream>>>)>,
}

impl Reads {
    /// Whether a read of the stream is still awaited by someone.
    fn alive(&self) -> bool {
        [&self.in_flight, &self.waiting]
            .into_iter()
            .flatten()
            .any(|(_, weak)| weak.upgrade().is_some())
    }
}

/// How many reads are made between two sweeps of the entries of reads nobody awaits any more
/// (their callers gone before the read ended).
const SWEEP_EVERY: u64 = 1024;

/// Shared reads by stream name, and the number of the last read made.
#[derive(Default)]
struct ReadTable {
    reads: HashMap<String, Reads>,
    made: u64,
}

/// The channel of one watched stream.
struct Channel {
    sender: broadcast::Sender<Change>,
    // Whether a poller publishes the stream's changes on it.
    polled: bool,
}

impl Channel {
    fn new() -> Self {
        Channel {
            sender: broadcast::channel(BUFFER).0,
            polled: false,
        }
    }
}

/// Subscriptions and shared reads by stream name.
#[derive(Default)]
pub struct WatchHub {
    // Stream name → channel; an entry lives while someone subscribes to that stream.
    channels: Mutex<HashMap<String, Channel>>,
    // Stream name → its shared reads; an entry lives while a read of it is awaited.
    reads: Arc<Mutex<ReadTable>>,
}

impl WatchHub {
    /// Subscribes to the changes of the stream named `name`.
    pub fn subscribe(&self, name: &str) -> broadcast::Receiver<Change> {
        let mut channels = lock(&self.channels);
        channels
            .entry(name.to_string())
            .or_insert_with(Channel::new)
            .sender
            .subscribe()
    }

    /// Subscribes to the changes of the stream named `name`, which are found by polling it:
    /// with the sender a poller is to publish them through, if none polls for it yet (one
    /// poller per stream, however many subscribe).
    pub fn subscribe_polled(
        &self,
        name: &str,
    ) -> (
        broadcast::Receiver<Change>,
        Option<broadcast::Sender<Change>>,
    ) {
        let mut channels = lock(&self.channels);
        let channel = channels
            .entry(name.to_string())
            .or_insert_with(Channel::new);
        let poller = (!channel.polled).then(|| channel.sender.clone());
        channel.polled = true;
        (channel.sender.subscribe(), poller)
    }

    /// Whether the poller publishing through `sender` should poll `name` again: while that
    /// channel is the stream's and has subscribers. When not, the channel counts as unpolled,
    /// so that its next subscriber starts a poller.
    pub fn keep_polling(&self, name: &str, sender: &broadcast::Sender<Change>) -> bool {
        let mut channels = lock(&self.channels);
        match channels.get_mut(name) {
            Some(channel) if channel.sender.same_channel(sender) => {
                channel.polled = channel.sender.receiver_count() > 0;
                channel.polled
            }
            _ => false,
        }
    }

    /// Tells the subscribers of `name` about a change; forgets channels nobody listens to.
    pub fn publish(&self, name: &str, change: Change) {
        let mut channels = lock(&self.channels);
        if let Some(channel) = channels.get(name)
            && channel.sender.send(change).is_err()
        {
            channels.remove(name);
        }
    }

    /// Whether the stream `name` has subscribers.
    pub fn is_watched(&self, name: &str) -> bool {
        lock(&self.channels)
            .get(name)
            .is_some_and(|c| c.sender.receiver_count() > 0)
    }

    /// The streams that have subscribers, of those whose names start with `prefix`.
    pub fn watched(&self, prefix: &str) -> Vec<String> {
        lock(&self.channels)
            .iter()
            .filter(|(name, c)| name.starts_with(prefix) && c.sender.receiver_count() > 0)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Drops the channel of `name` if its last subscriber left.
    pub fn release(&self, name: &str) {
        let mut channels = lock(&self.channels);
        if channels
            .get(name)
            .is_some_and(|c| c.sender.receiver_count() == 0)
        {
            channels.remove(name);
        }
    }
}

impl WatchHub {
    /// The stream named `name` as `read` finds it, read once for every caller that asks while
    /// that read has not started: joins the waiting read of `name`, or queues `read` to start
    /// once the read in flight (if any) ends.
    pub async fn read<F>(&self, name: &str, read: F) -> Result<Stream>
    where
        F: Future<Output = Result<Stream>> + Send + 'static,
    {
        let shared = {
            let mut table = lock(&self.reads);
            let table = &mut *table;
            if table.made % SWEEP_EVERY == SWEEP_EVERY - 1 {
                table.reads.retain(|_, reads| reads.alive());
            }
            let reads = table.reads.entry(name.to_string()).or_default();
            if let Some(waiting) = reads.waiting.as_ref().and_then(|(_, w)| w.upgrade()) {
                waiting
            } else {
                table.made += 1;
                let number = table.made;
                let before = reads.in_flight.as_ref().and_then(|(_, r)| r.upgrade());
                let shared = Self::queued(Arc::clone(&self.reads), name, number, before, read);
                reads.waiting = Some((number, shared.downgrade().expect("not yet polled")));
                shared
            }
        };
        shared.await
    }

    /// `read`, run once `before` has ended, as read `number` of `name` in `table`.
    fn queued<F>(
        table: Arc<Mutex<ReadTable>>,
        name: &str,
        number: u64,
        before: Option<Read>,
        read: F,
    ) -> Read
    where
        F: Future<Output = Result<Stream>> + Send + 'static,
    {
        let name = name.to_string();
        async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            Self::started(&table, &name, number);
            let stream = read.await;
            Self::ended(&table, &name, number);
            stream
        }
        .boxed()
        .shared()
    }

    /// Read `number` of `name` is in flight: later callers wait for the next.
    fn started(table: &Mutex<ReadTable>, name: &str, number: u64) {
        let mut table = lock(table);
        if let Some(reads) = table.reads.get_mut(name)
            && let Some((waiting, weak)) = reads.waiting.take()
        {
            if waiting == number {
                reads.in_flight = Some((waiting, weak));
            } else {
                reads.waiting = Some((waiting, weak));
            }
        }
    }

    /// Read `number` of `name` ended; the entry goes when no read of it is left.
    fn ended(table: &Mutex<ReadTable>, name: &str, number: u64) {
        let mut table = lock(table);
        if let Some(reads) = table.reads.get_mut(name) {
            if reads.in_flight.as_ref().is_some_and(|(n, _)| *n == number) {
                reads.in_flight = None;
            }
            if !reads.alive() {
                table.reads.remove(name);
            }
        }
    }
}

/// Locks `mutex`, whose table stays consistent even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use tokio::sync::Notify;

    use super::*;
    use crate::domain::{StreamName, StreamState};

    /// A read that waits for `go`, then answers the stream with `etag` the next count.
    fn read(
        count: &Arc<AtomicI64>,
        go: &Arc<Notify>,
    ) -> impl Future<Output = Result<Stream>> + Send + 'static {
        let (count, go) = (Arc::clone(count), Arc::clone(go));
        async move {
            go.notified().await;
            Ok(Stream {
                name: StreamName::parse("providers/p/streams/s", "name")?,
                etag: count.fetch_add(1, Ordering::SeqCst).to_string(),
                state: StreamState::Active,
                spec: Default::default(),
                create_time_ms: 0,
                update_time_ms: 0,
                provider_uid: String::new(),
                details: Default::default(),
            })
        }
    }

    #[tokio::test]
    async fn callers_after_a_read_started_get_the_next_one_together() {
        let hub = Arc::new(WatchHub::default());
        let (count, go) = (Arc::new(AtomicI64::new(0)), Arc::new(Notify::new()));
        let first = tokio::spawn({
            let (hub, read) = (Arc::clone(&hub), read(&count, &go));
            async move { hub.read("s", read).await }
        });
        // The first read has started (it waits for `go`); the next callers queue behind it.
        while lock(&hub.reads)
            .reads
            .get("s")
            .is_none_or(|r| r.in_flight.is_none())
        {
            tokio::task::yield_now().await;
        }
        let later: Vec<_> = (0..5)
            .map(|_| {
                let (hub, read) = (Arc::clone(&hub), read(&count, &go));
                tokio::spawn(async move { hub.read("s", read).await })
            })
            .collect();
        // All five have joined the waiting read (five holders, and the one looked at here).
        let joined = |hub: &WatchHub| {
            let table = lock(&hub.reads);
            let waiting = table.reads["s"].waiting.as_ref();
            waiting
                .and_then(|(_, weak)| weak.upgrade())
                .and_then(|r| r.strong_count())
        };
        while joined(&hub) != Some(6) {
            tokio::task::yield_now().await;
        }
        go.notify_one();
        assert_eq!(first.await.unwrap().unwrap().etag, "0");
        go.notify_one();
        for caller in later {
            assert_eq!(caller.await.unwrap().unwrap().etag, "1");
        }
        assert_eq!(count.load(Ordering::SeqCst), 2);
        assert!(lock(&hub.reads).reads.is_empty());
    }

    #[tokio::test]
    async fn reads_whose_callers_left_are_swept() {
        let hub = WatchHub::default();
        let (count, go) = (Arc::new(AtomicI64::new(0)), Arc::new(Notify::new()));
        for i in 0..SWEEP_EVERY - 1 {
            // Each caller gives up before its read ends.
            let name = format!("s{i}");
            let abandoned = hub.read(&name, read(&count, &go));
            assert!(futures::poll!(Box::pin(abandoned)).is_pending());
        }
        assert_eq!(lock(&hub.reads).reads.len() as u64, SWEEP_EVERY - 1);
        let last = hub.read("last", read(&count, &go));
        assert!(futures::poll!(Box::pin(last)).is_pending());
        assert_eq!(lock(&hub.reads).reads.len(), 1);
    }

    #[test]
    fn one_poller_per_stream_while_it_has_subscribers() {
        let hub = WatchHub::default();
        let (first, poller) = hub.subscribe_polled("s");
        let poller = poller.expect("the first subscriber starts the poller");
        let (second, none) = hub.subscribe_polled("s");
        assert!(none.is_none());
        assert!(hub.keep_polling("s", &poller));
        drop((first, second));
        assert!(!hub.keep_polling("s", &poller));
        hub.release("s");
        // The next subscriber starts a poller of its own; the old one stops for good.
        let (_third, again) = hub.subscribe_polled("s");
        assert!(again.is_some());
        assert!(!hub.keep_polling("s", &poller));
    }
}
