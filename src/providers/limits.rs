//! Outbound rate limits per provider instance, so the gateway does not cause the provider
//! throttling it would then have to absorb. GCRA limiters from `governor`, with a burst of one:
//! calls are spaced evenly, so no one-second window sees more than the configured rate.
//!
//! Limits are named by the provider's action (e.g. `DeleteStream`); several actions may share
//! one limit (KVS counts UpdateStream, TagStream… against one budget), and an action may also
//! have a limit per resource (KVS allows 5 DescribeStream per second per stream), which
//! several actions may share as well (the HLS and DASH session URLs of a stream). The calls
//! wait here through [`CallPath`](super::call::CallPath), once per try.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

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

fn quota(per_second: NonZeroU32) -> Quota {
    Quota::per_second(per_second).allow_burst(NonZeroU32::MIN)
}

/// The outbound limits of one provider instance.
#[derive(Default)]
pub struct OutboundLimits {
    // By action; actions that share a limit hold the same limiter.
    per_action: HashMap<String, Arc<DefaultDirectRateLimiter>>,
    // By action; actions that share a limit per resource hold the same limiter.
    per_resource: HashMap<String, Arc<DefaultKeyedRateLimiter<String>>>,
    // Calls of `acquire` on a per-resource limit, for `prune_now_and_then`.
    resource_checks: AtomicU64,
}

impl std::fmt::Debug for OutboundLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundLimits")
            .field("per_action", &self.per_action.keys().collect::<Vec<_>>())
            .field(
                "per_resource",
                &self.per_resource.keys().collect::<Vec<_>>(),
            )
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
        let limiter = Arc::new(RateLimiter::direct(quota(per_second)));
        for action in actions {
            self.per_action
                .insert(action.to_string(), Arc::clone(&limiter));
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
        let limiter = Arc::new(RateLimiter::keyed(quota(per_second)));
        for action in actions {
            self.per_resource
                .insert(action.to_string(), Arc::clone(&limiter));
        }
        self
    }

    /// Waits until a call of `action` on `resource` is within every limit.
    pub async fn acquire(&self, action: &str, resource: Option<&str>) {
        if let (Some(limiter), Some(resource)) = (self.per_resource.get(action), resource) {
            limiter.until_key_ready(&resource.to_string()).await;
            prune_now_and_then(limiter, &self.resource_checks);
        }
        if let Some(limiter) = self.per_action.get(action) {
            limiter.until_ready().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn spaces_calls_to_the_rate() {
        let limits = OutboundLimits::new().per_action("DeleteStream", NonZeroU32::new(50).unwrap());
        let started = Instant::now();
        for _ in 0..11 {
            limits.acquire("DeleteStream", None).await;
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
            limits.acquire(action, None).await;
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
        limits.acquire("GetHLSStreamingSessionURL", Some("a")).await;
        limits
            .acquire("GetDASHStreamingSessionURL", Some("b"))
            .await;
        assert!(started.elapsed() < Duration::from_millis(100));
        // The other action on the same stream waits for that stream's budget.
        limits
            .acquire("GetDASHStreamingSessionURL", Some("a"))
            .await;
        assert!(started.elapsed() >= Duration::from_millis(190));
    }

    #[tokio::test]
    async fn per_resource_limits_are_independent() {
        let limits =
            OutboundLimits::new().per_resource("DescribeStream", NonZeroU32::new(5).unwrap());
        let started = Instant::now();
        for stream in ["a", "b", "c", "d"] {
            limits.acquire("DescribeStream", Some(stream)).await;
        }
        assert!(started.elapsed() < Duration::from_millis(100));
        limits.acquire("DescribeStream", Some("a")).await;
        assert!(started.elapsed() >= Duration::from_millis(190));
        // Unlimited actions pass at once.
        limits.acquire("ListStreams", None).await;
    }

    #[tokio::test]
    async fn resources_not_called_lately_are_forgotten() {
        let limits =
            OutboundLimits::new().per_resource("DescribeStream", NonZeroU32::new(1000).unwrap());
        let tracked = |l: &OutboundLimits| l.per_resource["DescribeStream"].len();
        for i in 0..PRUNE_EVERY - 1 {
            limits
                .acquire("DescribeStream", Some(&format!("made-up-{i}")))
                .await;
        }
        assert_eq!(tracked(&limits) as u64, PRUNE_EVERY - 1);
        // One emission interval (1 ms) later every one of them is as if never seen.
        tokio::time::sleep(Duration::from_millis(20)).await;
        limits.acquire("DescribeStream", Some("last")).await;
        assert!(tracked(&limits) <= 1, "{} keys kept", tracked(&limits));
    }
}
