//! The final gRPC status of a call, as the response carries it (a helper of the trace and
//! metrics layers, not a layer): in the headers of a trailers-only response (how tonic answers
//! errors), else in the trailers that end the body. A body that ends without a status is
//! UNKNOWN; one dropped before its end (the caller went away) is CANCELLED.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName};
use http_body::{Body, Frame, SizeHint};
use percent_encoding::percent_decode_str;
use pin_project_lite::pin_project;
use tonic::Code;

// Looked up by `HeaderName`: a lookup by `&str` parses the name first, and every call looks at
// its headers and its trailers in two layers.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The gRPC status code.
    pub code: Code,
    /// The status message, if any.
    pub message: String,
    /// Whether the status carries rich error details (`grpc-status-details-bin`): every
    /// error streamgate itself reports does; tonic's answer to an unknown method does not.
    pub detailed: bool,
}

impl Outcome {
    fn bare(code: Code, message: &str) -> Self {
        Outcome {
            code,
            message: message.to_string(),
            detailed: false,
        }
    }

    fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let code = headers
            .get(&GRPC_STATUS)?
            .to_str()
            .ok()?
            .parse::<i32>()
            .ok()?;
        let message = headers
            .get(&GRPC_MESSAGE)
            .and_then(|m| m.to_str().ok())
            .filter(|m| !m.is_empty())
            .map(|m| percent_decode_str(m).decode_utf8_lossy().into_owned())
            .unwrap_or_default();
        Some(Outcome {
            code: Code::from_i32(code),
            message,
            detailed: headers.contains_key(&GRPC_STATUS_DETAILS),
        })
    }
}

/// What to do once a call's outcome is known.
pub type OnOutcome = Box<dyn FnOnce(Outcome) + Send>;

pin_project! {
    /// A response body that reports the call's outcome when it ends.
    pub struct Observed<B> {
        #[pin]
        inner: B,
        on_outcome: Option<OnOutcome>,
    }

    impl<B> PinnedDrop for Observed<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(report) = this.project().on_outcome.take() {
                report(Outcome::bare(Code::Cancelled, "the caller went away before the end"));
            }
        }
    }
}

/// Calls `on_outcome` when `response` is known to end: at once for a trailers-only response,
/// else when its body does.
pub fn observe<B>(
    response: http::Response<B>,
    on_outcome: OnOutcome,
) -> http::Response<Observed<B>> {
    let on_outcome = match Outcome::from_headers(response.headers()) {
        Some(outcome) => {
            on_outcome(outcome);
            None
        }
        None => Some(on_outcome),
    };
    response.map(|inner| Observed { inner, on_outcome })
}

/// The response of `call` (an inner service's future), reporting to `on_outcome` when the
/// call ends; a service that fails before answering is UNKNOWN.
pub fn observe_call<F, B, E>(
    call: F,
    on_outcome: OnOutcome,
) -> BoxFuture<'static, Result<http::Response<Observed<B>>, E>>
where
    F: Future<Output = Result<http::Response<B>, E>> + Send + 'static,
{
    Box::pin(async move {
        match call.await {
            Ok(response) => Ok(observe(response, on_outcome)),
            Err(e) => {
                on_outcome(Outcome::bare(
                    Code::Unknown,
                    "the service failed before answering",
                ));
                Err(e)
            }
        }
    })
}

impl<B: Body> Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        let outcome = match &polled {
            Poll::Ready(Some(Ok(frame))) => frame.trailers_ref().map(|trailers| {
                Outcome::from_headers(trailers)
                    .unwrap_or_else(|| Outcome::bare(Code::Unknown, "trailers without grpc-status"))
            }),
            Poll::Ready(Some(Err(_))) => {
                Some(Outcome::bare(Code::Unknown, "the response body failed"))
            }
            Poll::Ready(None) => Some(Outcome::bare(Code::Unknown, "no grpc-status")),
            Poll::Pending => None,
        };
        if let Some(outcome) = outcome
            && let Some(report) = this.on_outcome.take()
        {
            report(outcome);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;

    use super::*;

    type Seen = Arc<Mutex<Vec<Outcome>>>;

    fn recorder() -> (Seen, OnOutcome) {
        let seen: Seen = Arc::default();
        let sink = Arc::clone(&seen);
        (seen, Box::new(move |o| sink.lock().unwrap().push(o)))
    }

    #[test]
    fn trailers_only_errors_are_known_at_once() {
        let (seen, report) = recorder();
        let response = http::Response::builder()
            .header("grpc-status", "5")
            .header("grpc-message", "no%20such%20stream")
            .header("grpc-status-details-bin", "AA")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let observed = observe(response, report);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![Outcome {
                code: Code::NotFound,
                message: "no such stream".into(),
                detailed: true
            }]
        );
        drop(observed);
        assert_eq!(seen.lock().unwrap().len(), 1, "reported once");
    }

    #[tokio::test]
    async fn unary_success_is_read_from_the_trailers() {
        let (seen, report) = recorder();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let body = http_body_util::StreamBody::new(futures::stream::iter([
            Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from_static(b"x"))),
            Ok(Frame::trailers(trailers)),
        ]));
        let observed = observe(http::Response::new(body), report);
        assert!(seen.lock().unwrap().is_empty());
        let collected = observed.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(seen.lock().unwrap()[0].code, Code::Ok);
    }

    #[test]
    fn a_body_dropped_early_is_cancelled() {
        let (seen, report) = recorder();
        drop(observe(
            http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()),
            report,
        ));
        assert_eq!(seen.lock().unwrap()[0].code, Code::Cancelled);
    }
}
