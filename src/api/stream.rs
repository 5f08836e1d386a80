//! StreamService: validates each request, checks the provider's capability, and either reads
//! through the adapter or hands a mutation to the operation runner. Every mutating call that
//! reaches its handler is recorded in the audit trail, whatever its outcome: a call that starts
//! an operation in the same transaction as the operation.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::Stream as FutureStream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::{Gateway, authorize_provider, convert, first_step_wait, principal};
use crate::audit::{Call, CallOutcome, Pending};
use crate::domain::endpoint::{DEFAULT_LIFETIME, MAX_PURPOSES};
use crate::domain::page::{page_size, parse_filter};
use crate::domain::validate::{
    self, Violations, check_etag, check_patch, check_request_id, check_spec,
};
use crate::domain::{
    CloudFrontTarget, CustomPolicy, EndpointsRequest, ListQuery, Method, OpRequest, ParentName,
    PlaybackMode, StreamName, StreamPatch, names,
};
use crate::error::{Error, Kind, Result};
use crate::pb;
use crate::pb::stream_service_server::StreamService;
use crate::pb::watch_stream_response::ChangeType;
use crate::providers::Provider;
use crate::watch::{Change, ReadStream, SharedRead, WatchReads};

/// The StreamService implementation.
pub struct StreamApi {
    gateway: Arc<Gateway>,
}

impl StreamApi {
    /// Serves StreamService from the shared gateway state.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        StreamApi { gateway }
    }

    /// The provider instance `id` for `method`, if the caller may use it.
    fn provider<T>(
        &self,
        request: &Request<T>,
        id: &str,
        method: Method,
    ) -> Result<&Arc<dyn Provider>> {
        authorize_provider(request, id)?;
        self.gateway.registry.for_method(id, method)
    }

    /// The provider of the stream `name` for `method`, if the caller may use it and the
    /// stream's id matches the kind's pattern (`field` names the request field in errors), so
    /// that no id a kind cannot hold reaches its provider.
    fn stream_provider<T>(
        &self,
        request: &Request<T>,
        name: &StreamName,
        field: &str,
        method: Method,
    ) -> Result<&Arc<dyn Provider>> {
        let provider = self.provider(request, &name.provider, method)?;
        provider
            .capability()
            .check_stream_id(&name.stream)
            .map_err(|why| Error::invalid_field(field, why))?;
        Ok(provider)
    }

    /// Returns the earlier operation of a retried request, or runs the prechecks and starts a
    /// new one (or neither, for `validate_only`), written with the call's audit record.
    async fn start<T>(
        &self,
        request: &Request<T>,
        provider: &Arc<dyn Provider>,
        op: OpRequest,
        request_id: &str,
        validate_only: bool,
        audit: &mut Pending<'_>,
    ) -> Result<pb::Operation> {
        let principal = principal(request);
        let request_id = (!request_id.is_empty()).then(|| request_id.to_string());
        if let Some(id) = &request_id
            && let Some(existing) = self.gateway.runner.find_retry(&principal, id, &op).await?
        {
            return Ok(convert::operation(&existing));
        }
        // AIP-163 as the design fixes it: every check of the gateway, no provider call.
        provider.validate(&op)?;
        if validate_only {
            return Ok(convert::validated(&op, None));
        }
        provider.precheck(&op).await?;
        let op = self
            .gateway
            .runner
            .submit(
                &principal,
                request_id,
                op,
                first_step_wait(),
                Some(audit.with_operation()),
            )
            .await?;
        Ok(convert::operation(&op))
    }

    /// Opens the audit record of a mutating call.
    fn begin<T>(
        &self,
        request: &Request<T>,
        method: Method,
        target: String,
        request_id: &str,
    ) -> Pending<'_> {
        self.gateway.audit.begin(Call {
            principal: principal(request),
            method: method.as_str(),
            target,
            request_id,
        })
    }

    /// Records the call in the audit trail and answers it.
    async fn audited(
        audit: Pending<'_>,
        result: Result<pb::Operation>,
    ) -> Result<Response<pb::Operation>, Status> {
        let outcome = match &result {
            Ok(op) => CallOutcome::Operation(&op.name),
            Err(e) => CallOutcome::Failed(e),
        };
        audit.finish(outcome).await;
        Ok(Response::new(result?))
    }

    async fn create_stream_call(
        &self,
        request: &Request<pb::CreateStreamRequest>,
        audit: &mut Pending<'_>,
    ) -> Result<pb::Operation> {
        let r = request.get_ref();
        let mut v = Violations::default();
        let parent = ParentName::parse(&r.parent, "parent");
        let provider = match &parent {
            Ok(p) => Some(self.provider(request, &p.provider, Method::CreateStream)?),
            Err(e) => {
                v.absorb(Err(e.clone()))?;
                None
            }
        };
        let stream_id = names::check_segment(&r.stream_id, "stream_id");
        let stream_id_valid = stream_id.is_ok();
        v.check("stream_id", stream_id);
        check_request_id(&r.request_id, &mut v);
        let spec = r.stream.as_ref().map(convert::spec).unwrap_or_default();
        if let Some(provider) = provider {
            let cap = provider.capability();
            if stream_id_valid && !cap.assigns_stream_ids {
                v.check("stream_id", cap.check_stream_id(&r.stream_id));
            }
            check_spec(&spec, provider.capability(), "stream", &mut v);
        }
        v.finish()?;
        // Both are set: a bad parent left a violation, and finish() returned it.
        let (Ok(parent), Some(provider)) = (parent, provider) else {
            return Err(Error::internal("create_stream: unchecked parent"));
        };
        let op = OpRequest::Create {
            name: parent.child(&r.stream_id),
            spec,
        };
        let op = self
            .start(request, provider, op, &r.request_id, r.validate_only, audit)
            .await?;
        Ok(op)
    }

    async fn update_stream_call(
        &self,
        request: &Request<pb::UpdateStreamRequest>,
        audit: &mut Pending<'_>,
    ) -> Result<pb::Operation> {
        let r = request.get_ref();
        // The grant is checked before the body when the name alone tells the target, so a
        // caller without it learns nothing (and costs little) however large the body.
        if let Some(stream) = &r.stream
            && let Ok(target) = StreamName::parse(&stream.name, "stream.name")
        {
            authorize_provider(request, &target.provider)?;
        }
        let (name, patch, etag) = self.parse_update(r)?;
        let provider = self.stream_provider(request, &name, "stream.name", Method::UpdateStream)?;
        let mut v = Violations::default();
        check_patch(&patch, provider.capability(), &mut v);
        v.finish()?;
        let op = OpRequest::Update { name, patch, etag };
        let op = self
            .start(request, provider, op, &r.request_id, r.validate_only, audit)
            .await?;
        Ok(op)
    }

    async fn delete_stream_call(
        &self,
        request: &Request<pb::DeleteStreamRequest>,
        audit: &mut Pending<'_>,
    ) -> Result<pb::Operation> {
        let r = request.get_ref();
        let mut v = Violations::default();
        let name = StreamName::parse(&r.name, "name");
        if let Err(e) = &name {
            v.absorb(Err(e.clone()))?;
        }
        check_etag(&r.etag, "etag", &mut v);
        check_request_id(&r.request_id, &mut v);
        v.finish()?;
        // A bad name left a violation, and finish() returned it.
        let name = name?;
        let provider = self.stream_provider(request, &name, "name", Method::DeleteStream)?;
        let op = OpRequest::Delete {
            name,
            etag: (!r.etag.is_empty()).then(|| r.etag.clone()),
            allow_missing: r.allow_missing,
        };
        let op = self
            .start(request, provider, op, &r.request_id, r.validate_only, audit)
            .await?;
        Ok(op)
    }

    async fn batch_delete_streams_call(
        &self,
        request: &Request<pb::BatchDeleteStreamsRequest>,
        audit: &mut Pending<'_>,
    ) -> Result<pb::Operation> {
        let r = request.get_ref();
        let parent = ParentName::parse(&r.parent, "parent")?;
        let provider = self.provider(request, &parent.provider, Method::BatchDeleteStreams)?;
        let cap = provider.capability();
        let max = cap.max_batch_size;
        let mut v = Violations::default();
        check_request_id(&r.request_id, &mut v);
        if r.names.is_empty() {
            v.add("names", "at least one name is required");
        }
        if r.names.len() > max {
            v.add(
                "names",
                format!(
                    "at most {max} names per call for this provider, got {}",
                    r.names.len()
                ),
            );
        }
        let mut names = Vec::with_capacity(r.names.len());
        let mut seen = std::collections::HashSet::new();
        for (i, raw) in r.names.iter().enumerate().take(max) {
            if v.is_full() {
                break;
            }
            let field = format!("names[{i}]");
            match StreamName::parse(raw, &field) {
                Ok(name) if !parent.contains(&name) => {
                    v.add(field, format!("is not under {parent}"));
                }
                Ok(name) if !seen.insert(name.clone()) => {
                    v.add(field, "appears twice");
                }
                Ok(name) => match cap.check_stream_id(&name.stream) {
                    Ok(()) => names.push(name),
                    Err(why) => v.add(field, why),
                },
                Err(e) => v.absorb(Err(e))?,
            }
        }
        v.finish()?;
        let op = OpRequest::BatchDelete { parent, names };
        let op = self
            .start(request, provider, op, &r.request_id, false, audit)
            .await?;
        Ok(op)
    }

    async fn get_stream_endpoints_call(
        &self,
        request: &Request<pb::GetStreamEndpointsRequest>,
    ) -> Result<pb::GetStreamEndpointsResponse> {
        let r = request.get_ref();
        let name = StreamName::parse(&r.name, "name")?;
        let provider = self.stream_provider(request, &name, "name", Method::GetStreamEndpoints)?;
        let cap = provider.capability();
        let mut v = Violations::default();
        let wanted = parse_endpoints_request(r, cap.max_endpoint_lifetime, &mut v);
        validate::check_endpoints_request(
            &wanted,
            &cap.endpoints,
            cap.max_endpoint_lifetime,
            &mut v,
        );
        v.finish()?;
        let endpoints = provider.stream_endpoints(&name, &wanted).await?;
        Ok(pb::GetStreamEndpointsResponse {
            endpoints: endpoints.iter().map(convert::endpoint).collect(),
        })
    }

    fn parse_update(
        &self,
        request: &pb::UpdateStreamRequest,
    ) -> Result<(StreamName, StreamPatch, Option<String>)> {
        let stream = request
            .stream
            .as_ref()
            .ok_or_else(|| Error::invalid_field("stream", "required"))?;
        let name = StreamName::parse(&stream.name, "stream.name")?;
        let paths: Vec<&str> = request
            .update_mask
            .as_ref()
            .map(|m| m.paths.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let all = [
            "media_type",
            "device_name",
            "data_retention_hours",
            "tags",
            "cloudfront.enabled",
            "cloudfront.comment",
        ];
        let cloudfront = match &stream.details {
            Some(pb::stream::Details::Cloudfront(d)) => Some(d),
            _ => None,
        };
        let paths: Vec<&str> = match paths.as_slice() {
            // AIP-134: no mask means every field the caller populated.
            [] => all
                .into_iter()
                .filter(|p| match *p {
                    "media_type" => !stream.media_type.is_empty(),
                    "device_name" => !stream.device_name.is_empty(),
                    "data_retention_hours" => stream.data_retention_hours != 0,
                    "tags" => !stream.tags.is_empty(),
                    // A populated details message is the caller's whole intent for it.
                    _ => cloudfront.is_some(),
                })
                .collect(),
            // Every field of the stream's kind: the cloudfront.* ones only with their message.
            ["*"] => all
                .into_iter()
                .filter(|p| !p.starts_with("cloudfront.") || cloudfront.is_some())
                .collect(),
            given => given.to_vec(),
        };
        let mut v = Violations::default();
        let mut patch = StreamPatch::default();
        // A path named again changes nothing: its field is copied once, however often it
        // repeats (a mask of many "tags" must not copy the tags each time).
        for path in &paths {
            match *path {
                "media_type" => {
                    patch
                        .media_type
                        .get_or_insert_with(|| stream.media_type.clone());
                }
                "device_name" => {
                    patch
                        .device_name
                        .get_or_insert_with(|| stream.device_name.clone());
                }
                "data_retention_hours" => {
                    patch.data_retention_hours = Some(stream.data_retention_hours)
                }
                "tags" => {
                    patch
                        .tags
                        .get_or_insert_with(|| stream.tags.clone().into_iter().collect());
                }
                "cloudfront.enabled" => patch.enabled = Some(cloudfront.is_some_and(|d| d.enabled)),
                "cloudfront.comment" => {
                    patch.comment.get_or_insert_with(|| {
                        cloudfront.map(|d| d.comment.clone()).unwrap_or_default()
                    });
                }
                // Past the listed violations the rest of the mask is not read: the answer
                // says more were found.
                _ if v.is_full() => break,
                other => v.add(
                    "update_mask",
                    format!(
                        "{:?} cannot be updated; updatable: {}",
                        other.chars().take(64).collect::<String>(),
                        all.join(", ")
                    ),
                ),
            }
        }
        if paths.is_empty() {
            v.add("update_mask", "names no field to change");
        }
        check_etag(&stream.etag, "stream.etag", &mut v);
        check_request_id(&request.request_id, &mut v);
        v.finish()?;
        let etag = (!stream.etag.is_empty()).then(|| stream.etag.clone());
        Ok((name, patch, etag))
    }
}

/// The domain request of a GetStreamEndpoints call; what does not parse is a violation in `v`
/// (the purposes are bounded, so the violations are too).
fn parse_endpoints_request(
    r: &pb::GetStreamEndpointsRequest,
    max_lifetime: std::time::Duration,
    v: &mut Violations,
) -> EndpointsRequest {
    let mut purposes = Vec::new();
    if r.purposes.is_empty() {
        v.add("purposes", "at least one purpose is required");
    }
    if r.purposes.len() > MAX_PURPOSES {
        v.add(
            "purposes",
            format!("at most {MAX_PURPOSES}, got {}", r.purposes.len()),
        );
    }
    for (i, value) in r.purposes.iter().enumerate().take(MAX_PURPOSES) {
        match convert::purpose_of(*value) {
            Some(p) if purposes.contains(&p) => v.add(format!("purposes[{i}]"), "appears twice"),
            Some(p) => purposes.push(p),
            None => v.add(format!("purposes[{i}]"), "INGEST or PLAYBACK"),
        }
    }
    let protocol = convert::protocol_of(r.protocol).unwrap_or_else(|()| {
        v.add("protocol", "not a known protocol");
        None
    });
    let lifetime = match &r.lifetime {
        None => DEFAULT_LIFETIME.min(max_lifetime),
        Some(d) if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0) => {
            v.add("lifetime", "must be more than zero");
            max_lifetime
        }
        Some(d) => std::time::Duration::new(d.seconds as u64, d.nanos.clamp(0, 999_999_999) as u32),
    };
    let playback = match &r.playback {
        None => PlaybackMode::Live,
        Some(p) => playback_mode(p, v),
    };
    let cloudfront = r.cloudfront.as_ref().map(|c| {
        let target = CloudFrontTarget {
            path: c.path.clone(),
            signed: c.signed,
            policy: CustomPolicy {
                ip_range: (!c.ip_range.is_empty()).then(|| c.ip_range.clone()),
                start_ms: c.start_time.as_ref().map(convert::timestamp_ms),
            },
        };
        validate::check_cloudfront(&target, "cloudfront", v);
        target
    });
    EndpointsRequest {
        purposes,
        protocol,
        lifetime,
        playback,
        cloudfront,
    }
}

/// The playback mode of a request, with the times its mode needs.
fn playback_mode(p: &pb::PlaybackOptions, v: &mut Violations) -> PlaybackMode {
    use pb::PlaybackMode as Mode;
    let start = p.start_time.as_ref().map(convert::timestamp_ms);
    let end = p.end_time.as_ref().map(convert::timestamp_ms);
    match Mode::try_from(p.mode) {
        Ok(Mode::Unspecified | Mode::Live) => {
            if start.is_some() || end.is_some() {
                v.add("playback", "LIVE takes no start_time or end_time");
            }
            PlaybackMode::Live
        }
        Ok(Mode::LiveReplay) => match (start, end) {
            (Some(start_ms), None) => PlaybackMode::LiveReplay { start_ms },
            _ => {
                v.add(
                    "playback",
                    "LIVE_REPLAY needs a start_time and takes no end_time",
                );
                PlaybackMode::Live
            }
        },
        Ok(Mode::OnDemand) => match (start, end) {
            (Some(start_ms), Some(end_ms)) if start_ms < end_ms => {
                PlaybackMode::OnDemand { start_ms, end_ms }
            }
            _ => {
                v.add(
                    "playback",
                    "ON_DEMAND needs a start_time before its end_time",
                );
                PlaybackMode::Live
            }
        },
        Err(_) => {
            v.add("playback.mode", "not a known mode");
            PlaybackMode::Live
        }
    }
}

type WatchStreamOut =
    Pin<Box<dyn FutureStream<Item = Result<pb::WatchStreamResponse, Status>> + Send>>;

/// The stream `name` as `provider` has it, read once for all the callers asking at once
/// ([`crate::watch::WatchHub::read`]).
async fn shared_read(
    gateway: &Gateway,
    provider: &Arc<dyn Provider>,
    name: &StreamName,
) -> SharedRead {
    let (provider, owned) = (Arc::clone(provider), name.clone());
    gateway
        .hub
        .read(&name.to_string(), async move {
            provider.get_stream(&owned).await
        })
        .await
}

/// How a poller reads the stream `name` from `provider`.
fn poll_read(provider: &Arc<dyn Provider>, name: &StreamName) -> ReadStream {
    let (provider, name) = (Arc::clone(provider), name.clone());
    Arc::new(move || {
        let (provider, name) = (Arc::clone(&provider), name.clone());
        async move { provider.get_stream(&name).await }.boxed()
    })
}

/// The most staleness a caller may accept (`max_staleness`).
const MAX_STALENESS: Duration = Duration::from_secs(3600);

/// The staleness a caller accepts (`max_staleness`): `None` when unset or zero, i.e. an answer
/// read after the call arrived.
fn max_staleness(value: Option<&prost_types::Duration>) -> Result<Option<Duration>> {
    let Some(d) = value else {
        return Ok(None);
    };
    let (Ok(seconds), Ok(nanos)) = (u64::try_from(d.seconds), u32::try_from(d.nanos)) else {
        return Err(Error::invalid_field(
            "max_staleness",
            "must not be negative",
        ));
    };
    if nanos > 999_999_999 {
        return Err(Error::invalid_field(
            "max_staleness",
            "nanos must be less than one second",
        ));
    }
    let staleness = Duration::new(seconds, nanos);
    if staleness > MAX_STALENESS {
        return Err(Error::invalid_field(
            "max_staleness",
            format!("at most {}s", MAX_STALENESS.as_secs()),
        ));
    }
    Ok((!staleness.is_zero()).then_some(staleness))
}

/// The answer a shared read gives a GetStream call.
fn answer(read: &SharedRead) -> Result<pb::Stream> {
    read.result
        .as_ref()
        .map(|stream| convert::read_stream(stream, read.read_time_ms))
        .map_err(Clone::clone)
}

impl StreamApi {
    /// The initial state of a watch of `name`, within `[server] watch_initial_read_timeout`
    /// and the caller's deadline. A polled stream's comes from its latest shared read if that
    /// started at most one poll interval ago, else from the next read its poller makes or hears
    /// of within one interval; failing both (or for a stream that is not polled), from a read
    /// of this call, shared with the calls reading the stream at once here, whose wait for a
    /// turn under the outbound limit is bounded like the rest (a turn past the bound is
    /// answered PROVIDER_THROTTLED at once, with RetryInfo).
    async fn initial_state(
        &self,
        provider: &Arc<dyn Provider>,
        name: &StreamName,
        polled: Option<(WatchReads, Duration)>,
    ) -> Result<crate::domain::Stream> {
        let timeout = self.gateway.watch_initial_read_timeout;
        let bound = crate::deadline::usable().map_or(timeout, |left| left.min(timeout));
        let hub = &self.gateway.hub;
        let key = name.to_string();
        let read = async {
            if let Some((mut reads, every)) = polled {
                if let Some(read) = hub.fresh(&key, every).await {
                    return read.result.clone();
                }
                if let Ok(Ok(())) = tokio::time::timeout(every, reads.changed()).await
                    && let Some(read) = reads.borrow_and_update().clone()
                {
                    return read.result.clone();
                }
            }
            shared_read(&self.gateway, provider, name).await.result
        };
        crate::deadline::scope(Some(bound), crate::deadline::bounded(read))
            .await
            .unwrap_or_else(|| {
                Err(Error::new(
                    Kind::ProviderUnavailable,
                    format!("the initial state of {name} could not be read within {bound:?}"),
                )
                .with_provider(&name.provider)
                .temporary())
            })
    }
}

#[tonic::async_trait]
impl StreamService for StreamApi {
    async fn create_stream(
        &self,
        request: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let r = request.get_ref();
        let target = format!("{}/streams/{}", r.parent, r.stream_id);
        let mut audit = self.begin(&request, Method::CreateStream, target, &r.request_id);
        let result = self.create_stream_call(&request, &mut audit).await;
        Self::audited(audit, result).await
    }

    async fn get_stream(
        &self,
        request: Request<pb::GetStreamRequest>,
    ) -> Result<Response<pb::Stream>, Status> {
        let r = request.get_ref();
        let name = StreamName::parse(&r.name, "name")?;
        let staleness = max_staleness(r.max_staleness.as_ref())?;
        let provider = self.stream_provider(&request, &name, "name", Method::GetStream)?;
        if let Some(staleness) = staleness
            && let Some(read) = self.gateway.hub.fresh(&name.to_string(), staleness).await
        {
            return Ok(Response::new(answer(&read)?));
        }
        let read = shared_read(&self.gateway, provider, &name).await;
        Ok(Response::new(answer(&read)?))
    }

    async fn list_streams(
        &self,
        request: Request<pb::ListStreamsRequest>,
    ) -> Result<Response<pb::ListStreamsResponse>, Status> {
        let r = request.get_ref();
        let parent = ParentName::parse(&r.parent, "parent")?;
        // Checked, and then met by the fresh list every call reads.
        max_staleness(r.max_staleness.as_ref())?;
        let provider = self.provider(&request, &parent.provider, Method::ListStreams)?;
        let cap = provider.capability();
        let caller = principal(&request);
        let pages = &self.gateway.pages;
        let query_parts = ["streams", r.parent.as_str(), r.filter.as_str()];
        let query = ListQuery {
            page_size: page_size(r.page_size, cap.max_page_size)?,
            position: pages.decode(&r.page_token, &caller, &query_parts)?,
            ..ListQuery::default()
        }
        .with_filter(parse_filter(&r.filter, &cap.list_filters)?)?;
        let read_time_ms = crate::watch::now_ms();
        let page = provider.list_streams(&parent, &query).await?;
        Ok(Response::new(pb::ListStreamsResponse {
            streams: page
                .items
                .iter()
                .map(|stream| convert::read_stream(stream, read_time_ms))
                .collect(),
            next_page_token: page
                .next
                .map(|p| pages.encode(&p, &caller, &query_parts))
                .unwrap_or_default(),
        }))
    }

    async fn update_stream(
        &self,
        request: Request<pb::UpdateStreamRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let r = request.get_ref();
        let target = r
            .stream
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let mut audit = self.begin(&request, Method::UpdateStream, target, &r.request_id);
        let result = self.update_stream_call(&request, &mut audit).await;
        Self::audited(audit, result).await
    }

    async fn delete_stream(
        &self,
        request: Request<pb::DeleteStreamRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let r = request.get_ref();
        let mut audit = self.begin(
            &request,
            Method::DeleteStream,
            r.name.clone(),
            &r.request_id,
        );
        let result = self.delete_stream_call(&request, &mut audit).await;
        Self::audited(audit, result).await
    }

    async fn batch_delete_streams(
        &self,
        request: Request<pb::BatchDeleteStreamsRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let r = request.get_ref();
        let mut audit = self.begin(
            &request,
            Method::BatchDeleteStreams,
            r.parent.clone(),
            &r.request_id,
        );
        let result = self.batch_delete_streams_call(&request, &mut audit).await;
        Self::audited(audit, result).await
    }

    async fn get_stream_endpoints(
        &self,
        request: Request<pb::GetStreamEndpointsRequest>,
    ) -> Result<Response<pb::GetStreamEndpointsResponse>, Status> {
        Ok(Response::new(
            self.get_stream_endpoints_call(&request).await?,
        ))
    }

    type WatchStreamStream = WatchStreamOut;

    async fn watch_stream(
        &self,
        request: Request<pb::WatchStreamRequest>,
    ) -> Result<Response<Self::WatchStreamStream>, Status> {
        let name = StreamName::parse(&request.get_ref().name, "name")?;
        let provider =
            Arc::clone(self.stream_provider(&request, &name, "name", Method::WatchStream)?);
        let key = name.to_string();
        // Subscribe before reading, so no change between the read and the subscription is lost.
        // Kinds whose streams change outside the gateway are polled, by one poller per stream
        // for all its watchers (with several replicas, one for the fleet).
        let (mut changes, polled) = match provider.watch_poll_interval() {
            Some(every) => {
                let polled = self.gateway.hub.subscribe_polled(&key);
                if let Some(poller) = polled.poller {
                    self.gateway.hub.start_polling(
                        poller,
                        every,
                        poll_read(&provider, &name),
                        self.gateway.shutdown.clone(),
                    );
                }
                (polled.changes, Some((polled.reads, every)))
            }
            None => (self.gateway.hub.subscribe(&key), None),
        };
        let initial = match self.initial_state(&provider, &name, polled).await {
            Ok(stream) => stream,
            Err(e) => {
                drop(changes);
                self.gateway.hub.release(&key);
                return Err(e.into());
            }
        };
        // Boxed items: a channel allocates its slots in blocks of 32 up front, and 32 unboxed
        // responses made ~10 KiB per open WatchStream (docs/PERFORMANCE.md, watchers).
        let (tx, rx) = mpsc::channel::<Box<Result<pb::WatchStreamResponse, Status>>>(16);
        let gateway = Arc::clone(&self.gateway);
        // The re-reads are provider calls of this call: their spans go under its span.
        tokio::spawn(crate::telemetry::call::in_current_call(async move {
            let message = |change_type: ChangeType, stream: &crate::domain::Stream| {
                Box::new(Ok(pb::WatchStreamResponse {
                    change_type: change_type as i32,
                    stream: Some(convert::stream(stream)),
                }))
            };
            let mut last = initial;
            if tx.send(message(ChangeType::Initial, &last)).await.is_err() {
                return;
            }
            loop {
                let change = tokio::select! {
                    change = changes.recv() => change,
                    () = gateway.shutdown.cancelled() => break,
                    () = tx.closed() => break,
                };
                let (change_type, stream) = match change {
                    Ok(Change::Updated(stream)) if *stream == last => continue,
                    Ok(Change::Updated(stream)) => (ChangeType::Updated, *stream),
                    Ok(Change::Deleted) => (ChangeType::Deleted, last.clone()),
                    Ok(Change::Failed(e)) => {
                        let _ = tx.send(Box::new(Err(e.into()))).await;
                        break;
                    }
                    // Fell behind the hub: what matters is the state now.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        match shared_read(&gateway, &provider, &name).await.result {
                            Ok(stream) if stream == last => continue,
                            Ok(stream) => (ChangeType::Updated, stream),
                            Err(e) if e.kind() == Kind::StreamNotFound => {
                                (ChangeType::Deleted, last.clone())
                            }
                            Err(e) => {
                                let _ = tx.send(Box::new(Err(e.into()))).await;
                                break;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                last = stream;
                if tx.send(message(change_type, &last)).await.is_err()
                    || change_type == ChangeType::Deleted
                {
                    break;
                }
            }
            drop(changes);
            gateway.hub.release(&key);
        }));
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|item| *item),
        )))
    }
}
