//! The `kinesis-video` provider: streams of AWS Kinesis Video Streams, through
//! `aws-sdk-kinesisvideo`.
//!
//! What KVS does and how it maps:
//! - CreateStream is asynchronous: the operation polls DescribeStream until ACTIVE.
//! - The etag is the stream's `Version`. Update and UpdateDataRetention send it as
//!   `CurrentVersion`; DeleteStream sends the caller's etag as `CurrentVersion` (no etag: KVS
//!   checks only the creation time). Tag changes do not change the KVS version.
//! - DeleteStream is done once KVS accepted it (the stream is DELETING; KVS removes it later).
//! - `ClientLimitExceededException` (HTTP 400) is throttling the SDK does not retry: the
//!   adapter retries it with backoff inside the caller's deadline, and the outbound limits
//!   keep the gateway under the KVS quotas in the first place (both on the instance's
//!   [`CallPath`](crate::providers::call::CallPath)).
//! - ListStreams filters by name prefix only (StreamNameCondition BEGINS_WITH) and returns no
//!   tags: GetStream reads them.
//! - WatchStream polls DescribeStream (`watch_poll_interval`), since KVS pushes nothing.
//! - GetStreamEndpoints: HLS/DASH session URLs (GetDataEndpoint, then archived media) and the
//!   PutMedia endpoint; a stream that retains no data cannot be played back.
//!
//! - `config.rs`: the kind-specific keys, and the outbound limits with the KVS quotas.
//! - `backend.rs`: the Provider impl: reads, prechecks and the steps of each operation.
//! - `core.rs`: the SDK calls, on the instance's call path.
//! - `endpoints.rs`: the endpoints' shape and KVS's rules for them.
//! - `error.rs`: SDK errors → the taxonomy.

mod backend;
mod config;
mod core;
mod endpoints;
mod error;

pub use backend::KinesisVideoProvider;
pub use config::KvsSettings;

use crate::providers::KindEntry;

/// The kind name in the configuration.
pub const KIND: &str = "kinesis-video";

/// The kind's entry in [`KINDS`](crate::providers::KINDS).
pub const ENTRY: KindEntry = KindEntry {
    names: &[KIND],
    prepare: |config| Ok(Box::new(KvsSettings::parse(config)?)),
};
