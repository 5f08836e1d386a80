//! [`KinesisVideoProvider`]: the Provider impl of `kinesis-video` on [`KvsCore`]: reads, the
//! prechecks, and the steps of its operations (create and poll until ACTIVE; update in three
//! steps — stream, retention, tags; delete one or a batch), including how a replayed step
//! recognises its own earlier effect. Also how an instance is built from its [`KvsSettings`].

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
        let info = self
            .core
            .describe(&name.stream)
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
        let info = self.core.describe(&name.stream).await?.ok_or_else(|| {
            Error::new(
                Kind::StreamNotFound,
                format!("stream {name} was deleted while it was being created"),
            )
            .with_provider(&self.id)
        })?;
        match state(info.status()) {
            StreamState::Creating
                if now_ms() - op.create_time_ms
                    >= self.settings.creation_timeout.as_millis() as i64 =>
            {
                Err(Error::new(
                    Kind::DeadlineExceeded,
                    format!(
                        "stream {name} was still CREATING after creation_timeout ({}); it is \
                         left as KVS has it",
                        humantime::format_duration(self.settings.creation_timeout)
                    ),
                )
                .with_provider(&self.id))
            }
            StreamState::Creating => Ok(continue_at(
                STEP_CREATING,
                self.settings.creation_poll_interval,
            )),
            StreamState::Active | StreamState::Updating | StreamState::Disabled => {
                Ok(Step::Done(OpResult::Stream(self.with_tags(&info).await?)))
            }
            StreamState::Deleting => Err(Error::new(
                Kind::StreamNotFound,
                format!("stream {name} is being deleted"),
            )
            .with_provider(&self.id)),
        }
    }

    async fn update_step(
        &self,
        op: &Operation,
        name: &StreamName,
        patch: &StreamPatch,
        etag: Option<&str>,
    ) -> Result<Step> {
        let info = self
            .core
            .describe(&name.stream)
            .await?
            .ok_or_else(|| self.not_found(name))?;
        let version = info.version().unwrap_or_default();
        match op.step.as_str() {
            STEP_RETENTION => {
                if let Some(hours) = patch.data_retention_hours {
                    let current = info.data_retention_in_hours().unwrap_or_default();
                    if current != hours {
                        self.core
                            .update_retention(&name.stream, version, current, hours)
                            .await?;
                    }
                }
                Ok(continue_at(STEP_TAGGING, Duration::ZERO))
            }
            STEP_TAGGING => {
                if let Some(tags) = &patch.tags {
                    self.core.set_tags(&name.stream, tags).await?;
                }
                Ok(Step::Done(OpResult::Stream(self.read(name).await?)))
            }
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
                } else if let Some(to) = retention {
                    self.core
                        .update_retention(&name.stream, expected, from, to)
                        .await?;
                    return Ok(continue_at(STEP_TAGGING, Duration::ZERO));
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

    /// Deletes one stream of a batch and reports its outcome.
    async fn batch_item(&self, name: &StreamName, replayed: bool) -> BatchItem {
        BatchItem {
            name: name.clone(),
            error: self.delete_one(name, None, false, replayed).await.err(),
        }
    }

    /// Deletes one stream; `Ok(false)` when it was missing and that is allowed.
    async fn delete_one(
        &self,
        name: &StreamName,
        etag: Option<&str>,
        allow_missing: bool,
        replayed: bool,
    ) -> Result<bool> {
        match self.core.describe(&name.stream).await? {
            None if replayed => Ok(true),
            None if allow_missing => Ok(false),
            None => Err(self.not_found(name)),
            Some(info) if state(info.status()) == StreamState::Deleting && replayed => Ok(true),
            Some(info) => {
                let arn = info.stream_arn().unwrap_or_default();
                self.core.delete(&name.stream, arn, etag).await?;
                Ok(true)
            }
        }
    }
}

#[async_trait]
impl InstanceSettings for KvsSettings {
    async fn build(
        self: Box<Self>,
        config: &ProviderConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Provider>> {
        let provider = KinesisVideoProvider::new(config, *self, context.environment).await;
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

    async fn precheck(&self, request: &OpRequest) -> Result<()> {
        crate::providers::refuse_details(request, "a Kinesis Video stream")?;
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
            } => match self.core.describe(&name.stream).await? {
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
                let existed = self
                    .delete_one(name, etag.as_deref(), *allow_missing, op.replayed)
                    .await?;
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
