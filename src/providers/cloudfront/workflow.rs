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
    /// When the wait for Deployed began, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since_ms: Option<i64>,
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
            Err(e) if e.kind() == Kind::StreamNotFound && target.allow_missing => {
                return Ok(Next::Deleted { existed: false });
            }
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
            Ok(self.begin_wait(progress, Duration::ZERO))
        }
    }

    fn begin_wait(&self, progress: Progress, after: Duration) -> Next {
        Next::Continue {
            phase: Phase::Waiting,
            progress: Progress {
                waiting_since_ms: Some(now_ms()),
                ..progress
            },
            after,
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
            _ => self.core.config(id).await?,
        };
        let progress = Progress {
            etag: Some(current.etag.clone()),
            ..progress
        };
        if !current.config.enabled() {
            return Ok(self.begin_wait(progress, Duration::ZERO));
        }
        current.config.set_enabled(false);
        match self
            .core
            .put_config(id, &current.config, &current.etag)
            .await
        {
            Ok(disabled) => Ok(self.begin_wait(
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

    /// Polls once: Deployed and disabled → delete next; still InProgress → poll again.
    async fn wait(&self, progress: Progress, target: &Target<'_>) -> Result<Next> {
        let since = progress.waiting_since_ms.unwrap_or_else(now_ms);
        let waited = Duration::from_millis((now_ms() - since).max(0) as u64);
        let current = self.core.get(&target.name.stream).await?;
        let progress = Progress {
            etag: Some(current.etag.clone()),
            waiting_since_ms: Some(since),
            ..progress
        };
        if current.details.enabled {
            let cause = Error::new(Kind::StreamNotDisabled, "it was enabled again");
            return self.conflict(progress, Phase::Disabling, target, &cause);
        }
        if current.deployed() {
            return Ok(Next::Continue {
                phase: Phase::Deleting,
                progress,
                after: Duration::ZERO,
            });
        }
        if waited >= self.settings.deploy_timeout {
            return Err(Error::new(
                Kind::DeadlineExceeded,
                format!(
                    "{} was not Deployed within deploy_timeout ({}); it stays disabled and was not deleted",
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
            return Ok(self.begin_wait(progress, Duration::ZERO));
        };
        match self.core.delete(&target.name.stream, &etag).await {
            Ok(()) => Ok(Next::Deleted { existed: true }),
            // The earlier run of this phase deleted it.
            Err(e) if e.kind() == Kind::StreamNotFound && replayed => {
                Ok(Next::Deleted { existed: true })
            }
            Err(e) if e.kind() == Kind::EtagMismatch => {
                self.conflict(progress, Phase::Waiting, target, &e)
            }
            Err(e) if e.kind() == Kind::StreamNotDisabled => {
                self.conflict(progress, Phase::Disabling, target, &e)
            }
            Err(e) => Err(e),
        }
    }
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
    fn handoff_is_per_operation() {
        let handoff = Handoff::default();
        assert!(handoff.take("op1/E1").is_none());
        assert_eq!(key("op1", "E1"), "op1/E1");
    }
}
