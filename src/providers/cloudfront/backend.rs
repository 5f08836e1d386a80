//! [`CloudFrontProvider`]: the provider trait for both CloudFront kinds, on [`CloudFrontCore`]:
//! reads, prechecks, the steps of create and update (with their replay and ETag rules), a
//! delete and each name of a batch delete driven through the delete [`Workflow`] and persisted
//! between steps, cancelling, and the announcement of every change it makes. Also how an
//! instance is built from its [`CloudFrontSettings`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Variant;
use super::config::CloudFrontSettings;
use super::core::{CloudFrontCore, Distribution, check_comment, check_new};
use super::signer::UrlSigner;
use super::workflow::{Handoff, Next, Phase, Progress, Target, Workflow, key, left_disabled};
use crate::config::{Environment, ProviderConfig};
use crate::domain::capability::{IdChars, IdPattern};
use crate::domain::names::MAX_SEGMENT_LEN;
use crate::domain::validate::Violations;
use crate::domain::{
    BatchItem, Capability, Endpoint, EndpointsRequest, ListQuery, Method, OpRequest, OpResult,
    Operation, Page, ParentName, Stream, StreamDetails, StreamName, StreamPatch, StreamSpec,
    StreamState, now_ms,
};
use crate::error::{Error, Kind, Result};
use crate::providers::{BuildContext, InstanceSettings, Provider, Step};
use crate::store::SharedBudgets;
use crate::watch::{Change, WatchHub};

/// The most names of one BatchDeleteStreams call: each runs its own workflow.
const MAX_BATCH: usize = 100;
/// The largest ListStreams page (CloudFront's MaxItems default).
const MAX_PAGE: usize = 100;
/// How often an update re-reads when the ETag moved between its read and its PUT.
const MAX_UPDATE_CONFLICTS: usize = 3;
/// How many temporary failures in a row one name of a batch survives.
const MAX_ITEM_FAILURES: u32 = 5;

/// One `cloudfront` or `cloudfront-streaming` provider instance.
pub struct CloudFrontProvider {
    id: String,
    variant: Variant,
    capability: Capability,
    settings: CloudFrontSettings,
    core: CloudFrontCore,
    // Configurations one workflow phase read for the next, so each delete reads once; in
    // memory only, a restarted gateway reads again.
    handoff: Handoff,
    // Where every change made through the gateway is announced to WatchStream subscribers.
    hub: Arc<WatchHub>,
    // Signs playback URLs, when a key pair is configured.
    signer: Option<UrlSigner>,
}

/// One name of a BatchDeleteStreams operation, as persisted between steps.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct BatchEntry {
    phase: Phase,
    #[serde(default)]
    progress: Progress,
    #[serde(default)]
    next_run_ms: i64,
    #[serde(default)]
    failures: u32,
    #[serde(default)]
    done: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<Error>,
}

impl Default for BatchEntry {
    fn default() -> Self {
        BatchEntry {
            phase: Phase::Accepted,
            progress: Progress::default(),
            next_run_ms: 0,
            failures: 0,
            done: false,
            error: None,
        }
    }
}

/// The CallerReference of the distribution an operation creates: the same for every retry
/// of the operation (a retried request with the same request_id is the same operation).
fn caller_reference(provider: &str, op: &Operation) -> String {
    let basis = match &op.request_id {
        Some(request_id) => format!("{provider}\0{}\0{request_id}", op.principal),
        None => format!("{provider}\0operation\0{}", op.id),
    };
    let digest = Sha256::digest(basis.as_bytes());
    format!("streamgate-{}", hex::encode(&digest[..16]))
}

impl CloudFrontProvider {
    /// Builds the instance of `config` from its parsed settings.
    pub async fn new(
        config: &ProviderConfig,
        settings: CloudFrontSettings,
        environment: &Environment,
        hub: &Arc<WatchHub>,
        budgets: Option<&Arc<SharedBudgets>>,
    ) -> Result<Self> {
        let variant = Variant::of_kind(&config.kind).ok_or_else(|| {
            Error::internal(format_args!("{} is not a CloudFront kind", config.kind))
        })?;
        let signer = UrlSigner::load(&config.id, &settings, environment)?;
        let core = CloudFrontCore::new(
            config,
            environment,
            variant,
            &settings.outbound_limits,
            budgets,
        )
        .await;
        let methods = Method::ALL
            .into_iter()
            .filter(|m| *m != Method::CreateStream || variant == Variant::Web)
            .collect();
        Ok(CloudFrontProvider {
            id: config.id.clone(),
            variant,
            capability: Capability {
                methods,
                etags: true,
                max_batch_size: MAX_BATCH,
                list_filters: vec!["stream_id_prefix", "state"],
                stream_parent_pattern: "providers/{provider}",
                // The distribution Id CloudFront assigns (e.g. EDFDVBD6EXAMPLE): upper-case
                // letters and digits. AWS gives no length; streamgate's bound is kept.
                stream_id_pattern: IdPattern::new(IdChars::UpperAlphanumeric, MAX_SEGMENT_LEN),
                assigns_stream_ids: true,
                max_data_retention_hours: 0,
                max_tags: 0,
                max_page_size: MAX_PAGE,
                endpoints: super::endpoints::support(variant),
                max_endpoint_lifetime: super::endpoints::MAX_LIFETIME,
            },
            settings,
            core,
            handoff: Handoff::default(),
            hub: Arc::clone(hub),
            signer,
        })
    }

    fn workflow(&self) -> Workflow<'_> {
        Workflow {
            core: &self.core,
            settings: &self.settings,
            handoff: &self.handoff,
            provider: &self.id,
        }
    }

    fn name(&self, id: &str) -> StreamName {
        StreamName {
            provider: self.id.clone(),
            video: None,
            stream: id.to_string(),
        }
    }

    /// A distribution as a neutral stream: enabled → ACTIVE, disabled → DISABLED; CloudFront
    /// reports no creation time, so create_time is the last modification.
    fn stream(&self, d: Distribution) -> Stream {
        Stream {
            name: self.name(&d.id),
            etag: d.etag,
            state: if d.details.enabled {
                StreamState::Active
            } else {
                StreamState::Disabled
            },
            spec: StreamSpec::default(),
            create_time_ms: d.last_modified_ms,
            update_time_ms: d.last_modified_ms,
            provider_uid: d.arn,
            details: StreamDetails::CloudFront(Box::new(d.details)),
        }
    }

    fn changed(&self, stream: &Stream) {
        self.hub.publish(
            &stream.name.to_string(),
            Change::Updated(Box::new(stream.clone())),
        );
    }

    fn deleted(&self, name: &StreamName) {
        self.hub.publish(&name.to_string(), Change::Deleted);
    }

    /// Applies `patch` with If-Match. With a caller etag, a moved ETag is ABORTED; without
    /// one, the update re-reads and tries again a bounded number of times.
    async fn update(
        &self,
        name: &StreamName,
        patch: &StreamPatch,
        etag: Option<&str>,
        replayed: bool,
    ) -> Result<Stream> {
        let id = &name.stream;
        let applied = |config: &super::core::Config| {
            patch.enabled.is_none_or(|e| config.enabled() == e)
                && patch
                    .comment
                    .as_deref()
                    .is_none_or(|c| config.comment() == c)
        };
        for _ in 0..MAX_UPDATE_CONFLICTS {
            let mut current = self.core.config(id).await?;
            // A re-run whose PUT took effect has nothing left to do.
            if replayed && applied(&current.config) {
                return Ok(self.stream(self.core.get(id).await?));
            }
            if let Some(etag) = etag
                && etag != current.etag
            {
                return Err(Error::new(
                    Kind::EtagMismatch,
                    format!(
                        "{name} has changed: its ETag is {}, the request was made with {etag}",
                        current.etag
                    ),
                )
                .with_provider(&self.id));
            }
            if applied(&current.config) {
                return Ok(self.stream(self.core.get(id).await?));
            }
            if let Some(enabled) = patch.enabled {
                current.config.set_enabled(enabled);
            }
            if let Some(comment) = &patch.comment {
                current.config.set_comment(comment);
            }
            match self
                .core
                .put_config(id, &current.config, &current.etag)
                .await
            {
                Ok(d) => return Ok(self.stream(d)),
                Err(e) if e.kind() == Kind::EtagMismatch && etag.is_none() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(
            Kind::EtagMismatch,
            format!("{name} kept changing while it was being updated; try again"),
        )
        .with_provider(&self.id))
    }

    async fn delete(&self, op: &Operation, target: &Target<'_>) -> Result<Step> {
        let progress: Progress = if op.progress.is_null() {
            Progress::default()
        } else {
            serde_json::from_value(op.progress.clone())?
        };
        let phase = Phase::of_step(&op.step);
        let next = self
            .workflow()
            .step(
                &key(&op.id, &target.name.stream),
                phase,
                progress,
                target,
                op.replayed,
            )
            .await;
        match next {
            Ok(Next::Continue {
                phase,
                progress,
                after,
            }) => Ok(Step::Continue {
                step: phase.as_str().to_string(),
                progress: serde_json::to_value(progress)?,
                after,
            }),
            Ok(Next::Deleted { existed }) => {
                if existed {
                    self.deleted(target.name);
                }
                Ok(Step::Done(OpResult::Deleted {
                    name: target.name.clone(),
                    existed,
                }))
            }
            Err(e) => {
                if !e.is_temporary() {
                    self.handoff.forget(&op.id);
                }
                if phase.after_disable() {
                    return Err(left_disabled(&self.id, target.name, e));
                }
                Err(e)
            }
        }
    }

    /// Advances the workflow of every name that is due, then reports the least advanced
    /// phase as the operation's step.
    async fn batch_delete(&self, op: &Operation, names: &[StreamName]) -> Result<Step> {
        let mut entries: Vec<BatchEntry> = if op.progress.is_null() {
            vec![BatchEntry::default(); names.len()]
        } else {
            serde_json::from_value(op.progress.clone())?
        };
        let workflow = self.workflow();
        for (name, entry) in names.iter().zip(entries.iter_mut()) {
            if entry.done || entry.next_run_ms > now_ms() {
                continue;
            }
            let target = Target {
                name,
                caller_etag: None,
                allow_missing: false,
            };
            let replayed = op.replayed || entry.failures > 0;
            let next = workflow
                .step(
                    &key(&op.id, &name.stream),
                    entry.phase,
                    entry.progress.clone(),
                    &target,
                    replayed,
                )
                .await;
            match next {
                Ok(Next::Continue {
                    phase,
                    progress,
                    after,
                }) => {
                    entry.phase = phase;
                    entry.progress = progress;
                    entry.next_run_ms = now_ms() + after.as_millis() as i64;
                    entry.failures = 0;
                }
                Ok(Next::Deleted { .. }) => {
                    self.deleted(name);
                    entry.done = true;
                }
                Err(e) if e.is_temporary() && entry.failures < MAX_ITEM_FAILURES => {
                    entry.failures += 1;
                    entry.next_run_ms = now_ms() + 1000 * i64::from(entry.failures);
                }
                Err(e) => {
                    entry.done = true;
                    let e = if entry.phase.after_disable() {
                        left_disabled(&self.id, name, e)
                    } else {
                        e
                    };
                    entry.error = Some(e.persistent());
                }
            }
        }
        let pending: Vec<&BatchEntry> = entries.iter().filter(|e| !e.done).collect();
        let Some(phase) = pending.iter().map(|e| e.phase).min() else {
            self.handoff.forget(&op.id);
            return Ok(Step::Done(OpResult::Batch(
                names
                    .iter()
                    .zip(entries)
                    .map(|(name, entry)| BatchItem {
                        name: name.clone(),
                        error: entry.error,
                    })
                    .collect(),
            )));
        };
        let next_run = pending
            .iter()
            .map(|e| e.next_run_ms)
            .min()
            .unwrap_or_default();
        Ok(Step::Continue {
            step: phase.as_str().to_string(),
            progress: serde_json::to_value(&entries)?,
            after: Duration::from_millis((next_run - now_ms()).max(0) as u64),
        })
    }

    fn cancel_message(&self, op: &Operation) -> String {
        let phase = Phase::of_step(&op.step);
        match &op.request {
            OpRequest::Delete { name, .. } if phase.after_disable() => format!(
                "deletion of {name} cancelled before the DELETE: the distribution stays disabled \
                 (Enabled=false); delete it again, or enable it with UpdateStream"
            ),
            OpRequest::Delete { name, .. } if phase == Phase::Disabling && op.replayed => format!(
                "deletion of {name} cancelled while it was being disabled: it may be disabled \
                 now; read it with GetStream"
            ),
            OpRequest::Delete { name, .. } => {
                format!("deletion of {name} cancelled before it was disabled; nothing was changed")
            }
            OpRequest::BatchDelete { names, .. } => {
                let entries: Vec<BatchEntry> =
                    serde_json::from_value(op.progress.clone()).unwrap_or_default();
                let disabled: Vec<String> = names
                    .iter()
                    .zip(&entries)
                    .filter(|(_, e)| !e.done && e.phase.after_disable())
                    .map(|(name, _)| name.to_string())
                    .collect();
                if disabled.is_empty() {
                    "BatchDeleteStreams cancelled; no distribution was left disabled".to_string()
                } else {
                    format!(
                        "BatchDeleteStreams cancelled before the DELETE of {}: they stay disabled \
                         (Enabled=false)",
                        disabled.join(", ")
                    )
                }
            }
            request => format!(
                "{} cancelled before its step {:?}; nothing was changed",
                request.verb().as_str(),
                op.step
            ),
        }
    }
}

#[async_trait]
impl InstanceSettings for CloudFrontSettings {
    async fn build(
        self: Box<Self>,
        config: &ProviderConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Provider>> {
        let provider = CloudFrontProvider::new(
            config,
            *self,
            context.environment,
            context.hub,
            context.budgets,
        )
        .await?;
        Ok(Arc::new(provider))
    }
}

#[async_trait]
impl Provider for CloudFrontProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        self.variant.kind()
    }

    fn capability(&self) -> &Capability {
        &self.capability
    }

    fn watch_poll_interval(&self) -> Option<std::time::Duration> {
        Some(self.settings.watch_poll_interval)
    }

    async fn get_stream(&self, name: &StreamName) -> Result<Stream> {
        self.core.get(&name.stream).await.map(|d| self.stream(d))
    }

    async fn stream_endpoints(
        &self,
        name: &StreamName,
        request: &EndpointsRequest,
    ) -> Result<Vec<Endpoint>> {
        let signer = self.signer.as_ref();
        let target = super::endpoints::target(&self.id, signer, request)?;
        let distribution = self.core.get(&name.stream).await?;
        let endpoint = super::endpoints::playback(
            self.variant,
            &distribution.details.domain_name,
            signer,
            target,
            request,
        )?;
        Ok(vec![endpoint])
    }

    /// One CloudFront page per call (the position is CloudFront's marker); the filter is
    /// applied to that page, so a page may hold fewer streams than asked for.
    async fn list_streams(&self, _parent: &ParentName, query: &ListQuery) -> Result<Page<Stream>> {
        let (items, next) = self
            .core
            .list(query.position.as_deref(), query.page_size)
            .await?;
        let items = items
            .into_iter()
            .map(|d| self.stream(d))
            .filter(|s| {
                query
                    .stream_id_prefix
                    .as_deref()
                    .is_none_or(|p| s.name.stream.starts_with(p))
                    && query.state.is_none_or(|state| s.state == state)
            })
            .collect();
        Ok(Page { items, next })
    }

    /// No provider call: a delete's first step reads the distribution at once, and its
    /// failures (NOT_FOUND, ABORTED) come back in the operation the call returns.
    fn validate(&self, request: &OpRequest) -> Result<()> {
        match request {
            OpRequest::Create { spec, .. } => {
                let mut v = Violations::default();
                for (field, set) in [
                    ("stream.media_type", !spec.media_type.is_empty()),
                    ("stream.device_name", !spec.device_name.is_empty()),
                    ("stream.kms_key_id", !spec.kms_key_id.is_empty()),
                    (
                        "stream.data_retention_hours",
                        spec.data_retention_hours != 0,
                    ),
                ] {
                    if set {
                        v.add(field, "a CloudFront distribution has no such field");
                    }
                }
                v.absorb(match spec.details.as_deref() {
                    Some(StreamDetails::CloudFront(details)) => check_new(details),
                    _ => Err(Error::invalid_field(
                        "stream.cloudfront",
                        "required: the distribution's origin",
                    )),
                })?;
                v.finish()
            }
            OpRequest::Update { patch, .. } => {
                let mut v = Violations::default();
                if patch.has_neutral_fields() || !patch.has_cloudfront_fields() {
                    v.add(
                        "update_mask",
                        "a CloudFront distribution updates cloudfront.enabled and cloudfront.comment only",
                    );
                }
                if let Some(comment) = &patch.comment {
                    check_comment(comment, "stream.cloudfront.comment", &mut v);
                }
                v.finish()
            }
            OpRequest::Delete { .. } | OpRequest::BatchDelete { .. } => Ok(()),
        }
    }

    /// Nothing to read first: the workflow reads the distribution and checks the etag itself.
    async fn precheck(&self, _request: &OpRequest) -> Result<()> {
        Ok(())
    }

    async fn advance(&self, op: &Operation) -> Result<Step> {
        match &op.request {
            OpRequest::Create { spec, .. } => {
                let Some(StreamDetails::CloudFront(details)) = spec.details.as_deref() else {
                    return Err(Error::invalid_field(
                        "stream.cloudfront",
                        "required: the distribution's origin",
                    ));
                };
                let created = self
                    .core
                    .create(&caller_reference(&self.id, op), details)
                    .await?;
                let stream = self.stream(created);
                self.changed(&stream);
                Ok(Step::Done(OpResult::Stream(stream)))
            }
            OpRequest::Update { name, patch, etag } => {
                let stream = self
                    .update(name, patch, etag.as_deref(), op.replayed)
                    .await?;
                self.changed(&stream);
                Ok(Step::Done(OpResult::Stream(stream)))
            }
            OpRequest::Delete {
                name,
                etag,
                allow_missing,
            } => {
                let target = Target {
                    name,
                    caller_etag: etag.as_deref(),
                    allow_missing: *allow_missing,
                };
                self.delete(op, &target).await
            }
            OpRequest::BatchDelete { names, .. } => self.batch_delete(op, names).await,
        }
    }

    /// Stops any operation before its next step; a delete stopped after the disable leaves
    /// the distribution disabled, and the error says so.
    async fn cancel(&self, op: &Operation) -> Result<Option<Error>> {
        self.handoff.forget(&op.id);
        Ok(Some(
            Error::new(Kind::Cancelled, self.cancel_message(op)).with_provider(&self.id),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OpRequest;

    fn op(request_id: Option<&str>, id: &str) -> Operation {
        Operation {
            id: id.to_string(),
            request: OpRequest::BatchDelete {
                parent: ParentName {
                    provider: "cf".into(),
                    video: None,
                },
                names: Vec::new(),
            },
            principal: "anonymous".into(),
            request_id: request_id.map(str::to_string),
            fingerprint: String::new(),
            step: "accepted".into(),
            progress: serde_json::Value::Null,
            next_run_ms: 0,
            attempts: 0,
            retries: 0,
            cancel_requested: false,
            replayed: false,
            outcome: None,
            warnings: Vec::new(),
            create_time_ms: 0,
            update_time_ms: 0,
        }
    }

    #[test]
    fn caller_reference_follows_the_request_id() {
        let a = caller_reference("cf", &op(Some("r-1"), "op1"));
        assert_eq!(a, caller_reference("cf", &op(Some("r-1"), "op2")));
        assert_ne!(a, caller_reference("cf", &op(Some("r-2"), "op1")));
        assert_ne!(a, caller_reference("other", &op(Some("r-1"), "op1")));
        let b = caller_reference("cf", &op(None, "op1"));
        assert_eq!(b, caller_reference("cf", &op(None, "op1")));
        assert_ne!(b, caller_reference("cf", &op(None, "op2")));
        assert!(a.starts_with("streamgate-") && a.len() <= 128);
    }

    #[test]
    fn batch_entries_survive_the_store() {
        let entry = BatchEntry {
            phase: Phase::Waiting,
            progress: Progress {
                etag: Some("E2".into()),
                conflicts: 1,
                waiting_since_ms: Some(5),
                settling: true,
            },
            ..BatchEntry::default()
        };
        let back: Vec<BatchEntry> =
            serde_json::from_value(serde_json::to_value(vec![entry]).unwrap()).unwrap();
        assert_eq!(back[0].phase, Phase::Waiting);
        assert_eq!(back[0].progress.etag.as_deref(), Some("E2"));
        assert!(back[0].progress.settling);
    }
}
