//! The gateway's metric instruments, and what each records. The instruments are OpenTelemetry
//! ones; [`super::Telemetry`] reads them into Prometheus text for scrapes and into OTLP when
//! configured. Names as scraped (OpenTelemetry names with dots as underscores, plus the unit
//! and `_total` suffixes):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `streamgate_rpc_requests_total` | counter | `rpc_service`, `rpc_method`, `provider`, `grpc_code` |
//! | `streamgate_rpc_errors_total` | counter (calls not OK) | same |
//! | `streamgate_rpc_duration_seconds` | histogram | same |
//! | `streamgate_provider_call_duration_seconds` | histogram | `provider`, `provider_kind`, `provider_action`, `outcome` |
//! | `streamgate_rate_limited_total` | counter | `principal`, `rpc_service`, `rpc_method` |
//! | `streamgate_unauthenticated_refusals_total` | counter | `rpc_service`, `rpc_method` |
//! | `streamgate_operations_in_flight` | gauge | `provider`, `verb` |
//! | `streamgate_store_up` | gauge (1 or 0) | none |
//! | `streamgate_oldest_unfinished_operation_age_seconds` | gauge (the store's, as this process last read it) | |
//!
//! `provider` is absent on calls that name no configured provider instance; `outcome` is `ok`
//! or the error's stable reason (`STREAM_NOT_FOUND`, `PROVIDER_THROTTLED`, ...).
//!
//! The per-call instruments are recorded through handles bound once per label set
//! (OpenTelemetry's experimental bound instruments): an unbound record hashes its attribute
//! set with SipHash once per instrument and per reader (Prometheus and, with an OTLP endpoint,
//! the periodic one), ~7k instructions per call here, where a bound one updates its series
//! directly. The label sets are bounded (served methods or `unknown`, configured provider
//! instances, 17 codes), so the table of bound series stays small.

use std::sync::RwLock;
use std::time::Duration;

use hashbrown::{Equivalent, HashMap};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{
    BoundCounter, BoundHistogram, Counter, Gauge, Histogram, Meter, UpDownCounter,
};
use tonic::Code;

/// Latency buckets, in seconds: from a local read to a long provider workflow step.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The labels of one finished gRPC call.
#[derive(Clone, Copy, Debug)]
pub struct RpcLabels<'a> {
    /// e.g. `streamgate.v1.StreamService`.
    pub service: &'static str,
    /// e.g. `GetStream`.
    pub method: &'static str,
    /// The provider instance the call addressed, if any.
    pub provider: Option<&'a str>,
    /// The final gRPC status code.
    pub code: Code,
}

/// The instruments bound to one (service, method, provider, code) label set.
struct RpcSeries {
    requests: BoundCounter<u64>,
    /// Bound only for codes other than OK.
    errors: Option<BoundCounter<u64>>,
    duration: BoundHistogram<f64>,
}

/// The key of an [`RpcSeries`].
#[derive(Hash, PartialEq, Eq)]
struct SeriesKey {
    service: &'static str,
    method: &'static str,
    code: i32,
    provider: Option<Box<str>>,
}

/// [`SeriesKey`] borrowed, to look a series up without allocating. Hashes as the key does
/// (a `Box<str>` and a `&str` hash alike).
#[derive(Hash)]
struct SeriesRef<'a> {
    service: &'static str,
    method: &'static str,
    code: i32,
    provider: Option<&'a str>,
}

impl From<&SeriesRef<'_>> for SeriesKey {
    fn from(key: &SeriesRef<'_>) -> Self {
        SeriesKey {
            service: key.service,
            method: key.method,
            code: key.code,
            provider: key.provider.map(Box::from),
        }
    }
}

impl Equivalent<SeriesKey> for SeriesRef<'_> {
    fn equivalent(&self, key: &SeriesKey) -> bool {
        self.service == key.service
            && self.method == key.method
            && self.code == key.code
            && self.provider == key.provider.as_deref()
    }
}

/// The instruments.
pub struct Metrics {
    rpc_requests: Counter<u64>,
    rpc_errors: Counter<u64>,
    rpc_duration: Histogram<f64>,
    rpc_series: RwLock<HashMap<SeriesKey, RpcSeries>>,
    provider_call_duration: Histogram<f64>,
    rate_limited: Counter<u64>,
    unauthenticated_refusals: Counter<u64>,
    operations_in_flight: UpDownCounter<i64>,
    store_up: Gauge<i64>,
    oldest_unfinished_operation: Gauge<f64>,
    notify_listening: Gauge<i64>,
    notify_publish_failures: Counter<u64>,
}

/// The name of a gRPC code as grpc-go and most dashboards spell it (`NotFound`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

impl Metrics {
    /// Creates the instruments on `meter`.
    pub fn new(meter: &Meter) -> Self {
        Metrics {
            rpc_requests: meter
                .u64_counter("streamgate.rpc.requests")
                .with_description("gRPC calls served, by method, provider instance and code")
                .build(),
            rpc_errors: meter
                .u64_counter("streamgate.rpc.errors")
                .with_description("gRPC calls that ended with a code other than OK")
                .build(),
            rpc_duration: meter
                .f64_histogram("streamgate.rpc.duration")
                .with_unit("s")
                .with_description("gRPC call latency, until the final status was sent")
                .with_boundaries(BUCKETS.to_vec())
                .build(),
            provider_call_duration: meter
                .f64_histogram("streamgate.provider.call.duration")
                .with_unit("s")
                .with_description("Provider API call latency, retries included")
                .with_boundaries(BUCKETS.to_vec())
                .build(),
            rate_limited: meter
                .u64_counter("streamgate.rate_limited")
                .with_description("Calls refused because the caller was over its rate")
                .build(),
            unauthenticated_refusals: meter
                .u64_counter("streamgate.unauthenticated_refusals")
                .with_description("Calls refused for want of valid credentials")
                .build(),
            operations_in_flight: meter
                .i64_up_down_counter("streamgate.operations.in_flight")
                .with_description("Long-running operations this process is driving")
                .build(),
            store_up: meter
                .i64_gauge("streamgate.store.up")
                .with_description(
                    "1 while the store answers this process's probe (or is embedded SQLite), \
                     0 while it does not",
                )
                .build(),
            oldest_unfinished_operation: meter
                .f64_gauge("streamgate.oldest_unfinished_operation.age")
                .with_unit("s")
                .with_description(
                    "How long ago the oldest unfinished operation in the store was accepted \
                     (0 when none is unfinished)",
                )
                .build(),
            notify_listening: meter
                .i64_gauge("streamgate.notify.listening")
                .with_description(
                    "PostgreSQL store: 1 while this process hears the notices of other \
                     replicas (LISTEN), 0 while its listener is lost and it polls the store \
                     instead",
                )
                .build(),
            notify_publish_failures: meter
                .u64_counter("streamgate.notify.publish_failures")
                .with_description(
                    "Notices to other replicas that PostgreSQL did not take within 10 s of \
                     their publication, given up on: the other replicas miss them",
                )
                .build(),
            rpc_series: RwLock::default(),
        }
    }

    /// Records one finished gRPC call.
    pub fn rpc(&self, labels: RpcLabels<'_>, elapsed: Duration) {
        let key = SeriesRef {
            service: labels.service,
            method: labels.method,
            code: labels.code as i32,
            provider: labels.provider,
        };
        let record = |series: &RpcSeries| {
            series.requests.add(1);
            if let Some(errors) = &series.errors {
                errors.add(1);
            }
            series.duration.record(elapsed.as_secs_f64());
        };
        // A poisoned lock only means a panic elsewhere while binding; the map is still whole.
        let known = self.rpc_series.read().unwrap_or_else(|e| e.into_inner());
        if let Some(series) = known.get(&key) {
            record(series);
            return;
        }
        drop(known);
        let mut all = self.rpc_series.write().unwrap_or_else(|e| e.into_inner());
        // Another call may have bound it meanwhile.
        record(all.entry_ref(&key).or_insert_with(|| self.bind_rpc(labels)));
    }

    /// Binds the per-call instruments to `labels`.
    fn bind_rpc(&self, labels: RpcLabels<'_>) -> RpcSeries {
        let mut attributes = vec![
            KeyValue::new("rpc.service", labels.service),
            KeyValue::new("rpc.method", labels.method),
            KeyValue::new("grpc.code", code_name(labels.code)),
        ];
        if let Some(provider) = labels.provider {
            attributes.push(KeyValue::new("provider", provider.to_string()));
        }
        RpcSeries {
            requests: self.rpc_requests.bind(&attributes),
            errors: (labels.code != Code::Ok).then(|| self.rpc_errors.bind(&attributes)),
            duration: self.rpc_duration.bind(&attributes),
        }
    }

    /// Records one provider API call (with its retries).
    pub fn provider_call(
        &self,
        provider: &str,
        kind: &'static str,
        action: &'static str,
        outcome: &'static str,
        elapsed: Duration,
    ) {
        self.provider_call_duration.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new("provider", provider.to_string()),
                KeyValue::new("provider.kind", kind),
                KeyValue::new("provider.action", action),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    /// Records a call refused for being over its caller's rate.
    pub fn rate_limited(&self, principal: &str, service: &'static str, method: &'static str) {
        self.rate_limited.add(
            1,
            &[
                KeyValue::new("principal", principal.to_string()),
                KeyValue::new("rpc.service", service),
                KeyValue::new("rpc.method", method),
            ],
        );
    }

    /// Records a call refused for want of valid credentials.
    pub fn unauthenticated_refusal(&self, service: &'static str, method: &'static str) {
        self.unauthenticated_refusals.add(
            1,
            &[
                KeyValue::new("rpc.service", service),
                KeyValue::new("rpc.method", method),
            ],
        );
    }

    /// Records whether the store answered its latest probe.
    pub fn store_up(&self, up: bool) {
        self.store_up.record(i64::from(up), &[]);
    }

    /// Counts an operation in flight until the returned guard is dropped.
    pub fn operation_in_flight(&self, provider: &str, verb: &'static str) -> InFlight {
        let attributes = vec![
            KeyValue::new("provider", provider.to_string()),
            KeyValue::new("verb", verb),
        ];
        self.operations_in_flight.add(1, &attributes);
        InFlight {
            gauge: self.operations_in_flight.clone(),
            attributes,
        }
    }
}

impl Metrics {
    /// Records the age of the oldest unfinished operation in the store (zero: none).
    pub fn oldest_unfinished_operation(&self, age: Duration) {
        self.oldest_unfinished_operation
            .record(age.as_secs_f64(), &[]);
    }
}

impl Metrics {
    /// Records whether this process hears the notices of other replicas.
    pub fn notify_listening(&self, listening: bool) {
        self.notify_listening.record(i64::from(listening), &[]);
    }

    /// Counts notices given up on: the other replicas never got them.
    pub fn notify_publish_failed(&self, notices: u64) {
        self.notify_publish_failures.add(notices, &[]);
    }
}

/// One operation counted in `streamgate_operations_in_flight` while this lives.
pub struct InFlight {
    gauge: UpDownCounter<i64>,
    attributes: Vec<KeyValue>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.add(-1, &self.attributes);
    }
}
