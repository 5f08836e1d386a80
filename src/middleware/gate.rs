//! The shape of the layers that admit or refuse a call before it runs (authentication,
//! authorization, inbound rate limits): a [`Gate`] decides, [`GateLayer`] / [`Gated`] do the
//! tower plumbing once for all of them. A refusal is answered at once with the error's gRPC
//! status (and, for a mutating call of an authenticated caller, recorded in the audit trail
//! when the layer is [`GateLayer::audited`]); an admitted call may carry what the gate learned
//! in its extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tower::{Layer, Service};

use super::reject;
use crate::audit::Audit;
use crate::error::Error;
use crate::identity::Principal;

/// Decides whether a call goes on.
pub trait Gate: Send + Sync + 'static {
    /// Admits the call to `path` (adding to its extensions what later layers and handlers
    /// need), or returns the error to answer with.
    fn admit(
        &self,
        path: &str,
        headers: &http::HeaderMap,
        extensions: &mut http::Extensions,
    ) -> Result<(), Error>;
}

/// A layer that puts `G` in front of a service.
pub struct GateLayer<G> {
    gate: Arc<G>,
    audit: Option<Arc<Audit>>,
}

impl<G> GateLayer<G> {
    /// A layer deciding with `gate`.
    pub fn new(gate: Arc<G>) -> Self {
        GateLayer { gate, audit: None }
    }

    /// The same, recording in `audit` the mutating calls of authenticated callers it refuses.
    pub fn audited(self, audit: &Arc<Audit>) -> Self {
        GateLayer {
            audit: Some(Arc::clone(audit)),
            ..self
        }
    }
}

impl<G> Clone for GateLayer<G> {
    fn clone(&self) -> Self {
        GateLayer {
            gate: Arc::clone(&self.gate),
            audit: self.audit.clone(),
        }
    }
}

impl<S, G> Layer<S> for GateLayer<G> {
    type Service = Gated<S, G>;

    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            inner,
            gate: Arc::clone(&self.gate),
            audit: self.audit.clone(),
        }
    }
}

/// The service of [`GateLayer`].
pub struct Gated<S, G> {
    inner: S,
    gate: Arc<G>,
    audit: Option<Arc<Audit>>,
}

impl<S: Clone, G> Clone for Gated<S, G> {
    fn clone(&self) -> Self {
        Gated {
            inner: self.inner.clone(),
            gate: Arc::clone(&self.gate),
            audit: self.audit.clone(),
        }
    }
}

impl<S, G, B> Service<http::Request<B>> for Gated<S, G>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
    G: Gate,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (mut parts, body) = request.into_parts();
        match self
            .gate
            .admit(parts.uri.path(), &parts.headers, &mut parts.extensions)
        {
            Ok(()) => Box::pin(self.inner.call(http::Request::from_parts(parts, body))),
            Err(error) => {
                // A caller without valid credentials is not recorded: the authentication
                // layer counts those refusals instead.
                if let Some(audit) = &self.audit
                    && let Some(method) = crate::methods::mutating(parts.uri.path())
                    && let Some(Principal(principal)) = parts.extensions.get::<Principal>()
                {
                    audit.refused(&method.method, principal, &error);
                }
                Box::pin(std::future::ready(Ok(reject(&error))))
            }
        }
    }
}
