//! OperationService: read, list, wait for and cancel durable operations.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{Gateway, authorize_provider, convert, within_deadline};
use crate::domain::page::{MAX_PAGE_SIZE, PageToken, page_size, parse_filter};
use crate::domain::{Operation, OperationName};
use crate::error::Error;
use crate::identity::Grants;
use crate::pb;
use crate::pb::operation_service_server::OperationService;
use crate::store::OperationFilter;

/// How many store pages one ListOperations call reads at most while skipping operations the
/// caller may not see.
const MAX_SCANNED_BATCHES: usize = 10;

fn position_token(cursor: &Option<(i64, String)>, parts: &[&str]) -> String {
    cursor
        .as_ref()
        .map(|(time, id)| PageToken::encode(&format!("{time}/{id}"), parts))
        .unwrap_or_default()
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
        let op = self.gateway.runner.get(&name.0).await?;
        authorize_provider(&request, op.request.provider())?;
        Ok(Response::new(convert::operation(&op)))
    }

    async fn list_operations(
        &self,
        request: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let r = request.get_ref();
        let size = page_size(r.page_size, MAX_PAGE_SIZE)?;
        let filter = filter(&r.filter)?;
        let parts = ["operations", r.filter.as_str()];
        let after = match PageToken::decode(&r.page_token, &parts)? {
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
        // Operations on providers the caller may not use are skipped while the page is
        // filled, so pages stay full; the scan is bounded, and a page cut short by the bound
        // still carries a token (AIP-158 allows short pages that are not the last).
        let grants = request.extensions().get::<Grants>();
        let allowed = |op: &Operation| grants.is_none_or(|g| g.allows(op.request.provider()));
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
                if allowed(&op) {
                    page.push(op);
                }
                if page.len() == size {
                    full = more || i + 1 < scanned;
                    break;
                }
            }
            if page.len() == size || !more {
                next_page_token = if full {
                    position_token(&cursor, &parts)
                } else {
                    String::new()
                };
                break;
            }
            // Out of scans: the page ends short, its token where the scan stopped.
            next_page_token = position_token(&cursor, &parts);
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
        let op = self.gateway.runner.get(&name.0).await?;
        authorize_provider(&request, op.request.provider())?;
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
        authorize_provider(
            &request,
            self.gateway.runner.get(&name.0).await?.request.provider(),
        )?;
        let op = self.gateway.runner.cancel(&name.0).await?;
        Ok(Response::new(convert::operation(&op)))
    }
}
