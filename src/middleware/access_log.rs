//! The access log: a span per call (method and gRPC status) and an INFO line when it ends.
//!
//! Built on tower-http's gRPC-aware trace layer, which reads the status from the trailers of
//! a successful response and from the headers of a trailers-only error.

use tower_http::classify::{GrpcErrorsAsFailures, SharedClassifier};
use tower_http::trace::{
    DefaultMakeSpan, DefaultOnFailure, DefaultOnRequest, DefaultOnResponse, TraceLayer,
};
use tracing::Level;

/// The access-log layer type.
pub type AccessLogLayer = TraceLayer<SharedClassifier<GrpcErrorsAsFailures>>;

/// One span per call at INFO, a line when the response starts, a WARN line on a failure.
pub fn access_log() -> AccessLogLayer {
    TraceLayer::new_for_grpc()
        .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
        .on_request(DefaultOnRequest::new().level(Level::DEBUG))
        .on_response(DefaultOnResponse::new().level(Level::INFO))
        .on_failure(DefaultOnFailure::new().level(Level::WARN))
}
