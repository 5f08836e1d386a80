//! Telemetry: logs, traces and metrics.
//!
//! - Logs: structured events to stderr, as text (default) or one JSON object per line,
//!   installed once per process by [`init`]. Every line written during a call carries the
//!   call's span fields, its `trace_id` among them.
//! - Traces and metrics: the OpenTelemetry pipelines of one server ([`Telemetry`]), built by
//!   `server::run` from the settings of the `OTEL_*` variables of the configuration's
//!   environment ([`otel`], read once by `server::Parts::build`) and shut down (flushed) when the server stops. One server per process in
//!   production; tests run several side by side, which is why nothing here is global.
//!
//! - `otel.rs`: the `OTEL_*` settings and the OTLP exporters.
//! - `metrics.rs`: the instruments and their names.
//! - `call.rs`: the current call's telemetry context; provider-call spans.
//! - `text.rs`: the text log line written to a file or a pipe.
//! - `scrape.rs`: the Prometheus scrape endpoint.

pub mod call;
pub mod metrics;
pub mod otel;
pub mod otlp;
pub mod scrape;
mod text;

use std::io::IsTerminal;
use std::sync::Arc;

use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider,
};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::time::SystemTime;

pub use call::{provider_call, rate_limited, record_provider};
pub use metrics::Metrics;

use crate::config::{LogFormat, TelemetryConfig};
use crate::error::{Error, Result};
use crate::methods::{ServedMethod, served};
use otel::OtelSettings;

/// The instrumentation scope of every span and instrument.
const SCOPE: &str = "streamgate";

/// Keeps the log writer's thread; dropping it writes out the lines still queued.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

/// Installs the global log subscriber. Fails if the filter is malformed.
///
/// Lines are formatted on the thread that logs and written to stderr by a writer thread
/// through a buffer that it flushes whenever its queue is empty: one `write` for many lines
/// under load instead of one per line (a call's access line cost a system call on the
/// request's path). The queue is not lossy: when stderr cannot keep up with 16,384 queued
/// lines, loggers wait.
pub fn init(config: &TelemetryConfig) -> Result<LogGuard, String> {
    let filter = EnvFilter::try_new(&config.log_filter)
        .map_err(|e| format!("log filter {:?}: {e}", config.log_filter))?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(16_384)
        .thread_name("streamgate-log")
        .finish(std::io::BufWriter::new(std::io::stderr()));
    let terminal = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(terminal);
    let installed = match config.log_format {
        // Coloured, for a person at a terminal.
        LogFormat::Text if terminal => builder.try_init(),
        // The same line without colours, written the short way (`text.rs`).
        LogFormat::Text => builder
            .fmt_fields(text::TextFields)
            .event_format(text::TextLine::new(SystemTime))
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| format!("logging: {e}"))?;
    Ok(LogGuard { _writer: guard })
}

/// The `/package.Service/Method` path of a gRPC call, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpcName<'a> {
    /// e.g. `streamgate.v1.StreamService`.
    pub service: &'a str,
    /// e.g. `GetStream`.
    pub method: &'a str,
}

impl RpcName<'static> {
    /// Splits `path` when it names a method this server serves; anything else (a made-up
    /// method, even one refused before routing) is [`RpcName::UNKNOWN`], so that callers
    /// cannot make up label values or span names.
    pub fn parse(path: &str) -> Self {
        served(path).map_or(RpcName::UNKNOWN, RpcName::of)
    }

    /// The names of a served method.
    pub fn of(method: &'static ServedMethod) -> Self {
        RpcName {
            service: &method.service,
            method: &method.method,
        }
    }

    /// What a path that is not a served method is counted as.
    pub const UNKNOWN: RpcName<'static> = RpcName {
        service: "unknown",
        method: "unknown",
    };
}

/// The trace and metric pipelines of one server.
pub struct Telemetry {
    tracer: SdkTracer,
    // Kept to flush and stop the span exporter when the server stops.
    tracer_provider: SdkTracerProvider,
    // Kept to flush and stop the OTLP metric reader when the server stops; the Prometheus
    // reader in it collects on every scrape.
    meter_provider: SdkMeterProvider,
    metrics: Metrics,
    // What a scrape renders: the Prometheus reader registers its collector here.
    registry: prometheus::Registry,
}

impl Telemetry {
    /// Builds the pipelines `settings` ask for: spans are always made (their trace ids go into
    /// the logs) and exported only when configured; metrics are always kept for scrapes and
    /// exported only when configured. Must run inside the Tokio runtime.
    pub fn new(settings: OtelSettings) -> Result<Arc<Self>> {
        let failed = |e: String| Error::internal(format_args!("telemetry: {e}"));

        let mut tracer_provider = SdkTracerProvider::builder()
            .with_resource(settings.resource.clone())
            .with_sampler(settings.sampler);
        if let Some(export) = &settings.traces {
            let mut batch = BatchConfigBuilder::default();
            if let Some(delay) = settings.batch_delay {
                batch = batch.with_scheduled_delay(delay);
            }
            let processor = BatchSpanProcessor::builder(export.span_exporter().map_err(failed)?)
                .with_batch_config(batch.build())
                .build();
            tracer_provider = tracer_provider.with_span_processor(processor);
        }
        let tracer_provider = tracer_provider.build();

        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .map_err(|e| failed(format!("prometheus exporter: {e}")))?;
        let mut meter_provider = SdkMeterProvider::builder()
            .with_resource(settings.resource)
            .with_reader(prometheus);
        if let Some(export) = &settings.metrics {
            let mut reader = PeriodicReader::builder(export.metric_exporter().map_err(failed)?);
            if let Some(interval) = settings.metric_interval {
                reader = reader.with_interval(interval);
            }
            meter_provider = meter_provider.with_reader(reader.build());
        }
        let meter_provider = meter_provider.build();

        Ok(Arc::new(Telemetry {
            tracer: tracer_provider.tracer(SCOPE),
            metrics: Metrics::new(&meter_provider.meter(SCOPE)),
            tracer_provider,
            meter_provider,
            registry,
        }))
    }

    /// The tracer of server and provider-call spans.
    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// The instruments.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Every metric in the Prometheus text format.
    pub fn prometheus_text(&self) -> Result<String> {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(|e| Error::internal(format_args!("metrics: {e}")))
    }

    /// Exports what is still buffered and stops the exporters. Blocking work, done off the
    /// runtime's threads: the exporters need the runtime to send.
    pub async fn shutdown(&self) {
        let tracer_provider = self.tracer_provider.clone();
        let meter_provider = self.meter_provider.clone();
        let stopped = tokio::task::spawn_blocking(move || {
            (tracer_provider.shutdown(), meter_provider.shutdown())
        })
        .await;
        match stopped {
            Ok((Ok(()), Ok(()))) => {}
            Ok((traces, metrics)) => {
                tracing::warn!(?traces, ?metrics, "telemetry did not shut down cleanly")
            }
            Err(e) => tracing::warn!(error = %e, "telemetry shutdown task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_grpc_paths_and_refuses_others() {
        assert_eq!(
            RpcName::parse("/streamgate.v1.StreamService/GetStream"),
            RpcName {
                service: "streamgate.v1.StreamService",
                method: "GetStream"
            }
        );
        assert_eq!(
            RpcName::parse("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo").method,
            "ServerReflectionInfo"
        );
        assert_eq!(
            RpcName::parse("/grpc.health.v1.Health/Watch").service,
            "grpc.health.v1.Health"
        );
        // Well-formed but not served: a caller must not be able to mint label values.
        for bad in [
            "",
            "/",
            "/x",
            "/x/",
            "//m",
            "/a/b/c",
            "no-slash/m",
            "/attacker.Made1/Up1",
            "/streamgate.v1.StreamService/NoSuchMethod",
        ] {
            assert_eq!(RpcName::parse(bad), RpcName::UNKNOWN, "{bad:?}");
        }
    }
}
