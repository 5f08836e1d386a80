//! [`LocalProvider`]: the provider trait on [`LocalCore`]: the prechecks, the steps of its
//! operations and their cancelling, and the notice of every change to every replica (whose
//! `watchers.rs` tells WatchStream). Also how an instance is built from its [`LocalSettings`].

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::config::LocalSettings;
use super::core::{LocalCore, check_etag, check_writable};
use super::error::{LocalError, parse_error};
use crate::config::ProviderConfig;
use crate::domain::capability::{IdChars, IdPattern};
use crate::domain::names::MAX_SEGMENT_LEN;
use crate::domain::page::MAX_PAGE_SIZE;
use crate::domain::{
    BatchItem, Capability, Endpoint, EndpointsRequest, ListQuery, OpRequest, OpResult, Operation,
    Page, ParentName, Stream, StreamName, StreamState,
};
use crate::error::{Error, Kind, Result};
use crate::providers::{BuildContext, InstanceSettings, Provider, Step};
use crate::store::{Notice, Notifier, SqlStore};

/// The step that makes a created stream ACTIVE.
const STEP_CREATING: &str = "creating";

/// One `local` provider instance.
pub struct LocalProvider {
    id: String,
    capability: Capability,
    settings: LocalSettings,
    core: LocalCore,
    // Where every change is announced, to this replica's WatchStream subscribers and the other
    // replicas' alike (`watchers.rs` re-reads the stream for them).
    notifier: Arc<Notifier>,
}

impl LocalProvider {
    /// Builds the instance of `config` from its parsed settings.
    pub fn new(
        config: &ProviderConfig,
        settings: LocalSettings,
        store: &SqlStore,
        notifier: &Arc<Notifier>,
    ) -> Self {
        LocalProvider {
            id: config.id.clone(),
            capability: Capability {
                methods: settings.methods.clone(),
                etags: true,
                max_batch_size: 1000,
                list_filters: vec!["stream_id_prefix", "state"],
                stream_parent_pattern: "providers/{provider}",
                // The id is the caller's, kept by streamgate: the set every kind accepts.
                stream_id_pattern: IdPattern::new(IdChars::Name, MAX_SEGMENT_LEN),
                assigns_stream_ids: false,
                max_data_retention_hours: 87_600,
                max_tags: 50,
                max_page_size: MAX_PAGE_SIZE,
                endpoints: super::endpoints::support(),
                max_endpoint_lifetime: super::endpoints::MAX_LIFETIME,
            },
            settings,
            core: LocalCore::new(
                store.db().clone(),
                &config.id,
                crate::store::OperationStore::exclusive(store),
            ),
            notifier: Arc::clone(notifier),
        }
    }

    fn err(&self, error: LocalError) -> Error {
        parse_error(&self.id, error)
    }

    /// Tells every replica that the stream `name` changed (committed): their watchers of it
    /// re-read it. A notice PostgreSQL does not take is logged and counted by the notifier.
    async fn changed(&self, name: &StreamName) {
        let _ = self
            .notifier
            .publish(Notice::StreamChanged(name.to_string()))
            .await;
    }

    /// Deletes one stream for a delete or batch operation. A stream that is gone when the
    /// step is replayed was deleted by the earlier attempt.
    async fn delete_one(
        &self,
        name: &StreamName,
        etag: Option<&str>,
        allow_missing: bool,
        rerun: bool,
    ) -> Result<bool> {
        match self.core.delete(&name.stream, etag).await {
            Ok(_) => {
                self.changed(name).await;
                Ok(true)
            }
            Err(LocalError::NotFound(_)) if rerun => Ok(true),
            Err(LocalError::NotFound(_)) if allow_missing => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }
}

#[async_trait]
impl InstanceSettings for LocalSettings {
    async fn build(
        self: Box<Self>,
        config: &ProviderConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Provider>> {
        let provider: Arc<dyn Provider> = Arc::new(LocalProvider::new(
            config,
            *self,
            context.store,
            context.notifier,
        ));
        super::watchers::spawn(&provider, context.hub, context.notifier);
        Ok(provider)
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn kind(&self) -> &'static str {
        super::KIND
    }

    fn capability(&self) -> &Capability {
        &self.capability
    }

    async fn get_stream(&self, name: &StreamName) -> Result<Stream> {
        self.core
            .require(&name.stream)
            .await
            .map(|row| row.stream)
            .map_err(|e| self.err(e))
    }

    async fn stream_endpoints(
        &self,
        name: &StreamName,
        request: &EndpointsRequest,
    ) -> Result<Vec<Endpoint>> {
        self.get_stream(name).await?;
        super::endpoints::endpoints(name, request)
    }

    async fn list_streams(&self, _parent: &ParentName, query: &ListQuery) -> Result<Page<Stream>> {
        self.core.list(query).await.map_err(|e| self.err(e))
    }

    fn validate(&self, request: &OpRequest) -> Result<()> {
        crate::providers::refuse_details(request, "a local stream")
    }

    async fn precheck(&self, request: &OpRequest) -> Result<()> {
        let checked = match request {
            OpRequest::Create { name, .. } => match self.core.get(&name.stream).await {
                Ok(Some(_)) => Err(LocalError::AlreadyExists(name.clone())),
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            },
            OpRequest::Update { name, etag, .. } => match self.core.require(&name.stream).await {
                Ok(row) => check_writable(&row, etag.as_deref(), name.clone()),
                Err(e) => Err(e),
            },
            OpRequest::Delete {
                name,
                etag,
                allow_missing,
            } => match self.core.get(&name.stream).await {
                Ok(Some(row)) => check_etag(&row, etag.as_deref(), name.clone()),
                Ok(None) if *allow_missing => Ok(()),
                Ok(None) => Err(LocalError::NotFound(name.clone())),
                Err(e) => Err(e),
            },
            OpRequest::BatchDelete { .. } => Ok(()),
        };
        checked.map_err(|e| self.err(e))
    }

    async fn advance(&self, op: &Operation) -> Result<Step> {
        let rerun = op.replayed;
        match (&op.request, op.step.as_str()) {
            (OpRequest::Create { name, .. }, STEP_CREATING) => {
                match self
                    .core
                    .activate(&name.stream, &op.id)
                    .await
                    .map_err(|e| self.err(e))?
                {
                    Some(stream) => {
                        self.changed(name).await;
                        Ok(Step::Done(OpResult::Stream(stream)))
                    }
                    None => Err(Error::new(
                        Kind::StreamNotFound,
                        format!("stream {name} was deleted while it was being created"),
                    )
                    .with_provider(&self.id)),
                }
            }
            (OpRequest::Create { name, spec }, _) => {
                // With no create delay the stream is never CREATING for a while: it is
                // inserted ACTIVE, one statement and one step instead of two of each.
                let state = if self.settings.create_delay.is_zero() {
                    StreamState::Active
                } else {
                    StreamState::Creating
                };
                let stream = self
                    .core
                    .insert(&name.stream, spec, &op.id, state)
                    .await
                    .map_err(|e| self.err(e))?;
                self.changed(name).await;
                // A replayed step finds the row it made, in whatever state it left it.
                if stream.state != StreamState::Creating {
                    return Ok(Step::Done(OpResult::Stream(stream)));
                }
                let elapsed = crate::domain::now_ms() - stream.create_time_ms;
                let after = self
                    .settings
                    .create_delay
                    .saturating_sub(Duration::from_millis(elapsed.max(0) as u64));
                Ok(Step::Continue {
                    step: STEP_CREATING.to_string(),
                    progress: serde_json::Value::Null,
                    after,
                })
            }
            (OpRequest::Update { name, patch, etag }, _) => {
                let stream = self
                    .core
                    .update(&name.stream, patch, etag.as_deref(), &op.id)
                    .await
                    .map_err(|e| self.err(e))?;
                self.changed(name).await;
                Ok(Step::Done(OpResult::Stream(stream)))
            }
            (
                OpRequest::Delete {
                    name,
                    etag,
                    allow_missing,
                },
                _,
            ) => {
                let existed = self
                    .delete_one(name, etag.as_deref(), *allow_missing, rerun)
                    .await?;
                Ok(Step::Done(OpResult::Deleted {
                    name: name.clone(),
                    existed,
                }))
            }
            (OpRequest::BatchDelete { names, .. }, _) => {
                let mut items = Vec::with_capacity(names.len());
                for name in names {
                    let outcome = self.delete_one(name, None, false, rerun).await;
                    if let Err(e) = &outcome
                        && e.is_temporary()
                    {
                        return Err(e.clone());
                    }
                    items.push(BatchItem {
                        name: name.clone(),
                        error: outcome.err(),
                    });
                }
                Ok(Step::Done(OpResult::Batch(items)))
            }
        }
    }

    async fn cancel(&self, op: &Operation) -> Result<Option<Error>> {
        let message = match (&op.request, op.step.as_str()) {
            (OpRequest::Create { name, .. }, STEP_CREATING) => {
                let removed = self
                    .core
                    .remove_created_by(&name.stream, &op.id)
                    .await
                    .map_err(|e| self.err(e))?;
                if removed {
                    self.changed(name).await;
                }
                format!("creation of {name} cancelled; the CREATING stream was removed")
            }
            (request, step) => format!(
                "{} cancelled before its step {step:?}; nothing was changed",
                request.verb().as_str()
            ),
        };
        Ok(Some(
            Error::new(Kind::Cancelled, message).with_provider(&self.id),
        ))
    }
}
