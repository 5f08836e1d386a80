//! Outbound rate limits per provider instance, so the gateway does not cause the provider
//! throttling it would then have to absorb. Each budget spaces its calls evenly (a burst of
//! one), so no one-second window sees more than the configured rate.
//!
//! A call reserves the budget's next free moment and sleeps until it (GCRA's theoretical
//! arrival time, advanced by each reservation): waiting callers are served first come, first
//! served, and a call knows at once how long it would wait. When that is longer than the
//! caller's deadline leaves ([`crate::deadline::usable`]), the call reserves nothing and is
//! refused with the wait, rather than left to time out in the queue; so the queue ahead of a
//! call never holds more than the callers' deadlines, and a change made without a deadline
//! (an operation's steps) is not starved by a crowd of readers. Turns are spaced 1% wider than
//! the quota's interval, and a call woken late is still sent no sooner than an interval (less
//! the timer's millisecond tick) after the last call actually sent.
//!
//! Limits are named by the provider's action (e.g. `DeleteStream`); several actions may share
//! one limit (KVS counts UpdateStream, TagStream… against one budget), and an action may also
//! have a limit per resource (KVS allows 5 DescribeStream per second per stream), which
//! several actions may share as well (the HLS and DASH session URLs of a stream). The calls
//! wait here through [`CallPath`](super::call::CallPath), once per try.
//!
//! On a PostgreSQL store several replicas serve one provider account, and its quotas are the
//! fleet's, not each replica's ([`OutboundLimits::fleet_wide`]): the turns are then taken in
//! the store's [`SharedBudgets`], first come first served across the fleet, spaced 15% wider
//! than the quota's interval, so that calls sent a little late on different replicas
//! still never put more than the quota in a one-second window; a replica sleeps until its
//! turn, and still spaces its own sends. When the store does not answer a reservation
//! within [`RESERVE_BOUND`](crate::store::RESERVE_BOUND), the replica takes its turns here, at
//! its share of the quota (the quota divided by the replicas alive at the last count), after
//! the last turn it took in the store, until the store answers again. On SQLite (one process)
//! the turns are always kept here.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::DefaultKeyedRateLimiter;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::store::{Claim, SharedBudgets};

/// How many calls of one process may ask the fleet's budgets for a turn of one budget at once.
const ASKING: usize = 4;

/// How many checks of a keyed limiter pass between two prunings of its keys.
const PRUNE_EVERY: u64 = 1024;

/// Forgets, once every [`PRUNE_EVERY`] calls (`checks` counts them), the keys of `limiter`
/// whose state is back to that of a key never seen: without it a keyed limiter keeps a
/// key for every stream name or principal it was ever asked about, however old — a table
/// that callers naming made-up streams could grow without bound. Pruning is O(keys), so
/// amortized O(keys / 1024) per call.
pub(crate) fn prune_now_and_then<K: Clone + Hash + Eq>(
    limiter: &DefaultKeyedRateLimiter<K>,
    checks: &AtomicU64,
) {
    if checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
        limiter.retain_recent();
        limiter.shrink_to_fit();
    }
}

/// The spacing of calls at `per_second`.
fn interval(per_second: NonZeroU32) -> Duration {
    Duration::from_secs(1) / per_second.get()
}

/// The spacing of a budget's turns across the fleet: its interval and 15%. The margin absorbs
/// the milliseconds by which one replica's sends land later than another's (a late wake-up, a
/// new connection, a slower request): a quota's worth of turns spans 1.15 s, so a send may land
/// up to 150 ms late before one second sees more than the quota. (A tenth was not enough for
/// debug builds on a loaded machine: sends landed up to about 100 ms late.)
fn fleet_spacing(interval: Duration) -> Duration {
    interval + interval * 3 / 20
}

/// The spacing of a budget's turns in one process: its interval and 1%, so that a quota's worth
/// of turns spans 1.01 s and a send may land up to 10 ms late (see [`tick_slack`]) before one
/// second sees more than the quota.
fn local_spacing(interval: Duration) -> Duration {
    interval + interval / 100
}

/// How much sooner than an interval after the last send the next may go: tokio's timer wakes a
/// sleeper on the next millisecond tick, so two sends on turns an interval apart land up to a
/// tick closer. Requiring the whole interval put the later one off by another tick, and every
/// one after it, which lost a fifth of a 300/s quota (docs/PERFORMANCE.md, fleet); the turns
/// themselves are never sooner, and their margin absorbs the tick.
fn tick_slack(interval: Duration) -> Duration {
    (interval / 4).min(Duration::from_millis(1))
}

/// The turns of one budget: the first moment no call has reserved yet, and when the last call
/// was sent.
#[derive(Clone, Copy, Debug)]
struct Turns {
    free: Instant,
    last_sent: Option<Instant>,
}

impl Turns {
    fn new(now: Instant) -> Self {
        Turns {
            free: now,
            last_sent: None,
        }
    }

    /// The earliest moment the next call may be sent: an `interval` after the last one, less
    /// the timer's tick ([`tick_slack`]).
    fn spaced(&self, interval: Duration) -> Option<Instant> {
        self.last_sent
            .map(|sent| sent + interval - tick_slack(interval))
    }

    /// Whether the budget is as if never used.
    fn idle(&self, interval: Duration, now: Instant) -> bool {
        self.free <= now && self.spaced(interval).is_none_or(|at| at <= now)
    }
}

/// One budget for a whole instance.
#[derive(Debug)]
struct Budget {
    // Its name in the fleet's shared budgets: the actions it limits.
    name: String,
    interval: Duration,
    turns: Mutex<Turns>,
    // Held while a call of this process asks the fleet's budgets for a turn of it, by at most
    // [`ASKING`] calls at once: the others wait here, not as locks on the store's row, so that
    // a crowd of callers makes a replica's statements queue in the replica, not the database.
    gate: Semaphore,
}

/// One budget per resource. A resource whose budget is idle is as if never seen, and is
/// forgotten now and then.
#[derive(Debug)]
struct Budgets {
    // Its name in the fleet's shared budgets: the actions it limits, per resource.
    name: String,
    interval: Duration,
    turns: Mutex<HashMap<String, Turns>>,
    checks: AtomicU64,
    // As [`Budget`]'s, for the calls of actions limited per resource only.
    gate: Semaphore,
}

/// The outbound limits of one provider instance.
#[derive(Default)]
pub struct OutboundLimits {
    // By action; actions that share a limit hold the same budget.
    per_action: HashMap<String, Arc<Budget>>,
    // By action; actions that share a limit per resource hold the same budgets.
    per_resource: HashMap<String, Arc<Budgets>>,
    // The budgets shared with the other replicas of a PostgreSQL store; none on SQLite.
    fleet: Option<Fleet>,
}

/// Where a fleet's turns are taken.
struct Fleet {
    budgets: Arc<SharedBudgets>,
    // The instance id, which keys its budgets in the store.
    provider: String,
}

impl std::fmt::Debug for OutboundLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundLimits")
            .field("per_action", &self.per_action.keys().collect::<Vec<_>>())
            .field(
                "per_resource",
                &self.per_resource.keys().collect::<Vec<_>>(),
            )
            .field("fleet_wide", &self.fleet.is_some())
            .finish()
    }
}

impl OutboundLimits {
    /// No limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Limits `action` to `per_second` calls per second for the whole instance.
    pub fn per_action(self, action: &str, per_second: NonZeroU32) -> Self {
        self.shared(&[action], per_second)
    }

    /// Limits the `actions` together to `per_second` calls per second for the whole instance:
    /// a call of any of them counts against the one budget.
    pub fn shared(mut self, actions: &[&str], per_second: NonZeroU32) -> Self {
        let budget = Arc::new(Budget {
            name: actions.join("+"),
            interval: interval(per_second),
            turns: Mutex::new(Turns::new(Instant::now())),
            gate: Semaphore::new(ASKING),
        });
        for action in actions {
            self.per_action
                .insert(action.to_string(), Arc::clone(&budget));
        }
        self
    }

    /// Limits `action` to `per_second` calls per second for each resource.
    pub fn per_resource(self, action: &str, per_second: NonZeroU32) -> Self {
        self.shared_per_resource(&[action], per_second)
    }

    /// Limits the `actions` together to `per_second` calls per second for each resource: a
    /// call of any of them on a resource counts against that resource's one budget.
    pub fn shared_per_resource(mut self, actions: &[&str], per_second: NonZeroU32) -> Self {
        let budgets = Arc::new(Budgets {
            name: format!("{} per resource", actions.join("+")),
            interval: interval(per_second),
            turns: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
            gate: Semaphore::new(ASKING),
        });
        for action in actions {
            self.per_resource
                .insert(action.to_string(), Arc::clone(&budgets));
        }
        self
    }

    /// Takes the turns of instance `provider` in `budgets`, shared with every replica of a
    /// PostgreSQL store (`None`: this process's turns are the only ones).
    pub fn fleet_wide(mut self, provider: &str, budgets: Option<&Arc<SharedBudgets>>) -> Self {
        self.fleet = budgets.map(|budgets| Fleet {
            budgets: Arc::clone(budgets),
            provider: provider.to_string(),
        });
        self
    }

    /// Waits until a call of `action` on `resource` is within every limit, its turn taken
    /// among the calls waiting before it (in the whole fleet, when the limits are fleet-wide).
    /// If that wait would outlast what the caller's deadline leaves, returns at once, without
    /// taking a turn, the wait it would have had.
    pub async fn acquire(&self, action: &str, resource: Option<&str>) -> Result<(), Duration> {
        let turn = match self.fleet_turn(action, resource).await {
            Some(turn) => turn?,
            None => self.reserve(action, resource, crate::deadline::usable(), self.share())?,
        };
        tokio::time::sleep_until(turn).await;
        // A call woken late must not bunch up with the one after it: each is sent at least an
        // interval after the last one actually sent.
        while let Err(at) = self.send_now(action, resource) {
            tokio::time::sleep_until(at).await;
        }
        Ok(())
    }

    /// How many replicas share each quota when this one takes its turns alone: one on SQLite;
    /// the replicas alive at the last count while a PostgreSQL store does not answer.
    fn share(&self) -> u32 {
        self.fleet
            .as_ref()
            .map_or(1, |fleet| fleet.budgets.replicas())
    }

    /// The call's turn in the fleet's shared budgets, as [`OutboundLimits::reserve`] answers
    /// it; `None` when the limits are not fleet-wide, the action has none, or the store does
    /// not answer (then the turn is taken here). This process's calls of one budget (the action's
    /// budget for the instance, else its budgets per resource) ask the store at most
    /// [`ASKING`] at a time; the store's answer is bounded, the wait for the ones ahead is not.
    async fn fleet_turn(
        &self,
        action: &str,
        resource: Option<&str>,
    ) -> Option<Result<Instant, Duration>> {
        let fleet = self.fleet.as_ref()?;
        let per_resource = self.per_resource.get(action).zip(resource);
        let per_action = self.per_action.get(action);
        let claims: Vec<Claim<'_>> = per_resource
            .map(|(budgets, resource)| Claim {
                budget: &budgets.name,
                resource,
                spacing: fleet_spacing(budgets.interval),
            })
            .into_iter()
            .chain(per_action.map(|budget| Claim {
                budget: &budget.name,
                resource: "",
                spacing: fleet_spacing(budget.interval),
            }))
            .collect();
        let gate = per_action
            .map(|budget| &budget.gate)
            .or(per_resource.map(|(budgets, _)| &budgets.gate))?;
        if !fleet.budgets.answering() {
            return None;
        }
        let _asking = gate.acquire().await.ok()?;
        let bound = crate::deadline::usable();
        let reserved = fleet
            .budgets
            .reserve(&fleet.provider, &claims, bound)
            .await
            .ok()?;
        Some(reserved.map(|turn| {
            let turn = Instant::from_std(turn);
            self.follow(action, resource, turn);
            turn
        }))
    }

    /// Records `turn`, taken in the fleet's budgets, as this process's latest: were the store
    /// to stop answering, the turns taken here would come after it.
    fn follow(&self, action: &str, resource: Option<&str>, turn: Instant) {
        self.with_turns(action, resource, true, |_, budgets| {
            for (turns, interval) in budgets {
                turns.free = turns.free.max(turn + *interval);
            }
        });
    }

    /// Takes the first turn every limit of the call has free, each limit's turns spaced for a
    /// `share` of its rate, if it comes within `bound`; otherwise the time until it.
    fn reserve(
        &self,
        action: &str,
        resource: Option<&str>,
        bound: Option<Duration>,
        share: u32,
    ) -> Result<Instant, Duration> {
        self.with_turns(action, resource, true, |now, budgets| {
            let turn = budgets
                .iter()
                .flat_map(|(turns, interval)| [Some(turns.free), turns.spaced(*interval)])
                .flatten()
                .fold(now, Instant::max);
            let wait = turn - now;
            if bound.is_some_and(|bound| wait > bound) {
                return Err(wait);
            }
            for (turns, interval) in budgets {
                turns.free = turn + local_spacing(*interval) * share;
            }
            Ok(turn)
        })
    }

    /// Records the call as sent now, if every limit's last call was sent an interval ago;
    /// otherwise the moment that will be so.
    fn send_now(&self, action: &str, resource: Option<&str>) -> Result<(), Instant> {
        self.with_turns(action, resource, false, |now, budgets| {
            let at = budgets
                .iter()
                .filter_map(|(turns, interval)| turns.spaced(*interval))
                .fold(now, Instant::max);
            if at > now {
                return Err(at);
            }
            for (turns, _) in budgets {
                turns.last_sent = Some(now);
            }
            Ok(())
        })
    }

    /// Runs `f` on the turns of every limit of a call of `action` on `resource`, with each
    /// limit's interval, all of them locked (in one order: per resource, then per action;
    /// never across an await). `reserving` counts the call for the pruning of idle resources.
    fn with_turns<T>(
        &self,
        action: &str,
        resource: Option<&str>,
        reserving: bool,
        f: impl FnOnce(Instant, &mut [(&mut Turns, Duration)]) -> T,
    ) -> T {
        let now = Instant::now();
        let per_resource = self.per_resource.get(action).zip(resource);
        let mut resources = per_resource.map(|(budgets, _)| lock(&budgets.turns));
        let mut instance = self.per_action.get(action).map(|b| lock(&b.turns));
        if let (Some(map), Some((budgets, _))) = (&mut resources, per_resource)
            && reserving
            && budgets.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1
        {
            map.retain(|_, turns| !turns.idle(budgets.interval, now));
            map.shrink_to_fit();
        }
        let mut budgets = Vec::with_capacity(2);
        if let (Some(map), Some((limits, resource))) = (&mut resources, per_resource) {
            let turns = map
                .entry(resource.to_string())
                .or_insert_with(|| Turns::new(now));
            budgets.push((turns, limits.interval));
        }
        if let (Some(turns), Some(budget)) = (&mut instance, self.per_action.get(action)) {
            budgets.push((&mut **turns, budget.interval));
        }
        f(now, &mut budgets)
    }
}

/// Locks `mutex`, whose guarded moments stay valid even if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spaces_calls_to_the_rate() {
        let limits = OutboundLimits::new().per_action("DeleteStream", NonZeroU32::new(50).unwrap());
        let started = Instant::now();
        for _ in 0..11 {
            limits.acquire("DeleteStream", None).await.unwrap();
        }
        // 11 calls at 50/s: the first at once, then one every 20 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(195),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn actions_that_share_a_limit_share_its_budget() {
        let limits = OutboundLimits::new()
            .shared(&["TagStream", "UntagStream"], NonZeroU32::new(50).unwrap());
        let started = Instant::now();
        for i in 0..11 {
            let action = if i % 2 == 0 {
                "TagStream"
            } else {
                "UntagStream"
            };
            limits.acquire(action, None).await.unwrap();
        }
        // 11 calls of either at 50/s together: one every 20 ms after the first.
        assert!(
            started.elapsed() >= Duration::from_millis(195),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn actions_that_share_a_limit_per_resource_share_its_budget() {
        let limits = OutboundLimits::new().shared_per_resource(
            &["GetHLSStreamingSessionURL", "GetDASHStreamingSessionURL"],
            NonZeroU32::new(5).unwrap(),
        );
        let started = Instant::now();
        limits
            .acquire("GetHLSStreamingSessionURL", Some("a"))
            .await
            .unwrap();
        limits
            .acquire("GetDASHStreamingSessionURL", Some("b"))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(100));
        // The other action on the same stream waits for that stream's budget.
        limits
            .acquire("GetDASHStreamingSessionURL", Some("a"))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(190));
    }

    #[tokio::test]
    async fn per_resource_limits_are_independent() {
        let limits =
            OutboundLimits::new().per_resource("DescribeStream", NonZeroU32::new(5).unwrap());
        let started = Instant::now();
        for stream in ["a", "b", "c", "d"] {
            limits
                .acquire("DescribeStream", Some(stream))
                .await
                .unwrap();
        }
        assert!(started.elapsed() < Duration::from_millis(100));
        limits.acquire("DescribeStream", Some("a")).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(190));
        // Unlimited actions pass at once.
        limits.acquire("ListStreams", None).await.unwrap();
    }

    #[tokio::test]
    async fn resources_not_called_lately_are_forgotten() {
        let limits =
            OutboundLimits::new().per_resource("DescribeStream", NonZeroU32::new(1000).unwrap());
        let tracked = |l: &OutboundLimits| lock(&l.per_resource["DescribeStream"].turns).len();
        for i in 0..PRUNE_EVERY - 1 {
            limits
                .acquire("DescribeStream", Some(&format!("made-up-{i}")))
                .await
                .unwrap();
        }
        assert_eq!(tracked(&limits) as u64, PRUNE_EVERY - 1);
        // One emission interval (1 ms) later every one of them is as if never seen.
        tokio::time::sleep(Duration::from_millis(20)).await;
        limits
            .acquire("DescribeStream", Some("last"))
            .await
            .unwrap();
        assert!(tracked(&limits) <= 1, "{} keys kept", tracked(&limits));
    }

    #[tokio::test]
    async fn a_wait_past_the_deadline_is_refused_at_once_and_takes_no_turn() {
        let limits =
            OutboundLimits::new().per_action("DescribeStream", NonZeroU32::new(5).unwrap());
        // The first turn is now, the next 202 ms later, the one after 404 ms later (1% margin).
        limits
            .reserve("DescribeStream", None, Some(Duration::ZERO), 1)
            .unwrap();
        limits.reserve("DescribeStream", None, None, 1).unwrap();
        let refused = limits
            .reserve("DescribeStream", None, Some(Duration::from_millis(300)), 1)
            .unwrap_err();
        assert!(
            refused > Duration::from_millis(300) && refused <= Duration::from_millis(404),
            "{refused:?}"
        );
        // The refused call left its turn to the next caller.
        let next = limits
            .reserve("DescribeStream", None, Some(Duration::from_millis(450)), 1)
            .unwrap();
        assert!(next - Instant::now() <= Duration::from_millis(404));
    }

    #[tokio::test]
    async fn waiting_callers_are_served_in_their_order() {
        let limits =
            OutboundLimits::new().per_resource("DescribeStream", NonZeroU32::new(10).unwrap());
        let turns: Vec<_> = (0..5)
            .map(|_| {
                limits
                    .reserve("DescribeStream", Some("a"), None, 1)
                    .unwrap()
            })
            .collect();
        for pair in turns.windows(2) {
            assert_eq!(pair[1] - pair[0], Duration::from_millis(101));
        }
    }

    #[tokio::test]
    async fn a_call_woken_late_does_not_bunch_up_with_the_next() {
        let limits = OutboundLimits::new().per_action("DeleteStream", NonZeroU32::new(10).unwrap());
        let first = limits.reserve("DeleteStream", None, None, 1).unwrap();
        let second = limits.reserve("DeleteStream", None, None, 1).unwrap();
        assert_eq!(second - first, Duration::from_millis(101));
        // The first call is sent 60 ms after its turn; the second, on time, waits until 100 ms
        // after that, less the timer's tick.
        tokio::time::sleep_until(first + Duration::from_millis(60)).await;
        let before = Instant::now();
        limits.send_now("DeleteStream", None).unwrap();
        let after = Instant::now();
        tokio::time::sleep_until(second).await;
        let at = limits.send_now("DeleteStream", None).unwrap_err();
        let spacing = Duration::from_millis(99);
        assert!(at >= before + spacing && at <= after + spacing, "{at:?}");
    }

    #[tokio::test]
    async fn a_share_of_the_quota_spaces_the_turns_by_the_replicas() {
        let limits = OutboundLimits::new().per_action("CreateStream", NonZeroU32::new(50).unwrap());
        let first = limits.reserve("CreateStream", None, None, 3).unwrap();
        let second = limits.reserve("CreateStream", None, None, 3).unwrap();
        // A third of 50/s: one turn every 60 ms, and 1%.
        assert_eq!(second - first, Duration::from_micros(60_600));
    }

    #[tokio::test]
    async fn turns_taken_here_come_after_the_fleet_turn_followed() {
        let limits = OutboundLimits::new().per_action("CreateStream", NonZeroU32::new(50).unwrap());
        let fleet_turn = Instant::now() + Duration::from_millis(500);
        limits.follow("CreateStream", None, fleet_turn);
        let here = limits.reserve("CreateStream", None, None, 1).unwrap();
        assert_eq!(here - fleet_turn, Duration::from_millis(20));
        let next = limits.reserve("CreateStream", None, None, 1).unwrap();
        assert_eq!(next - here, Duration::from_micros(20_200));
    }

    #[test]
    fn fleet_turns_keep_a_margin_of_15_percent() {
        assert_eq!(
            fleet_spacing(interval(NonZeroU32::new(50).unwrap())),
            Duration::from_millis(23)
        );
    }
}
