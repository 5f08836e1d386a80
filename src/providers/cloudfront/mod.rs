//! The CloudFront kinds: `cloudfront-streaming` (legacy RTMP streaming distributions) and
//! `cloudfront` (web distributions, today's HLS/DASH delivery), on `aws-sdk-cloudfront`.
//!
//! A stream is one distribution, named by its Id. Deleting one is a workflow, not a call
//! (disable with If-Match, wait until Deployed, delete with the newest ETag): `workflow.rs`
//! runs it as the steps of a durable operation, for both kinds and for every name of a batch.
//!
//! Outbound calls stay under `[providers.outbound_limits]`: `reads` and `changes` per second,
//! each try counted. AWS publishes no rate for this API, so the defaults (10 and 2) are
//! conservative guesses; throttling that still happens is retried inside the caller's deadline.
//!
//! - `config.rs`: the kind-specific keys (`deploy_poll_interval`, `deploy_timeout`,
//!   `watch_poll_interval`, `outbound_limits`, the signing key pair).
//! - `backend.rs`: the [`Provider`](crate::providers::Provider) impl: reads, prechecks, the
//!   steps of create, update, delete and batch delete, cancelling, watch announcements.
//! - `core.rs`: the SDK calls of both kinds behind one interface, on the instance's
//!   [`CallPath`](crate::providers::call::CallPath).
//! - `workflow.rs`: the disable → wait → delete state machine.
//! - `endpoints.rs`: playback URLs (GetStreamEndpoints); `signer.rs`: their signing.
//! - `error.rs`: the adapter's errors and [`parse_error`](error::parse_error).

mod backend;
mod config;
mod core;
mod endpoints;
mod error;
mod signer;
mod workflow;

pub use backend::CloudFrontProvider;
pub use config::{CloudFrontLimits, CloudFrontSettings};

use crate::providers::KindEntry;

/// The kind name of legacy streaming (RTMP) distributions.
pub const KIND_STREAMING: &str = "cloudfront-streaming";
/// The kind name of web distributions.
pub const KIND_WEB: &str = "cloudfront";

/// The entry of both kinds in [`KINDS`](crate::providers::KINDS): one adapter, the API picked
/// by the kind's [`Variant`] when the instance is built.
pub const ENTRY: KindEntry = KindEntry {
    names: &[KIND_STREAMING, KIND_WEB],
    prepare: |config| Ok(Box::new(CloudFrontSettings::parse(config)?)),
};

/// Which of the two distribution APIs an instance uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `/2020-05-31/streaming-distribution`: no creation (RTMP was discontinued in 2020).
    Streaming,
    /// `/2020-05-31/distribution`.
    Web,
}

impl Variant {
    /// The variant of a configured kind, if it is one of the two.
    pub fn of_kind(kind: &str) -> Option<Self> {
        match kind {
            KIND_STREAMING => Some(Variant::Streaming),
            KIND_WEB => Some(Variant::Web),
            _ => None,
        }
    }

    /// The kind name.
    pub fn kind(self) -> &'static str {
        match self {
            Variant::Streaming => KIND_STREAMING,
            Variant::Web => KIND_WEB,
        }
    }
}
