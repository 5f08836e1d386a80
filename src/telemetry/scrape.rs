//! The Prometheus scrape endpoint: `GET /metrics` on `[telemetry] metrics_listen`, plain
//! HTTP/1.1, separate from the gRPC listener so that scrapers need no gRPC and no credentials.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Telemetry;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

async fn metrics(telemetry: Arc<Telemetry>) -> Response {
    match telemetry.prometheus_text() {
        Ok(text) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serves scrapes on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new().route("/metrics", get(move || metrics(Arc::clone(&telemetry))));
    axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}
