//! Inbound rate limits per principal and method: a GCRA token bucket (governor) per
//! (principal, method), with the rate of the first matching `[[rate_limits.rules]]` or the
//! default. Over the rate → RESOURCE_EXHAUSTED / RATE_LIMITED with RetryInfo saying when.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use globset::{Glob, GlobMatcher};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tower::{Layer, Service};

use super::{method_names, reject};
use crate::api::{ANONYMOUS, Principal};
use crate::config::{ConfigError, RateLimitConfig};
use crate::error::{Error, Kind};

struct Bucket {
    principal: GlobMatcher,
    method: GlobMatcher,
    limiter: DefaultKeyedRateLimiter<String>,
}

/// The inbound limits.
pub struct InboundLimits {
    rules: Vec<Bucket>,
    default: DefaultKeyedRateLimiter<String>,
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
        })
    }

    /// Takes a token for `principal` calling `path`, or says when to come back.
    pub fn check(&self, principal: &str, path: &str) -> Result<(), Error> {
        let (full, short) = method_names(path);
        let limiter = self
            .rules
            .iter()
            .find(|b| {
                b.principal.is_match(principal)
                    && (b.method.is_match(&short) || b.method.is_match(&full))
            })
            .map_or(&self.default, |b| &b.limiter);
        limiter
            .check_key(&format!("{principal}\u{0}{full}"))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Error::new(
                    Kind::RateLimited,
                    format!("{principal} is over its rate for {short}"),
                )
                .with_retry_after(wait)
            })
    }
}

/// Applies the inbound limits.
#[derive(Clone)]
pub struct RateLimitLayer {
    limits: Option<Arc<InboundLimits>>,
}

impl RateLimitLayer {
    /// A layer over `limits` (none: no limits).
    pub fn new(limits: Option<Arc<InboundLimits>>) -> Self {
        RateLimitLayer { limits }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            limits: self.limits.clone(),
        }
    }
}

/// The service of [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    limits: Option<Arc<InboundLimits>>,
}

impl<S, B> Service<http::Request<B>> for RateLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(limits) = &self.limits {
            let principal = request
                .extensions()
                .get::<Principal>()
                .map_or(ANONYMOUS, |p| p.0.as_str());
            if let Err(error) = limits.check(principal, request.uri().path()) {
                tracing::info!(principal, path = request.uri().path(), "call over its rate");
                crate::telemetry::rate_limited(principal, request.uri().path());
                return Box::pin(std::future::ready(Ok(reject(&error))));
            }
        }
        Box::pin(self.inner.call(request))
    }
}
