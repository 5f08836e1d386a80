//! The keys of a `kind = "cloudfront"` or `kind = "cloudfront-streaming"` provider entry
//! (besides `id`, `kind`, `region` and `endpoint_url`, which every kind has).
//!
//! The outbound limits: AWS publishes no request rate for CloudFront's API (its quotas page
//! lists resources per account and viewer traffic per distribution, not calls per second of
//! GetDistribution or UpdateDistribution), yet throttles it (`Throttling`: "Rate exceeded").
//! The defaults are therefore conservative guesses, not quotas: 10 reads and 2 changes per
//! second per instance.

use std::num::NonZeroU32;
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
    /// How often a watched distribution is re-read, so that its watchers see changes made
    /// outside the gateway (default `"10s"`; one read per interval for all its watchers).
    #[serde(default = "default_watch_poll", deserialize_with = "de_duration")]
    pub watch_poll_interval: Duration,
    /// The CloudFront key pair id (or public key id) that signs playback URLs; with it, one
    /// of the two keys below names the private key. None: URLs are not signed.
    #[serde(default)]
    pub signing_key_id: Option<String>,
    /// A PEM file holding the RSA private key (PKCS#1 or PKCS#8).
    #[serde(default)]
    pub signing_private_key_file: Option<String>,
    /// The name of an environment variable holding that PEM key instead.
    #[serde(default)]
    pub signing_private_key_env: Option<String>,
    /// Outbound calls per second (CloudFront publishes no API rates: conservative defaults).
    #[serde(default)]
    pub outbound_limits: CloudFrontLimits,
}

/// Outbound calls per second (`[providers.outbound_limits]`), each class of actions one budget
/// for the instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CloudFrontLimits {
    /// Get…Distribution, Get…DistributionConfig and List…Distributions together (default 10).
    pub reads: NonZeroU32,
    /// Create…, Update… and Delete…Distribution together (default 2).
    pub changes: NonZeroU32,
}

impl Default for CloudFrontLimits {
    fn default() -> Self {
        CloudFrontLimits {
            reads: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            changes: NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN),
        }
    }
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(60)
}

fn default_watch_poll() -> Duration {
    Duration::from_secs(10)
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
        if settings.watch_poll_interval.is_zero() {
            return Err(ConfigError::Invalid(format!(
                "provider {:?}: watch_poll_interval must be more than zero",
                config.id
            )));
        }
        if settings.deploy_timeout < settings.deploy_poll_interval {
            return Err(ConfigError::Invalid(format!(
                "provider {:?}: deploy_timeout must be at least deploy_poll_interval",
                config.id
            )));
        }
        let key_sources = [
            &settings.signing_private_key_file,
            &settings.signing_private_key_env,
        ]
        .into_iter()
        .filter(|k| k.is_some())
        .count();
        match (&settings.signing_key_id, key_sources) {
            (None, 0) | (Some(_), 1) => Ok(settings),
            (None, _) => Err(ConfigError::Invalid(format!(
                "provider {:?}: a signing private key needs signing_key_id",
                config.id
            ))),
            (Some(_), _) => Err(ConfigError::Invalid(format!(
                "provider {:?}: signing_key_id needs exactly one of signing_private_key_file \
                 and signing_private_key_env",
                config.id
            ))),
        }
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
        assert_eq!(settings.watch_poll_interval, Duration::from_secs(10));
        assert_eq!(settings.deploy_timeout, Duration::from_secs(2700));
        assert_eq!(settings.outbound_limits.reads.get(), 10);
        assert_eq!(settings.outbound_limits.changes.get(), 2);
    }

    #[test]
    fn outbound_limits_are_tunable_and_at_least_one() {
        let tuned = parse("[providers.outbound_limits]\nreads = 40\nchanges = 5").unwrap();
        assert_eq!(tuned.outbound_limits.reads.get(), 40);
        assert_eq!(tuned.outbound_limits.changes.get(), 5);
        let half = parse("[providers.outbound_limits]\nchanges = 1").unwrap();
        assert_eq!(half.outbound_limits.reads.get(), 10);
        assert!(parse("[providers.outbound_limits]\nreads = 0").is_err());
        assert!(parse("[providers.outbound_limits]\nwrites = 3").is_err());
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
        assert!(parse("watch_poll_interval = \"0s\"").is_err());
        assert!(parse("deploy_timeout = \"1s\"").is_err());
        assert!(parse("deploy_timeout = \"soon\"").is_err());
        assert!(parse("poll = \"1s\"").is_err());
    }

    #[test]
    fn a_signing_key_id_comes_with_exactly_one_private_key() {
        assert!(parse("").unwrap().signing_key_id.is_none());
        let file =
            parse("signing_key_id = \"K2JCJMDEHXQW5F\"\nsigning_private_key_file = \"k.pem\"");
        assert_eq!(
            file.unwrap().signing_private_key_file.as_deref(),
            Some("k.pem")
        );
        assert!(parse("signing_key_id = \"K\"\nsigning_private_key_env = \"CF_KEY\"").is_ok());
        assert!(parse("signing_key_id = \"K\"").is_err());
        assert!(parse("signing_private_key_file = \"k.pem\"").is_err());
        assert!(
            parse("signing_key_id = \"K\"\nsigning_private_key_file = \"k.pem\"\nsigning_private_key_env = \"CF_KEY\"")
                .is_err()
        );
    }
}
