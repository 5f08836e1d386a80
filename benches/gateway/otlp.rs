//! A local OTLP receiver for the gateway's batch span exporter and metric reader: it decodes
//! each export and counts what it holds, keeping nothing (the tests' receiver keeps every span,
//! which a benchmark would grow without bound).
//!
//! It runs on a thread of its own, with a runtime of its own: the load generator's runtime is
//! the current-thread scheduler (one core), on which decoding a batch of 512 spans would hold
//! up every call in flight until it is done. On its own thread the OS time-slices the two.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Counts {
    spans: Arc<AtomicU64>,
    metric_exports: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Counts {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Counts {
    async fn export(
        &self,
        _request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.metric_exports.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A running receiver.
pub struct Receiver {
    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    counts: Counts,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the OTLP receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let counts = Counts::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = counts.clone();
        let thread = std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                let runtime = streamgate::runtime::build(1).expect("receiver runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("receiver listener");
                    let server = tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(served.clone()))
                        .add_service(MetricsServiceServer::new(served))
                        .serve_with_incoming(TcpListenerStream::new(listener));
                    // Not a graceful stop: the gateway's exporter may hold its connection
                    // open. Dropping the runtime afterwards drops the connections' tasks.
                    tokio::select! {
                        _ = server => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("receiver thread");
        Receiver {
            endpoint: format!("http://{addr}"),
            counts,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Spans received so far.
    pub fn spans(&self) -> u64 {
        self.counts.spans.load(Ordering::Relaxed)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
