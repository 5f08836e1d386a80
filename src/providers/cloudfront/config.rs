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
