//! The OTLP/gRPC span exporter: each batch of finished spans is written straight into the
//! protobuf bytes of one `ExportTraceServiceRequest` and sent to the collector's
//! `TraceService/Export`.
//!
//! Written by hand rather than taken from `opentelemetry-otlp` (which still exports the
//! metrics): with every call a span, that exporter's path — each span copied into the
//! generated `opentelemetry-proto` structs (a `String` per key and value), grouped by a
//! SipHash of its instrumentation scope, then encoded by prost, whose nested-message
//! lengths are recomputed at every level — cost ~20k instructions per span, a third of a
//! whole bare gRPC call (docs/PERFORMANCE.md). Here a batch is measured once and written
//! once into one buffer, spans grouped by comparing their scope with the few seen before.
//! The bytes are the message the official transform produces: the unit tests decode them
//! with `opentelemetry-proto`'s types and compare with its `group_spans_by_resource_and_scope`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::uri::PathAndQuery;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status};
use opentelemetry::{Array, InstrumentationScope, KeyValue, Value};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tonic::Status as GrpcStatus;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The bound of one export when `OTEL_EXPORTER_OTLP_TIMEOUT` is unset (the specification's
/// default).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Exports span batches to one OTLP/gRPC collector.
pub struct OtlpSpanExporter {
    endpoint: String,
    client: tonic::client::Grpc<Channel>,
    metadata: MetadataMap,
    // The `resource` field of every `ResourceSpans`, encoded once (see `set_resource`).
    resource: Vec<u8>,
    resource_schema_url: String,
}

impl std::fmt::Debug for OtlpSpanExporter {
    // The metadata may hold a hosted backend's API key: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSpanExporter")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl OtlpSpanExporter {
    /// An exporter to `endpoint` (`http://` or `https://` with `tls`), sending `metadata`
    /// with each export, each bounded by `timeout`. The connection is made on first use, by a
    /// task of the current Tokio runtime: call inside it.
    pub fn new(
        endpoint: &str,
        metadata: MetadataMap,
        timeout: Option<Duration>,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Self, String> {
        let mut channel = Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| format!("OTLP endpoint {endpoint:?}: {e}"))?
            .timeout(timeout.unwrap_or(DEFAULT_TIMEOUT))
            .user_agent(concat!("streamgate/", env!("CARGO_PKG_VERSION")))
            .map_err(|e| format!("OTLP user agent: {e}"))?;
        if let Some(tls) = tls {
            channel = channel
                .tls_config(tls)
                .map_err(|e| format!("OTLP TLS for {endpoint}: {e}"))?;
        }
        Ok(OtlpSpanExporter {
            endpoint: endpoint.to_string(),
            client: tonic::client::Grpc::new(channel.connect_lazy()),
            metadata,
            resource: encode_resource(&Resource::builder_empty().build()),
            resource_schema_url: String::new(),
        })
    }

    /// The `ExportTraceServiceRequest` of `batch`.
    pub fn encode(&self, batch: &[SpanData]) -> Vec<u8> {
        encode_request(&self.resource, &self.resource_schema_url, batch)
    }
}

impl SpanExporter for OtlpSpanExporter {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let send = (!batch.is_empty()).then(|| {
            let mut request = tonic::Request::new(self.encode(&batch));
            *request.metadata_mut() = self.metadata.clone();
            (self.client.clone(), request)
        });
        let endpoint = self.endpoint.clone();
        async move {
            let Some((mut client, request)) = send else {
                return Ok(());
            };
            let failed = |e: String| {
                OTelSdkError::InternalFailure(format!("OTLP export to {endpoint}: {e}"))
            };
            client.ready().await.map_err(|e| failed(e.to_string()))?;
            let response = client
                .unary(request, PathAndQuery::from_static(EXPORT), Raw)
                .await
                .map_err(|s| failed(format!("{:?}: {}", s.code(), s.message())))?;
            if let Some(partial) = response.into_inner().partial_success
                && (partial.rejected_spans > 0 || !partial.error_message.is_empty())
            {
                tracing::warn!(
                    endpoint,
                    rejected_spans = partial.rejected_spans,
                    message = partial.error_message,
                    "the OTLP collector rejected spans"
                );
            }
            Ok(())
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = encode_resource(resource);
        self.resource_schema_url = resource.schema_url().unwrap_or_default().to_string();
    }
}

/// Sends bytes already encoded; decodes the collector's answer with the generated type.
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = ExportTraceServiceResponse;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = GrpcStatus;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), GrpcStatus> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = ExportTraceServiceResponse;
    type Error = GrpcStatus;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, GrpcStatus> {
        prost::Message::decode(src)
            .map(Some)
            .map_err(|e| GrpcStatus::internal(format!("the collector's answer: {e}")))
    }
}

// ---- protobuf wire format: lengths first (so each message is written once, in place) ----

const LEN: u32 = 2;
const I64: u32 = 1;
const I32: u32 = 5;
const VARINT: u32 = 0;

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A length-delimited field of `body` bytes, tag included.
fn field_len(tag: u32, body: usize) -> usize {
    varint_len(u64::from(tag << 3)) + varint_len(body as u64) + body
}

/// A proto3 string field (absent when empty).
fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        field_len(tag, s.len())
    }
}

/// A proto3 uint32 field (absent when zero).
fn u32_len(tag: u32, v: u32) -> usize {
    if v == 0 {
        0
    } else {
        varint_len(u64::from(tag << 3)) + varint_len(u64::from(v))
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

fn kind(kind: &SpanKind) -> u64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// `SpanFlags`: the trace flags, "has is-remote" always, and "is remote" when it is.
fn flags(context_flags: u8, remote: bool) -> u32 {
    u32::from(context_flags) | 0x100 | if remote { 0x200 } else { 0 }
}

fn status_code(status: &Status) -> u64 {
    match status {
        Status::Unset => 0,
        Status::Ok => 1,
        Status::Error { .. } => 2,
    }
}

fn status_message(status: &Status) -> &str {
    match status {
        Status::Error { description } => description,
        _ => "",
    }
}

/// The body of an `AnyValue` (its oneof is always written, whatever the value).
fn scalar_len(value: Scalar<'_>) -> usize {
    match value {
        Scalar::Str(s) => field_len(1, s.len()),
        Scalar::Bool(_) => 2,
        Scalar::Int(i) => 1 + varint_len(i as u64),
        Scalar::Double(_) => 9,
    }
}

#[derive(Clone, Copy)]
enum Scalar<'a> {
    Str(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
}

fn array_items(array: &Array) -> Box<dyn Iterator<Item = Scalar<'_>> + '_> {
    match array {
        Array::Bool(v) => Box::new(v.iter().map(|b| Scalar::Bool(*b))),
        Array::I64(v) => Box::new(v.iter().map(|i| Scalar::Int(*i))),
        Array::F64(v) => Box::new(v.iter().map(|f| Scalar::Double(*f))),
        Array::String(v) => Box::new(v.iter().map(|s| Scalar::Str(s.as_str()))),
        _ => Box::new(std::iter::empty()),
    }
}

fn array_len(array: &Array) -> usize {
    array_items(array)
        .map(|s| field_len(1, scalar_len(s)))
        .sum()
}

fn value_len(value: &Value) -> usize {
    match value {
        Value::Bool(b) => scalar_len(Scalar::Bool(*b)),
        Value::I64(i) => scalar_len(Scalar::Int(*i)),
        Value::F64(f) => scalar_len(Scalar::Double(*f)),
        Value::String(s) => scalar_len(Scalar::Str(s.as_str())),
        Value::Array(a) => field_len(5, array_len(a)),
        _ => 0,
    }
}

fn kv_len(key: &str, value: &Value) -> usize {
    string_len(1, key) + field_len(2, value_len(value))
}

fn attributes_len<'a>(tag: u32, kvs: impl Iterator<Item = (&'a str, &'a Value)>) -> usize {
    kvs.map(|(k, v)| field_len(tag, kv_len(k, v))).sum()
}

fn pairs(kvs: &[KeyValue]) -> impl Iterator<Item = (&str, &Value)> {
    kvs.iter().map(|kv| (kv.key.as_str(), &kv.value))
}

fn status_len(status: &Status) -> usize {
    let code = status_code(status);
    string_len(2, status_message(status)) + if code == 0 { 0 } else { 2 }
}

fn event_len(event: &opentelemetry::trace::Event) -> usize {
    (if nanos(event.timestamp) == 0 { 0 } else { 9 })
        + string_len(2, &event.name)
        + attributes_len(3, pairs(&event.attributes))
        + u32_len(4, event.dropped_attributes_count)
}

fn link_len(link: &opentelemetry::trace::Link) -> usize {
    let context = &link.span_context;
    field_len(1, 16)
        + field_len(2, 8)
        + string_len(3, &context.trace_state().header())
        + attributes_len(4, pairs(&link.attributes))
        + u32_len(5, link.dropped_attributes_count)
        + 5
}

fn span_len(span: &SpanData) -> usize {
    let context = &span.span_context;
    field_len(1, 16)
        + field_len(2, 8)
        + string_len(3, &context.trace_state().header())
        + if span.parent_span_id == SpanId::INVALID {
            0
        } else {
            field_len(4, 8)
        }
        + string_len(5, &span.name)
        + 2
        + if nanos(span.start_time) == 0 { 0 } else { 9 }
        + if nanos(span.end_time) == 0 { 0 } else { 9 }
        + attributes_len(9, pairs(&span.attributes))
        + u32_len(10, span.dropped_attributes_count)
        + span
            .events
            .iter()
            .map(|e| field_len(11, event_len(e)))
            .sum::<usize>()
        + u32_len(12, span.events.dropped_count)
        + span
            .links
            .iter()
            .map(|l| field_len(13, link_len(l)))
            .sum::<usize>()
        + u32_len(14, span.links.dropped_count)
        + field_len(15, status_len(&span.status))
        + 6
}

fn scope_len(scope: &InstrumentationScope) -> usize {
    string_len(1, scope.name())
        + string_len(2, scope.version().unwrap_or_default())
        + attributes_len(3, scope.attributes().map(|kv| (kv.key.as_str(), &kv.value)))
}

struct Out(Vec<u8>);

impl Out {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, tag: u32, wire: u32) {
        self.varint(u64::from((tag << 3) | wire));
    }

    /// The tag and length of a length-delimited field whose body follows.
    fn open(&mut self, tag: u32, len: usize) {
        self.key(tag, LEN);
        self.varint(len as u64);
    }

    fn bytes(&mut self, tag: u32, bytes: &[u8]) {
        self.open(tag, bytes.len());
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, tag: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(tag, s.as_bytes());
        }
    }

    fn uint32(&mut self, tag: u32, v: u32) {
        if v != 0 {
            self.key(tag, VARINT);
            self.varint(u64::from(v));
        }
    }

    fn fixed64(&mut self, tag: u32, v: u64) {
        if v != 0 {
            self.key(tag, I64);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn fixed32(&mut self, tag: u32, v: u32) {
        if v != 0 {
            self.key(tag, I32);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn scalar(&mut self, value: Scalar<'_>) {
        match value {
            Scalar::Str(s) => self.bytes(1, s.as_bytes()),
            Scalar::Bool(b) => {
                self.key(2, VARINT);
                self.varint(u64::from(b));
            }
            Scalar::Int(i) => {
                self.key(3, VARINT);
                self.varint(i as u64);
            }
            Scalar::Double(f) => {
                self.key(4, I64);
                self.0.extend_from_slice(&f.to_bits().to_le_bytes());
            }
        }
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::Bool(b) => self.scalar(Scalar::Bool(*b)),
            Value::I64(i) => self.scalar(Scalar::Int(*i)),
            Value::F64(f) => self.scalar(Scalar::Double(*f)),
            Value::String(s) => self.scalar(Scalar::Str(s.as_str())),
            Value::Array(a) => {
                self.open(5, array_len(a));
                for item in array_items(a) {
                    self.open(1, scalar_len(item));
                    self.scalar(item);
                }
            }
            _ => {}
        }
    }

    fn attributes<'a>(&mut self, tag: u32, kvs: impl Iterator<Item = (&'a str, &'a Value)>) {
        for (key, value) in kvs {
            self.open(tag, kv_len(key, value));
            self.string(1, key);
            self.open(2, value_len(value));
            self.value(value);
        }
    }

    fn ids(&mut self, context: &SpanContext) {
        self.bytes(1, &context.trace_id().to_bytes());
        self.bytes(2, &context.span_id().to_bytes());
        self.string(3, &context.trace_state().header());
    }

    fn span(&mut self, span: &SpanData) {
        let context = &span.span_context;
        self.ids(context);
        if span.parent_span_id != SpanId::INVALID {
            self.bytes(4, &span.parent_span_id.to_bytes());
        }
        self.string(5, &span.name);
        self.key(6, VARINT);
        self.varint(kind(&span.span_kind));
        self.fixed64(7, nanos(span.start_time));
        self.fixed64(8, nanos(span.end_time));
        self.attributes(9, pairs(&span.attributes));
        self.uint32(10, span.dropped_attributes_count);
        for event in span.events.iter() {
            self.open(11, event_len(event));
            self.fixed64(1, nanos(event.timestamp));
            self.string(2, &event.name);
            self.attributes(3, pairs(&event.attributes));
            self.uint32(4, event.dropped_attributes_count);
        }
        self.uint32(12, span.events.dropped_count);
        for link in span.links.iter() {
            self.open(13, link_len(link));
            self.ids(&link.span_context);
            self.attributes(4, pairs(&link.attributes));
            self.uint32(5, link.dropped_attributes_count);
            let context = &link.span_context;
            self.fixed32(6, flags(context.trace_flags().to_u8(), context.is_remote()));
        }
        self.uint32(14, span.links.dropped_count);
        self.open(15, status_len(&span.status));
        self.string(2, status_message(&span.status));
        let code = status_code(&span.status);
        if code != 0 {
            self.key(3, VARINT);
            self.varint(code);
        }
        self.fixed32(
            16,
            flags(context.trace_flags().to_u8(), span.parent_span_is_remote),
        );
    }
}

/// The `resource` field (1) of a `ResourceSpans`.
fn encode_resource(resource: &Resource) -> Vec<u8> {
    let kvs = || resource.iter().map(|(k, v)| (k.as_str(), v));
    let mut out = Out(Vec::new());
    out.open(1, attributes_len(1, kvs()));
    out.attributes(1, kvs());
    out.0
}

/// One `ExportTraceServiceRequest`: one `ResourceSpans` (`resource` already encoded), one
/// `ScopeSpans` per instrumentation scope in the order the scopes first appear, each span
/// under its scope in batch order — as the official transform groups them.
fn encode_request(resource: &[u8], resource_schema_url: &str, batch: &[SpanData]) -> Vec<u8> {
    let mut scopes: Vec<(&InstrumentationScope, Vec<(&SpanData, usize)>)> = Vec::new();
    for span in batch {
        let entry = (span, span_len(span));
        match scopes
            .iter_mut()
            .find(|(scope, _)| **scope == span.instrumentation_scope)
        {
            Some((_, spans)) => spans.push(entry),
            None => scopes.push((&span.instrumentation_scope, vec![entry])),
        }
    }
    let scope_spans_len = |scope: &InstrumentationScope, spans: &[(&SpanData, usize)]| {
        field_len(1, scope_len(scope))
            + spans
                .iter()
                .map(|(_, len)| field_len(2, *len))
                .sum::<usize>()
            + string_len(3, scope.schema_url().unwrap_or_default())
    };
    let scope_lens: Vec<usize> = scopes
        .iter()
        .map(|(scope, spans)| scope_spans_len(scope, spans))
        .collect();
    let resource_spans_len = resource.len()
        + scope_lens
            .iter()
            .map(|len| field_len(2, *len))
            .sum::<usize>()
        + string_len(3, resource_schema_url);

    let mut out = Out(Vec::with_capacity(field_len(1, resource_spans_len)));
    out.open(1, resource_spans_len);
    out.0.extend_from_slice(resource);
    for ((scope, spans), len) in scopes.iter().zip(scope_lens) {
        out.open(2, len);
        out.open(1, scope_len(scope));
        out.string(1, scope.name());
        out.string(2, scope.version().unwrap_or_default());
        out.attributes(3, scope.attributes().map(|kv| (kv.key.as_str(), &kv.value)));
        for (span, len) in spans {
            out.open(2, *len);
            out.span(span);
        }
        out.string(3, scope.schema_url().unwrap_or_default());
    }
    out.string(3, resource_schema_url);
    out.0
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry::trace::{Event, Link, SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
    use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
    use opentelemetry_sdk::trace::{SpanEvents, SpanLinks};
    use prost::Message;

    use super::*;

    fn context(trace: u128, span: u64, remote: bool, state: TraceState) -> SpanContext {
        SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::SAMPLED,
            remote,
            state,
        )
    }

    fn span(scope: &InstrumentationScope, n: u64) -> SpanData {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789 + n);
        let mut events = SpanEvents::default();
        events.events.push(Event::new(
            "retry",
            start + Duration::from_micros(10),
            vec![KeyValue::new("retry.delay_ms", 200_i64)],
            1,
        ));
        events.dropped_count = 2;
        let mut links = SpanLinks::default();
        links.links.push(Link::new(
            context(
                99,
                98,
                true,
                TraceState::from_key_value([("k", "v")]).unwrap(),
            ),
            vec![KeyValue::new("why", "follows")],
            0,
        ));
        links.dropped_count = u32::from(n == 4);
        SpanData {
            span_context: context(
                0xabcdef + u128::from(n),
                0x1000 + n,
                false,
                TraceState::NONE,
            ),
            parent_span_id: if n.is_multiple_of(2) {
                SpanId::from(7)
            } else {
                SpanId::INVALID
            },
            parent_span_is_remote: n.is_multiple_of(3),
            span_kind: [SpanKind::Server, SpanKind::Client, SpanKind::Internal][n as usize % 3]
                .clone(),
            name: format!("streamgate.v1.StreamService/GetStream{n}").into(),
            start_time: start,
            end_time: start + Duration::from_micros(250),
            attributes: vec![
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("server.port", 50051_i64),
                KeyValue::new("negative", -3_i64),
                KeyValue::new("ratio", 0.25),
                KeyValue::new("flag", n.is_multiple_of(2)),
                KeyValue::new("empty", ""),
                KeyValue::new("", "empty key"),
                KeyValue::new("bools", Value::Array(Array::Bool(vec![true, false]))),
                KeyValue::new("ints", Value::Array(Array::I64(vec![1, -1, 300]))),
                KeyValue::new("floats", Value::Array(Array::F64(vec![1.5, 0.0]))),
                KeyValue::new(
                    "strings",
                    Value::Array(Array::String(vec!["a".into(), "".into()])),
                ),
                KeyValue::new("non-ascii", "ストリーム ✓"),
            ],
            dropped_attributes_count: (n % 2) as u32,
            events,
            links,
            status: match n % 3 {
                0 => Status::Unset,
                1 => Status::Ok,
                _ => Status::error("the provider failed"),
            },
            instrumentation_scope: scope.clone(),
        }
    }

    #[tokio::test]
    async fn batches_encode_as_the_official_transform_builds_them() {
        let resource = Resource::builder_empty()
            .with_schema_url(
                [KeyValue::new("deployment.environment", "test")],
                "https://x/1",
            )
            .with_service_name("streamgate")
            .build();
        let server = InstrumentationScope::builder("streamgate")
            .with_version("0.1.0")
            .build();
        let other = InstrumentationScope::builder("other")
            .with_schema_url("https://schema/2")
            .with_attributes([KeyValue::new("scope.attr", 1_i64)])
            .build();
        // Scopes interleaved: spans are grouped by scope, in first-appearance order.
        let batch: Vec<SpanData> = (0..7)
            .map(|n| span(if n % 3 == 1 { &other } else { &server }, n))
            .collect();

        let mut exporter =
            OtlpSpanExporter::new("http://127.0.0.1:1", MetadataMap::new(), None, None).unwrap();
        exporter.set_resource(&resource);
        let ours = ExportTraceServiceRequest::decode(exporter.encode(&batch).as_slice()).unwrap();

        let official = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(
                batch,
                &ResourceAttributesWithSchema::from(&resource),
            ),
        };
        assert_eq!(ours.resource_spans[0].scope_spans.len(), 2);
        assert_eq!(ours, official);
        // And byte for byte, as prost writes the official message.
        assert_eq!(
            exporter.encode(&(0..7).map(|n| span(&server, n)).collect::<Vec<_>>()),
            ExportTraceServiceRequest {
                resource_spans: group_spans_by_resource_and_scope(
                    (0..7).map(|n| span(&server, n)).collect(),
                    &ResourceAttributesWithSchema::from(&resource),
                ),
            }
            .encode_to_vec()
        );
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [
            0_u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Out(Vec::new());
            out.varint(v);
            assert_eq!(out.0.len(), varint_len(v), "{v}");
        }
    }
}
