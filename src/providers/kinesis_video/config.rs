//! The keys of a `kind = "kinesis-video"` provider entry.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, ProviderConfig, de_duration};

/// Kind-specific settings of a `kinesis-video` instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvsSettings {
    /// How often a stream in a passing state (CREATING, UPDATING, not yet visible) is polled
    /// by an operation waiting for it (default `"1s"`).
    #[serde(default = "default_creation_poll", deserialize_with = "de_duration")]
    pub creation_poll_interval: Duration,
    /// How long a new stream may stay CREATING before its operation fails DEADLINE_EXCEEDED
    /// (default `"10m"`; KVS documents no bound, streams normally take seconds).
    #[serde(default = "default_creation_timeout", deserialize_with = "de_duration")]
    pub creation_timeout: Duration,
    /// How long, counted from the operation's acceptance, a stream just created may stay
    /// invisible to DescribeStream (KVS is eventually consistent) before the create fails
    /// (default `"30s"`).
    #[serde(
        default = "default_visibility_timeout",
        deserialize_with = "de_duration"
    )]
    pub visibility_timeout: Duration,
    /// How long, counted from the operation's acceptance, an update or delete waits for the
    /// stream to leave CREATING or UPDATING (KVS refuses changes until it is ACTIVE) before it
    /// fails DEADLINE_EXCEEDED, saying what it had changed (default `"5m"`).
    #[serde(default = "default_update_timeout", deserialize_with = "de_duration")]
    pub update_timeout: Duration,
    /// How often WatchStream polls DescribeStream (default `"2s"`).
    #[serde(default = "default_watch_poll", deserialize_with = "de_duration")]
    pub watch_poll_interval: Duration,
    /// Whether reads include tags (one ListTagsForStream call per read; default true). With
    /// false, reads show no tags and cost one call less.
    #[serde(default = "default_true")]
    pub read_tags: bool,
    /// Outbound calls per second, matching the KVS quotas by default.
    #[serde(default)]
    pub outbound_limits: KvsLimits,
}

/// Outbound calls per second (`[providers.outbound_limits]`): the account's quotas, for the
/// whole fleet of replicas on a PostgreSQL store (never divided by the replicas).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvsLimits {
    /// CreateStream per account (quota: 50).
    pub create_stream: NonZeroU32,
    /// DeleteStream per account (quota: 50).
    pub delete_stream: NonZeroU32,
    /// DeleteStream per stream (quota: 5).
    pub delete_stream_per_stream: NonZeroU32,
    /// DescribeStream per account (quota: 300).
    pub describe_stream: NonZeroU32,
    /// DescribeStream per stream (quota: 5).
    pub describe_stream_per_stream: NonZeroU32,
    /// ListStreams per account (quota: 50).
    pub list_streams: NonZeroU32,
    /// Each of UpdateStream, UpdateDataRetention, TagStream, UntagStream and ListTagsForStream
    /// per account, each on a budget of its own (quota: 50 each).
    pub other: NonZeroU32,
    /// Each of the same five per stream, each on a budget of its own (quota: 5 each).
    pub other_per_stream: NonZeroU32,
    /// GetDataEndpoint per account (quota: 300).
    pub get_data_endpoint: NonZeroU32,
    /// GetDataEndpoint per stream (quota: 5).
    pub get_data_endpoint_per_stream: NonZeroU32,
    /// GetHLSStreamingSessionURL and GetDASHStreamingSessionURL per stream (quota: 25 each;
    /// one limit for both).
    pub session_url_per_stream: NonZeroU32,
}

fn per_second(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl Default for KvsLimits {
    fn default() -> Self {
        KvsLimits {
            create_stream: per_second(50),
            delete_stream: per_second(50),
            delete_stream_per_stream: per_second(5),
            describe_stream: per_second(300),
            describe_stream_per_stream: per_second(5),
            list_streams: per_second(50),
            other: per_second(50),
            other_per_stream: per_second(5),
            get_data_endpoint: per_second(300),
            get_data_endpoint_per_stream: per_second(5),
            session_url_per_stream: per_second(25),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_creation_poll() -> Duration {
    Duration::from_secs(1)
}

fn default_creation_timeout() -> Duration {
    Duration::from_secs(600)
}

fn default_visibility_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_update_timeout() -> Duration {
    Duration::from_secs(300)
}

fn default_watch_poll() -> Duration {
    Duration::from_secs(2)
}

impl KvsSettings {
    /// Parses the entry's keys; a region is required.
    pub fn parse(config: &ProviderConfig) -> Result<Self, ConfigError> {
        if config.region.is_none() {
            return Err(ConfigError::Invalid(format!(
                "provider {:?} (kind kinesis-video): region is required",
                config.id
            )));
        }
        config.settings()
    }
}
