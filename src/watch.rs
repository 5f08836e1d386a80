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
//!
//! Streams that change outside the gateway (KVS, CloudFront) are polled while watched
//! ([`WatchHub::start_polling`]): one poller per stream in a process, for all its watchers. With
//! several replicas on PostgreSQL ([`WatchHub::fleet`]) one poller polls for the whole fleet:
//! each replica with watchers of a stream records its interest and tries, every poll interval,
//! to take the stream's lease (on the database's clock, [`crate::store::PollStore`]); the
//! holder reads the stream, stores the read and tells the others (`Notice::StreamRead`), who
//! read the stored row and tell their watchers — or read it every interval while their notices
//! may be lost. The holder polls on while any replica is interested, then frees the lease; a
//! holder that dies is replaced once its lease runs out. The latest read of a polled stream is
//! kept for new watchers and for callers who accept a stale answer ([`WatchHub::fresh`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, WeakShared};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::domain::Stream;
use crate::error::{Error, Kind, Result};
use crate::store::{Notice, Notifier, PollStore, StoredRead};

/// How many changes a slow subscriber may fall behind before it must re-read.
const BUFFER: usize = 16;

/// How many poll intervals the lease on a stream's poll, and a replica's interest in the
/// stream, last unless renewed: a replica that dies holding the lease is replaced within that
/// (and one more interval).
const LEASE_INTERVALS: u32 = 3;

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

/// One read of a stream, as the callers who share it get it.
#[derive(Clone, Debug)]
pub struct SharedRead {
    /// What the read found.
    pub result: Result<Stream>,
    /// When the read started, in milliseconds since the epoch: on the database's clock for a
    /// read the fleet's poller stored, else on this process's clock.
    pub read_time_ms: i64,
}

impl SharedRead {
    /// Whether the read found the stream, or found it gone: an answer a caller may be given
    /// later (a failure is not kept for anyone but the watchers it ends).
    fn answers(&self) -> bool {
        match &self.result {
            Ok(_) => true,
            Err(e) => e.kind() == Kind::StreamNotFound,
        }
    }
}

/// A read as the fleet's poller stores it (`watch_polls.record`).
#[derive(Serialize, Deserialize)]
enum Record {
    Stream(Box<Stream>),
    Failed(Error),
}

/// Milliseconds since the epoch on this process's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long before `now_ms` a read at `read_time_ms` started.
fn age(read_time_ms: i64, now_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(now_ms.saturating_sub(read_time_ms)).unwrap_or(0))
}

/// One read of a stream, shared by the callers who joined it.
type Read = Shared<BoxFuture<'static, SharedRead>>;
type WeakRead = WeakShared<BoxFuture<'static, SharedRead>>;

/// The shared reads of one stream, each numbered, held weakly: a read nobody awaits any more
/// is dropped, and its entry counts as absent.
#[derive(Default)]
struct Reads {
    in_flight: Option<(u64, WeakRead)>,
    waiting: Option<(u64, WeakRead)>,
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

/// The latest read of a stream its poller made or heard of.
type Latest = watch::Sender<Option<Arc<SharedRead>>>;

/// The channel of one watched stream.
struct Channel {
    sender: broadcast::Sender<Change>,
    // The number of the poller that publishes the stream's changes on it, if one does. The
    // channel stays while it does, even without subscribers (a poller may poll on for the
    // watchers of other replicas).
    poller: Option<u64>,
    // For new watchers (their initial state) and for callers that accept a stale answer.
    latest: Latest,
}

impl Channel {
    fn new() -> Self {
        Channel {
            sender: broadcast::channel(BUFFER).0,
            poller: None,
            latest: watch::channel(None).0,
        }
    }

    /// Whether nothing keeps the channel: no subscriber, no poller.
    fn unused(&self) -> bool {
        self.poller.is_none() && self.sender.receiver_count() == 0
    }
}

/// The right, and the duty, to poll one watched stream for this process: given to its first
/// subscriber, who starts the poller with it ([`WatchHub::start_polling`]).
#[derive(Debug)]
pub struct Poller {
    name: String,
    number: u64,
}

/// Each read the poller of a watched stream makes or hears of, latest first.
pub type WatchReads = watch::Receiver<Option<Arc<SharedRead>>>;

/// A subscription to a polled stream.
pub struct Polled {
    /// Its changes.
    pub changes: broadcast::Receiver<Change>,
    /// Each read its poller makes or hears of.
    pub reads: WatchReads,
    /// Set for the first subscriber: the poller to start.
    pub poller: Option<Poller>,
}

/// How a poller reads its stream from the provider.
pub type ReadStream = Arc<dyn Fn() -> BoxFuture<'static, Result<Stream>> + Send + Sync>;

/// PostgreSQL: how the replicas share the polls of watched streams.
struct Fleet {
    // The leases, the interest and the stored reads.
    store: PollStore,
    // Tells the other replicas of each stored read (Notice::StreamRead).
    notifier: Arc<Notifier>,
    // This process, as a lease holder and an interested replica.
    replica: String,
}

/// Subscriptions and shared reads by stream name.
#[derive(Default)]
pub struct WatchHub {
    // Stream name → channel; an entry lives while someone subscribes to that stream, or polls
    // it.
    channels: Mutex<HashMap<String, Channel>>,
    // Stream name → its shared reads; an entry lives while a read of it is awaited.
    reads: Arc<Mutex<ReadTable>>,
    // Several replicas: one of them polls each watched stream. `None`: this process alone.
    fleet: Option<Fleet>,
    // The number of the last poller started.
    pollers: AtomicU64,
}

impl WatchHub {
    /// The hub of a replica sharing its polls with the others through `store` and `notifier`.
    pub fn fleet(store: PollStore, notifier: Arc<Notifier>) -> Self {
        WatchHub {
            fleet: Some(Fleet {
                store,
                notifier,
                replica: uuid::Uuid::new_v4().simple().to_string(),
            }),
            ..WatchHub::default()
        }
    }

    /// Subscribes to the changes of the stream named `name`.
    pub fn subscribe(&self, name: &str) -> broadcast::Receiver<Change> {
        let mut channels = lock(&self.channels);
        channels
            .entry(name.to_string())
            .or_insert_with(Channel::new)
            .sender
            .subscribe()
    }

    /// Subscribes to the changes of the stream named `name`, which are found by polling it,
    /// with the right to poll it if nobody polls it here yet (one poller per stream in this
    /// process, however many subscribe).
    pub fn subscribe_polled(&self, name: &str) -> Polled {
        let mut channels = lock(&self.channels);
        let channel = channels
            .entry(name.to_string())
            .or_insert_with(Channel::new);
        let poller = channel.poller.is_none().then(|| {
            let number = self.pollers.fetch_add(1, Ordering::Relaxed) + 1;
            channel.poller = Some(number);
            Poller {
                name: name.to_string(),
                number,
            }
        });
        Polled {
            changes: channel.sender.subscribe(),
            reads: channel.latest.subscribe(),
            poller,
        }
    }

    /// Whether `poller` should poll its stream again: while the stream has subscribers here,
    /// or `hold` (it polls for other replicas' watchers). When not, the channel counts as
    /// unpolled (and goes), so that its next subscriber starts a poller.
    fn keep_polling(&self, poller: &Poller, hold: bool) -> bool {
        let mut channels = lock(&self.channels);
        match channels.get_mut(&poller.name) {
            Some(channel) if channel.poller == Some(poller.number) => {
                if channel.sender.receiver_count() > 0 || hold {
                    return true;
                }
                channels.remove(&poller.name);
                false
            }
            _ => false,
        }
    }

    /// Whether the stream of `poller` has subscribers here.
    fn watched_here(&self, poller: &Poller) -> bool {
        lock(&self.channels)
            .get(&poller.name)
            .is_some_and(|c| c.poller == Some(poller.number) && c.sender.receiver_count() > 0)
    }

    /// Tells the subscribers of `name` about a change; forgets channels nobody uses.
    pub fn publish(&self, name: &str, change: Change) {
        let mut channels = lock(&self.channels);
        if let Some(channel) = channels.get(name)
            && channel.sender.send(change).is_err()
            && channel.unused()
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

    /// Drops the channel of `name` if its last subscriber left and nobody polls it.
    pub fn release(&self, name: &str) {
        let mut channels = lock(&self.channels);
        if channels.get(name).is_some_and(Channel::unused) {
            channels.remove(name);
        }
    }

    /// The latest shared read of `name` that found the stream (or found it gone) and started at
    /// most `within` ago: the fleet's stored read on PostgreSQL (its age on the database's
    /// clock), else this process's poller's. `None` when there is none that fresh, or the store
    /// does not answer (the caller reads then).
    pub async fn fresh(&self, name: &str, within: Duration) -> Option<Arc<SharedRead>> {
        let read = match &self.fleet {
            Some(fleet) => match fleet.store.latest(name).await {
                Ok(Some(row)) if age(row.read_time_ms, row.now_ms) <= within => decode(&row),
                Ok(_) => None,
                Err(e) => {
                    warn!(stream = name, error = %e, "the fleet's latest read of a stream is out of reach");
                    None
                }
            },
            None => lock(&self.channels)
                .get(name)
                .and_then(|c| c.latest.borrow().clone())
                .filter(|read| age(read.read_time_ms, now_ms()) <= within),
        };
        read.filter(|read| read.answers())
    }
}

/// The stored read of `row`, if one was stored and it decodes.
fn decode(row: &StoredRead) -> Option<Arc<SharedRead>> {
    if row.version == 0 {
        return None;
    }
    let result = match serde_json::from_str(&row.record) {
        Ok(Record::Stream(stream)) => Ok(*stream),
        Ok(Record::Failed(error)) => Err(error),
        Err(e) => {
            warn!(error = %e, "a stored read of a watched stream does not decode");
            return None;
        }
    };
    Some(Arc::new(SharedRead {
        result,
        read_time_ms: row.read_time_ms,
    }))
}

/// What a poller last told its stream's subscribers.
#[derive(Default)]
struct Seen {
    // The stream as last published.
    last: Option<Stream>,
    // The version of the last stored read followed (fleet).
    version: i64,
}

impl WatchHub {
    /// Starts `poller`: it polls its stream every `every` with `read` while the stream has
    /// watchers here (with several replicas: anywhere, and only the replica holding the
    /// stream's lease reads it; the others follow its stored reads), publishes what changed,
    /// and stops at `shutdown`.
    pub fn start_polling(
        self: &Arc<Self>,
        poller: Poller,
        every: Duration,
        read: ReadStream,
        shutdown: CancellationToken,
    ) {
        let hub = Arc::clone(self);
        tokio::spawn(async move {
            // The first read at once: it is the first watcher's initial state.
            let mut timer = tokio::time::interval(every);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            match &hub.fleet {
                None => {
                    hub.poll_alone(&poller, every, &mut timer, &read, &shutdown)
                        .await;
                }
                Some(fleet) => {
                    hub.poll_shared(fleet, &poller, every, &mut timer, &read, &shutdown)
                        .await;
                }
            }
        });
    }

    /// One poll of `name`: its read, shared with the callers reading it at once here; `None`
    /// when its turn under the outbound limit would come after the next poll (or the provider
    /// throttled it), so that polls never queue up — the next poll reads again.
    async fn poll_once(
        &self,
        name: &str,
        every: Duration,
        read: &ReadStream,
    ) -> Option<SharedRead> {
        let found = self
            .read(name, crate::deadline::scope(Some(every), read()))
            .await;
        match &found.result {
            Err(e) if e.kind() == Kind::ProviderThrottled => None,
            _ => Some(found),
        }
    }

    /// One process: reads the stream every tick while it has watchers.
    async fn poll_alone(
        &self,
        poller: &Poller,
        every: Duration,
        timer: &mut tokio::time::Interval,
        read: &ReadStream,
        shutdown: &CancellationToken,
    ) {
        let mut seen = Seen::default();
        loop {
            tokio::select! {
                _ = timer.tick() => {}
                () = shutdown.cancelled() => break,
            }
            if !self.keep_polling(poller, false) {
                break;
            }
            let found = self.poll_once(&poller.name, every, read).await;
            if let Some(found) = found {
                self.share(poller, Arc::new(found), &mut seen);
            }
        }
    }

    /// Several replicas: every tick, records this replica's interest (while it has watchers)
    /// and takes or renews the stream's lease; the holder reads the stream, stores the read and
    /// tells the others, who read the stored row when told (or every tick while their notices
    /// may be lost). The holder polls on while any replica is interested; on stopping, it frees
    /// the lease so that another takes it at once.
    async fn poll_shared(
        &self,
        fleet: &Fleet,
        poller: &Poller,
        every: Duration,
        timer: &mut tokio::time::Interval,
        read: &ReadStream,
        shutdown: &CancellationToken,
    ) {
        let name = poller.name.as_str();
        let lease = every * LEASE_INTERVALS;
        let mut notices = fleet.notifier.subscribe();
        let mut listening = fleet.notifier.listening();
        let (mut seen, mut holder, mut failing) = (Seen::default(), false, false);
        loop {
            let tick = tokio::select! {
                _ = timer.tick() => true,
                notice = notices.recv() => match notice {
                    Ok(Notice::StreamRead(stream)) if stream == name => false,
                    Ok(_) => continue,
                    // Missed some: what matters is the stored read now.
                    Err(broadcast::error::RecvError::Lagged(_)) => false,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                // Heard again after a loss: notices may have been missed meanwhile.
                changed = listening.changed() => match changed {
                    Ok(()) => false,
                    Err(_) => break,
                },
                () = shutdown.cancelled() => break,
            };
            if !tick {
                if !holder {
                    self.follow(fleet, poller, &mut seen).await;
                }
                continue;
            }
            let mut watched = self.watched_here(poller);
            if !watched {
                let hold = holder
                    && fleet.store.withdraw(name, &fleet.replica).await.is_ok()
                    && fleet.store.interested(name).await.unwrap_or(false);
                if !self.keep_polling(poller, hold) {
                    break;
                }
                watched = self.watched_here(poller);
            }
            let interest = watched.then_some(lease);
            let turn = fleet
                .store
                .attend(name, &fleet.replica, interest, lease)
                .await;
            match turn {
                Ok(Some(now)) => {
                    holder = true;
                    let Some(mut found) = self.poll_once(name, every, read).await else {
                        continue;
                    };
                    found.read_time_ms = now;
                    let record = match &found.result {
                        Ok(stream) => Record::Stream(Box::new(stream.clone())),
                        Err(error) => Record::Failed(error.clone()),
                    };
                    let record = serde_json::to_string(&record).unwrap_or_default();
                    match fleet.store.store(name, &fleet.replica, now, &record).await {
                        Ok(Some(version)) => {
                            seen.version = version;
                            // A notice lost is a read the others find at their fallback.
                            let _ = fleet
                                .notifier
                                .publish(Notice::StreamRead(name.to_string()))
                                .await;
                        }
                        Ok(None) => holder = false,
                        Err(e) => {
                            warn!(stream = name, error = %e, "a read of a watched stream was not stored")
                        }
                    }
                    self.share(poller, Arc::new(found), &mut seen);
                }
                Ok(None) => {
                    holder = false;
                    if !*listening.borrow() {
                        self.follow(fleet, poller, &mut seen).await;
                    }
                }
                Err(e) => {
                    if !failing {
                        warn!(stream = name, error = %e, "cannot reach the store to share the poll of a watched stream");
                    }
                    failing = true;
                    continue;
                }
            }
            failing = false;
        }
        if holder {
            let _ = fleet.store.release(name, &fleet.replica).await;
        }
        let _ = fleet.store.withdraw(name, &fleet.replica).await;
    }

    /// Publishes the stored read of the stream of `poller`, if it is new.
    async fn follow(&self, fleet: &Fleet, poller: &Poller, seen: &mut Seen) {
        match fleet.store.latest(&poller.name).await {
            Ok(Some(row)) if row.version != seen.version => {
                seen.version = row.version;
                if let Some(found) = decode(&row) {
                    self.share(poller, found, seen);
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(stream = %poller.name, error = %e, "cannot read the fleet's latest read of a watched stream")
            }
        }
    }

    /// Keeps `found` as the latest read of the stream of `poller` and tells its subscribers
    /// what changed.
    fn share(&self, poller: &Poller, found: Arc<SharedRead>, seen: &mut Seen) {
        let change = match &found.result {
            Ok(stream) if seen.last.as_ref() == Some(stream) => None,
            Ok(stream) => {
                seen.last = Some(stream.clone());
                Some(Change::Updated(Box::new(stream.clone())))
            }
            Err(e) if e.kind() == Kind::StreamNotFound => Some(Change::Deleted),
            Err(e) => Some(Change::Failed(e.clone())),
        };
        let channels = lock(&self.channels);
        if let Some(channel) = channels
            .get(&poller.name)
            .filter(|c| c.poller == Some(poller.number))
        {
            channel.latest.send_replace(Some(found));
            if let Some(change) = change {
                let _ = channel.sender.send(change);
            }
        }
    }
}

impl WatchHub {
    /// The stream named `name` as `read` finds it, read once for every caller that asks while
    /// that read has not started: joins the waiting read of `name`, or queues `read` to start
    /// once the read in flight (if any) ends.
    pub async fn read<F>(&self, name: &str, read: F) -> SharedRead
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
            let read_time_ms = now_ms();
            let result = read.await;
            Self::ended(&table, &name, number);
            SharedRead {
                result,
                read_time_ms,
            }
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
        assert_eq!(first.await.unwrap().result.unwrap().etag, "0");
        go.notify_one();
        for caller in later {
            assert_eq!(caller.await.unwrap().result.unwrap().etag, "1");
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
    fn one_poller_per_stream_while_it_has_subscribers_or_holds_on() {
        let hub = WatchHub::default();
        let first = hub.subscribe_polled("s");
        let poller = first
            .poller
            .expect("the first subscriber starts the poller");
        let second = hub.subscribe_polled("s");
        assert!(second.poller.is_none());
        assert!(hub.keep_polling(&poller, false));
        drop((first.changes, second.changes));
        // Without subscribers here, a poller holding on for other replicas keeps the channel.
        hub.release("s");
        assert!(hub.keep_polling(&poller, true));
        assert!(hub.subscribe_polled("s").poller.is_none());
        assert!(!hub.keep_polling(&poller, false));
        // The next subscriber starts a poller of its own; the old one stops for good.
        let third = hub.subscribe_polled("s");
        assert!(third.poller.is_some());
        assert!(!hub.keep_polling(&poller, false));
    }

    #[tokio::test]
    async fn a_fresh_read_is_one_that_started_within_the_bound_and_answers() {
        let hub = WatchHub::default();
        let polled = hub.subscribe_polled("s");
        let poller = polled.poller.unwrap();
        assert!(hub.fresh("s", Duration::from_secs(60)).await.is_none());
        let gone = Error::new(Kind::StreamNotFound, "gone");
        let read = |result, read_time_ms| {
            Arc::new(SharedRead {
                result,
                read_time_ms,
            })
        };
        hub.share(
            &poller,
            read(Err(gone), now_ms() - 5_000),
            &mut Seen::default(),
        );
        assert!(hub.fresh("s", Duration::from_secs(60)).await.is_some());
        assert!(hub.fresh("s", Duration::from_secs(1)).await.is_none());
        let failed = Error::new(Kind::ProviderUnavailable, "down");
        hub.share(&poller, read(Err(failed), now_ms()), &mut Seen::default());
        assert!(hub.fresh("s", Duration::from_secs(60)).await.is_none());
    }
}
