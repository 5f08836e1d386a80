//! The contract every adapter fulfils: the [`Provider`] trait, the [`Step`] an operation's
//! step ends with, [`refuse_details`] (the check of provider-specific fields every kind
//! without them shares), and how a kind is configured and built: its [`KindEntry`] in the
//! table of kinds, its [`InstanceSettings`], the [`BuildContext`] it is built with.
//!
//! An adapter answers reads directly and drives mutations as steps of a durable operation:
//! the operation runner calls [`Provider::advance`] until it returns [`Step::Done`],
//! persisting the step name and the adapter's progress value after each call, so that a
//! restarted gateway resumes where it stopped.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{ConfigError, Environment, ProviderConfig};
use crate::domain::{
    Capability, Endpoint, EndpointsRequest, ListQuery, OpRequest, OpResult, Operation, Page,
    ParentName, Stream, StreamName,
};
use crate::error::{Error, Kind, Result};
use crate::store::{Notifier, SharedBudgets, SqlStore};
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
    /// The operation succeeded, but a follow-up read or a secondary change did not: the
    /// result shows what is known, and the warnings say what it does not show.
    DoneWithWarnings {
        /// What is known of the result.
        result: OpResult,
        /// What could not be read or done, one sentence each.
        warnings: Vec<String>,
    },
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
    /// The kind's own checks of a request that need no provider call (fields the kind does
    /// not have, the form of its etags), made for `validate_only` requests too, so that a
    /// dry run refuses what the real call would.
    fn validate(&self, request: &OpRequest) -> Result<()> {
        let _ = request;
        Ok(())
    }
    /// Read-only provider checks made while the caller waits, after [`Provider::validate`]
    /// and before the operation is recorded (existence, etags), so that obvious failures come
    /// back as the call's own status. Not made for `validate_only` (no provider call).
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

/// One provider kind: the names it goes by in the configuration, and how an entry of it is
/// parsed and checked; what that gives builds the instance ([`InstanceSettings::build`]).
pub struct KindEntry {
    /// The values of `kind` that select this kind (CloudFront has two, one per API).
    pub names: &'static [&'static str],
    /// Parses and checks an entry's kind-specific keys, without connecting to anything.
    pub prepare: fn(&ProviderConfig) -> Result<Box<dyn InstanceSettings>, ConfigError>,
}

/// What building an instance may need besides its own entry.
pub struct BuildContext<'a> {
    /// The environment the gateway was started with (for credentials).
    pub environment: &'a Environment,
    /// The shared store (the `local` kind keeps its streams there).
    pub store: &'a SqlStore,
    /// Where changes made through the gateway are announced to WatchStream subscribers.
    pub hub: &'a Arc<WatchHub>,
    /// Notices between the replicas sharing the store (the `local` kind's changes).
    pub notifier: &'a Arc<Notifier>,
    /// The outbound-limit turns every replica of a PostgreSQL store shares; `None` on SQLite.
    pub budgets: Option<&'a Arc<SharedBudgets>>,
}

/// One instance's kind-specific settings, parsed and checked: what its instance is built from.
#[async_trait]
pub trait InstanceSettings: Send + Sync {
    /// Builds the instance of `config` (the entry these settings were parsed from); may
    /// connect (an SDK's configuration loads here), never parses the entry again.
    async fn build(
        self: Box<Self>,
        config: &ProviderConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Provider>>;
}
