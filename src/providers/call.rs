//! The one path every provider API call of every adapter takes ([`CallPath::call`]): each try
//! waits for the instance's outbound limit ([`super::limits`]), temporary failures are tried
//! again inside the caller's deadline ([`super::retry`]), and the whole call, its tries and
//! waits included, is one provider-call span and latency sample
//! ([`crate::telemetry::provider_call`]).
//!
//! A try whose turn under the limit would come after the caller's deadline is not made: the
//! call is answered at once PROVIDER_THROTTLED, with the wait as RetryInfo.
//!
//! The limit is taken once per try, not once per call: a retry is another request to the
//! provider and counts against its quota like the first. Whatever else has to change with the
//! calls of every kind (e.g. quotas shared by a fleet of gateways) belongs here.
//!
//! What stays in the adapters is what differs per kind: building and sending the request
//! (a fresh nonce and timestamp per try for the signed VOD API) and turning its failure into
//! the taxonomy, marked temporary where a retry may help.

use std::future::Future;
use std::time::Duration;

use super::limits::OutboundLimits;
use super::retry::{RetryPolicy, retry};
use crate::error::{Error, Kind, Result};
use crate::telemetry::provider_call;

/// How the API calls of one provider instance are made.
#[derive(Debug)]
pub struct CallPath {
    provider: String,
    kind: &'static str,
    // Shared by every call of the instance, so that together they stay under the provider's
    // quotas.
    limits: OutboundLimits,
    policy: RetryPolicy,
}

impl CallPath {
    /// The calls of instance `provider` of `kind`, within `limits`, retried by the default
    /// policy.
    pub fn new(provider: &str, kind: &'static str, limits: OutboundLimits) -> Self {
        CallPath {
            provider: provider.to_string(),
            kind,
            limits,
            policy: RetryPolicy::default(),
        }
    }

    /// The instance id.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// Calls the provider's `action` (its own API name, e.g. `DescribeStream`) on `resource`
    /// (for limits per resource): `send` makes one try and maps its failure into the taxonomy.
    pub async fn call<T, F, Fut>(
        &self,
        action: &'static str,
        resource: Option<&str>,
        send: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        // The try is made only once the limit lets it through: its request (and, for signed
        // APIs, its timestamp) belongs to the moment it is sent.
        let tries = retry(self.policy, || async {
            self.limits
                .acquire(action, resource)
                .await
                .map_err(|wait| self.throttled(action, wait))?;
            send().await
        });
        provider_call(&self.provider, self.kind, action, tries).await
    }

    /// The answer to a call whose turn under the outbound limit would come `wait` from now,
    /// past what its deadline leaves: throttled at once, to be tried again after the wait.
    fn throttled(&self, action: &str, wait: Duration) -> Error {
        Error::new(
            Kind::ProviderThrottled,
            format!(
                "{action} of provider {} is at its outbound limit: the next turn comes in {} ms, \
                 after the call's deadline",
                self.provider,
                wait.as_millis()
            ),
        )
        .with_provider(&self.provider)
        .with_retry_after(wait)
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use super::*;

    fn path(per_second: u32) -> CallPath {
        let limits = OutboundLimits::new().per_action("Act", NonZeroU32::new(per_second).unwrap());
        CallPath {
            policy: RetryPolicy {
                max_attempts: 3,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(1),
            },
            ..CallPath::new("p", "test", limits)
        }
    }

    #[tokio::test]
    async fn every_try_waits_for_the_limit() {
        let path = path(20);
        let tries = AtomicUsize::new(0);
        let started = Instant::now();
        let result = path
            .call("Act", None, || async {
                if tries.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(Error::new(Kind::ProviderThrottled, "slow down").temporary())
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(result.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        // Three tries at 20/s: the first at once, then one every 50 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(95),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_try_is_not_made_before_its_turn() {
        let path = path(20);
        let sent = AtomicUsize::new(0);
        path.call("Act", None, || async {
            sent.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await
        .unwrap();
        // The next call's try waits for the limit before it sends anything.
        let next = path.call("Act", None, || async {
            sent.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        let waited = tokio::time::timeout(Duration::from_millis(20), next).await;
        assert!(waited.is_err());
        assert_eq!(sent.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_turn_past_the_deadline_is_refused_at_once_with_the_wait() {
        use tonic_types::StatusExt;

        let path = path(2);
        path.call("Act", None, || async { Ok(()) }).await.unwrap();
        let sent = AtomicUsize::new(0);
        let started = Instant::now();
        // The next turn comes 505 ms from now (2/s, and the 1% margin); the caller has 200 ms.
        let refused = crate::deadline::scope(
            Some(Duration::from_millis(200)),
            path.call("Act", None, || async {
                sent.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }),
        )
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(sent.load(Ordering::SeqCst), 0);
        assert_eq!(refused.kind(), Kind::ProviderThrottled);
        let status = refused.to_status();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        let retry = status
            .get_details_retry_info()
            .unwrap()
            .retry_delay
            .unwrap();
        assert!(
            retry > Duration::from_millis(400) && retry <= Duration::from_millis(505),
            "{retry:?}"
        );
    }
}
