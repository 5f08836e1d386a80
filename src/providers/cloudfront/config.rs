//! The keys of a `kind = "cloudfront"` or `kind = "cloudfront-streaming"` provider entry
//! (besides `id`, `kind`, `region` and `endpoint_url`, which every kind has).

use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, ProviderConfig, de_duration};

/// Kind-specific settings of a CloudFront instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudFrontSettings {
    /// How often a delete polls the distribution until it is Deployed (default `"60s"`, the
    /// interval of AWS's own waiter); each wait is jittered by ±10 %.
    #[serde(default = "default_poll_interval", deserialize_with = "de_duration")]
    pub deploy_poll_interval: Duration,
    /// How long a delete waits for Deployed in all before it gives up (default `"45m"`).
    #[serde(default = "default_deploy_timeout", deserialize_with = "de_duration")]
    pub deploy_timeout: Duration,
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_deploy_timeout() -> Duration {
    Duration::from_secs(45 * 60)
}

impl CloudFrontSettings {
    /// Parses and checks the entry's keys.
    pub fn parse(config: &ProviderConfig) -> Result<Self, ConfigError> {
        let settings: CloudFrontSettings = config.settings()?;
        if settings.deploy_poll_interval.is_zero() {
            return Err(ConfigError::Invalid(format!(
                "provider {:?}: deploy_poll_interval must be more than zero",
                config.id
            )));
        }
        if settings.deploy_timeout < settings.deploy_poll_interval {
            return Err(ConfigError::Invalid(format!(
                "provider {:?}: deploy_timeout must be at least deploy_poll_interval",
                config.id
            )));
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(keys: &str) -> Result<CloudFrontSettings, ConfigError> {
        let config = Config::from_toml(&format!(
            "[[providers]]\nid = \"cf\"\nkind = \"cloudfront\"\n{keys}"
        ))
        .unwrap();
        CloudFrontSettings::parse(&config.providers[0])
    }

    #[test]
    fn defaults_follow_the_design() {
        let settings = parse("").unwrap();
        assert_eq!(settings.deploy_poll_interval, Duration::from_secs(60));
        assert_eq!(settings.deploy_timeout, Duration::from_secs(2700));
    }

    #[test]
    fn refuses_bad_values_and_unknown_keys() {
        assert_eq!(
            parse("deploy_poll_interval = \"50ms\"")
                .unwrap()
                .deploy_poll_interval,
            Duration::from_millis(50)
        );
        assert!(parse("deploy_poll_interval = \"0s\"").is_err());
        assert!(parse("deploy_timeout = \"1s\"").is_err());
        assert!(parse("deploy_timeout = \"soon\"").is_err());
        assert!(parse("poll = \"1s\"").is_err());
    }
}
