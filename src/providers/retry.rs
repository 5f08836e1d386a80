//! Retrying provider calls: only errors marked temporary, with exponential backoff and jitter
//! (backon), never past the caller's deadline ([`crate::deadline`]). When the retries or the
//! time run out, the last error is returned marked persistent.

use std::future::Future;
use std::time::Duration;

use backon::BackoffBuilder;

use crate::error::Result;

/// How a provider call is retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: usize,
    /// The first backoff.
    pub min_delay: Duration,
    /// The longest backoff.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// Calls `call` until it succeeds, fails permanently, runs out of attempts, or the next
/// backoff and another attempt as long as the last would end past the caller's deadline (so
/// the caller hears the provider's error, not its own timeout).
pub async fn retry<T, F, Fut>(policy: RetryPolicy, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(policy.min_delay)
        .with_max_delay(policy.max_delay)
        .with_jitter()
        .with_max_times(policy.max_attempts.saturating_sub(1))
        .build();
    loop {
        let started = std::time::Instant::now();
        match call().await {
            Err(e) if e.is_temporary() => {
                let Some(delay) = delays.next() else {
                    return Err(e.persistent());
                };
                let next_ends = delay + started.elapsed();
                if crate::deadline::remaining().is_some_and(|left| left <= next_ends) {
                    return Err(e.persistent());
                }
                tracing::debug!(error = %e, ?delay, "provider call failed; retrying");
                crate::telemetry::call::retrying(&e, delay);
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::error::{Error, Kind};

    fn throttled() -> Error {
        Error::new(Kind::ProviderThrottled, "slow down").temporary()
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        }
    }

    #[tokio::test]
    async fn retries_temporary_errors_until_success() {
        let calls = AtomicUsize::new(0);
        let result = retry(policy(), || async {
            if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                Err(throttled())
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_marked_persistent() {
        let calls = AtomicUsize::new(0);
        let error = retry(policy(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(throttled())
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert!(!error.is_temporary());
        assert_eq!(error.kind(), Kind::ProviderThrottled);
    }

    #[tokio::test]
    async fn never_retries_permanent_errors() {
        let calls = AtomicUsize::new(0);
        let _ = retry(policy(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(Error::new(Kind::StreamNotFound, "gone"))
        })
        .await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn stops_before_the_callers_deadline() {
        let calls = AtomicUsize::new(0);
        let slow = RetryPolicy {
            max_attempts: 100,
            min_delay: Duration::from_millis(40),
            max_delay: Duration::from_millis(40),
        };
        let started = std::time::Instant::now();
        let error = crate::deadline::scope(Some(Duration::from_millis(100)), async {
            retry(slow, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(throttled())
            })
            .await
        })
        .await
        .unwrap_err();
        // Without the deadline, 100 attempts 40 ms apart: 4 s. (The bound leaves a loaded
        // machine's late wake-ups room; the decision itself is made before the deadline.)
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!((2..=3).contains(&calls.load(Ordering::SeqCst)));
        assert_eq!(error.kind(), Kind::ProviderThrottled);
    }

    #[tokio::test]
    async fn leaves_room_for_an_attempt_as_long_as_the_last() {
        let calls = AtomicUsize::new(0);
        let policy = RetryPolicy {
            max_attempts: 100,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(10),
        };
        // Each attempt takes 60 ms: after the first (60 ms in), 10 ms of backoff and another
        // 60 ms attempt would end at 130 ms, past the 100 ms deadline.
        let error = crate::deadline::scope(Some(Duration::from_millis(100)), async {
            retry(policy, || async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(60)).await;
                Err::<(), _>(throttled())
            })
            .await
        })
        .await
        .unwrap_err();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!error.is_temporary());
    }
}
