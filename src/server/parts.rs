//! [`Parts`]: the runtime objects a configuration describes, built once at the top, before
//! anything listens — the security layers' rules, the gRPC server with its TLS, the
//! OpenTelemetry settings, and the check of every provider instance's settings. Building is
//! the check of what `Config::validate` cannot see (the TLS files, the JWT keys, the `OTEL_*`
//! variables, each kind's own keys), so `streamgate check-config` builds them too, and
//! [`super::run`] serves with what was built instead of building it again.

use tonic::transport::Server;

use crate::config::{Config, ConfigError, ServerConfig};
use crate::domain::PageTokens;
use crate::middleware::Security;
use crate::providers::Prepared;
use crate::telemetry::otel::OtelSettings;

/// What serving a configuration needs besides the store and the providers, built once.
pub struct Parts {
    /// The configuration the parts were built from.
    pub(super) config: Config,
    /// The rules of the authentication, authorization and rate-limit layers, and the bounds of
    /// the others.
    pub(super) security: Security,
    /// The gRPC server builder, terminating TLS when `[server.tls]` says so, with the HTTP/2
    /// settings of `[server]`.
    pub(super) transport: Server,
    /// The trace and metric export the `OTEL_*` variables ask for.
    pub(super) otel: OtelSettings,
    /// Every provider instance's settings, parsed and checked.
    pub(super) providers: Prepared,
    /// The page token signer, keyed per `[auth] page_token_key_env`.
    pub(super) pages: PageTokens,
}

impl Parts {
    /// Builds the parts of `config` (loaded and validated, e.g. by `Config::load`), or says why
    /// it cannot be served.
    pub fn build(config: &Config) -> Result<Parts, ConfigError> {
        // Each kind's own keys, parsed once and without connecting to anything; the instances
        // themselves need the store and are built from these by `run`.
        let providers = Prepared::prepare(&config.providers, &config.environment)?;
        let security = Security::from_config(config)?;
        let transport = http2(
            match &config.server.tls {
                Some(tls) => crate::tls::server(tls)?,
                None => Server::builder(),
            },
            &config.server,
        )?;
        let otel = OtelSettings::from_env(&config.environment)?;
        let pages = match config.auth.page_token_key(&config.environment)? {
            Some(key) => PageTokens::with_key(key),
            None => PageTokens::with_random_key(),
        };
        Ok(Parts {
            config: config.clone(),
            security,
            transport,
            otel,
            providers,
            pages,
        })
    }
}

/// `server` with the connection settings of `[server]`: concurrent calls per connection,
/// keepalive pings (a peer that vanished without closing is found out), and the connection
/// age (tonic has no idle timeout: an idle connection closes when it reaches its age).
fn http2(server: Server, config: &ServerConfig) -> Result<Server, ConfigError> {
    if config.http2_max_concurrent_streams == 0 {
        return Err(ConfigError::Invalid(
            "[server] http2_max_concurrent_streams must be at least 1".into(),
        ));
    }
    if config.http2_keepalive_timeout.is_zero() {
        return Err(ConfigError::Invalid(
            "[server] http2_keepalive_timeout must be more than 0s".into(),
        ));
    }
    let some = |d: std::time::Duration| (!d.is_zero()).then_some(d);
    let server = server
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .http2_keepalive_interval(some(config.http2_keepalive_interval))
        .http2_keepalive_timeout(Some(config.http2_keepalive_timeout));
    Ok(match some(config.max_connection_age) {
        Some(age) => server
            .max_connection_age(age)
            .max_connection_age_grace(config.max_connection_age_grace),
        None => server,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::config::Environment;

    fn refusal(config: &Config) -> String {
        match Parts::build(config) {
            Ok(_) => panic!("built the parts of {config:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn with_env(mut config: Config, pairs: &[(&str, &str)]) -> Config {
        config.environment = Environment(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        );
        config
    }

    #[test]
    fn refuses_otel_variables_this_build_cannot_honour() {
        let config = with_env(
            Config::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        );
        config.validate().unwrap();
        let error = refusal(&config);
        assert!(error.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{error}");
    }

    /// The configuration's own checks read no file, build no rule and parse no provider
    /// settings: only `Parts::build` does, and so each happens once per start.
    #[test]
    fn what_only_building_checks_is_checked_by_building() {
        let unknown_kind = Config::from_toml("[[providers]]\nid = \"x\"\nkind = \"ftp\"").unwrap();
        unknown_kind.validate().unwrap();
        assert!(refusal(&unknown_kind).contains("ftp"));

        let keyless = Config::from_toml("[auth]\nmode = \"api-key\"").unwrap();
        keyless.validate().unwrap();
        assert!(refusal(&keyless).contains("[[auth.api_keys]]"));

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let tls = Config::from_toml(&format!(
            "[server.tls]\ncert_file = {missing:?}\nkey_file = {missing:?}"
        ))
        .unwrap();
        tls.validate().unwrap();
        assert!(refusal(&tls).contains("missing.pem"));
    }

    #[test]
    fn limits_that_would_refuse_everything_are_refused() {
        for (key, value) in [
            ("http2_max_concurrent_streams", "0"),
            ("http2_keepalive_timeout", "\"0s\""),
            ("max_in_flight_per_principal", "0"),
            ("max_streams_per_principal", "0"),
            ("max_streams_per_connection", "0"),
            ("max_health_watches", "0"),
        ] {
            let config = Config::from_toml(&format!("[server]\n{key} = {value}")).unwrap();
            config.validate().unwrap();
            assert!(refusal(&config).contains(key), "{key}");
        }
        let off = Config::from_toml(
            "[server]\nhttp2_keepalive_interval = \"0s\"\nmax_connection_age = \"0s\"",
        )
        .unwrap();
        Parts::build(&off).unwrap();
    }

    /// `run` serves with the parts as built: with the TLS files gone after `Parts::build`, the
    /// server still starts, so nothing reads them again.
    #[tokio::test]
    async fn serving_reads_the_tls_files_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let config = Config::from_toml(&format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert_file = {cert_file:?}\n\
             key_file = {key_file:?}\n[store]\nurl = \"sqlite://{}/sg.db\"",
            dir.path().display()
        ))
        .unwrap();
        config.validate().unwrap();
        let parts = Parts::build(&config).unwrap();
        std::fs::remove_file(&cert_file).unwrap();
        std::fs::remove_file(&key_file).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        super::super::run(listener, parts, async {}).await.unwrap();
    }
}
