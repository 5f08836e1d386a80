//! AuditService: the admin read of the audit trail, with filters and paging like
//! ListOperations. Who may call it is decided by the authorization layer (`AuditService/*`).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Gateway, convert, principal};
use crate::domain::page::{MAX_PAGE_SIZE, page_size, parse_filter};
use crate::error::{Error, Result};
use crate::pb;
use crate::pb::audit_service_server::AuditService;
use crate::store::{AuditFilter, AuditRecord};

/// The AuditService implementation.
pub struct AuditApi {
    gateway: Arc<Gateway>,
}

impl AuditApi {
    /// Serves AuditService from the shared gateway state.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        AuditApi { gateway }
    }
}

fn filter(text: &str) -> Result<AuditFilter> {
    let mut filter = AuditFilter::default();
    for (key, value) in parse_filter(text, &["principal", "method", "target", "operation"])? {
        match key.as_str() {
            "principal" => filter.principal = Some(value),
            "method" => filter.method = Some(value),
            "target" => filter.target = Some(value),
            _ => filter.operation = Some(value),
        }
    }
    Ok(filter)
}

fn record(r: &AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        name: format!("auditRecords/{}", r.id),
        create_time: Some(convert::timestamp(r.time_ms)),
        principal: r.principal.clone(),
        method: r.method.clone(),
        target: r.target.clone(),
        request_id: r.request_id.clone(),
        operation: r.operation.clone(),
        outcome: r.outcome.clone(),
        final_outcome: r.final_outcome.clone(),
        provider_request_id: if r.final_provider_request_id.is_empty() {
            r.provider_request_id.clone()
        } else {
            r.final_provider_request_id.clone()
        },
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_records(
        &self,
        request: Request<pb::ListAuditRecordsRequest>,
    ) -> Result<Response<pb::ListAuditRecordsResponse>, Status> {
        let r = request.get_ref();
        let size = page_size(r.page_size, MAX_PAGE_SIZE)?;
        let filter = filter(&r.filter)?;
        let parts = ["auditRecords", r.filter.as_str()];
        let caller = principal(&request);
        let pages = &self.gateway.pages;
        let after = match pages.decode(&r.page_token, &caller, &parts)? {
            None => None,
            Some(position) => Some(
                position
                    .split_once('/')
                    .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_string())))
                    .ok_or_else(|| {
                        Error::invalid_field("page_token", "not a page token of this query")
                    })?,
            ),
        };
        let mut records = self
            .gateway
            .audit
            .store()
            .list_records(&filter, after, size + 1)
            .await?;
        let next_page_token = if records.len() > size {
            records.truncate(size);
            records
                .last()
                .map(|r| pages.encode(&format!("{}/{}", r.time_ms, r.id), &caller, &parts))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListAuditRecordsResponse {
            audit_records: records.iter().map(record).collect(),
            next_page_token,
        }))
    }
}
