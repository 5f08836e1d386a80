//! OperationService: read, list, wait for and cancel durable operations.
//!
//! A caller reaches the operations it started; the operations of others only on the providers
//! of a rule granting the method with `operations = "all"`. Any other operation answers as a
//! missing one (the same NOT_FOUND), so an answer never tells that someone else's operation
//! exists. An operation's id names its provider, whose grant is checked from the name before
//! anything is looked up.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{Gateway, authorize_provider, convert, principal, within_deadline};
use crate::domain::page::{MAX_PAGE_SIZE, PageTokens, page_size, parse_filter};
use crate::domain::{Operation, OperationName};
use crate::error::{Error, Result};
use crate::identity::Grants;
use crate::operations::{named_provider, not_found};
use crate::pb;
use crate::pb::operation_service_server::OperationService;
use crate::store::OperationFilter;

/// How many store pages one ListOperations call reads at most while skipping operations the
/// caller may not see.
const MAX_SCANNED_BATCHES: usize = 10;

fn position_token(
    pages: &PageTokens,
    cursor: &Option<(i64, String)>,
    principal: &str,
    parts: &[&str],
) -> String {
    cursor
        .as_ref()
        .map(|(time, id)| pages.encode(&format!("{time}/{id}"), principal, parts))
        .unwrap_or_default()
}

/// Whether a caller with `grants` (none: no authorization) who is `principal` sees `op`.
fn visible(grants: Option<&Grants>, principal: &str, op: &Operation) -> bool {
    let provider = op.request.provider();
    grants.is_none_or(|g| {
        g.allows(provider) && (op.principal == principal || g.every_operation_on(provider))
    })
}

/// The longest WaitOperation waits.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The OperationService implementation.
pub struct OperationApi {
    gateway: Arc<Gateway>,
}

impl OperationApi {
    /// Serves OperationService from the shared gateway state.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        OperationApi { gateway }
    }

    /// The operation `name`, if the caller may act on it. The provider the id names is
    /// authorized first (PERMISSION_DENIED whether or not the operation exists); an operation
    /// the caller may not see is NOT_FOUND, as a missing one. Ids from before ids named their
    /// provider are authorized once read.
    async fn reachable<T>(&self, request: &Request<T>, name: &OperationName) -> Result<Operation> {
        if let Some(provider) = named_provider(&name.0) {
            authorize_provider(request, provider)?;
        }
        let op = self.gateway.runner.get(&name.0).await?;
        let grants = request.extensions().get::<Grants>();
        let mine = op.principal == principal(request);
        if !mine && !grants.is_none_or(|g| g.every_operation_on(op.request.provider())) {
            return Err(not_found(&name.0));
        }
        authorize_provider(request, op.request.provider())?;
        Ok(op)
    }
}

fn filter(text: &str) -> Result<OperationFilter, Error> {
    let mut filter = OperationFilter::default();
    for (key, value) in parse_filter(text, &["done", "verb", "target"])? {
        match key.as_str() {
            "done" => {
                filter.done = Some(match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(Error::invalid_field("filter", "done must be true or false")),
                })
            }
            "verb" => filter.verb = Some(value),
            _ => filter.target = Some(value),
        }
    }
    Ok(filter)
}

#[tonic::async_trait]
impl OperationService for OperationApi {
    async fn get_operation(
        &self,
        request: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let name = OperationName::parse(&request.get_ref().name, "name")?;
        let op = self.reachable(&request, &name).await?;
        Ok(Response::new(convert::operation(&op)))
    }

    async fn list_operations(
        &self,
        request: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let r = request.get_ref();
        let size = page_size(r.page_size, MAX_PAGE_SIZE)?;
        let mut filter = filter(&r.filter)?;
        let caller = principal(&request);
        let grants = request.extensions().get::<Grants>();
        // Only the caller's own operations, unless some grant reaches others': then the
        // store reads everyone's and the page keeps those the caller sees.
        if !grants.is_none_or(Grants::every_operation_anywhere) {
            filter.principal = Some(caller.clone());
        }
        let pages = &self.gateway.pages;
        let parts = ["operations", r.filter.as_str()];
        let after = match pages.decode(&r.page_token, &caller, &parts)? {
            None => None,
            Some(position) => {
                let (time, id) = position
                    .split_once('/')
                    .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_string())))
                    .ok_or_else(|| {
                        Error::invalid_field("page_token", "not a page token of this query")
                    })?;
                Some((time, id))
            }
        };
        // Operations the caller may not see (on providers it may not use, or others' where no
        // grant reaches them) are skipped while the page is filled, so pages stay full; the
        // scan is bounded, and a page cut short by the bound still carries a token (AIP-158
        // allows short pages that are not the last).
        let store = self.gateway.runner.store();
        let mut page = Vec::with_capacity(size);
        let mut cursor = after;
        let mut next_page_token = String::new();
        for _ in 0..MAX_SCANNED_BATCHES {
            let batch = store.list(&filter, cursor.clone(), size + 1).await?;
            let more = batch.len() > size;
            let scanned = batch.len().min(size);
            let mut full = false;
            for (i, op) in batch.into_iter().take(size).enumerate() {
                cursor = Some((op.create_time_ms, op.id.clone()));
                if visible(grants, &caller, &op) {
                    page.push(op);
                }
                if page.len() == size {
                    full = more || i + 1 < scanned;
                    break;
                }
            }
            if page.len() == size || !more {
                next_page_token = if full {
                    position_token(pages, &cursor, &caller, &parts)
                } else {
                    String::new()
                };
                break;
            }
            // Out of scans: the page ends short, its token where the scan stopped.
            next_page_token = position_token(pages, &cursor, &caller, &parts);
        }
        Ok(Response::new(pb::ListOperationsResponse {
            operations: page.iter().map(convert::operation).collect(),
            next_page_token,
        }))
    }

    async fn wait_operation(
        &self,
        request: Request<pb::WaitOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let r = request.get_ref();
        let name = OperationName::parse(&r.name, "name")?;
        let wanted = match &r.timeout {
            None => MAX_WAIT,
            Some(t) if t.seconds < 0 || t.nanos < 0 => {
                return Err(Error::invalid_field("timeout", "must not be negative").into());
            }
            Some(t) => Duration::new(t.seconds as u64, t.nanos as u32).min(MAX_WAIT),
        };
        let op = self.reachable(&request, &name).await?;
        // Done already (the usual case after a create that finished in its first step): the
        // read made for authorization is the answer; a second read would find the same.
        let op = if op.done() {
            op
        } else {
            self.gateway
                .runner
                .wait(&name.0, within_deadline(wanted))
                .await?
        };
        Ok(Response::new(convert::operation(&op)))
    }

    async fn cancel_operation(
        &self,
        request: Request<pb::CancelOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let name = OperationName::parse(&request.get_ref().name, "name")?;
        self.reachable(&request, &name).await?;
        let op = self.gateway.runner.cancel(&name.0).await?;
        Ok(Response::new(convert::operation(&op)))
    }
}
