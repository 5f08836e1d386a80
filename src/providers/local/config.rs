//! The keys of a `kind = "local"` provider entry.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, ProviderConfig, de_duration};
use crate::domain::Method;

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
    /// The methods the instance supports: every one but `disabled_methods` (resolved by
    /// [`LocalSettings::parse`]).
    #[serde(skip)]
    pub methods: Vec<Method>,
}

fn default_create_delay() -> Duration {
    Duration::from_secs(1)
}

impl LocalSettings {
    /// Parses the entry's keys and resolves `disabled_methods` into the supported methods.
    pub fn parse(config: &ProviderConfig) -> Result<Self, ConfigError> {
        let mut settings: LocalSettings = config.settings()?;
        let mut methods = Method::ALL.to_vec();
        for name in &settings.disabled_methods {
            let method = Method::parse(name).ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "provider {:?}: disabled_methods: unknown method {name:?}",
                    config.id
                ))
            })?;
            methods.retain(|m| *m != method);
        }
        settings.methods = methods;
        Ok(settings)
    }
}
