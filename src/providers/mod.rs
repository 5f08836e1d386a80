//! The providers: the contract every adapter fulfils, the table of kinds and the registry of
//! configured instances, the one path every provider API call takes, and the adapters.
//!
//! - `contract.rs`: the [`Provider`] trait, [`Step`], [`refuse_details`]; what a kind's entry
//!   in the table is ([`KindEntry`], [`InstanceSettings`], [`BuildContext`]).
//! - `registry.rs`: [`KINDS`], the table of kinds; [`Prepared`], every instance's settings
//!   parsed and checked once; the [`Registry`] built from them.
//! - `call.rs`: [`CallPath`](call::CallPath): outbound limit → retry → span and metrics.
//! - `limits.rs`, `retry.rs`: the outbound limits and the retries `call.rs` composes.
//! - `aws.rs`: the SDK configuration the AWS kinds share.
//! - one folder per kind: `local/`, `kinesis_video/`, `aliyun_vod/`, `cloudfront/`, each with
//!   its `mod.rs` (what the provider does and how it maps), `config.rs` (its keys),
//!   `backend.rs` (the Provider impl and the steps of its operations), `core.rs` (the calls
//!   to the provider), `endpoints.rs` (what GetStreamEndpoints answers) and `error.rs` (its
//!   errors → the taxonomy).
//!
//! Adding a kind: see `registry.rs`.

pub mod aliyun_vod;
pub mod aws;
pub mod call;
pub mod cloudfront;
mod contract;
pub mod kinesis_video;
pub mod limits;
pub mod local;
mod registry;
pub mod retry;

pub use contract::{BuildContext, InstanceSettings, KindEntry, Provider, Step, refuse_details};
pub use registry::{KINDS, Prepared, Registry, kinds};
