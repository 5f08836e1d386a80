//! [`Notifier`]: notices between the replicas that share one store — a `local` stream changed,
//! an operation finished, a cancellation was requested — so that a replica learns of them at
//! once instead of polling the store.
//!
//! On PostgreSQL every notice travels on one LISTEN/NOTIFY channel ([`CHANNEL`]): `publish`
//! queues it for a sender task, which sends the queue in order with `pg_notify` on the store's
//! pool (many notices in one statement when they queue up) and tries again what
//! PostgreSQL did not take, for [`GIVE_UP`] at most; a publisher waits [`PUBLISH_BOUND`] at most,
//! so a slow database never holds a caller long. One connection per process, named
//! [`LISTENER_NAME`] in `pg_stat_activity`, listens. The listener is watched: a lost connection,
//! or one that stays silent for [`SILENCE`] although this process pings the channel every
//! [`PING_EVERY`], is dropped and opened again, with backoff. While it is lost,
//! [`Notifier::listening`] says `false`: notices from other replicas may be missed then, so
//! consumers fall back to polling the store, and re-read what they follow once it says `true`
//! again. On SQLite (one process) notices reach this process's subscribers only.
//!
//! A notice is small text (`{origin} {kind} {value}`): the origin is the sending process, whose
//! listener ignores its own notices (they reached its subscribers when published); values are
//! resource names and operation ids, at most about 600 bytes, well within PostgreSQL's
//! 8000-byte payload limit.
//!
//! It does not decide what a notice means: the runner and the providers publish and consume.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::AnyPool;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::SqlStore;
use crate::error::{Error, Kind, Result};
use crate::telemetry::Telemetry;

/// The LISTEN/NOTIFY channel every replica of a gateway shares.
pub const CHANNEL: &str = "streamgate";
/// The `application_name` of the listener's connection.
pub const LISTENER_NAME: &str = "streamgate-listener";
/// How long a publish waits for PostgreSQL at most.
const PUBLISH_BOUND: Duration = Duration::from_secs(1);
/// How often this process pings the channel, so that its listener hears something.
const PING_EVERY: Duration = Duration::from_secs(2);
/// How long the listener may hear nothing (not even this process's pings) before it counts as
/// lost and is opened again.
const SILENCE: Duration = Duration::from_secs(6);
/// The first and the longest wait between two attempts to open the listener again.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));
/// PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7999;
/// How long a notice PostgreSQL does not take is tried again before it is dropped.
const GIVE_UP: Duration = Duration::from_secs(10);
/// How many notices wait to be sent at most; a publish finding the queue full fails at once.
const QUEUED: usize = 4096;
/// How many queued notices one statement sends at most.
const BATCH: usize = 256;
/// How many notices a slow subscriber may fall behind before it is told it lagged (then it
/// re-reads what it follows, as after a lost listener).
const CAPACITY: usize = 1024;

/// One notice between replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A `local` stream changed (created, updated or deleted); its full name.
    StreamChanged(String),
    /// The fleet-wide poller of a watched stream stored a new read of it; the stream's full name.
    StreamRead(String),
    /// An operation finished; its id.
    OperationDone(String),
    /// Cancellation of an operation was requested; its id.
    CancelRequested(String),
}

impl Notice {
    /// The kind's word in a payload, and the value.
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Notice::StreamChanged(name) => ("changed", name),
            Notice::StreamRead(name) => ("read", name),
            Notice::OperationDone(id) => ("done", id),
            Notice::CancelRequested(id) => ("cancel", id),
        }
    }
}

/// The word of a ping: a payload that carries no notice, only proof the listener hears.
const PING: &str = "ping";

/// The payload of `notice` (a ping when `None`) sent by the process `origin`.
fn encode(origin: &str, notice: Option<&Notice>) -> String {
    match notice.map(Notice::parts) {
        Some((kind, value)) => format!("{origin} {kind} {value}"),
        None => format!("{origin} {PING} -"),
    }
}

/// The origin and notice of a payload (no notice for a ping); `None` for one this version does
/// not know (sent by a newer replica during a rolling upgrade).
fn decode(payload: &str) -> Option<(&str, Option<Notice>)> {
    let mut parts = payload.splitn(3, ' ');
    let (origin, kind, value) = (parts.next()?, parts.next()?, parts.next()?.to_string());
    let notice = match kind {
        "changed" => Notice::StreamChanged(value),
        "read" => Notice::StreamRead(value),
        "done" => Notice::OperationDone(value),
        "cancel" => Notice::CancelRequested(value),
        PING => return Some((origin, None)),
        _ => return None,
    };
    Some((origin, Some(notice)))
}

/// Notices to this process's subscribers and, on PostgreSQL, between replicas.
pub struct Notifier {
    // This process's subscribers: every notice published here or heard from another replica.
    local: broadcast::Sender<Notice>,
    // Whether notices of other replicas reach this process now; shared with the listener task,
    // and kept here so that receivers never see the channel closed.
    listening: Arc<watch::Sender<bool>>,
    // PostgreSQL: the way to the other replicas.
    remote: Option<Remote>,
}

/// The PostgreSQL side of a notifier.
struct Remote {
    // This process, in the payloads it sends: its listener skips them.
    origin: String,
    // The notices to send, in order, to the sender task.
    queue: mpsc::Sender<Queued>,
    // The listener, the sender and the pinger; aborted when the notifier goes.
    tasks: [JoinHandle<()>; 3],
}

/// A payload waiting to be sent.
struct Queued {
    payload: String,
    // When it was published: the sender gives up on it after [`GIVE_UP`].
    since: Instant,
    // The publisher, told when it is sent (or cannot be); none once told, or for a ping.
    sent: Option<oneshot::Sender<std::result::Result<(), String>>>,
    // A ping, not a notice.
    ping: bool,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("postgres", &self.remote.is_some())
            .field("listening", &*self.listening.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        if let Some(remote) = &self.remote {
            remote.tasks.iter().for_each(JoinHandle::abort);
        }
    }
}

impl Notifier {
    /// A notifier for one process (SQLite): notices reach this process's subscribers only, and
    /// it is always listening.
    pub fn in_process() -> Arc<Notifier> {
        Arc::new(Notifier {
            local: broadcast::channel(CAPACITY).0,
            listening: Arc::new(watch::channel(true).0),
            remote: None,
        })
    }

    /// A notifier between the replicas sharing the PostgreSQL database at `url`, which `store`
    /// is connected to (its pool sends the notices): it listens on [`CHANNEL`] before it returns
    /// (or, if that fails, starts not listening and keeps trying) and keeps listening, opening
    /// the listener again whenever it is lost. Publish failures and the listener's state are
    /// recorded in `telemetry`.
    pub async fn postgres(
        url: &str,
        store: &SqlStore,
        telemetry: Arc<Telemetry>,
    ) -> Result<Arc<Notifier>> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::internal(format_args!("store: bad url: {e}")))?;
        let (queue, queued) = mpsc::channel(QUEUED);
        let local = broadcast::channel(CAPACITY).0;
        let listening = Arc::new(watch::channel(false).0);
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let listener = Listener {
            options: options.application_name(LISTENER_NAME),
            origin: origin.clone(),
            local: local.clone(),
            listening: Arc::clone(&listening),
            telemetry: Arc::clone(&telemetry),
        };
        let first = listener.open().await;
        let pinger = tokio::spawn(ping(queue.clone(), encode(&origin, None)));
        let sender = tokio::spawn(send(store.pool().clone(), queued, telemetry));
        let listener = tokio::spawn(listener.run(first));
        Ok(Arc::new(Notifier {
            local,
            listening,
            remote: Some(Remote {
                origin,
                queue,
                tasks: [listener, sender, pinger],
            }),
        }))
    }

    /// Tells this process's subscribers at once, and queues the notice for the other
    /// replicas; waits until PostgreSQL took it, for [`PUBLISH_BOUND`] at most. An error says it
    /// is not sent yet: it stays queued, sent in order as soon as PostgreSQL takes notices again,
    /// for [`GIVE_UP`] at most; then it is dropped, logged and counted
    /// (`streamgate_notify_publish_failures_total`), and the other replicas learn of the change
    /// only if they poll (their listener lost too) or re-read it for another reason.
    pub async fn publish(&self, notice: Notice) -> Result<()> {
        let _ = self.local.send(notice.clone());
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let payload = encode(&remote.origin, Some(&notice));
        let not_sent = |why: String| {
            Error::new(
                Kind::StoreUnavailable,
                format!("the other replicas were not told yet: {why}"),
            )
        };
        if payload.len() > MAX_PAYLOAD {
            return Err(not_sent(format!(
                "{} bytes, more than PostgreSQL carries",
                payload.len()
            )));
        }
        let (sent, answer) = oneshot::channel();
        let queued = Queued {
            payload,
            since: Instant::now(),
            sent: Some(sent),
            ping: false,
        };
        remote
            .queue
            .try_send(queued)
            .map_err(|_| not_sent("too many notices queued".to_string()))?;
        match tokio::time::timeout(PUBLISH_BOUND, answer).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(why))) => Err(not_sent(why)),
            Ok(Err(_)) => Err(not_sent("the sender stopped".to_string())),
            Err(_) => Err(not_sent(format!(
                "PostgreSQL did not take it within {PUBLISH_BOUND:?}"
            ))),
        }
    }

    /// Every notice from now on: those published in this process and those heard from other
    /// replicas. A receiver that lags behind ([`broadcast::error::RecvError::Lagged`]) missed
    /// some, and should re-read what it follows.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.local.subscribe()
    }

    /// Whether notices of other replicas reach this process: `false` while the listener is
    /// lost, when consumers poll the store instead; when it turns `true` again they re-read
    /// what they follow once, since notices may have been missed meanwhile.
    pub fn listening(&self) -> watch::Receiver<bool> {
        self.listening.subscribe()
    }
}

/// The listener task's state.
struct Listener {
    options: PgConnectOptions,
    origin: String,
    local: broadcast::Sender<Notice>,
    listening: Arc<watch::Sender<bool>>,
    telemetry: Arc<Telemetry>,
}

impl Listener {
    /// A new listener connection, listening on [`CHANNEL`]; says so when it is.
    async fn open(&self) -> std::result::Result<PgListener, sqlx::Error> {
        // A pool of its own for each connection: a lost one is never handed out again.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(SILENCE)
            .connect_lazy_with(self.options.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.eager_reconnect(false);
        listener.ignore_pool_close_event(true);
        tokio::time::timeout(SILENCE, listener.listen(CHANNEL))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        self.set(true);
        Ok(listener)
    }

    /// Says whether this process listens; its subscribers are told of changes only.
    fn set(&self, listening: bool) {
        self.listening
            .send_if_modified(|now| std::mem::replace(now, listening) != listening);
        self.telemetry.metrics().notify_listening(listening);
    }

    /// Listens, reopening the connection whenever it is lost, until aborted.
    async fn run(self, first: std::result::Result<PgListener, sqlx::Error>) {
        let mut opened = first;
        let mut backoff = BACKOFF.0;
        loop {
            match opened {
                Ok(mut listener) => {
                    info!("listening for notices of other replicas");
                    backoff = BACKOFF.0;
                    let why = self.receive(&mut listener).await;
                    self.set(false);
                    warn!(
                        error = %why,
                        "lost the listener of notices of other replicas; polling the store \
                         until it is back"
                    );
                }
                Err(e) => {
                    self.set(false);
                    warn!(error = %e, retry_in = ?backoff, "cannot listen for notices of other replicas");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
            opened = self.open().await;
        }
    }

    /// Hands every notice heard on `listener` to this process's subscribers until the
    /// connection is lost or stays silent for [`SILENCE`]; returns why it ended.
    async fn receive(&self, listener: &mut PgListener) -> String {
        loop {
            let heard = match tokio::time::timeout(SILENCE, listener.try_recv()).await {
                Err(_) => return format!("nothing heard for {SILENCE:?}"),
                Ok(Ok(None)) => return "connection lost".to_string(),
                Ok(Err(e)) => return e.to_string(),
                Ok(Ok(Some(heard))) => heard,
            };
            match decode(heard.payload()) {
                Some((origin, Some(notice))) if origin != self.origin => {
                    let _ = self.local.send(notice);
                }
                Some(_) => {}
                None => warn!(payload = heard.payload(), "an unknown notice, ignored"),
            }
        }
    }
}

/// Sends the queued notices, in order, many in one statement when they queue up, until aborted.
/// A batch PostgreSQL does not take is tried again with backoff; a notice still unsent after
/// [`GIVE_UP`] is dropped, logged and counted.
async fn send(pool: AnyPool, mut queued: mpsc::Receiver<Queued>, telemetry: Arc<Telemetry>) {
    let mut batch: Vec<Queued> = Vec::new();
    let mut backoff = BACKOFF.0;
    loop {
        if batch.is_empty() {
            match queued.recv().await {
                Some(first) => batch.push(first),
                None => return,
            }
        }
        while batch.len() < BATCH {
            match queued.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let values: Vec<String> = (2..batch.len() + 2).map(|n| format!("(${n})")).collect();
        let sql = format!(
            "SELECT pg_notify($1, payload) FROM (VALUES {}) AS notices (payload)",
            values.join(", ")
        );
        // Not prepared for later: the statement's text changes with the batch's size.
        let mut notify = sqlx::query(&sql).persistent(false).bind(CHANNEL);
        for queued in &batch {
            notify = notify.bind(queued.payload.as_str());
        }
        let notify = notify.execute(&pool);
        let why = match tokio::time::timeout(PUBLISH_BOUND, notify).await {
            Ok(Ok(_)) => {
                for queued in batch.drain(..) {
                    if let Some(sent) = queued.sent {
                        let _ = sent.send(Ok(()));
                    }
                }
                backoff = BACKOFF.0;
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {PUBLISH_BOUND:?}"),
        };
        for queued in &mut batch {
            if let Some(sent) = queued.sent.take() {
                let _ = sent.send(Err(why.clone()));
            }
        }
        // Pings are not tried again: the next one is due soon.
        batch.retain(|queued| !queued.ping);
        let before = batch.len();
        batch.retain(|queued| queued.since.elapsed() < GIVE_UP);
        let dropped = before - batch.len();
        if dropped > 0 {
            telemetry.metrics().notify_publish_failed(dropped as u64);
            warn!(dropped, error = %why, "gave up telling the other replicas of changes");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

/// Queues a ping every [`PING_EVERY`], so that a listener that hears nothing for [`SILENCE`] is
/// known to be lost (a connection can die without a word, e.g. behind a NAT). A ping that cannot
/// be queued is skipped: the sender is behind already.
async fn ping(queue: mpsc::Sender<Queued>, payload: String) {
    let mut every = tokio::time::interval(PING_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let _ = queue.try_send(Queued {
            payload: payload.clone(),
            since: Instant::now(),
            sent: None,
            ping: true,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind(value: &str) -> [Notice; 4] {
        [
            Notice::StreamChanged(value.to_string()),
            Notice::StreamRead(value.to_string()),
            Notice::OperationDone(value.to_string()),
            Notice::CancelRequested(value.to_string()),
        ]
    }

    #[test]
    fn a_notice_is_read_back_as_it_was_sent() {
        let origin = "0123456789abcdef0123456789abcdef";
        for notice in every_kind("providers/local/streams/s-1.a_b") {
            let payload = encode(origin, Some(&notice));
            assert_eq!(decode(&payload), Some((origin, Some(notice))));
        }
        assert_eq!(decode(&encode(origin, None)), Some((origin, None)));
    }

    #[test]
    fn an_unknown_notice_is_ignored() {
        assert_eq!(decode("abc moved providers/x/streams/y"), None);
        assert_eq!(decode("abc"), None);
    }

    #[test]
    fn the_longest_names_fit_in_a_notice() {
        use crate::domain::names::{MAX_PROVIDER_ID_LEN, MAX_SEGMENT_LEN};
        let provider = "p".repeat(MAX_PROVIDER_ID_LEN);
        let segment = "s".repeat(MAX_SEGMENT_LEN);
        let longest = format!("providers/{provider}/videos/{segment}/streams/{segment}");
        let origin = uuid::Uuid::new_v4().simple().to_string();
        for notice in every_kind(&longest) {
            let payload = encode(&origin, Some(&notice));
            assert!(payload.len() <= MAX_PAYLOAD, "{} bytes", payload.len());
            assert_eq!(decode(&payload), Some((origin.as_str(), Some(notice))));
        }
    }

    #[tokio::test]
    async fn in_process_notices_reach_this_process_s_subscribers() {
        let notifier = Notifier::in_process();
        let mut first = notifier.subscribe();
        let mut second = notifier.subscribe();
        assert!(*notifier.listening().borrow(), "always listening");
        for notice in every_kind("operations-or-streams") {
            notifier.publish(notice.clone()).await.unwrap();
            assert_eq!(first.recv().await.unwrap(), notice);
            assert_eq!(second.recv().await.unwrap(), notice);
        }
        assert!(first.try_recv().is_err(), "each notice once");
    }
}
