//! [`AliyunVodProvider`]: the provider trait on ApsaraVideo VOD: reads, the prechecks, and
//! the steps of a delete and of a batch delete with the per-name bookkeeping; the calls
//! themselves are in `core.rs`. Also how an instance is built from its [`AliyunVodSettings`].
//!
//! A batch delete runs in durable steps, so that every name's outcome is known even across a
//! restart of the gateway:
//!
//! 1. `accepted`: one GetPlayInfo per video records which names exist. A name its video does
//!    not list fails with STREAM_NOT_FOUND, a missing video fails its names with
//!    VIDEO_NOT_FOUND; neither is sent to DeleteStream. A video whose status is not Normal
//!    (GetPlayInfo answers Forbidden.IllegalStatus) has its names sent all the same.
//! 2. `deleting`, once per DeleteStream call: up to 20 existing job ids of one video, so a
//!    batch makes the fewest calls possible (⌈n/20⌉ per video). If VOD answers that a stream
//!    or the video does not exist (someone deleted it meanwhile, or an earlier try of this
//!    step did), GetPlayInfo tells which ids are gone (reported deleted: they existed when the
//!    batch began) and which remain (sent again).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::config::AliyunVodSettings;
use super::core::{PlayInfo, VideoStreams, VodCore, time_ms};
use crate::config::{Environment, ProviderConfig};
use crate::domain::capability::{IdChars, IdPattern};
use crate::domain::names::MAX_SEGMENT_LEN;
use crate::domain::page::MAX_PAGE_SIZE;
use crate::domain::{
    AliyunVodDetails, BatchItem, Capability, Endpoint, EndpointsRequest, ListQuery, Method,
    OpRequest, OpResult, Operation, Page, ParentName, Stream, StreamDetails, StreamName,
    StreamSpec, StreamState,
};
use crate::error::{Error, Kind, Result};
use crate::providers::{BuildContext, InstanceSettings, Provider, Step};
use crate::store::SharedBudgets;

/// The step that sends one DeleteStream call of a batch.
const STEP_DELETING: &str = "deleting";
/// The most job ids one DeleteStream call takes (all of one video).
const MAX_JOB_IDS_PER_CALL: usize = 20;
/// How many times a DeleteStream call is sent again for ids that are still there after VOD
/// said some id of the call did not exist.
const MAX_RESENDS: usize = 3;

/// Where one name of a batch stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Slot {
    /// Exists, not yet deleted.
    Pending,
    /// Deleted.
    Deleted,
    /// Will not be deleted, for this reason.
    Failed(Error),
}

/// The progress of a batch between its steps: one slot per requested name, in request order.
#[derive(Debug, Serialize, Deserialize)]
struct BatchProgress {
    slots: Vec<Slot>,
}

/// The names of a batch grouped by video, in order of first appearance: (video, indexes).
fn by_video(names: &[StreamName]) -> Vec<(&str, Vec<usize>)> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let video = name.video.as_deref().unwrap_or_default();
        match groups.iter_mut().find(|(v, _)| *v == video) {
            Some((_, indexes)) => indexes.push(i),
            None => groups.push((video, vec![i])),
        }
    }
    groups
}

/// Whether a DeleteStream error says that something of the call no longer exists.
fn gone(error: &Error) -> bool {
    matches!(error.kind(), Kind::StreamNotFound | Kind::VideoNotFound)
}

/// One `aliyun-vod` provider instance.
pub struct AliyunVodProvider {
    id: String,
    region: String,
    capability: Capability,
    core: VodCore,
}

impl AliyunVodProvider {
    /// Builds the instance from its entry and the environment (for the credentials), parsing
    /// the entry's keys.
    pub fn new(config: &ProviderConfig, environment: &Environment) -> Result<Self> {
        let settings = AliyunVodSettings::parse(config).map_err(Error::internal)?;
        Self::with_settings(config, &settings, environment, None)
    }

    /// Builds the instance of `config` from its parsed settings and the environment (for the
    /// credentials), its outbound limits fleet-wide in `budgets` when given.
    pub fn with_settings(
        config: &ProviderConfig,
        settings: &AliyunVodSettings,
        environment: &Environment,
        budgets: Option<&Arc<SharedBudgets>>,
    ) -> Result<Self> {
        let credentials = settings
            .credentials(&config.id, environment)
            .map_err(Error::internal)?;
        let region = config.region.clone().unwrap_or_default();
        let core = VodCore::new(
            &config.id,
            &region,
            config.endpoint_url.as_deref(),
            credentials,
            settings,
            budgets,
        )?;
        Ok(AliyunVodProvider {
            id: config.id.clone(),
            region,
            capability: Capability {
                // VOD makes streams by transcoding and has nothing to update or to watch.
                methods: vec![
                    Method::GetStream,
                    Method::ListStreams,
                    Method::DeleteStream,
                    Method::BatchDeleteStreams,
                    Method::GetStreamEndpoints,
                ],
                etags: false,
                max_batch_size: 1000,
                list_filters: vec!["stream_id_prefix", "state"],
                stream_parent_pattern: "providers/{provider}/videos/{video}",
                // A JobId. VOD documents no pattern (the ids it issues are 32 hex digits);
                // the set every kind accepts holds no ',' (DeleteStream's JobIds separator).
                stream_id_pattern: IdPattern::new(IdChars::Name, MAX_SEGMENT_LEN),
                assigns_stream_ids: true,
                max_data_retention_hours: 0,
                max_tags: 0,
                max_page_size: MAX_PAGE_SIZE,
                endpoints: super::endpoints::support(),
                max_endpoint_lifetime: super::endpoints::MAX_LIFETIME,
            },
            core,
        })
    }

    fn video<'a>(&self, name: &'a StreamName, field: &str) -> Result<&'a str> {
        name.video.as_deref().ok_or_else(|| {
            Error::invalid_field(
                field,
                format!(
                    "streams of providers/{} are named providers/{}/videos/{{video}}/streams/{{job}}",
                    self.id, self.id
                ),
            )
        })
    }

    fn stream(&self, video: &str, info: &PlayInfo) -> Stream {
        let created = time_ms(&info.creation_time);
        let modified = time_ms(&info.modification_time);
        let media_type = match (info.stream_type.as_str(), info.format.as_str()) {
            (_, "") => String::new(),
            ("", format) => format!("video/{format}"),
            (kind, format) => format!("{kind}/{format}"),
        };
        Stream {
            name: StreamName {
                provider: self.id.clone(),
                video: Some(video.to_string()),
                stream: info.job_id.clone(),
            },
            etag: String::new(),
            // Invisible: an older stream of the same definition and format, kept but not played.
            state: if info.status == "Invisible" {
                StreamState::Disabled
            } else {
                StreamState::Active
            },
            spec: StreamSpec {
                media_type,
                ..StreamSpec::default()
            },
            create_time_ms: created,
            update_time_ms: if modified > 0 { modified } else { created },
            provider_uid: info.job_id.clone(),
            details: StreamDetails::AliyunVod(Box::new(AliyunVodDetails {
                video_id: video.to_string(),
                definition: info.definition.clone(),
                format: info.format.clone(),
                stream_type: info.stream_type.clone(),
                status: info.status.clone(),
            })),
        }
    }

    fn not_listed(&self, name: &StreamName, listed: &VideoStreams) -> Error {
        let error = Error::new(
            Kind::StreamNotFound,
            format!("stream {name} does not exist: GetPlayInfo does not list it"),
        )
        .with_provider(&self.id);
        match &listed.request_id {
            Some(id) => error.with_provider_request_id(id),
            None => error,
        }
    }

    /// Step 1 of a batch: which names exist.
    async fn inspect(&self, names: &[StreamName]) -> Vec<Slot> {
        let mut slots = vec![Slot::Pending; names.len()];
        for (video, indexes) in by_video(names) {
            match self.core.streams(video).await {
                Ok(listed) => {
                    for i in indexes {
                        if !listed.contains(&names[i].stream) {
                            slots[i] = Slot::Failed(self.not_listed(&names[i], &listed));
                        }
                    }
                }
                // GetPlayInfo refuses a video whose status is not Normal, DeleteStream does
                // not: its names are sent.
                Err(e) if e.kind() == Kind::StreamNotReady => {}
                Err(e) => {
                    for i in indexes {
                        slots[i] = Slot::Failed(e.clone());
                    }
                }
            }
        }
        slots
    }

    /// One `deleting` step of a batch: the next DeleteStream call, and its truthful outcome
    /// per name.
    async fn delete_next_call(&self, names: &[StreamName], slots: &mut [Slot]) {
        let next = by_video(names).into_iter().find_map(|(video, indexes)| {
            let pending: Vec<usize> = indexes
                .into_iter()
                .filter(|i| matches!(slots[*i], Slot::Pending))
                .take(MAX_JOB_IDS_PER_CALL)
                .collect();
            (!pending.is_empty()).then_some((video, pending))
        });
        let Some((video, mut left)) = next else {
            return;
        };
        for _ in 0..MAX_RESENDS {
            let ids: Vec<&str> = left.iter().map(|i| names[*i].stream.as_str()).collect();
            let error = match self.core.delete_streams(video, &ids).await.result {
                Ok(()) => {
                    for i in &left {
                        slots[*i] = Slot::Deleted;
                    }
                    return;
                }
                Err(e) => e,
            };
            if !gone(&error) {
                for i in &left {
                    slots[*i] = Slot::Failed(error.clone());
                }
                return;
            }
            // VOD names neither the id it did not find nor what it did with the others.
            let still: Vec<usize> = match self.core.streams(video).await {
                Ok(listed) => left
                    .iter()
                    .copied()
                    .filter(|i| listed.contains(&names[*i].stream))
                    .collect(),
                Err(e) if e.kind() == Kind::VideoNotFound => Vec::new(),
                Err(e) => {
                    for i in &left {
                        slots[*i] = Slot::Failed(e.clone());
                    }
                    return;
                }
            };
            for i in left.iter().filter(|i| !still.contains(i)) {
                slots[*i] = Slot::Deleted;
            }
            if still.is_empty() {
                return;
            }
            left = still;
        }
        let error = Error::new(
            Kind::ProviderUnavailable,
            format!(
                "DeleteStream of video {video} kept answering that a stream does not exist \
                 while GetPlayInfo still lists it"
            ),
        )
        .with_provider(&self.id);
        for i in left {
            slots[i] = Slot::Failed(error.clone());
        }
    }

    fn batch_step(&self, names: &[StreamName], slots: Vec<Slot>) -> Result<Step> {
        if slots.iter().any(|s| matches!(s, Slot::Pending)) {
            return Ok(Step::Continue {
                step: STEP_DELETING.to_string(),
                progress: serde_json::to_value(BatchProgress { slots })?,
                after: Duration::ZERO,
            });
        }
        let items = names
            .iter()
            .zip(slots)
            .map(|(name, slot)| BatchItem {
                name: name.clone(),
                error: match slot {
                    Slot::Failed(e) => Some(e),
                    Slot::Deleted | Slot::Pending => None,
                },
            })
            .collect();
        Ok(Step::Done(OpResult::Batch(items)))
    }

    fn unsupported(&self, request: &OpRequest) -> Error {
        Error::new(
            Kind::CapabilityUnsupported,
            format!(
                "providers/{} (kind aliyun-vod) does not support {}: VOD makes streams by \
                 transcoding",
                self.id,
                request.verb().as_str()
            ),
        )
        .with_provider(&self.id)
    }
}

#[async_trait]
impl InstanceSettings for AliyunVodSettings {
    async fn build(
        self: Box<Self>,
        config: &ProviderConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Provider>> {
        let provider =
            AliyunVodProvider::with_settings(config, &self, context.environment, context.budgets)?;
        Ok(Arc::new(provider))
    }
}

#[async_trait]
impl Provider for AliyunVodProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        super::KIND
    }

    fn region(&self) -> Option<&str> {
        Some(&self.region)
    }

    fn capability(&self) -> &Capability {
        &self.capability
    }

    async fn stream_endpoints(
        &self,
        name: &StreamName,
        request: &EndpointsRequest,
    ) -> Result<Vec<Endpoint>> {
        let video = self.video(name, "name")?;
        let listed = self
            .core
            .playable_streams(video, request.lifetime.as_secs().max(1))
            .await?;
        let info = listed
            .streams
            .iter()
            .find(|s| s.job_id == name.stream)
            .ok_or_else(|| self.not_listed(name, &listed))?;
        Ok(vec![super::endpoints::playback(
            &name.stream,
            info,
            request,
        )?])
    }

    async fn get_stream(&self, name: &StreamName) -> Result<Stream> {
        let video = self.video(name, "name")?;
        let listed = self.core.streams(video).await?;
        listed
            .streams
            .iter()
            .find(|s| s.job_id == name.stream)
            .map(|info| self.stream(video, info))
            .ok_or_else(|| self.not_listed(name, &listed))
    }

    async fn list_streams(&self, parent: &ParentName, query: &ListQuery) -> Result<Page<Stream>> {
        let video = parent.video.as_deref().ok_or_else(|| {
            Error::invalid_field(
                "parent",
                format!(
                    "aliyun-vod lists the streams of one video: providers/{}/videos/{{video}}",
                    self.id
                ),
            )
        })?;
        let listed = self.core.streams(video).await?;
        let mut streams: Vec<Stream> = listed
            .streams
            .iter()
            .filter(|s| query.position.as_ref().is_none_or(|p| s.job_id > *p))
            .filter(|s| {
                query
                    .stream_id_prefix
                    .as_ref()
                    .is_none_or(|p| s.job_id.starts_with(p.as_str()))
            })
            .map(|s| self.stream(video, s))
            .filter(|s| query.state.is_none_or(|state| s.state == state))
            .collect();
        streams.sort_by(|a, b| a.name.stream.cmp(&b.name.stream));
        streams.dedup_by(|a, b| a.name.stream == b.name.stream);
        let next = if streams.len() > query.page_size {
            streams.truncate(query.page_size);
            streams.last().map(|s| s.name.stream.clone())
        } else {
            None
        };
        Ok(Page {
            items: streams,
            next,
        })
    }

    fn validate(&self, request: &OpRequest) -> Result<()> {
        match request {
            OpRequest::Create { .. } | OpRequest::Update { .. } => Err(self.unsupported(request)),
            OpRequest::Delete { name, etag, .. } => {
                self.video(name, "name")?;
                match etag {
                    Some(_) => Err(Error::invalid_field(
                        "etag",
                        "aliyun-vod streams have no etags: VOD deletes unconditionally",
                    )),
                    None => Ok(()),
                }
            }
            OpRequest::BatchDelete { names, .. } => names
                .iter()
                .enumerate()
                .try_for_each(|(i, name)| self.video(name, &format!("names[{i}]")).map(|_| ())),
        }
    }

    /// Nothing to read first: VOD answers a missing video or stream to DeleteStream itself.
    async fn precheck(&self, _request: &OpRequest) -> Result<()> {
        Ok(())
    }

    async fn advance(&self, op: &Operation) -> Result<Step> {
        match (&op.request, op.step.as_str()) {
            (OpRequest::Create { .. } | OpRequest::Update { .. }, _) => {
                Err(self.unsupported(&op.request))
            }
            (
                OpRequest::Delete {
                    name,
                    allow_missing,
                    ..
                },
                _,
            ) => {
                let video = self.video(name, "name")?;
                let reply = self.core.delete_streams(video, &[&name.stream]).await;
                let existed = match reply.result {
                    Ok(()) => true,
                    // An earlier try (before a restart, or in the retries) may have deleted it.
                    Err(e) if gone(&e) && (op.replayed || reply.after_failed_try) => true,
                    Err(e) if gone(&e) && *allow_missing => false,
                    Err(e) => return Err(e),
                };
                Ok(Step::Done(OpResult::Deleted {
                    name: name.clone(),
                    existed,
                }))
            }
            (OpRequest::BatchDelete { names, .. }, STEP_DELETING) => {
                let BatchProgress { mut slots } = serde_json::from_value(op.progress.clone())?;
                self.delete_next_call(names, &mut slots).await;
                self.batch_step(names, slots)
            }
            (OpRequest::BatchDelete { names, .. }, _) => {
                let slots = self.inspect(names).await;
                self.batch_step(names, slots)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(video: &str, job: &str) -> StreamName {
        StreamName {
            provider: "vod".into(),
            video: Some(video.into()),
            stream: job.into(),
        }
    }

    #[test]
    fn groups_names_by_video_in_request_order() {
        let names = [name("b", "1"), name("a", "2"), name("b", "3")];
        assert_eq!(by_video(&names), vec![("b", vec![0, 2]), ("a", vec![1])]);
    }
}
