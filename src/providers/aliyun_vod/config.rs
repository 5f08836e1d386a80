//! The keys of a `kind = "aliyun-vod"` provider entry, and the credentials the instance signs
//! with. It resolves configuration only; signing is `signer.rs`, calling is `core.rs`.
//!
//! Credentials come from the entry (`access_key_id`, `access_key_secret`, optional
//! `security_token`) or, when the entry has none, from the environment the gateway was started
//! with:
//!
//! - `ALIBABA_CLOUD_ACCESS_KEY_ID`
//! - `ALIBABA_CLOUD_ACCESS_KEY_SECRET`
//! - `ALIBABA_CLOUD_SECURITY_TOKEN` (STS; sent as the `SecurityToken` parameter)
//!
//! The secret and the token never reach `Debug` output or logs.

use std::fmt;
use std::num::NonZeroU32;

use serde::Deserialize;

use crate::config::{ConfigError, Environment, ProviderConfig};

/// The variable holding the AccessKey id.
pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
/// The variable holding the AccessKey secret.
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
/// The variable holding an STS security token.
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";

/// Kind-specific settings of an `aliyun-vod` instance.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliyunVodSettings {
    /// The AccessKey id; with `access_key_secret`, overrides the environment.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The AccessKey secret.
    #[serde(default)]
    pub access_key_secret: Option<String>,
    /// An STS security token that goes with a temporary AccessKey.
    #[serde(default)]
    pub security_token: Option<String>,
    /// DeleteStream calls per second this instance makes at most (the account quota: 50).
    #[serde(default = "default_delete_stream_qps")]
    pub delete_stream_qps: NonZeroU32,
    /// GetPlayInfo calls per second this instance makes at most (the account quota: 360).
    #[serde(default = "default_get_play_info_qps")]
    pub get_play_info_qps: NonZeroU32,
}

fn default_delete_stream_qps() -> NonZeroU32 {
    NonZeroU32::new(50).unwrap_or(NonZeroU32::MIN)
}

fn default_get_play_info_qps() -> NonZeroU32 {
    NonZeroU32::new(360).unwrap_or(NonZeroU32::MIN)
}

impl fmt::Debug for AliyunVodSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AliyunVodSettings")
            .field("access_key_id", &self.access_key_id)
            .field(
                "access_key_secret",
                &self.access_key_secret.as_ref().map(|_| "***"),
            )
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "***"),
            )
            .field("delete_stream_qps", &self.delete_stream_qps)
            .field("get_play_info_qps", &self.get_play_info_qps)
            .finish()
    }
}

impl AliyunVodSettings {
    /// Parses and checks the entry's keys (no environment needed).
    pub fn parse(config: &ProviderConfig) -> Result<Self, ConfigError> {
        let settings: AliyunVodSettings = config.settings()?;
        let invalid = |why: &str| {
            ConfigError::Invalid(format!(
                "provider {:?} (kind {}): {why}",
                config.id, config.kind
            ))
        };
        if config.region.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "region is required (e.g. \"cn-shanghai\"): it picks the endpoint (the \
                 official SDK's endpoint map) and is sent as RegionId",
            ));
        }
        if settings.access_key_id.is_some() != settings.access_key_secret.is_some() {
            return Err(invalid(
                "access_key_id and access_key_secret go together: set both, or neither to use \
                 ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET",
            ));
        }
        if settings.security_token.is_some() && settings.access_key_id.is_none() {
            return Err(invalid(
                "security_token needs access_key_id and access_key_secret in the same entry",
            ));
        }
        Ok(settings)
    }

    /// The credentials: the entry's own, else the environment's.
    pub fn credentials(
        &self,
        provider: &str,
        environment: &Environment,
    ) -> Result<Credentials, ConfigError> {
        if let (Some(id), Some(secret)) = (&self.access_key_id, &self.access_key_secret) {
            return Ok(Credentials {
                access_key_id: id.clone(),
                access_key_secret: secret.clone(),
                security_token: self.security_token.clone(),
            });
        }
        match (
            environment.get(ENV_ACCESS_KEY_ID),
            environment.get(ENV_ACCESS_KEY_SECRET),
        ) {
            (Some(id), Some(secret)) => Ok(Credentials {
                access_key_id: id.to_string(),
                access_key_secret: secret.to_string(),
                security_token: environment.get(ENV_SECURITY_TOKEN).map(str::to_string),
            }),
            _ => Err(ConfigError::Invalid(format!(
                "provider {provider:?} (kind aliyun-vod): no credentials: set access_key_id and \
                 access_key_secret in its entry, or {ENV_ACCESS_KEY_ID} and \
                 {ENV_ACCESS_KEY_SECRET} in the environment"
            ))),
        }
    }
}

/// An AccessKey (and STS token) to sign requests with. `Debug` shows the id only.
#[derive(Clone)]
pub struct Credentials {
    /// Sent as `AccessKeyId`.
    pub access_key_id: String,
    /// Signs; never sent, never shown.
    pub access_key_secret: String,
    /// Sent as `SecurityToken` when set.
    pub security_token: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"***")
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "***"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Config;

    fn entry(keys: &str) -> ProviderConfig {
        let text = format!("[[providers]]\nid = \"vod\"\nkind = \"aliyun-vod\"\n{keys}");
        Config::from_toml(&text).unwrap().providers.remove(0)
    }

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        )
    }

    #[test]
    fn defaults_follow_the_account_quotas() {
        let settings = AliyunVodSettings::parse(&entry("region = \"cn-shanghai\"")).unwrap();
        assert_eq!(settings.delete_stream_qps.get(), 50);
        assert_eq!(settings.get_play_info_qps.get(), 360);
        let tuned = AliyunVodSettings::parse(&entry(
            "region = \"cn-shanghai\"\ndelete_stream_qps = 5\nget_play_info_qps = 7",
        ))
        .unwrap();
        assert_eq!(tuned.delete_stream_qps.get(), 5);
        assert_eq!(tuned.get_play_info_qps.get(), 7);
    }

    #[test]
    fn refuses_missing_region_half_keys_and_unknown_keys() {
        for keys in [
            "",
            "region = \"cn-shanghai\"\naccess_key_id = \"id\"",
            "region = \"cn-shanghai\"\nsecurity_token = \"t\"",
            "region = \"cn-shanghai\"\naccess_key = \"x\"",
            "region = \"cn-shanghai\"\ndelete_stream_qps = 0",
        ] {
            assert!(AliyunVodSettings::parse(&entry(keys)).is_err(), "{keys:?}");
        }
    }

    #[test]
    fn credentials_come_from_the_entry_else_the_environment() {
        let from_env = AliyunVodSettings::parse(&entry("region = \"cn-shanghai\""))
            .unwrap()
            .credentials(
                "vod",
                &env(&[
                    (ENV_ACCESS_KEY_ID, "env-id"),
                    (ENV_ACCESS_KEY_SECRET, "env-secret"),
                    (ENV_SECURITY_TOKEN, "env-token"),
                ]),
            )
            .unwrap();
        assert_eq!(from_env.access_key_id, "env-id");
        assert_eq!(from_env.access_key_secret, "env-secret");
        assert_eq!(from_env.security_token.as_deref(), Some("env-token"));

        let own = AliyunVodSettings::parse(&entry(
            "region = \"cn-shanghai\"\naccess_key_id = \"own-id\"\naccess_key_secret = \"own\"",
        ))
        .unwrap()
        .credentials("vod", &env(&[(ENV_ACCESS_KEY_ID, "env-id")]))
        .unwrap();
        assert_eq!(own.access_key_id, "own-id");
        assert_eq!(own.security_token, None);

        let none = AliyunVodSettings::parse(&entry("region = \"cn-shanghai\""))
            .unwrap()
            .credentials("vod", &env(&[(ENV_ACCESS_KEY_ID, "only-id")]))
            .unwrap_err()
            .to_string();
        assert!(none.contains(ENV_ACCESS_KEY_SECRET), "{none}");
    }

    #[test]
    fn debug_never_shows_the_secret_or_the_token() {
        let settings = AliyunVodSettings::parse(&entry(
            "region = \"cn-shanghai\"\naccess_key_id = \"AKID\"\naccess_key_secret = \
             \"s3cr3t-value\"\nsecurity_token = \"sts-t0ken\"",
        ))
        .unwrap();
        let credentials = settings.credentials("vod", &env(&[])).unwrap();
        for shown in [format!("{settings:?}"), format!("{credentials:?}")] {
            assert!(shown.contains("AKID"), "{shown}");
            assert!(!shown.contains("s3cr3t-value"), "{shown}");
            assert!(!shown.contains("sts-t0ken"), "{shown}");
        }
    }
}
