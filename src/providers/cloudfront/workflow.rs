//! The delete workflow both kinds share, one distribution at a time: read the configuration
//! and ETag → if enabled, PUT it back with Enabled=false and If-Match → poll until the
//! distribution is Deployed → DELETE with If-Match = the newest ETag.
//!
//! Each call of [`Workflow::step`] runs one phase and says which phase comes next; the caller
//! (a DeleteStream operation, or one name of a BatchDeleteStreams operation) persists the
//! phase and its [`Progress`] in between, so a restarted gateway resumes where it stopped.
//! Every phase may run twice (after a crash, or when a step is retried) without harm: the
//! disabling phase re-reads and skips the PUT when the distribution is already disabled, and
//! the deleting phase counts a vanished distribution as its own earlier success.
//!
//! As CloudFront really behaves: for a minute or two after a distribution shows Deployed, its
//! DELETE may still be refused (409 DistributionNotDisabled / StreamingDistributionNotDisabled,
//! or 412 PreconditionFailed as its ETag settles). Such a refusal of a distribution that is still
//! disabled is not a conflict: the workflow re-reads and tries again each poll, within the same
//! `deploy_timeout`, which is counted once from the start of the wait and never restarts. A
//! distribution someone else deleted meanwhile is `allow_missing`'s success.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::CloudFrontSettings;
use super::core::{CloudFrontCore, Versioned};
use crate::domain::{StreamName, now_ms};
use crate::error::{Error, Kind, Result};

/// How many times the workflow re-reads after the distribution changed under it
/// (PreconditionFailed, re-enabled, not disabled) before it gives up with ABORTED.
const MAX_CONFLICTS: u32 = 3;
/// The longest pause before a re-read after a conflict.
const CONFLICT_PAUSE: Duration = Duration::from_secs(1);

/// Where a distribution's workflow stands; the step name shown in the operation's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Phase {
    /// Nothing done yet: read the configuration, check the caller's etag.
    Accepted,
    /// Next: PUT the configuration with Enabled=false.
    Disabling,
    /// Next: poll until Deployed.
    Waiting,
    /// Next: DELETE with the newest ETag.
    Deleting,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Accepted => crate::domain::STEP_ACCEPTED,
            Phase::Disabling => "disabling",
            Phase::Waiting => "waiting",
            Phase::Deleting => "deleting",
        }
    }

    /// The phase of an operation's step name; anything else is the start.
    pub fn of_step(step: &str) -> Self {
        [Phase::Disabling, Phase::Waiting, Phase::Deleting]
            .into_iter()
            .find(|p| p.as_str() == step)
            .unwrap_or(Phase::Accepted)
    }

    /// Whether the distribution has (or may have) been disabled by the workflow.
    pub fn after_disable(self) -> bool {
        self >= Phase::Waiting
    }
}

/// What the workflow carries from one phase to the next.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Progress {
    /// The newest ETag seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Re-reads after conflicts so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub conflicts: u32,
    /// When the wait for Deployed began, ms since the epoch; set once, so a conflict that
    /// sends the workflow back to disabling does not restart `deploy_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since_ms: Option<i64>,
    /// True once CloudFront refused a DELETE of the disabled, Deployed distribution (the
    /// window after Deployed): the workflow is waiting for the DELETE to be taken.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub settling: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The distribution to delete, and the caller's conditions.
pub(super) struct Target<'a> {
    pub name: &'a StreamName,
    pub caller_etag: Option<&'a str>,
    pub allow_missing: bool,
}

/// What a phase achieved.
#[derive(Debug)]
pub(super) enum Next {
    /// Run `phase` next, after `after`.
    Continue {
        phase: Phase,
        progress: Progress,
        after: Duration,
    },
    /// The distribution is gone; `existed` is false when it never was there (allow_missing).
    Deleted { existed: bool },
}

/// Configurations read by one phase for the very next phase of the same workflow, so a
/// configuration is read once per workflow. After a restart the next phase reads it again.
#[derive(Default)]
pub(super) struct Handoff(Mutex<HashMap<String, Versioned>>);

impl Handoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Versioned>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put(&self, key: &str, config: Versioned) {
        self.lock().insert(key.to_string(), config);
    }

    fn take(&self, key: &str) -> Option<Versioned> {
        self.lock().remove(key)
    }

    /// Drops what an operation left behind (it was cancelled or failed).
    pub fn forget(&self, operation: &str) {
        self.lock()
            .retain(|key, _| key.split('/').next() != Some(operation));
    }
}

/// The key of one distribution's workflow within an operation.
pub(super) fn key(operation: &str, distribution: &str) -> String {
    format!("{operation}/{distribution}")
}

/// `interval` ± 10 %, so that many waiting workflows do not poll in lockstep.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.9..1.1))
}

/// The workflow over one provider instance.
pub(super) struct Workflow<'a> {
    pub core: &'a CloudFrontCore,
    pub settings: &'a CloudFrontSettings,
    pub handoff: &'a Handoff,
    pub provider: &'a str,
}

impl Workflow<'_> {
    /// Runs `phase` for `target`. `replayed` is true when the phase may have run before.
    pub async fn step(
        &self,
        key: &str,
        phase: Phase,
        progress: Progress,
        target: &Target<'_>,
        replayed: bool,
    ) -> Result<Next> {
        match phase {
            Phase::Accepted => self.start(key, target).await,
            Phase::Disabling => self.disable(key, progress, target).await,
            Phase::Waiting => self.wait(progress, target).await,
            Phase::Deleting => self.delete(progress, target, replayed).await,
        }
    }

    /// Reads the configuration and checks the caller's etag against it.
    async fn start(&self, key: &str, target: &Target<'_>) -> Result<Next> {
        let id = &target.name.stream;
        let current = match self.core.config(id).await {
            Err(e) if gone(&e, target) => return Ok(Next::Deleted { existed: false }),
            other => other?,
        };
        if let Some(etag) = target.caller_etag
            && etag != current.etag
        {
            return Err(Error::new(
                Kind::EtagMismatch,
                format!(
                    "{} has changed: its ETag is {}, the request was made with {etag}",
                    target.name, current.etag
                ),
            )
            .with_provider(self.provider));
        }
        let progress = Progress {
            etag: Some(current.etag.clone()),
            ..Progress::default()
        };
        if current.config.enabled() {
            self.handoff.put(key, current);
            Ok(Next::Continue {
                phase: Phase::Disabling,
                progress,
                after: Duration::ZERO,
            })
        } else {
            Ok(begin_wait(progress, Duration::ZERO))
        }
    }

    /// Another re-read after the distribution changed under the workflow, or, once the bound
    /// is reached, ABORTED (FAILED_PRECONDITION when it was enabled again each time).
    fn conflict(
        &self,
        mut progress: Progress,
        phase: Phase,
        target: &Target<'_>,
        cause: &Error,
    ) -> Result<Next> {
        progress.conflicts += 1;
        if progress.conflicts > MAX_CONFLICTS {
            let kind = match cause.kind() {
                Kind::StreamNotDisabled => Kind::StreamNotDisabled,
                _ => Kind::EtagMismatch,
            };
            let mut error = Error::new(
                kind,
                format!(
                    "{} kept changing while it was being deleted ({MAX_CONFLICTS} re-reads): {}",
                    target.name,
                    cause.message()
                ),
            )
            .with_provider(self.provider);
            if let Some(code) = cause.provider_code() {
                error = error.with_provider_code(code);
            }
            if let Some(id) = cause.provider_request_id() {
                error = error.with_provider_request_id(id);
            }
            return Err(error);
        }
        tracing::info!(stream = %target.name, conflicts = progress.conflicts, error = %cause, "distribution changed under the delete workflow; reading it again");
        Ok(Next::Continue {
            phase,
            progress,
            after: jittered(self.settings.deploy_poll_interval.min(CONFLICT_PAUSE)),
        })
    }

    /// PUTs the configuration with Enabled=false, unless it is disabled already (a replay
    /// after the PUT took effect).
    async fn disable(&self, key: &str, progress: Progress, target: &Target<'_>) -> Result<Next> {
        let id = &target.name.stream;
        let mut current = match self.handoff.take(key) {
            Some(read) if Some(&read.etag) == progress.etag.as_ref() => read,
            _ => match self.core.config(id).await {
                Err(e) if gone(&e, target) => return Ok(Next::Deleted { existed: false }),
                other => other?,
            },
        };
        let progress = Progress {
            etag: Some(current.etag.clone()),
            ..progress
        };
        if !current.config.enabled() {
            return Ok(begin_wait(progress, Duration::ZERO));
        }
        current.config.set_enabled(false);
        match self
            .core
            .put_config(id, &current.config, &current.etag)
            .await
        {
            Ok(disabled) => Ok(begin_wait(
                Progress {
                    etag: Some(disabled.etag),
                    ..progress
                },
                jittered(self.settings.deploy_poll_interval),
            )),
            Err(e) if e.kind() == Kind::EtagMismatch => {
                self.conflict(progress, Phase::Disabling, target, &e)
            }
            Err(e) => Err(e),
        }
    }

    /// Polls once: Deployed and disabled → delete next; still InProgress (or its DELETE
    /// still refused after Deployed) → poll again, until `deploy_timeout`.
    async fn wait(&self, progress: Progress, target: &Target<'_>) -> Result<Next> {
        let since = progress.waiting_since_ms.unwrap_or_else(now_ms);
        let waited = Duration::from_millis((now_ms() - since).max(0) as u64);
        let current = match self.core.get(&target.name.stream).await {
            Err(e) if gone(&e, target) => return Ok(Next::Deleted { existed: false }),
            other => other?,
        };
        let progress = Progress {
            etag: Some(current.etag.clone()),
            waiting_since_ms: Some(since),
            ..progress
        };
        if current.details.enabled {
            let cause = Error::new(Kind::StreamNotDisabled, "it was enabled again");
            return self.conflict(progress, Phase::Disabling, target, &cause);
        }
        let timed_out = waited >= self.settings.deploy_timeout;
        if current.deployed() && !(progress.settling && timed_out) {
            return Ok(Next::Continue {
                phase: Phase::Deleting,
                progress,
                after: Duration::ZERO,
            });
        }
        if timed_out {
            let what = if progress.settling {
                "was Deployed, but CloudFront still refused its DELETE"
            } else {
                "was not Deployed"
            };
            return Err(Error::new(
                Kind::DeadlineExceeded,
                format!(
                    "{} {what} within deploy_timeout ({}); it stays disabled and was not deleted",
                    target.name,
                    humantime::format_duration(self.settings.deploy_timeout)
                ),
            )
            .with_provider(self.provider));
        }
        Ok(Next::Continue {
            phase: Phase::Waiting,
            progress,
            after: jittered(self.settings.deploy_poll_interval),
        })
    }

    /// DELETEs with the newest ETag.
    async fn delete(
        &self,
        progress: Progress,
        target: &Target<'_>,
        replayed: bool,
    ) -> Result<Next> {
        let Some(etag) = progress.etag.clone() else {
            return Ok(begin_wait(progress, Duration::ZERO));
        };
        match self.core.delete(&target.name.stream, &etag).await {
            Ok(()) => Ok(Next::Deleted { existed: true }),
            // The earlier run of this phase deleted it.
            Err(e) if e.kind() == Kind::StreamNotFound && replayed => {
                Ok(Next::Deleted { existed: true })
            }
            Err(e) if gone(&e, target) => Ok(Next::Deleted { existed: false }),
            // Refused just after Deployed, or its ETag moved: read it again and, if it is still
            // disabled, try again at the next poll (a re-enabled one is a conflict there).
            Err(e) if matches!(e.kind(), Kind::EtagMismatch | Kind::StreamNotDisabled) => {
                tracing::info!(stream = %target.name, error = %e, "DELETE refused after Deployed; waiting");
                Ok(Next::Continue {
                    phase: Phase::Waiting,
                    progress: Progress {
                        settling: true,
                        ..progress
                    },
                    after: jittered(self.settings.deploy_poll_interval),
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// The wait for Deployed, from now or from when it began already.
fn begin_wait(progress: Progress, after: Duration) -> Next {
    Next::Continue {
        phase: Phase::Waiting,
        progress: Progress {
            waiting_since_ms: Some(progress.waiting_since_ms.unwrap_or_else(now_ms)),
            ..progress
        },
        after,
    }
}

/// Whether `e` says the distribution is gone and the caller allows that (someone else
/// deleted it while the workflow ran).
fn gone(e: &Error, target: &Target<'_>) -> bool {
    e.kind() == Kind::StreamNotFound && target.allow_missing
}

/// `e`, a failure of a workflow that had disabled `name` (of instance `provider`), saying
/// that the distribution stays disabled — unless `e` says it is gone, was enabled again, or
/// changed under the workflow (then its state is someone else's), or already says so.
pub(super) fn left_disabled(provider: &str, name: &StreamName, e: Error) -> Error {
    let not_ours = matches!(
        e.kind(),
        Kind::StreamNotFound | Kind::StreamNotDisabled | Kind::EtagMismatch
    );
    if not_ours || e.is_temporary() || e.message().contains("stays disabled") {
        return e;
    }
    let mut error = Error::new(
        e.kind(),
        format!(
            "{}; {name} stays disabled (Enabled=false) and was not deleted: delete it again, or \
             enable it with UpdateStream",
            e.message()
        ),
    )
    .with_provider(provider);
    if let Some(code) = e.provider_code() {
        error = error.with_provider_code(code);
    }
    if let Some(id) = e.provider_request_id() {
        error = error.with_provider_request_id(id);
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_through_step_names() {
        for phase in [
            Phase::Accepted,
            Phase::Disabling,
            Phase::Waiting,
            Phase::Deleting,
        ] {
            assert_eq!(Phase::of_step(phase.as_str()), phase);
        }
        assert_eq!(Phase::of_step("accepted"), Phase::Accepted);
        assert!(Phase::Waiting.after_disable() && !Phase::Disabling.after_disable());
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(60));
            assert!(
                d >= Duration::from_secs(54) && d <= Duration::from_secs(66),
                "{d:?}"
            );
        }
    }

    #[test]
    fn the_wait_for_deployed_starts_once() {
        let again = Progress {
            waiting_since_ms: Some(5),
            conflicts: 1,
            ..Progress::default()
        };
        let Next::Continue {
            phase, progress, ..
        } = begin_wait(again, Duration::ZERO)
        else {
            panic!("a wait");
        };
        assert_eq!(phase, Phase::Waiting);
        assert_eq!(
            progress.waiting_since_ms,
            Some(5),
            "deploy_timeout did not restart"
        );
        let Next::Continue { progress, .. } = begin_wait(Progress::default(), Duration::ZERO)
        else {
            panic!("a wait");
        };
        assert!(progress.waiting_since_ms.is_some_and(|t| t > 5));
    }

    #[test]
    fn handoff_is_per_operation() {
        let handoff = Handoff::default();
        assert!(handoff.take("op1/E1").is_none());
        assert_eq!(key("op1", "E1"), "op1/E1");
    }
}
