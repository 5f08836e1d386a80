//! Inbound rate limits per principal and method: a GCRA token bucket (governor) per
//! (principal, method), with the rate of the first matching `[[rate_limits.rules]]` or the
//! default. Over the rate → RESOURCE_EXHAUSTED / RATE_LIMITED with RetryInfo saying when.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use globset::{Glob, GlobMatcher};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::gate::{Gate, GateLayer, Gated};
use super::method_names;
use crate::config::{ConfigError, RateLimitConfig};
use crate::error::{Error, Kind};
use crate::identity::{ANONYMOUS, Principal};

/// A bucket's key: the principal and the served method's index (`usize::MAX` for every
/// method no service serves, so that made-up paths cannot grow the table).
type Key = (Arc<str>, usize);

struct Bucket {
    principal: GlobMatcher,
    method: GlobMatcher,
    limiter: DefaultKeyedRateLimiter<Key>,
}

/// The inbound limits.
pub struct InboundLimits {
    rules: Vec<Bucket>,
    default: DefaultKeyedRateLimiter<Key>,
    // The checks made, for `prune_now_and_then` (principals come and go, JWT subjects above
    // all).
    checks: AtomicU64,
}

fn quota(per_second: u32, burst: Option<u32>) -> Result<Quota, ConfigError> {
    let rate = NonZeroU32::new(per_second).ok_or_else(|| {
        ConfigError::Invalid("[rate_limits] per_second must be at least 1".into())
    })?;
    let burst = NonZeroU32::new(burst.unwrap_or(per_second))
        .ok_or_else(|| ConfigError::Invalid("[rate_limits] burst must be at least 1".into()))?;
    Ok(Quota::per_second(rate).allow_burst(burst))
}

fn glob(text: &str) -> Result<GlobMatcher, ConfigError> {
    Glob::new(text)
        .map(|g| g.compile_matcher())
        .map_err(|e| ConfigError::Invalid(format!("[[rate_limits.rules]] {text:?}: {e}")))
}

impl InboundLimits {
    /// Builds the buckets of `[rate_limits]`.
    pub fn from_config(config: &RateLimitConfig) -> Result<Self, ConfigError> {
        let rules = config
            .rules
            .iter()
            .map(|rule| {
                Ok(Bucket {
                    principal: glob(&rule.principal)?,
                    method: glob(&rule.method)?,
                    limiter: RateLimiter::keyed(quota(rule.per_second, rule.burst)?),
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(InboundLimits {
            rules,
            default: RateLimiter::keyed(quota(config.per_second, config.burst)?),
            checks: AtomicU64::new(0),
        })
    }

    /// Takes a token for `principal` calling `path`, or says when to come back.
    pub fn check(&self, principal: &Arc<str>, path: &str) -> Result<(), Error> {
        let served = crate::methods::served(path);
        let (full, short) = method_names(served, path);
        let index = served.map_or(usize::MAX, |m| m.index);
        let limiter = self
            .rules
            .iter()
            .find(|b| {
                b.principal.is_match(&**principal)
                    && (b.method.is_match(&*short) || b.method.is_match(&*full))
            })
            .map_or(&self.default, |b| &b.limiter);
        let checked = limiter.check_key(&(Arc::clone(principal), index));
        crate::providers::limits::prune_now_and_then(limiter, &self.checks);
        checked.map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Error::new(
                Kind::RateLimited,
                format!("{principal} is over its rate for {short}"),
            )
            .with_retry_after(wait)
        })
    }
}

/// The limits of a gateway; none configured admits everything.
pub struct InboundGate(Option<InboundLimits>);

impl InboundGate {
    /// A gate over `limits`.
    pub fn new(limits: Option<InboundLimits>) -> Self {
        InboundGate(limits)
    }
}

impl Gate for InboundGate {
    fn admit(
        &self,
        path: &str,
        _headers: &http::HeaderMap,
        extensions: &mut http::Extensions,
    ) -> Result<(), Error> {
        let Some(limits) = &self.0 else {
            return Ok(());
        };
        if super::is_health(path) {
            return Ok(());
        }
        let anonymous: Arc<str>;
        let principal = match extensions.get::<Principal>() {
            Some(p) => &p.0,
            None => {
                anonymous = Arc::from(ANONYMOUS);
                &anonymous
            }
        };
        limits.check(principal, path).inspect_err(|_| {
            tracing::info!(principal = &**principal, path, "call over its rate");
            crate::telemetry::rate_limited(principal, path);
        })
    }
}

/// Applies the inbound limits.
pub type RateLimitLayer = GateLayer<InboundGate>;

/// The service of [`RateLimitLayer`].
pub type RateLimit<S> = Gated<S, InboundGate>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RateLimitRule;

    const GET: &str = "/streamgate.v1.StreamService/GetStream";
    const DELETE: &str = "/streamgate.v1.StreamService/DeleteStream";

    fn over(limits: &InboundLimits, principal: &Arc<str>, path: &str) -> bool {
        match limits.check(principal, path) {
            Ok(()) => false,
            Err(e) => {
                assert_eq!(e.kind(), Kind::RateLimited);
                true
            }
        }
    }

    #[test]
    fn buckets_are_per_principal_and_method() {
        let limits = InboundLimits::from_config(&RateLimitConfig {
            per_second: 1,
            burst: None,
            rules: vec![RateLimitRule {
                principal: "*".into(),
                method: "StreamService/DeleteStream".into(),
                per_second: 2,
                burst: None,
            }],
        })
        .unwrap();
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        assert!(!over(&limits, &a, GET));
        assert!(over(&limits, &a, GET), "a's second GetStream in the second");
        assert!(!over(&limits, &b, GET), "b has its own bucket");
        assert!(!over(&limits, &a, DELETE), "and so has each method");
        assert!(!over(&limits, &a, DELETE), "at the rule's rate of 2");
        assert!(over(&limits, &a, DELETE));
        // Made-up paths all share one bucket per principal, so they cannot grow the table.
        assert!(!over(&limits, &a, "/x.Made/Up1"));
        assert!(over(&limits, &a, "/x.Made/Up2"));
    }
}
