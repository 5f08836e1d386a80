//! [`SharedBudgets`]: the turns of the outbound limits, shared through a PostgreSQL store by
//! every replica that uses it, so that the calls of the whole fleet stay under a provider's
//! quota (docs/design.md §4a). What a limit is, and what a call does with its turn, is the
//! providers' business (`providers/limits.rs`); this file keeps the turns.
//!
//! A budget is a row of `outbound_budgets` (migration 0008), keyed by provider instance,
//! budget name and resource (`''` for a budget of the whole instance), holding the first
//! moment no call has reserved yet, in microseconds of the database's clock. A reservation is
//! one statement ([`RESERVE`]): it locks the rows of the call's limits (in key order, so two
//! reservations never deadlock), reads `clock_timestamp()` once they are locked, and takes the
//! first moment every one of them has free — advancing each by its spacing — only when the
//! wait until it is within the caller's bound; it answers the turn and the moment it locked
//! the rows. The replica sleeps until that moment of the database's clock read on its own
//! (the offset measured by its heartbeats that came back soonest), so that a slow answer does
//! not make it send late, and calls of several replicas keep their spacing. Rows are made on
//! first use and deleted once idle for a minute, so the table holds the resources called
//! lately, not every one ever named. A turn is never sooner than the replica's recent round
//! trip to the store (at most 100 ms) after the moment it is taken: the replica learns of it
//! that much later, and a turn it could only keep late would crowd the next one.
//!
//! The budgets have connections of their own (a few, `synchronous_commit` off: a turn lost in
//! a crash is harmless, and a commit that waited for the disk would hold the row's lock that
//! long), so that a reservation never queues behind the store's statements. A reservation is
//! bounded ([`RESERVE_BOUND`]): the store not answering in time (or refusing) is
//! [`Unanswered`], and the caller limits itself alone until a heartbeat is answered again
//! ([`SharedBudgets::answering`]).
//! For that, every replica marks itself alive in `outbound_replicas` every second, and counts
//! the replicas alive ([`SharedBudgets::replicas`]) at each mark.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tracing::{info, warn};

use super::{OperationStore, SqlStore};
use crate::error::{Error, Result};

/// How long a reservation may take before the caller limits itself alone. Not shorter: on a
/// loaded machine an answering store took more than 250 ms now and then, and a replica that
/// limits itself alone while the others still share the budgets adds its share to theirs.
pub const RESERVE_BOUND: Duration = Duration::from_secs(1);
/// How often a replica marks itself alive and counts the others.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A replica is alive while its last mark is younger than this.
const ALIVE: Duration = Duration::from_secs(5);
/// Every this many heartbeats, the rows idle for [`STALE`] are deleted.
const SWEEP_EVERY: u32 = 10;
/// A budget row whose first free moment is this far in the past is as if never used.
const STALE: Duration = Duration::from_secs(60);
/// The most budget rows one sweep deletes.
const SWEEP_BATCH: i64 = 1000;
/// Connections of the budgets, per replica (docs/deployment.md counts them in the pool sizing).
const CONNECTIONS: u32 = 2;

/// The database's clock, in microseconds since the epoch, as SQL.
macro_rules! now_us {
    () => {
        "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
    };
}

/// Takes a turn (see the file's doc). `$1` provider, `$2` budget names, `$3` resources, `$4`
/// spacings (µs), `$5` the longest wait the caller accepts (µs; NULL: any), `$6` the lead (µs)
/// a turn keeps from the moment the rows are locked. Answers how many
/// of the rows it found, the turn and the moment the rows were locked (µs of the database's
/// clock), and whether it took the turn.
const RESERVE: &str = concat!(
    "
WITH wanted AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::bigint[]) AS w(budget, resource, spacing_us)
),
locked AS (
    SELECT b.budget, b.resource, b.next_free_us
    FROM outbound_budgets b JOIN wanted w ON w.budget = b.budget AND w.resource = b.resource
    WHERE b.provider = $1
    ORDER BY b.budget, b.resource
    FOR UPDATE OF b
),
clocked AS (
    SELECT count(*) AS found, max(next_free_us) AS latest, ",
    now_us!(),
    " AS now_us FROM locked
),
turn AS (
    SELECT found, GREATEST(latest, now_us + $6) AS at, now_us FROM clocked
),
taken AS (
    UPDATE outbound_budgets b
    SET next_free_us = turn.at + w.spacing_us
    FROM turn, wanted w
    WHERE b.provider = $1 AND b.budget = w.budget AND b.resource = w.resource
      AND turn.found = cardinality($2::text[])
      AND ($5::bigint IS NULL OR turn.at - turn.now_us <= $5)
    RETURNING 1
)
SELECT turn.found, turn.at, turn.now_us, (SELECT count(*) FROM taken) > 0 AS took
FROM turn"
);

/// Makes the rows a reservation did not find, as never used.
const CREATE: &str = "
INSERT INTO outbound_budgets (provider, budget, resource, next_free_us)
SELECT $1, budget, resource, 0 FROM unnest($2::text[], $3::text[]) AS w(budget, resource)
ON CONFLICT DO NOTHING";

/// Marks replica `$1` alive and counts the others alive within `$2` µs.
const HEARTBEAT_SQL: &str = concat!(
    "
WITH clock AS (SELECT ",
    now_us!(),
    " AS now_us),
marked AS (
    INSERT INTO outbound_replicas (replica, seen_us) SELECT $1, now_us FROM clock
    ON CONFLICT (replica) DO UPDATE SET seen_us = EXCLUDED.seen_us
)
SELECT (SELECT count(*) FROM outbound_replicas
        WHERE replica <> $1 AND seen_us > clock.now_us - $2), clock.now_us
FROM clock"
);

/// Deletes the budgets idle for `$1` µs (at most `$2` of them) and replicas gone that long.
const SWEEP: &str = concat!(
    "
WITH clock AS (SELECT ",
    now_us!(),
    " AS now_us),
budgets AS (
    DELETE FROM outbound_budgets
    WHERE (provider, budget, resource) IN (
        SELECT provider, budget, resource FROM outbound_budgets, clock
        WHERE next_free_us < now_us - $1 LIMIT $2
    )
)
DELETE FROM outbound_replicas USING clock WHERE seen_us < now_us - $1"
);

/// One limit of a call, as a reservation names it.
#[derive(Clone, Copy, Debug)]
pub struct Claim<'a> {
    /// The budget's name within its provider instance.
    pub budget: &'a str,
    /// The resource of a budget per resource; empty for a budget of the whole instance.
    pub resource: &'a str,
    /// The time between two turns of the budget.
    pub spacing: Duration,
}

/// How this process's clock reads the database's: the offset measured by the statement that
/// came back soonest lately (its answer's moment lies within the statement's round trip, so
/// the shortest round trip bounds the error best).
#[derive(Clone, Copy, Debug)]
struct ClockOffset {
    // The database's clock less this process's, in µs.
    offset_us: i64,
    round_trip: Duration,
    measured: Instant,
}

/// The most a turn is put off to cover a reservation's round trip.
const MAX_LEAD: Duration = Duration::from_millis(100);

/// How long a measured offset is preferred to a new one with a longer round trip.
const OFFSET_KEPT: Duration = Duration::from_secs(10);

/// The store did not answer a reservation within [`RESERVE_BOUND`], or is known not to answer
/// now.
#[derive(Debug)]
pub struct Unanswered;

/// The budgets every replica on one PostgreSQL store shares.
pub struct SharedBudgets {
    pool: PgPool,
    // This process, in `outbound_replicas`.
    replica: String,
    // The replicas alive (this one included) at the last heartbeat that was answered; what a
    // replica divides a quota by while the store does not answer.
    replicas: AtomicU32,
    // Whether the store answered the last reservation or heartbeat: while it does not,
    // reservations are not tried (the heartbeat tries again every second).
    answering: AtomicBool,
    // The moment this process's clock counts from, in µs, to compare it with the database's.
    epoch: Instant,
    // The database's clock as this process reads it: a turn is the database's moment, and a
    // replica sleeps until that moment on its own clock, so that how long the answer took to
    // come back does not move the turn. Measured by the heartbeats only: a reservation may
    // wait for a row's lock before it reads the clock, which would skew the measure.
    offset: Mutex<Option<ClockOffset>>,
    // The round trip of a reservation lately (µs, smoothed), the lead a turn keeps from the
    // moment it is taken: an answer comes back that much later, and a turn sooner than that
    // would be sent late, closer to the next turn (another replica's) than its spacing.
    round_trip_us: AtomicU64,
}

impl std::fmt::Debug for SharedBudgets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBudgets")
            .field("replica", &self.replica)
            .field("replicas", &self.replicas)
            .field("answering", &self.answering)
            .finish_non_exhaustive()
    }
}

/// Microseconds of `duration`, as the table counts them.
fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

impl SharedBudgets {
    /// The shared budgets of `store` when it is PostgreSQL (several replicas may use it);
    /// `None` on SQLite, whose one process keeps its turns in memory. Marks this replica alive
    /// at once, and every second from then on while the budgets are kept.
    pub async fn for_store(store: &SqlStore) -> Result<Option<Arc<Self>>> {
        if store.exclusive() {
            return Ok(None);
        }
        let url = store.pool().connect_options().database_url.clone();
        let options = PgConnectOptions::from_str(url.as_str())
            .map_err(|e| Error::internal(format_args!("store: bad url: {e}")))?;
        Self::connect(options).await.map(Some)
    }

    /// The shared budgets on the PostgreSQL database of `options`.
    pub async fn connect(options: PgConnectOptions) -> Result<Arc<Self>> {
        let options = options
            .options([
                ("synchronous_commit", "off"),
                ("statement_timeout", "1000"),
                ("lock_timeout", "1000"),
            ])
            .application_name("streamgate-budgets");
        let pool = PgPoolOptions::new()
            .max_connections(CONNECTIONS)
            .acquire_timeout(RESERVE_BOUND)
            .connect_lazy_with(options);
        let budgets = Arc::new(SharedBudgets {
            pool,
            replica: uuid::Uuid::new_v4().to_string(),
            replicas: AtomicU32::new(1),
            answering: AtomicBool::new(true),
            epoch: Instant::now(),
            offset: Mutex::new(None),
            round_trip_us: AtomicU64::new(0),
        });
        // The first heartbeat opens a connection, which its measure of the clock would count; the
        // second measures on it.
        if budgets.heartbeat().await {
            budgets.heartbeat().await;
        }
        tokio::spawn(keep_alive(Arc::downgrade(&budgets)));
        Ok(budgets)
    }

    /// The replicas alive at the last answered heartbeat, this one included.
    pub fn replicas(&self) -> u32 {
        self.replicas.load(Ordering::Relaxed).max(1)
    }

    /// Whether the store answered the last reservation or heartbeat.
    pub fn answering(&self) -> bool {
        self.answering.load(Ordering::Relaxed)
    }

    /// Takes the first turn every one of `claims` (the limits of one call of `provider`) has
    /// free, if the wait until it is within `bound`: `Ok(Ok(turn))`, the turn on this
    /// process's clock; otherwise `Ok(Err(wait))`, nothing taken, the wait measured on the
    /// database's clock from the moment the rows were locked. [`Unanswered`] when the store
    /// does not answer within [`RESERVE_BOUND`] (or did not answer lately).
    pub async fn reserve(
        &self,
        provider: &str,
        claims: &[Claim<'_>],
        bound: Option<Duration>,
    ) -> std::result::Result<std::result::Result<Instant, Duration>, Unanswered> {
        if !self.answering() {
            return Err(Unanswered);
        }
        let answer = tokio::time::timeout(RESERVE_BOUND, self.take(provider, claims, bound)).await;
        match answer {
            Ok(Ok(turn)) => Ok(turn),
            Ok(Err(error)) => {
                self.stopped_answering(&error.to_string());
                Err(Unanswered)
            }
            Err(_) => {
                self.stopped_answering("no answer to a reservation within 1 s");
                Err(Unanswered)
            }
        }
    }

    /// [`SharedBudgets::reserve`], unbounded: makes the rows it did not find and tries again.
    async fn take(
        &self,
        provider: &str,
        claims: &[Claim<'_>],
        bound: Option<Duration>,
    ) -> std::result::Result<std::result::Result<Instant, Duration>, sqlx::Error> {
        let budgets: Vec<&str> = claims.iter().map(|c| c.budget).collect();
        let resources: Vec<&str> = claims.iter().map(|c| c.resource).collect();
        let spacings: Vec<i64> = claims.iter().map(|c| micros(c.spacing)).collect();
        loop {
            let asked = Instant::now();
            let (found, at_us, now_us, took): (i64, i64, i64, bool) = sqlx::query_as(RESERVE)
                .bind(provider)
                .bind(&budgets)
                .bind(&resources)
                .bind(&spacings)
                .bind(bound.map(micros))
                .bind(self.lead())
                .fetch_one(&self.pool)
                .await?;
            let answered = Instant::now();
            self.smooth(answered - asked);
            if found as usize == claims.len() {
                let wait = Duration::from_micros((at_us - now_us).max(0) as u64);
                return Ok(if took {
                    Ok(self.local(at_us).unwrap_or(answered + wait))
                } else {
                    Err(wait)
                });
            }
            sqlx::query(CREATE)
                .bind(provider)
                .bind(&budgets)
                .bind(&resources)
                .execute(&self.pool)
                .await?;
        }
    }

    /// Records what a statement sent at `asked` and answered at `answered` says of the
    /// database's clock (`db_now_us` was read in between), if it measures better than what is
    /// known: a shorter round trip, or the known measure is old.
    fn measure(&self, asked: Instant, answered: Instant, db_now_us: i64) {
        let round_trip = answered - asked;
        let middle = micros(asked - self.epoch) + micros(round_trip) / 2;
        let sample = ClockOffset {
            offset_us: db_now_us - middle,
            round_trip,
            measured: answered,
        };
        let mut offset = self.offset.lock().unwrap_or_else(|e| e.into_inner());
        let better = offset.is_none_or(|known| {
            round_trip <= known.round_trip || answered - known.measured > OFFSET_KEPT
        });
        if better {
            *offset = Some(sample);
        }
    }

    /// Folds a reservation's round trip into the smoothed one (an eighth of each new one).
    fn smooth(&self, round_trip: Duration) {
        let new = micros(round_trip).max(0) as u64;
        let old = self.round_trip_us.load(Ordering::Relaxed);
        let smoothed = if old == 0 {
            new
        } else {
            old - old / 8 + new / 8
        };
        self.round_trip_us.store(smoothed, Ordering::Relaxed);
    }

    /// The lead a turn keeps from the moment it is taken: the smoothed round trip, at most
    /// [`MAX_LEAD`].
    fn lead(&self) -> i64 {
        let lead = self.round_trip_us.load(Ordering::Relaxed);
        i64::try_from(lead)
            .unwrap_or(i64::MAX)
            .min(micros(MAX_LEAD))
    }

    /// The moment `db_us` of the database's clock on this process's clock, once measured.
    fn local(&self, db_us: i64) -> Option<Instant> {
        let offset = (*self.offset.lock().unwrap_or_else(|e| e.into_inner()))?;
        let local_us = u64::try_from(db_us - offset.offset_us).ok()?;
        Some(self.epoch + Duration::from_micros(local_us))
    }

    fn stopped_answering(&self, why: &str) {
        if self.answering.swap(false, Ordering::Relaxed) {
            warn!(
                error = why,
                replicas = self.replicas(),
                "the store does not answer outbound-limit reservations: each replica limits \
                 itself to its share of every quota until it does"
            );
        }
    }

    /// Marks this replica alive and counts the replicas alive; `true` when the store answered.
    async fn heartbeat(&self) -> bool {
        let asked = Instant::now();
        let counted = tokio::time::timeout(
            HEARTBEAT,
            sqlx::query_as::<_, (i64, i64)>(HEARTBEAT_SQL)
                .bind(&self.replica)
                .bind(micros(ALIVE))
                .fetch_one(&self.pool),
        )
        .await;
        match counted {
            Ok(Ok((others, db_now_us))) => {
                self.measure(asked, Instant::now(), db_now_us);
                let replicas = u32::try_from(others).unwrap_or(u32::MAX).saturating_add(1);
                self.replicas.store(replicas, Ordering::Relaxed);
                if !self.answering.swap(true, Ordering::Relaxed) {
                    info!(
                        replicas,
                        "the store answers again: outbound limits are shared by the fleet"
                    );
                }
                true
            }
            Ok(Err(error)) => {
                self.stopped_answering(&error.to_string());
                false
            }
            Err(_) => {
                self.stopped_answering("no answer to a heartbeat within 1 s");
                false
            }
        }
    }

    /// Deletes the budgets idle for a minute, and the marks of replicas gone as long.
    async fn sweep(&self) {
        let swept = tokio::time::timeout(
            HEARTBEAT,
            sqlx::query(SWEEP)
                .bind(micros(STALE))
                .bind(SWEEP_BATCH)
                .execute(&self.pool),
        )
        .await;
        if let Ok(Err(error)) = swept {
            warn!(%error, "sweeping idle outbound budgets failed");
        }
    }
}

/// Beats every second, and sweeps now and then, while the budgets are kept.
async fn keep_alive(budgets: Weak<SharedBudgets>) {
    let mut beats: u32 = 0;
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let Some(budgets) = budgets.upgrade() else {
            return;
        };
        beats = beats.wrapping_add(1);
        if budgets.heartbeat().await && beats.is_multiple_of(SWEEP_EVERY) {
            budgets.sweep().await;
        }
    }
}
