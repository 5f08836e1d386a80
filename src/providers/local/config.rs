//! The keys of a `kind = "local"` provider entry.

use std::time::Duration;

use serde::Deserialize;

use crate::config::de_duration;

/// Kind-specific settings of a `local` instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// How long a new stream stays CREATING (default `"1s"`).
    #[serde(default = "default_create_delay", deserialize_with = "de_duration")]
    pub create_delay: Duration,
    /// StreamService methods this instance refuses, to let clients rehearse against the
    /// capability set of a more limited kind (e.g. `["CreateStream", "UpdateStream"]`).
    #[serde(default)]
    pub disabled_methods: Vec<String>,
}

fn default_create_delay() -> Duration {
    Duration::from_secs(1)
}
