//! [`KinesisVideoProvider`]: the Provider impl of `kinesis-video` on [`KvsCore`]: reads, the
//! prechecks, and the steps of its operations (create and poll until ACTIVE; update in three
//! steps — stream, retention, tags; delete one or a batch), including how a replayed step
//! recognises its own earlier effect. Also how an instance is built from its [`KvsSettings`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesisvideo::types::{ApiName, StreamInfo};
use futures::StreamExt;

use super::config::KvsSettings;
use super::core::{KvsCore, state};
use crate::config::{Environment, ProviderConfig};
use crate::domain::capability::{IdChars, IdPattern};
use crate::domain::names::MAX_SEGMENT_LEN;
use crate::domain::page::MAX_PAGE_SIZE;
use crate::domain::{
    BatchItem, Capability, Endpoint, EndpointPurpose, EndpointsRequest, ListQuery, Method,
    OpRequest, OpResult, Operation, Page, ParentName, Stream, StreamName, StreamPatch, StreamState,
    now_ms,
};
use crate::error::{Error, Kind, Result};
use crate::providers::{BuildContext, InstanceSettings, Provider, Step};
use crate::store::SharedBudgets;

const STEP_CREATING: &str = "creating";
const STEP_RETENTION: &str = "retention";
const STEP_TAGGING: &str = "tagging";
/// How many names of a batch are in flight at once (the outbound limits pace them).
const BATCH_CONCURRENCY: usize = 16;
/// How far a stream's creation time may precede its create operation and still be that
/// operation's own stream, when a replayed create finds the stream existing.
const CLOCK_SKEW_MS: i64 = 60_000;

/// One `kinesis-video` instance: an account and region.
pub struct KinesisVideoProvider {
    id: String,
    region: Option<String>,
    capability: Capability,
    settings: KvsSettings,
    core: KvsCore,
}

fn continue_at(step: &str, after: Duration) -> Step {
    Step::Continue {
        step: step.to_string(),
        progress: serde_json::Value::Null,
        after,
    }
}

impl KinesisVideoProvider {
    /// Builds the instance of `config` from its parsed settings, and its SDK client.
    pub async fn new(
        config: &ProviderConfig,
        settings: KvsSettings,
        environment: &Environment,
        budgets: Option<&Arc<SharedBudgets>>,
    ) -> Self {
        let sdk = crate::providers::aws::sdk_config(config, environment).await;
        KinesisVideoProvider {
            id: config.id.clone(),
            region: config.region.clone(),
            capability: Capability {
                methods: Method::ALL.to_vec(),
                etags: true,
                max_batch_size: 1000,
                list_filters: vec!["stream_id_prefix"],
                stream_parent_pattern: "providers/{provider}",
                // KVS StreamName (botocore kinesisvideo 2017-09-30): [a-zA-Z0-9_.-]+, 1-256.
                stream_id_pattern: IdPattern::new(IdChars::Name, MAX_SEGMENT_LEN),
                assigns_stream_ids: false,
                max_data_retention_hours: 87_600,
                max_tags: 50,
                max_page_size: MAX_PAGE_SIZE,
                endpoints: super::endpoints::support(),
                max_endpoint_lifetime: super::endpoints::MAX_LIFETIME,
            },
            core: KvsCore::new(
                &config.id,
                &sdk,
                config.endpoint_url.is_some(),
                &settings.outbound_limits,
                budgets,
            ),
            settings,
        }
    }

    fn not_found(&self, name: &StreamName) -> Error {
        Error::new(
            Kind::StreamNotFound,
            format!("stream {name} does not exist"),
        )
        .with_provider(&self.id)
    }

    async fn read(&self, name: &StreamName) -> Result<Stream> {
        // `described`: a missing stream is KVS's own NOT_FOUND, with its code and request id.
        let info = self
            .core
            .described(&name.stream)
            .await?
            .ok_or_else(|| self.not_found(name))?;
        self.with_tags(&info).await
    }

    /// The neutral stream of `info`, with its tags when `read_tags` is on.
    async fn with_tags(&self, info: &StreamInfo) -> Result<Stream> {
        let tags = match (self.settings.read_tags, info.stream_name()) {
            (true, Some(name)) => self.core.tags(name).await?,
            _ => Default::default(),
        };
        Ok(self.core.stream(info, tags))
    }

    /// How long `op` has run since it was accepted.
    fn elapsed(op: &Operation) -> Duration {
        Duration::from_millis((now_ms() - op.create_time_ms).max(0) as u64)
    }

    /// The step that waits `step` out again, or DEADLINE_EXCEEDED once `op` has waited
    /// `bound` since its acceptance; `why` says what it waited for and what is left as it is.
    fn wait_again(&self, op: &Operation, step: &str, bound: Duration, why: String) -> Result<Step> {
        if Self::elapsed(op) < bound {
            return Ok(continue_at(step, self.settings.creation_poll_interval));
        }
        Err(Error::new(
            Kind::DeadlineExceeded,
            format!("{why} after {}", humantime::format_duration(bound)),
        )
        .with_provider(&self.id))
    }

    /// The end of an operation that made or changed the stream of `info`: the stream with its
    /// tags read back, or, when that follow-up read fails, with `known` tags and a warning —
    /// the provider's success stands either way.
    async fn finish(&self, info: &StreamInfo, known: &BTreeMap<String, String>) -> Step {
        if !self.settings.read_tags {
            return Step::Done(OpResult::Stream(self.core.stream(info, Default::default())));
        }
        match self.with_tags(info).await {
            Ok(stream) => Step::Done(OpResult::Stream(stream)),
            Err(e) => Step::DoneWithWarnings {
                result: OpResult::Stream(self.core.stream(info, known.clone())),
                warnings: vec![format!(
                    "the stream's tags could not be read back ({}); its tags are shown as \
                     requested",
                    summary(&e)
                )],
            },
        }
    }

    async fn create_step(&self, op: &Operation, name: &StreamName) -> Result<Step> {
        let OpRequest::Create { spec, .. } = &op.request else {
            return Err(Error::internal("create step of another request"));
        };
        if op.step != STEP_CREATING {
            match self.core.create(&name.stream, spec).await {
                Ok(_) => {}
                // A replayed create that finds a stream made after it was accepted made it.
                Err(e) if e.kind() == Kind::StreamAlreadyExists && op.replayed => {
                    let ours = self.core.describe(&name.stream).await?.is_some_and(|info| {
                        info.creation_time()
                            .and_then(|t| t.to_millis().ok())
                            .is_some_and(|t| t >= op.create_time_ms - CLOCK_SKEW_MS)
                    });
                    if !ours {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            return Ok(continue_at(
                STEP_CREATING,
                self.settings.creation_poll_interval,
            ));
        }
        // KVS is eventually consistent: a stream just made may be invisible for a moment.
        let Some(info) = self.core.describe(&name.stream).await? else {
            return self.wait_again(
                op,
                STEP_CREATING,
                self.settings.visibility_timeout,
                format!(
                    "stream {name} was made but never became visible (visibility_timeout); it \
                     may have been deleted while it was being created"
                ),
            );
        };
        match state(info.status()) {
            StreamState::Creating => self.wait_again(
                op,
                STEP_CREATING,
                self.settings.creation_timeout,
                format!(
                    "stream {name} is left as KVS has it: it was still CREATING (creation_timeout)"
                ),
            ),
            StreamState::Active | StreamState::Updating | StreamState::Disabled => {
                Ok(self.finish(&info, &spec.tags).await)
            }
            StreamState::Deleting => Err(Error::new(
                Kind::StreamNotFound,
                format!("stream {name} is being deleted"),
            )
            .with_provider(&self.id)),
        }
    }

    /// The stream of an update or delete step, waited for while KVS would refuse changes to
    /// it (CREATING, UPDATING): `Err(step)` is the step to return instead.
    async fn active(
        &self,
        op: &Operation,
        name: &StreamName,
        done: &str,
    ) -> Result<std::result::Result<StreamInfo, Step>> {
        let info = self
            .core
            .described(&name.stream)
            .await?
            .ok_or_else(|| self.not_found(name))?;
        match state(info.status()) {
            status @ (StreamState::Creating | StreamState::Updating) => self
                .wait_again(
                    op,
                    &op.step,
                    self.settings.update_timeout,
                    format!(
                        "stream {name} was still {} (update_timeout); {done}",
                        status.as_str()
                    ),
                )
                .map(Err),
            _ => Ok(Ok(info)),
        }
    }

    async fn update_step(
        &self,
        op: &Operation,
        name: &StreamName,
        patch: &StreamPatch,
        etag: Option<&str>,
    ) -> Result<Step> {
        let done = applied(&op.step, patch);
        let info = match self.active(op, name, &done).await? {
            Ok(info) => info,
            Err(wait) => return Ok(wait),
        };
        let version = info.version().unwrap_or_default();
        let poll = self.settings.creation_poll_interval;
        match op.step.as_str() {
            STEP_RETENTION => {
                if let Some(hours) = patch.data_retention_hours {
                    let current = info.data_retention_in_hours().unwrap_or_default();
                    if current != hours {
                        self.core
                            .update_retention(&name.stream, version, current, hours)
                            .await?;
                        return Ok(continue_at(STEP_TAGGING, poll));
                    }
                }
                Ok(continue_at(STEP_TAGGING, Duration::ZERO))
            }
            STEP_TAGGING => match &patch.tags {
                Some(tags) => {
                    self.core.set_tags(&name.stream, tags).await?;
                    Ok(Step::Done(OpResult::Stream(
                        self.core.stream(&info, tags.clone()),
                    )))
                }
                None => Ok(self.finish(&info, &Default::default()).await),
            },
            _ => {
                let device = patch
                    .device_name
                    .as_deref()
                    .filter(|d| Some(*d) != info.device_name());
                let media = patch
                    .media_type
                    .as_deref()
                    .filter(|m| Some(*m) != info.media_type());
                let from = info.data_retention_in_hours().unwrap_or_default();
                let retention = patch.data_retention_hours.filter(|h| *h != from);
                // KVS checks the caller's etag itself, as CurrentVersion of the first versioned
                // call. A replayed step may follow its own earlier change: it uses the version now.
                let expected = match etag {
                    Some(etag) if !op.replayed => etag,
                    _ => version,
                };
                if device.is_some() || media.is_some() {
                    self.core
                        .update(&name.stream, expected, device, media)
                        .await?;
                    // UpdateStream leaves the stream UPDATING for a moment.
                    return Ok(continue_at(STEP_RETENTION, poll));
                } else if let Some(to) = retention {
                    self.core
                        .update_retention(&name.stream, expected, from, to)
                        .await?;
                    return Ok(continue_at(STEP_TAGGING, poll));
                } else if expected != version {
                    // Only tags change, and tagging takes no version: compare here.
                    return Err(Error::new(
                        Kind::EtagMismatch,
                        format!("stream {name} has changed since the etag was read"),
                    )
                    .with_provider(&self.id));
                }
                Ok(continue_at(STEP_RETENTION, Duration::ZERO))
            }
        }
    }

    /// Deletes one stream of a batch and reports its outcome; a stream KVS would refuse to
    /// delete now (CREATING, UPDATING) is that name's STREAM_IN_USE.
    async fn batch_item(&self, name: &StreamName, replayed: bool) -> BatchItem {
        let error = match self.delete_one(name, None, false, replayed).await {
            Ok(Deletion::Busy(status)) => Some(
                Error::new(
                    Kind::StreamInUse,
                    format!(
                        "stream {name} is {}; delete it again once it is ACTIVE",
                        status.as_str()
                    ),
                )
                .with_provider(&self.id),
            ),
            Ok(_) => None,
            Err(e) => Some(e),
        };
        BatchItem {
            name: name.clone(),
            error,
        }
    }

    /// Deletes one stream, unless it is missing (allowed or not) or in a passing state.
    /// A stream already DELETING counts as gone: someone deleted it already.
    async fn delete_one(
        &self,
        name: &StreamName,
        etag: Option<&str>,
        allow_missing: bool,
        replayed: bool,
    ) -> Result<Deletion> {
        let found = match self.core.described(&name.stream).await {
            Ok(Some(info)) if state(info.status()) != StreamState::Deleting => Ok(info),
            Ok(_) => Err(Error::new(
                Kind::StreamNotFound,
                format!("stream {name} is being deleted already"),
            )
            .with_provider(&self.id)),
            Err(e) if e.kind() == Kind::StreamNotFound => Err(e),
            Err(e) => return Err(e),
        };
        match found {
            Err(_) if replayed => Ok(Deletion::Deleted),
            Err(_) if allow_missing => Ok(Deletion::Missing),
            Err(e) => Err(e),
            Ok(info) => match state(info.status()) {
                status @ (StreamState::Creating | StreamState::Updating) => {
                    Ok(Deletion::Busy(status))
                }
                _ => {
                    let arn = info.stream_arn().unwrap_or_default();
                    self.core.delete(&name.stream, arn, etag).await?;
                    Ok(Deletion::Deleted)
                }
            },
        }
    }
}

/// What [`KinesisVideoProvider::delete_one`] found and did.
enum Deletion {
    /// KVS took the DeleteStream (or a replayed step finds its own deletion done).
    Deleted,
    /// The stream was missing (or DELETING), and that is allowed.
    Missing,
    /// The stream is in a passing state KVS refuses deletions in.
    Busy(StreamState),
}

/// Whether `etag` has the form of a KVS stream Version (`[a-zA-Z0-9]+`, at most 64).
fn is_version(etag: &str) -> bool {
    (1..=64).contains(&etag.len()) && etag.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A provider error in a sentence: its code (or kind) and message.
fn summary(e: &Error) -> String {
    let code = e.provider_code().unwrap_or(e.kind().reason());
    format!("{code}: {}", e.message())
}

/// What an update stopped at `step` has changed, and what not (for a wait that times out).
fn applied(step: &str, patch: &StreamPatch) -> String {
    let stream_fields = patch.device_name.is_some() || patch.media_type.is_some();
    match step {
        STEP_RETENTION if stream_fields => {
            "the device name and media type were changed; retention and tags were not".into()
        }
        STEP_TAGGING => "the stream fields and retention were changed; the tags were not".into(),
        _ => "nothing was changed".into(),
    }
}

#[async_trait]
impl InstanceSettings for KvsSettings {
    async fn build(
        self: Box<Self>,
        config: &ProviderConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Provider>> {
        let provider =
            KinesisVideoProvider::new(config, *self, context.environment, context.budgets).await;
        Ok(Arc::new(provider))
    }
}

#[async_trait]
impl Provider for KinesisVideoProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        super::KIND
    }

    fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    fn capability(&self) -> &Capability {
        &self.capability
    }

    fn watch_poll_interval(&self) -> Option<Duration> {
        Some(self.settings.watch_poll_interval)
    }

    async fn get_stream(&self, name: &StreamName) -> Result<Stream> {
        self.read(name).await
    }

    async fn stream_endpoints(
        &self,
        name: &StreamName,
        request: &EndpointsRequest,
    ) -> Result<Vec<Endpoint>> {
        let playback = request.purposes.contains(&EndpointPurpose::Playback);
        let lifetime_s = if playback {
            super::endpoints::check_lifetime(request.lifetime)?
        } else {
            0
        };
        let info = self
            .core
            .described(&name.stream)
            .await?
            .ok_or_else(|| self.not_found(name))?;
        let mut endpoints = Vec::with_capacity(request.purposes.len());
        for &purpose in &request.purposes {
            let endpoint = match purpose {
                EndpointPurpose::Playback => {
                    super::endpoints::check_retention(
                        &self.id,
                        &name.stream,
                        info.data_retention_in_hours().unwrap_or_default(),
                    )?;
                    let protocol = request
                        .protocol_for(&self.capability.endpoints, purpose)
                        .ok_or_else(|| Error::internal("kinesis-video: no playback protocol"))?;
                    let uri = self
                        .core
                        .session_url(&name.stream, protocol, request.playback, lifetime_s)
                        .await?;
                    super::endpoints::playback(protocol, uri, lifetime_s)
                }
                EndpointPurpose::Ingest => {
                    let answered = self
                        .core
                        .data_endpoint(&name.stream, ApiName::PutMedia)
                        .await?;
                    // An emulator's data plane is at its endpoint_url, not where it says.
                    let data_endpoint = self.core.pinned_endpoint().unwrap_or(&answered);
                    super::endpoints::ingest(
                        data_endpoint,
                        info.stream_arn().unwrap_or_default(),
                        self.region.as_deref().unwrap_or_default(),
                    )
                }
            };
            endpoints.push(endpoint);
        }
        Ok(endpoints)
    }

    async fn list_streams(&self, _parent: &ParentName, query: &ListQuery) -> Result<Page<Stream>> {
        let (infos, next) = self
            .core
            .list(
                query.stream_id_prefix.as_deref(),
                query.position.clone(),
                query.page_size,
            )
            .await?;
        Ok(Page {
            items: infos
                .iter()
                .map(|info| self.core.stream(info, Default::default()))
                .collect(),
            next,
        })
    }

    fn validate(&self, request: &OpRequest) -> Result<()> {
        crate::providers::refuse_details(request, "a Kinesis Video stream")?;
        // An etag is the stream's Version, whose form KVS publishes: [a-zA-Z0-9]+, 1–64.
        let (etag, field) = match request {
            OpRequest::Update { etag, .. } => (etag.as_deref(), "stream.etag"),
            OpRequest::Delete { etag, .. } => (etag.as_deref(), "etag"),
            OpRequest::Create { .. } | OpRequest::BatchDelete { .. } => (None, ""),
        };
        match etag {
            Some(etag) if !is_version(etag) => Err(Error::invalid_field(
                field,
                "not an etag of a Kinesis Video stream: 1 to 64 ASCII letters and digits",
            )),
            _ => Ok(()),
        }
    }

    async fn precheck(&self, request: &OpRequest) -> Result<()> {
        // Existence only: etags are checked by KVS itself (VersionMismatchException).
        match request {
            OpRequest::Create { name, .. } => match self.core.describe(&name.stream).await? {
                Some(_) => Err(Error::new(
                    Kind::StreamAlreadyExists,
                    format!("stream {name} exists already"),
                )
                .with_provider(&self.id)),
                None => Ok(()),
            },
            OpRequest::Update { name, .. }
            | OpRequest::Delete {
                name,
                allow_missing: false,
                ..
            } => match self.core.described(&name.stream).await? {
                Some(_) => Ok(()),
                None => Err(self.not_found(name)),
            },
            OpRequest::Delete { .. } | OpRequest::BatchDelete { .. } => Ok(()),
        }
    }

    async fn advance(&self, op: &Operation) -> Result<Step> {
        match &op.request {
            OpRequest::Create { name, .. } => self.create_step(op, name).await,
            OpRequest::Update { name, patch, etag } => {
                self.update_step(op, name, patch, etag.as_deref()).await
            }
            OpRequest::Delete {
                name,
                etag,
                allow_missing,
            } => {
                let existed = match self
                    .delete_one(name, etag.as_deref(), *allow_missing, op.replayed)
                    .await?
                {
                    Deletion::Deleted => true,
                    Deletion::Missing => false,
                    Deletion::Busy(status) => {
                        return self.wait_again(
                            op,
                            &op.step,
                            self.settings.update_timeout,
                            format!(
                                "stream {name} was still {} (update_timeout); it was not deleted",
                                status.as_str()
                            ),
                        );
                    }
                };
                Ok(Step::Done(OpResult::Deleted {
                    name: name.clone(),
                    existed,
                }))
            }
            OpRequest::BatchDelete { names, .. } => {
                let deletions: Vec<_> = names
                    .iter()
                    .map(|name| self.batch_item(name, op.replayed))
                    .collect();
                let items = futures::stream::iter(deletions)
                    .buffered(BATCH_CONCURRENCY)
                    .collect()
                    .await;
                Ok(Step::Done(OpResult::Batch(items)))
            }
        }
    }
}
