//! The provider kinds this build serves ([`KINDS`], one entry a kind), the configured
//! instances' settings parsed and checked once ([`Prepared`]), and the [`Registry`] of the
//! instances built from them.
//!
//! Adding a kind means: its folder (like `local/`), declared in `providers/mod.rs`, with its
//! [`Capability`](crate::domain::Capability), its settings type implementing
//! [`InstanceSettings`] and its [`KindEntry`] (both in `contract.rs`); and that entry's line in
//! [`KINDS`]. Checking a
//! configuration, building the instances and any suite run on every kind all read the table.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{
    BuildContext, InstanceSettings, KindEntry, Provider, aliyun_vod, cloudfront, kinesis_video,
    local,
};
use crate::config::{ConfigError, Environment, ProviderConfig};
use crate::domain::Method;
use crate::error::{Error, Kind, Result};
use crate::store::{Notifier, SharedBudgets, SqlStore};
use crate::watch::WatchHub;

/// Every kind this build serves, in the order `check-config` names them.
pub const KINDS: &[KindEntry] = &[
    local::ENTRY,
    kinesis_video::ENTRY,
    aliyun_vod::ENTRY,
    cloudfront::ENTRY,
];

/// The names `kind = "…"` may take, in the order of [`KINDS`].
pub fn kinds() -> impl Iterator<Item = &'static str> {
    KINDS.iter().flat_map(|entry| entry.names.iter().copied())
}

/// One configured instance, its settings parsed.
struct PreparedInstance {
    config: ProviderConfig,
    settings: Box<dyn InstanceSettings>,
}

/// Every configured instance's settings, parsed and checked once, ready to build
/// ([`Registry::build`]).
pub struct Prepared {
    instances: Vec<PreparedInstance>,
    // The environment the instances are built with (credentials); read when building, not
    // when preparing.
    environment: Environment,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field(
                "instances",
                &self
                    .instances
                    .iter()
                    .map(|i| (&i.config.id, &i.config.kind))
                    .collect::<Vec<_>>(),
            )
            .field("environment", &self.environment)
            .finish()
    }
}

impl Prepared {
    /// Parses and checks the kind-specific keys of every entry, by its kind's
    /// [`KindEntry::prepare`]; connects to nothing.
    pub fn prepare(
        configs: &[ProviderConfig],
        environment: &Environment,
    ) -> Result<Prepared, ConfigError> {
        let instances = configs
            .iter()
            .map(prepare_one)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Prepared {
            instances,
            environment: environment.clone(),
        })
    }
}

fn prepare_one(config: &ProviderConfig) -> Result<PreparedInstance, ConfigError> {
    let entry = KINDS
        .iter()
        .find(|entry| entry.names.contains(&config.kind.as_str()))
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "provider {:?}: kind {:?} is not available in this build (available: {})",
                config.id,
                config.kind,
                kinds().collect::<Vec<_>>().join(", ")
            ))
        })?;
    Ok(PreparedInstance {
        config: config.clone(),
        settings: (entry.prepare)(config)?,
    })
}

/// The configured provider instances, by id.
pub struct Registry {
    providers: BTreeMap<String, Arc<dyn Provider>>,
}

impl Registry {
    /// Builds every prepared instance from its parsed settings. On a PostgreSQL store their
    /// outbound limits are the fleet's: every replica takes its turns in the store's shared
    /// budgets.
    pub async fn build(
        prepared: Prepared,
        store: &SqlStore,
        hub: &Arc<WatchHub>,
        notifier: &Arc<Notifier>,
    ) -> Result<Self> {
        let budgets = SharedBudgets::for_store(store).await?;
        let context = BuildContext {
            environment: &prepared.environment,
            store,
            hub,
            notifier,
            budgets: budgets.as_ref(),
        };
        let mut providers = BTreeMap::new();
        for PreparedInstance { config, settings } in prepared.instances {
            let provider = settings.build(&config, &context).await?;
            providers.insert(config.id, provider);
        }
        Ok(Registry { providers })
    }

    /// The instance `id`, or NOT_FOUND. Labels the current call's telemetry with the
    /// instance (only configured ones: callers cannot invent label values).
    pub fn get(&self, id: &str) -> Result<&Arc<dyn Provider>> {
        let provider = self.providers.get(id).ok_or_else(|| {
            Error::new(
                Kind::ProviderNotFound,
                format!("no provider instance providers/{id} is configured"),
            )
        })?;
        crate::telemetry::record_provider(id);
        Ok(provider)
    }

    /// The instance `id` if it supports `method`: NOT_FOUND or UNIMPLEMENTED otherwise.
    pub fn for_method(&self, id: &str, method: Method) -> Result<&Arc<dyn Provider>> {
        let provider = self.get(id)?;
        if provider.capability().supports(method) {
            Ok(provider)
        } else {
            Err(Error::new(
                Kind::CapabilityUnsupported,
                format!(
                    "providers/{id} (kind {}) does not support {}",
                    provider.kind(),
                    method.as_str()
                ),
            )
            .with_provider(id))
        }
    }

    /// Every instance, by id.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.providers.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn entries(text: &str) -> Vec<ProviderConfig> {
        Config::from_toml(text).unwrap().providers
    }

    #[test]
    fn every_name_is_one_kinds_and_the_table_lists_them_in_order() {
        let names: Vec<_> = kinds().collect();
        assert_eq!(
            names,
            [
                "local",
                "kinesis-video",
                "aliyun-vod",
                "cloudfront-streaming",
                "cloudfront"
            ]
        );
        for name in &names {
            let owners = KINDS.iter().filter(|e| e.names.contains(name)).count();
            assert_eq!(owners, 1, "{name}");
        }
    }

    #[test]
    fn an_unknown_kind_is_refused_naming_the_available_ones() {
        let configs = entries("[[providers]]\nid = \"x\"\nkind = \"nimbus\"\n");
        let error = Prepared::prepare(&configs, &Environment::default())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(
                "kind \"nimbus\" is not available in this build (available: local, \
                 kinesis-video, aliyun-vod, cloudfront-streaming, cloudfront)"
            ),
            "{error}"
        );
    }

    #[test]
    fn every_entry_is_checked_by_its_own_kind() {
        let good = entries(
            "[[providers]]\nid = \"l\"\nkind = \"local\"\n\
             [[providers]]\nid = \"k\"\nkind = \"kinesis-video\"\nregion = \"us-east-1\"\n\
             [[providers]]\nid = \"v\"\nkind = \"aliyun-vod\"\nregion = \"cn-shanghai\"\n\
             [[providers]]\nid = \"c\"\nkind = \"cloudfront\"\n\
             [[providers]]\nid = \"s\"\nkind = \"cloudfront-streaming\"\n",
        );
        let prepared = Prepared::prepare(&good, &Environment::default()).unwrap();
        assert_eq!(prepared.instances.len(), 5);
        for bad in [
            "[[providers]]\nid = \"l\"\nkind = \"local\"\ndisabled_methods = [\"Nope\"]\n",
            "[[providers]]\nid = \"k\"\nkind = \"kinesis-video\"\n",
            "[[providers]]\nid = \"v\"\nkind = \"aliyun-vod\"\n",
            "[[providers]]\nid = \"c\"\nkind = \"cloudfront\"\ndeploy_poll_interval = \"0s\"\n",
        ] {
            assert!(
                Prepared::prepare(&entries(bad), &Environment::default()).is_err(),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn builds_the_prepared_instances_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(&format!("sqlite://{}/registry.db", dir.path().display()))
            .await
            .unwrap();
        let hub = Arc::new(WatchHub::default());
        let configs = entries(
            "[[providers]]\nid = \"b\"\nkind = \"local\"\n\
             [[providers]]\nid = \"a\"\nkind = \"local\"\ndisabled_methods = [\"CreateStream\"]\n",
        );
        let prepared = Prepared::prepare(&configs, &Environment::default()).unwrap();
        let registry = Registry::build(prepared, &store, &hub, &Notifier::in_process())
            .await
            .unwrap();
        let ids: Vec<_> = registry.all().map(|p| p.id().to_string()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            registry
                .for_method("a", Method::CreateStream)
                .err()
                .map(|e| e.kind()),
            Some(Kind::CapabilityUnsupported)
        );
        assert!(registry.for_method("b", Method::CreateStream).is_ok());
    }
}
