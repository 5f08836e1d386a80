//! Limits per caller, known once authentication has named the principal:
//!
//! - calls in flight per principal (`[server] max_in_flight_per_principal`), counted like the
//!   global bound of `load_shed.rs` until the response starts, so that one principal cannot
//!   hold every permit of `max_in_flight` (e.g. with 1,024 WaitOperation calls);
//! - long-lived calls (the server-streaming methods, [`crate::methods::ServedMethod::long_lived`]) counted
//!   while open, until their response body ends or is dropped: per connection
//!   (`max_streams_per_connection`), and per principal (`max_streams_per_principal`) — except
//!   `grpc.health.v1.Health/Watch`, which needs no credentials and so is counted against one
//!   bound for the whole gateway (`max_health_watches`) instead of against the anonymous
//!   principal, whose calls it would otherwise crowd out.
//!
//! Over a limit → RESOURCE_EXHAUSTED / TOO_MANY_CALLS or TOO_MANY_STREAMS, with RetryInfo: a
//! call ends, or a stream closes, and there is room again. Health checks (`Check`) are never
//! counted in flight, as in `load_shed.rs`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::{is_health, reject};
use crate::config::{ConfigError, ServerConfig};
use crate::error::{Error, Kind};
use crate::identity::{ANONYMOUS, Principal};

/// How many of something each key holds, up to a bound; a key is forgotten when it holds
/// none, so the table is as large as the keys holding something now.
struct Tally<K> {
    counts: Mutex<HashMap<K, usize>>,
    max: usize,
}

impl<K: Hash + Eq + Clone> Tally<K> {
    fn new(max: usize) -> Arc<Self> {
        Arc::new(Tally {
            counts: Mutex::new(HashMap::new()),
            max,
        })
    }

    /// One more for `key`, held until the [`Held`] drops; none when `key` is at the bound.
    fn take(self: &Arc<Self>, key: &K) -> Option<Held<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        match counts.get_mut(key) {
            Some(count) if *count >= self.max => return None,
            Some(count) => *count += 1,
            None => {
                counts.insert(key.clone(), 1);
            }
        }
        Some(Held {
            tally: Arc::clone(self),
            key: key.clone(),
        })
    }

    #[cfg(test)]
    fn keys(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One of a [`Tally`]'s count, given back on drop.
struct Held<K: Hash + Eq> {
    tally: Arc<Tally<K>>,
    key: K,
}

impl<K: Hash + Eq> Drop for Held<K> {
    fn drop(&mut self) {
        let mut counts = self.tally.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// What an open long-lived call holds until it ends.
struct Open {
    _connection: Option<Held<SocketAddr>>,
    _principal: Option<Held<Arc<str>>>,
    _health_watch: Option<OwnedSemaphorePermit>,
}

/// The limits per caller of a gateway, and what is counted against them now.
pub struct CallerBounds {
    // Calls in flight, by principal.
    in_flight: Arc<Tally<Arc<str>>>,
    // Long-lived calls open, by principal (health watches aside).
    streams: Arc<Tally<Arc<str>>>,
    // Long-lived calls open, by the connection's remote address.
    connections: Arc<Tally<SocketAddr>>,
    // Health watches in all: their callers are anonymous and many (one per client
    // connection that checks health), so they get their own bound.
    health_watches: Arc<Semaphore>,
    max_health_watches: usize,
    anonymous: Arc<str>,
}

impl CallerBounds {
    /// The bounds of `[server]`; each must be at least 1.
    pub fn from_config(server: &ServerConfig) -> Result<Self, ConfigError> {
        for (key, value) in [
            (
                "max_in_flight_per_principal",
                server.max_in_flight_per_principal,
            ),
            (
                "max_streams_per_principal",
                server.max_streams_per_principal,
            ),
            (
                "max_streams_per_connection",
                server.max_streams_per_connection,
            ),
            ("max_health_watches", server.max_health_watches),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "[server] {key} must be at least 1"
                )));
            }
        }
        Ok(CallerBounds {
            in_flight: Tally::new(server.max_in_flight_per_principal),
            streams: Tally::new(server.max_streams_per_principal),
            connections: Tally::new(server.max_streams_per_connection),
            health_watches: Arc::new(Semaphore::new(server.max_health_watches)),
            max_health_watches: server.max_health_watches,
            anonymous: Arc::from(ANONYMOUS),
        })
    }

    /// A permit of the call in flight, unless it is a health call.
    fn call(&self, path: &str, principal: &Arc<str>) -> Result<Option<Held<Arc<str>>>, Error> {
        if is_health(path) {
            return Ok(None);
        }
        match self.in_flight.take(principal) {
            Some(held) => Ok(Some(held)),
            None => Err(Error::new(
                Kind::TooManyCalls,
                format!(
                    "{principal} has {} calls in flight, the most allowed; retry when one ends",
                    self.in_flight.max
                ),
            )),
        }
    }

    /// What the long-lived call to `path` holds while open.
    fn open(
        &self,
        path: &str,
        principal: &Arc<str>,
        connection: Option<SocketAddr>,
    ) -> Result<Open, Error> {
        let too_many = |message: String| Error::new(Kind::TooManyStreams, message);
        let connection = match connection {
            Some(address) => Some(self.connections.take(&address).ok_or_else(|| {
                too_many(format!(
                    "this connection has {} long-lived calls open, the most allowed; close one \
                     or open another connection",
                    self.connections.max
                ))
            })?),
            // Not a TCP connection (none in the serving path): nothing names it.
            None => None,
        };
        let (principal, health_watch) = if is_health(path) {
            let permit = Arc::clone(&self.health_watches)
                .try_acquire_owned()
                .map_err(|_| {
                    too_many(format!(
                        "the gateway has {} health watches open, the most allowed; retry later \
                         or use Check",
                        self.max_health_watches
                    ))
                })?;
            (None, Some(permit))
        } else {
            let held = self.streams.take(principal).ok_or_else(|| {
                too_many(format!(
                    "{principal} has {} long-lived calls open, the most allowed; close one \
                     first",
                    self.streams.max
                ))
            })?;
            (Some(held), None)
        };
        Ok(Open {
            _connection: connection,
            _principal: principal,
            _health_watch: health_watch,
        })
    }
}

/// The remote address of the call's TCP connection (plaintext or TLS), which tonic puts in
/// every request's extensions: unique among the connections open at once.
fn connection(extensions: &http::Extensions) -> Option<SocketAddr> {
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
}

/// Applies the limits per caller.
#[derive(Clone)]
pub struct CallerLimitsLayer {
    bounds: Arc<CallerBounds>,
}

impl CallerLimitsLayer {
    /// A layer counting against `bounds`.
    pub fn new(bounds: Arc<CallerBounds>) -> Self {
        CallerLimitsLayer { bounds }
    }
}

impl<S> Layer<S> for CallerLimitsLayer {
    type Service = CallerLimits<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerLimits {
            inner,
            bounds: Arc::clone(&self.bounds),
        }
    }
}

/// The service of [`CallerLimitsLayer`].
#[derive(Clone)]
pub struct CallerLimits<S> {
    inner: S,
    bounds: Arc<CallerBounds>,
}

impl<S, B> Service<http::Request<B>> for CallerLimits<S>
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
        let path = request.uri().path();
        let principal = request
            .extensions()
            .get::<Principal>()
            .map_or(&self.bounds.anonymous, |p| &p.0);
        let admitted = self.bounds.call(path, principal).and_then(|call| {
            let open = crate::methods::served(path)
                .is_some_and(|m| m.long_lived)
                .then(|| {
                    self.bounds
                        .open(path, principal, connection(request.extensions()))
                })
                .transpose()?;
            Ok((call, open))
        });
        let (call, open) = match admitted {
            Ok(admitted) => admitted,
            Err(error) => {
                tracing::debug!(path, reason = error.message(), "call over a caller limit");
                return Box::pin(std::future::ready(Ok(reject(&error))));
            }
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            drop(call);
            match open {
                Some(open) => response.map(|response| {
                    response.map(|body| tonic::body::Body::new(Holding { body, _open: open }))
                }),
                None => response,
            }
        })
    }
}

pin_project! {
    /// A long-lived call's response body, holding the call's [`Open`] until it ends or is
    /// dropped (the caller went away, or the connection closed).
    struct Holding {
        #[pin]
        body: tonic::body::Body,
        _open: Open,
    }
}

impl Body for Holding {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WATCH: &str = "/streamgate.v1.StreamService/WatchStream";
    const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";

    fn bounds(text: &str) -> CallerBounds {
        let config = crate::config::Config::from_toml(&format!("[server]\n{text}")).unwrap();
        CallerBounds::from_config(&config.server).unwrap()
    }

    fn reason(result: Result<Open, Error>) -> &'static str {
        match result {
            Ok(_) => "admitted",
            Err(e) => e.kind().reason(),
        }
    }

    #[test]
    fn streams_are_counted_per_principal_and_connection_until_dropped() {
        let bounds = bounds("max_streams_per_principal = 2\nmax_streams_per_connection = 2");
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let (one, two) = (
            Some("127.0.0.1:1".parse().unwrap()),
            Some("127.0.0.1:2".parse().unwrap()),
        );
        let first = bounds.open(WATCH, &a, one).unwrap();
        let _second = bounds.open(WATCH, &a, two).unwrap();
        assert_eq!(reason(bounds.open(WATCH, &a, two)), "TOO_MANY_STREAMS");
        let _b1 = bounds.open(WATCH, &b, one).unwrap();
        assert_eq!(
            reason(bounds.open(WATCH, &b, one)),
            "TOO_MANY_STREAMS",
            "connection one holds two"
        );
        drop(first);
        assert_eq!(reason(bounds.open(WATCH, &a, one)), "admitted");
        assert_eq!(bounds.streams.keys(), 2);
    }

    #[test]
    fn health_watches_count_in_all_and_per_connection_not_per_principal() {
        let bounds = bounds(
            "max_streams_per_principal = 1\nmax_streams_per_connection = 2\n\
             max_health_watches = 3",
        );
        let anonymous: Arc<str> = Arc::from(ANONYMOUS);
        let one = Some("127.0.0.1:1".parse().unwrap());
        let _watch = bounds.open(WATCH, &anonymous, None).unwrap();
        let _h1 = bounds.open(HEALTH_WATCH, &anonymous, one).unwrap();
        let _h2 = bounds.open(HEALTH_WATCH, &anonymous, one).unwrap();
        assert_eq!(
            reason(bounds.open(HEALTH_WATCH, &anonymous, one)),
            "TOO_MANY_STREAMS"
        );
        let _h3 = bounds.open(HEALTH_WATCH, &anonymous, None).unwrap();
        assert_eq!(
            reason(bounds.open(HEALTH_WATCH, &anonymous, None)),
            "TOO_MANY_STREAMS"
        );
    }

    #[test]
    fn calls_in_flight_are_per_principal_and_health_is_not_counted() {
        let bounds = bounds("max_in_flight_per_principal = 1");
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let get = "/streamgate.v1.StreamService/GetStream";
        let held = bounds.call(get, &a).unwrap();
        let refused = bounds.call(get, &a).err().unwrap();
        assert_eq!(refused.kind(), Kind::TooManyCalls);
        let details = tonic_types::StatusExt::get_error_details(&refused.to_status());
        assert!(details.retry_info().is_some());
        assert!(bounds.call(get, &b).unwrap().is_some());
        assert!(
            bounds
                .call("/grpc.health.v1.Health/Check", &a)
                .unwrap()
                .is_none()
        );
        drop(held);
        assert!(bounds.call(get, &a).unwrap().is_some());
        assert_eq!(bounds.in_flight.keys(), 0);
    }

    #[test]
    fn a_bound_of_zero_is_refused() {
        let config =
            crate::config::Config::from_toml("[server]\nmax_streams_per_connection = 0").unwrap();
        let error = CallerBounds::from_config(&config.server).err().unwrap();
        assert!(error.to_string().contains("max_streams_per_connection"));
    }
}
