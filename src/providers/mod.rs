//! The provider trait, and the registry of configured provider instances.
//!
//! An adapter answers reads directly and drives mutations as steps of a durable operation:
//! the runner (`crate::operations`) calls [`Provider::advance`] until it returns
//! [`Step::Done`], persisting the step name and the adapter's progress value after each call,
//! so that a restarted gateway resumes where it stopped. Adding a kind means: a folder like
//! `local/`, its [`Capability`], and one line in [`Registry::build`].

pub mod aliyun_vod;
pub mod aws;
pub mod cloudfront;
pub mod kinesis_video;
pub mod limits;
pub mod local;
pub mod retry;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{ConfigError, Environment, ProviderConfig};
use crate::domain::{
    Capability, Endpoint, EndpointsRequest, ListQuery, Method, OpRequest, OpResult, Operation,
    Page, ParentName, Stream, StreamName,
};
use crate::error::{Error, Kind, Result};
use crate::store::SqlStore;
use crate::watch::WatchHub;

/// What one call of [`Provider::advance`] achieved.
#[derive(Debug)]
pub enum Step {
    /// Run again, at step `step` with `progress`, after `after`.
    Continue {
        /// The next step's name (shown in the operation's metadata).
        step: String,
        /// Adapter state for the next step.
        progress: serde_json::Value,
        /// How long to wait before the next step.
        after: Duration,
    },
    /// The operation succeeded.
    Done(OpResult),
}

/// One configured provider instance.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The instance id.
    fn id(&self) -> &str;
    /// The kind, as written in the configuration.
    fn kind(&self) -> &'static str;
    /// The region, for kinds that have regions.
    fn region(&self) -> Option<&str> {
        None
    }
    /// What this instance supports.
    fn capability(&self) -> &Capability;
    /// How often WatchStream re-reads a stream, for kinds whose changes are not all made
    /// through the gateway (a cloud console, another tool). `None`: every change is published
    /// to the watch hub by the adapter itself.
    fn watch_poll_interval(&self) -> Option<Duration> {
        None
    }

    /// Reads one stream.
    async fn get_stream(&self, name: &StreamName) -> Result<Stream>;
    /// Lists streams under `parent`.
    async fn list_streams(&self, parent: &ParentName, query: &ListQuery) -> Result<Page<Stream>>;
    /// Read-only checks made while the caller waits, before the operation is recorded
    /// (existence, etags), so that obvious failures come back as the call's own status.
    async fn precheck(&self, request: &OpRequest) -> Result<()>;
    /// Runs the operation's next step.
    async fn advance(&self, op: &Operation) -> Result<Step>;
    /// Stops an operation a caller cancelled, cleaning up as the kind requires. Returns the
    /// error to record, or `None` when the operation can no longer be stopped and must go on.
    async fn cancel(&self, op: &Operation) -> Result<Option<Error>> {
        Ok(Some(Error::new(
            Kind::Cancelled,
            format!("cancelled before step {:?}", op.step),
        )))
    }
    /// Where to send and where to play the stream, one endpoint per requested purpose, in
    /// request order. `request` is checked against the capability's endpoints already.
    async fn stream_endpoints(
        &self,
        _name: &StreamName,
        _request: &EndpointsRequest,
    ) -> Result<Vec<Endpoint>> {
        Err(Error::new(
            Kind::CapabilityUnsupported,
            format!(
                "providers/{} (kind {}) gives no stream endpoints",
                self.id(),
                self.kind()
            ),
        )
        .with_provider(self.id()))
    }
}

/// Checks the kind-specific keys of every entry without connecting to anything.
pub fn check_configs(configs: &[ProviderConfig]) -> Result<(), ConfigError> {
    for config in configs {
        match config.kind.as_str() {
            local::KIND => local::LocalSettings::parse(config).map(|_| ())?,
            kinesis_video::KIND => kinesis_video::KvsSettings::parse(config).map(|_| ())?,
            aliyun_vod::KIND => aliyun_vod::AliyunVodSettings::parse(config).map(|_| ())?,
            cloudfront::KIND_STREAMING | cloudfront::KIND_WEB => {
                cloudfront::CloudFrontSettings::parse(config).map(|_| ())?
            }
            other => {
                return Err(ConfigError::Invalid(format!(
                    "provider {:?}: kind {other:?} is not available in this build (available: {})",
                    config.id,
                    [
                        local::KIND,
                        kinesis_video::KIND,
                        aliyun_vod::KIND,
                        cloudfront::KIND_STREAMING,
                        cloudfront::KIND_WEB
                    ]
                    .join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// Refuses provider-specific fields a kind does not have (`what` names its streams in the
/// message, e.g. "a local stream"): CloudFront details on create, `cloudfront.*` on update.
pub fn refuse_details(request: &OpRequest, what: &str) -> Result<()> {
    match request {
        OpRequest::Create { spec, .. } if spec.details.is_some() => Err(Error::invalid_field(
            "stream",
            format!("{what} takes no provider-specific details"),
        )),
        OpRequest::Update { patch, .. } if patch.has_cloudfront_fields() => {
            Err(Error::invalid_field(
                "update_mask",
                "cloudfront.* fields belong to CloudFront distributions",
            ))
        }
        _ => Ok(()),
    }
}

/// The configured provider instances, by id.
pub struct Registry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

impl Registry {
    /// Builds every configured instance.
    pub async fn build(
        configs: &[ProviderConfig],
        environment: &Environment,
        store: &SqlStore,
        hub: &Arc<WatchHub>,
    ) -> Result<Self> {
        let mut providers: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
        for config in configs {
            let provider: Arc<dyn Provider> = match config.kind.as_str() {
                local::KIND => Arc::new(local::LocalProvider::new(config, store, hub)?),
                kinesis_video::KIND => {
                    Arc::new(kinesis_video::KinesisVideoProvider::new(config, environment).await?)
                }
                aliyun_vod::KIND => {
                    Arc::new(aliyun_vod::AliyunVodProvider::new(config, environment)?)
                }
                cloudfront::KIND_STREAMING | cloudfront::KIND_WEB => {
                    Arc::new(cloudfront::CloudFrontProvider::new(config, environment, hub).await?)
                }
                other => {
                    return Err(Error::internal(format_args!(
                        "provider {:?}: kind {other:?} is not available in this build",
                        config.id
                    )));
                }
            };
            providers.insert(config.id.clone(), provider);
        }
        Ok(Registry { providers })
    }

    /// The instance `id`, or NOT_FOUND. Labels the current call's telemetry with the
    /// instance (only configured ones: callers cannot invent label values).
    pub fn get(&self, id: &str) -> Result<&Arc<dyn Provider>> {
        let provider = self.providers.get(id).ok_or_else(|| {
            Error::new(
                Kind::ProviderNotFound,
                format!("no provider instance providers/{id} is configured"),
            )
        })?;
        crate::telemetry::record_provider(id);
        Ok(provider)
    }

    /// The instance `id` if it supports `method`: NOT_FOUND or UNIMPLEMENTED otherwise.
    pub fn for_method(&self, id: &str, method: Method) -> Result<&Arc<dyn Provider>> {
        let provider = self.get(id)?;
        if provider.capability().supports(method) {
            Ok(provider)
        } else {
            Err(Error::new(
                Kind::CapabilityUnsupported,
                format!(
                    "providers/{id} (kind {}) does not support {}",
                    provider.kind(),
                    method.as_str()
                ),
            )
            .with_provider(id))
        }
    }

    /// Every instance, by id.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.providers.values()
    }
}
