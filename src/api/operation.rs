//! OperationService: read, list, wait for and cancel durable operations.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::{Gateway, authorize_provider, convert, within_deadline};
use crate::domain::OperationName;
use crate::domain::page::{MAX_PAGE_SIZE, PageToken, page_size, parse_filter};
use crate::error::Error;
use crate::middleware::Grants;
use crate::pb;
use crate::pb::operation_service_server::OperationService;
use crate::store::OperationFilter;

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
        let mut ops = self
            .gateway
            .runner
            .store()
            .list(&filter, after, size + 1)
            .await?;
        let next_page_token = if ops.len() > size {
            ops.truncate(size);
            ops.last()
                .map(|op| PageToken::encode(&format!("{}/{}", op.create_time_ms, op.id), &parts))
                .unwrap_or_default()
        } else {
            String::new()
        };
        // Operations on providers the caller may not use are left out of its pages.
        let grants = request.extensions().get::<Grants>();
        Ok(Response::new(pb::ListOperationsResponse {
            operations: ops
                .iter()
                .filter(|op| grants.is_none_or(|g| g.allows(op.request.provider())))
                .map(convert::operation)
                .collect(),
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
        authorize_provider(
            &request,
            self.gateway.runner.get(&name.0).await?.request.provider(),
        )?;
        let op = self
            .gateway
            .runner
            .wait(&name.0, within_deadline(wanted))
            .await?;
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
