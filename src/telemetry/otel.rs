//! The OpenTelemetry SDK settings of one server, from the standard `OTEL_*` variables of the
//! configuration's environment map (never the process environment directly), and the OTLP
//! exporters they call for.
//!
//! Variables read (OTLP over gRPC is the only protocol of this build):
//! - `OTEL_SDK_DISABLED=true`: no export at all.
//! - `OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
//!   `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`: where to export; a signal is exported only when one
//!   of its endpoints is set, or when its `OTEL_*_EXPORTER` says `otlp` (then to the default
//!   `http://localhost:4317`).
//! - `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`: `otlp` or `none`.
//! - `OTEL_EXPORTER_OTLP_PROTOCOL` (and its `_TRACES_` / `_METRICS_` forms): `grpc` only.
//! - `OTEL_EXPORTER_OTLP_HEADERS` (and its signal forms): `key=value,...`, percent-encoded.
//! - `OTEL_EXPORTER_OTLP_TIMEOUT` (and its signal forms): milliseconds per export.
//! - `OTEL_SERVICE_NAME` (default `streamgate`), `OTEL_RESOURCE_ATTRIBUTES`.
//! - `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`).
//! - `OTEL_BSP_SCHEDULE_DELAY`: milliseconds between span batches (default 5000).
//! - `OTEL_METRIC_EXPORT_INTERVAL`: milliseconds between metric exports (default 60000).

use std::path::PathBuf;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::Sampler;
use percent_encoding::percent_decode_str;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::config::{ConfigError, Environment};

/// The endpoint of an OTLP/gRPC collector when a signal's exporter is `otlp` and no endpoint
/// is given.
const DEFAULT_ENDPOINT: &str = "http://localhost:4317";

/// Where and how one signal (traces or metrics) is exported. `Debug` shows header names only:
/// their values may be a hosted backend's API key.
#[derive(Clone, PartialEq)]
pub struct Export {
    /// The collector's gRPC endpoint.
    pub endpoint: String,
    /// Extra request metadata (e.g. an API key of a hosted backend).
    pub headers: Vec<(String, String)>,
    /// The bound of one export call.
    pub timeout: Option<Duration>,
    /// For an `https://` endpoint: the files of `OTEL_EXPORTER_OTLP_CERTIFICATE` (the CAs
    /// that sign the collector's certificate; the webpki roots when unset),
    /// `…_CLIENT_CERTIFICATE` and `…_CLIENT_KEY` (mTLS to the collector).
    pub tls: Option<TlsFiles>,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Export")
            .field("endpoint", &self.endpoint)
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("tls", &self.tls)
            .finish()
    }
}

/// The TLS files of an `https://` OTLP endpoint.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsFiles {
    /// PEM CA bundle; the webpki roots when none.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for a collector that asks for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Everything the `OTEL_*` variables configure.
#[derive(Debug)]
pub struct OtelSettings {
    /// Span export, when configured.
    pub traces: Option<Export>,
    /// Metric export, when configured.
    pub metrics: Option<Export>,
    /// `service.name` and the other resource attributes.
    pub resource: Resource,
    /// Which traces are recorded.
    pub sampler: Sampler,
    /// The delay between span batches, when set.
    pub batch_delay: Option<Duration>,
    /// The interval between metric exports, when set.
    pub metric_interval: Option<Duration>,
}

fn invalid(name: &str, value: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid(format!("{name}={value:?}: {why}"))
}

fn millis(env: &Environment, name: &str) -> Result<Option<Duration>, ConfigError> {
    env.get(name)
        .map(|v| {
            v.trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|e| invalid(name, v, format_args!("not a number of milliseconds: {e}")))
        })
        .transpose()
}

/// `key=value,key=value` with percent-encoded keys and values (W3C baggage style).
fn pairs(name: &str, value: &str) -> Result<Vec<(String, String)>, ConfigError> {
    // The value is never shown: headers carry API keys.
    let refused = |n: usize, why: &str| {
        ConfigError::Invalid(format!(
            "{name}: item {n} {why} (the value is not shown: it may hold a secret)"
        ))
    };
    value
        .split(',')
        .filter(|item| !item.trim().is_empty())
        .enumerate()
        .map(|(i, item)| {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| refused(i + 1, "is not key=value"))?;
            let decode = |s: &str| {
                percent_decode_str(s.trim())
                    .decode_utf8()
                    .map(|d| d.into_owned())
                    .map_err(|_| refused(i + 1, "is not percent-encoded UTF-8"))
            };
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

/// One signal's export: `signal` is `TRACES` or `METRICS`.
fn export(env: &Environment, signal: &str) -> Result<Option<Export>, ConfigError> {
    let var = |suffix: &str| format!("OTEL_EXPORTER_OTLP_{signal}_{suffix}");
    let exporter_var = format!("OTEL_{signal}_EXPORTER");
    let wanted = match env.get(&exporter_var) {
        None => None,
        Some("otlp") => Some(true),
        Some("none") => Some(false),
        Some(other) => {
            return Err(invalid(
                &exporter_var,
                other,
                "this build exports with otlp (or none)",
            ));
        }
    };
    for name in [var("PROTOCOL"), "OTEL_EXPORTER_OTLP_PROTOCOL".to_string()] {
        if let Some(protocol) = env.get(&name)
            && protocol != "grpc"
        {
            return Err(invalid(
                &name,
                protocol,
                "this build exports OTLP over grpc only",
            ));
        }
    }
    let endpoint = env
        .get(&var("ENDPOINT"))
        .or_else(|| env.get("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let endpoint = match (wanted, endpoint) {
        (Some(false), _) | (None, None) => return Ok(None),
        (_, Some(endpoint)) => endpoint.to_string(),
        (Some(true), None) => DEFAULT_ENDPOINT.to_string(),
    };
    let mut headers = Vec::new();
    for name in ["OTEL_EXPORTER_OTLP_HEADERS".to_string(), var("HEADERS")] {
        if let Some(value) = env.get(&name) {
            headers.extend(pairs(&name, value)?);
        }
    }
    let timeout = match env.get(&var("TIMEOUT")) {
        Some(_) => millis(env, &var("TIMEOUT"))?,
        None => millis(env, "OTEL_EXPORTER_OTLP_TIMEOUT")?,
    };
    let tls = if endpoint.starts_with("https://") {
        Some(tls_files(env, &var)?)
    } else {
        None
    };
    Ok(Some(Export {
        endpoint,
        headers,
        timeout,
        tls,
    }))
}

/// The TLS files of an `https://` endpoint, each checked readable: the signal's variable wins
/// over the shared one.
fn tls_files(env: &Environment, var: &dyn Fn(&str) -> String) -> Result<TlsFiles, ConfigError> {
    let file = |suffix: &str| -> Result<Option<PathBuf>, ConfigError> {
        let name = var(suffix);
        let (name, value) = match env.get(&name) {
            Some(value) => (name, value),
            None => {
                let shared = format!("OTEL_EXPORTER_OTLP_{suffix}");
                match env.get(&shared) {
                    Some(value) => (shared, value),
                    None => return Ok(None),
                }
            }
        };
        let path = PathBuf::from(value);
        std::fs::metadata(&path)
            .map_err(|e| invalid(&name, value, format_args!("cannot read it: {e}")))?;
        Ok(Some(path))
    };
    let ca = file("CERTIFICATE")?;
    let identity = match (file("CLIENT_CERTIFICATE")?, file("CLIENT_KEY")?) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Invalid(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and OTEL_EXPORTER_OTLP_CLIENT_KEY go \
                 together"
                    .into(),
            ));
        }
    };
    Ok(TlsFiles { ca, identity })
}

fn sampler(env: &Environment) -> Result<Sampler, ConfigError> {
    let arg = env.get("OTEL_TRACES_SAMPLER_ARG");
    let ratio = || -> Result<f64, ConfigError> {
        match arg {
            None => Ok(1.0),
            Some(v) => v
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| invalid("OTEL_TRACES_SAMPLER_ARG", v, "not a ratio in [0, 1]")),
        }
    };
    Ok(match env.get("OTEL_TRACES_SAMPLER") {
        None | Some("parentbased_always_on") => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        Some("parentbased_always_off") => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        Some("parentbased_traceidratio") => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio()?)))
        }
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatioBased(ratio()?),
        Some(other) => {
            return Err(invalid(
                "OTEL_TRACES_SAMPLER",
                other,
                "use always_on, always_off, traceidratio or their parentbased_ forms",
            ));
        }
    })
}

fn resource(env: &Environment) -> Result<Resource, ConfigError> {
    let mut attributes = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
    if let Some(value) = env.get("OTEL_RESOURCE_ATTRIBUTES") {
        attributes.extend(
            pairs("OTEL_RESOURCE_ATTRIBUTES", value)?
                .into_iter()
                .map(|(k, v)| KeyValue::new(k, v)),
        );
    }
    let service = env.get("OTEL_SERVICE_NAME").unwrap_or("streamgate");
    Ok(Resource::builder_empty()
        .with_attributes(attributes)
        .with_service_name(service.to_string())
        .build())
}

impl OtelSettings {
    /// Reads the `OTEL_*` variables of `env`; refuses values this build cannot honour.
    pub fn from_env(env: &Environment) -> Result<Self, ConfigError> {
        let disabled = match env.get("OTEL_SDK_DISABLED") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => return Err(invalid("OTEL_SDK_DISABLED", v, "use true or false")),
        };
        let traces = export(env, "TRACES")?;
        let metrics = export(env, "METRICS")?;
        Ok(OtelSettings {
            traces: traces.filter(|_| !disabled),
            metrics: metrics.filter(|_| !disabled),
            resource: resource(env)?,
            sampler: sampler(env)?,
            batch_delay: millis(env, "OTEL_BSP_SCHEDULE_DELAY")?,
            metric_interval: millis(env, "OTEL_METRIC_EXPORT_INTERVAL")?,
        })
    }
}

impl Export {
    fn metadata(&self) -> Result<MetadataMap, String> {
        let mut map = MetadataMap::new();
        for (key, value) in &self.headers {
            let key = MetadataKey::from_bytes(key.to_ascii_lowercase().as_bytes())
                .map_err(|e| format!("OTLP header {key:?}: {e}"))?;
            let value = MetadataValue::try_from(value.as_str())
                .map_err(|e| format!("OTLP header {key}: {e}"))?;
            map.insert(key, value);
        }
        Ok(map)
    }

    /// The client TLS of an `https://` endpoint.
    fn tls_config(&self) -> Result<Option<ClientTlsConfig>, String> {
        let Some(files) = &self.tls else {
            return Ok(None);
        };
        crate::tls::install_crypto_provider();
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("OTLP TLS: {}: {e}", path.display()))
        };
        let mut config = ClientTlsConfig::new();
        config = match &files.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => config.with_webpki_roots(),
        };
        if let Some((cert, key)) = &files.identity {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        Ok(Some(config))
    }

    /// `builder` (of either signal's exporter) with this endpoint, metadata, timeout and TLS.
    fn configure<B: WithExportConfig + WithTonicConfig>(&self, builder: B) -> Result<B, String> {
        let mut builder = builder
            .with_endpoint(&self.endpoint)
            .with_metadata(self.metadata()?);
        if let Some(tls) = self.tls_config()? {
            builder = builder.with_tls_config(tls);
        }
        Ok(match self.timeout {
            Some(timeout) => builder.with_timeout(timeout),
            None => builder,
        })
    }

    /// The OTLP/gRPC span exporter ([`super::otlp`]). Must be called inside the Tokio
    /// runtime: the channel's connection task runs there.
    pub fn span_exporter(&self) -> Result<super::otlp::OtlpSpanExporter, String> {
        super::otlp::OtlpSpanExporter::new(
            &self.endpoint,
            self.metadata()?,
            self.timeout,
            self.tls_config()?,
        )
    }

    /// The OTLP/gRPC metric exporter (see [`Export::span_exporter`]).
    pub fn metric_exporter(&self) -> Result<opentelemetry_otlp::MetricExporter, String> {
        self.configure(opentelemetry_otlp::MetricExporter::builder().with_tonic())?
            .build()
            .map_err(|e| format!("OTLP metric exporter for {}: {e}", self.endpoint))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use opentelemetry::Key;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        )
    }

    #[test]
    fn debug_shows_header_names_not_values() {
        let settings = OtelSettings::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=sekrit-value"),
        ]))
        .unwrap();
        let printed = format!("{settings:?}");
        assert!(printed.contains("x-api-key"), "{printed}");
        assert!(!printed.contains("sekrit-value"), "{printed}");
    }

    #[test]
    fn malformed_headers_never_show_their_values() {
        for headers in ["x-api-key:sekrit-value", "x-api-key=sekrit-value%ff"] {
            let refused = OtelSettings::from_env(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_EXPORTER_OTLP_HEADERS", headers),
            ]))
            .unwrap_err()
            .to_string();
            assert!(refused.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{refused}");
            assert!(refused.contains("item 1"), "{refused}");
            assert!(!refused.contains("sekrit"), "{refused}");
        }
    }

    #[test]
    fn https_endpoints_take_the_tls_files_and_check_them() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "pem").unwrap();
        let ca_text = ca.display().to_string();
        let settings = OtelSettings::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_text),
        ]))
        .unwrap();
        let tls = settings.traces.unwrap().tls.unwrap();
        assert_eq!(tls.ca, Some(ca.clone()));
        assert_eq!(tls.identity, None);
        // Plain http ignores them; a missing file or half an identity is refused.
        let plain = OtelSettings::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_text),
        ]))
        .unwrap();
        assert_eq!(plain.traces.unwrap().tls, None);
        let missing = OtelSettings::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4317"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/no/such/ca.pem"),
        ]))
        .unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("OTEL_EXPORTER_OTLP_CERTIFICATE")
        );
        let half = OtelSettings::from_env(&env(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "https://collector:4317",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE", &ca_text),
        ]))
        .unwrap_err();
        assert!(half.to_string().contains("CLIENT_KEY"), "{half}");
    }

    #[test]
    fn nothing_set_exports_nothing() {
        let settings = OtelSettings::from_env(&env(&[])).unwrap();
        assert_eq!(settings.traces, None);
        assert_eq!(settings.metrics, None);
        assert_eq!(
            settings.resource.get(&Key::new("service.name")),
            Some("streamgate".into())
        );
    }

    #[test]
    fn signal_endpoint_wins_over_the_shared_one() {
        let settings = OtelSettings::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=s%3Dcret, team=video"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2500"),
            ("OTEL_SERVICE_NAME", "gateway-a"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
        ]))
        .unwrap();
        let traces = settings.traces.unwrap();
        assert_eq!(traces.endpoint, "http://traces:4317");
        assert_eq!(
            traces.headers,
            vec![
                ("api-key".to_string(), "s=cret".to_string()),
                ("team".to_string(), "video".to_string())
            ]
        );
        assert_eq!(traces.timeout, None);
        let metrics = settings.metrics.unwrap();
        assert_eq!(metrics.endpoint, "http://collector:4317");
        assert_eq!(metrics.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(
            settings.resource.get(&Key::new("service.name")),
            Some("gateway-a".into())
        );
        assert_eq!(
            settings.resource.get(&Key::new("deployment.environment")),
            Some("prod".into())
        );
    }

    #[test]
    fn exporter_variables_switch_signals_on_and_off() {
        let settings = OtelSettings::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ]))
        .unwrap();
        assert!(settings.traces.is_some());
        assert_eq!(settings.metrics, None);
        let defaulted = OtelSettings::from_env(&env(&[("OTEL_TRACES_EXPORTER", "otlp")])).unwrap();
        assert_eq!(defaulted.traces.unwrap().endpoint, DEFAULT_ENDPOINT);
        let disabled = OtelSettings::from_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ]))
        .unwrap();
        assert_eq!(disabled.traces, None);
    }

    #[test]
    fn refuses_what_this_build_cannot_do() {
        for bad in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_TRACES_EXPORTER", "zipkin"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_BSP_SCHEDULE_DELAY", "5s"),
            ("OTEL_RESOURCE_ATTRIBUTES", "no-equals-sign"),
        ] {
            let error = OtelSettings::from_env(&env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                bad,
            ]))
            .unwrap_err()
            .to_string();
            assert!(error.contains(bad.0), "{bad:?}: {error}");
        }
        let error = OtelSettings::from_env(&env(&[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(error.contains("OTEL_TRACES_SAMPLER_ARG"), "{error}");
    }

    #[test]
    fn samplers_by_name() {
        let ratio = OtelSettings::from_env(&env(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]))
        .unwrap();
        assert!(
            matches!(&ratio.sampler, Sampler::ParentBased(inner) if format!("{inner:?}").contains("0.25")),
            "{:?}",
            ratio.sampler
        );
        let off = OtelSettings::from_env(&env(&[("OTEL_TRACES_SAMPLER", "always_off")])).unwrap();
        assert!(matches!(off.sampler, Sampler::AlwaysOff));
    }
}
