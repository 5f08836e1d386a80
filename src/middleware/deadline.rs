//! Deadlines: the caller's `grpc-timeout`, or the server's `[server] default_deadline` when a
//! unary caller sends none, bounds everything the call does. The deadline is visible to
//! provider retries ([`crate::deadline`]), which stop before it; a call still running when it
//! passes is answered DEADLINE_EXCEEDED. Streaming calls get no default deadline.

use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::reject;
use crate::error::{Error, Kind};

/// Scopes each call in its deadline.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineLayer {
    default: Duration,
}

impl DeadlineLayer {
    /// With `default` for unary callers that send no deadline.
    pub fn new(default: Duration) -> Self {
        DeadlineLayer { default }
    }
}

/// The deadline header, looked up by name without parsing it on every call.
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            default: self.default,
        }
    }
}

/// The service of [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct Deadline<S> {
    inner: S,
    default: Duration,
}

impl<S, B> Service<http::Request<B>> for Deadline<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Server-streaming methods run as long as their caller wants.
        let streaming = crate::methods::served(request.uri().path()).is_some_and(|m| m.long_lived);
        let timeout = request
            .headers()
            .get(&GRPC_TIMEOUT)
            .and_then(|v| v.to_str().ok())
            .and_then(crate::deadline::parse_grpc_timeout)
            .or((!streaming).then_some(self.default));
        let future = self.inner.call(request);
        Box::pin(async move {
            let Some(timeout) = timeout.filter(|_| !streaming) else {
                return crate::deadline::scope(timeout, future).await;
            };
            match tokio::time::timeout(timeout, crate::deadline::scope(Some(timeout), future)).await
            {
                Ok(response) => response,
                Err(_) => Ok(reject(&Error::new(
                    Kind::DeadlineExceeded,
                    format!("the call's deadline of {timeout:?} passed"),
                ))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn an_overrunning_call_is_answered_deadline_exceeded() {
        let slow = tower::service_fn(|_request: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let service = DeadlineLayer::new(Duration::from_millis(50)).layer(slow);
        let request = http::Request::builder()
            .uri("/streamgate.v1.StreamService/GetStream")
            .body(())
            .unwrap();
        let response = service.oneshot(request).await.unwrap();
        let status = tonic::Status::from_header_map(response.headers()).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    }
}
