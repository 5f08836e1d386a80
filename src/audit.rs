//! The audit trail of mutating calls.
//!
//! The handler of each mutating method (the table of [`crate::methods`] says which: the
//! StreamService methods that start an operation) ends with [`Audit::call`]: one row in the
//! durable `audit_records` table and one structured log line (target `audit`) with the
//! principal, method, target, request_id, operation, outcome and provider request id. When an operation is done, the
//! runner calls [`Audit`] as its [`OperationObserver`]: the final outcome (`succeeded` or the
//! error reason) and the provider request id of a failure go into `audit_completions` and
//! another `audit` log line. AuditService.ListAuditRecords reads both, joined.
//!
//! A mutating call refused before its handler, by the authentication, authorization or
//! rate-limit layer, is recorded too ([`Audit::refused`]): with the principal when it is known
//! (`(unauthenticated)` otherwise) and the refusal's reason, but no target or request_id, which
//! are in the request body those layers never read. Load shedding refuses without recording:
//! under overload, writing would add to it; the `streamgate_rpc_*` metrics count those calls.
//! A failed audit write is logged as a warning and does not fail the call.

use std::sync::Arc;

use async_trait::async_trait;
use tracing::{info, warn};

use crate::domain::{Operation, now_ms};
use crate::error::Error;
use crate::operations::OperationObserver;
use crate::store::{AuditRecord, AuditStore};

/// The outcome of a call that started or found an operation.
pub const ACCEPTED: &str = "accepted";
/// The outcome of a `validate_only` call that passed every check.
pub const VALIDATED: &str = "validated";
/// The principal of a refused call whose caller was not authenticated.
pub const UNAUTHENTICATED: &str = "(unauthenticated)";
/// The final outcome of an operation that succeeded.
pub const SUCCEEDED: &str = "succeeded";
/// At most this many characters of a caller's target or request_id are kept: an invalid
/// request may send anything.
const MAX_FIELD_CHARS: usize = 512;

fn bounded(text: &str) -> String {
    text.chars().take(MAX_FIELD_CHARS).collect()
}

/// What a handler tells the audit trail about its call.
#[derive(Debug)]
pub struct Call<'a> {
    /// Who called.
    pub principal: String,
    /// The method, e.g. `DeleteStream`.
    pub method: &'static str,
    /// The resource the call acts on, as the caller sent it (the first 512 characters are
    /// kept).
    pub target: String,
    /// The request_id the caller sent, or empty.
    pub request_id: &'a str,
}

/// How a call ended, for the audit trail.
#[derive(Debug)]
pub enum CallOutcome<'a> {
    /// It started or found `operations/{id}`, or (with an empty name) only validated.
    Operation(&'a str),
    /// It failed with this error.
    Failed(&'a Error),
}

/// Writes the audit trail.
pub struct Audit {
    store: Arc<dyn AuditStore>,
}

impl Audit {
    /// An audit trail kept in `store`.
    pub fn new(store: Arc<dyn AuditStore>) -> Arc<Self> {
        Arc::new(Audit { store })
    }

    /// The store, for reads.
    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.store
    }

    /// Records a mutating call refused before its handler, in the background (the refusal is
    /// answered at once).
    pub fn refused(self: &Arc<Self>, method: &'static str, principal: Option<&str>, error: &Error) {
        let call = Call {
            principal: principal.unwrap_or(UNAUTHENTICATED).to_string(),
            method,
            target: String::new(),
            request_id: "",
        };
        let audit = Arc::clone(self);
        let error = error.clone();
        tokio::spawn(async move { audit.call(call, CallOutcome::Failed(&error)).await });
    }

    /// Records one mutating call and logs it.
    pub async fn call(&self, call: Call<'_>, outcome: CallOutcome<'_>) {
        let (operation, outcome, provider_request_id) = match outcome {
            CallOutcome::Operation("") => (String::new(), VALIDATED, ""),
            CallOutcome::Operation(name) => (name.to_string(), ACCEPTED, ""),
            CallOutcome::Failed(e) => (
                String::new(),
                e.kind().reason(),
                e.provider_request_id().unwrap_or_default(),
            ),
        };
        let record = AuditRecord {
            // Time-ordered, as operation ids are: see `Runner::submit`.
            id: uuid::Uuid::now_v7().simple().to_string(),
            time_ms: now_ms(),
            principal: call.principal,
            method: call.method.to_string(),
            target: bounded(&call.target),
            request_id: bounded(call.request_id),
            operation,
            outcome: outcome.to_string(),
            provider_request_id: provider_request_id.to_string(),
            ..AuditRecord::default()
        };
        info!(
            target: "audit",
            principal = %record.principal,
            method = %record.method,
            target = %record.target,
            request_id = %record.request_id,
            operation = %record.operation,
            outcome = %record.outcome,
            provider_request_id = %record.provider_request_id,
            "audit"
        );
        if let Err(e) = self.store.record(&record).await {
            warn!(target: "audit", error = %e, id = %record.id, "could not write the audit record");
        }
    }
}

#[async_trait]
impl OperationObserver for Audit {
    async fn done(&self, op: &Operation) {
        let (outcome, provider_request_id) = match &op.outcome {
            Some(Err(e)) => (
                e.kind().reason(),
                e.provider_request_id().unwrap_or_default(),
            ),
            _ => (SUCCEEDED, ""),
        };
        let operation = format!("operations/{}", op.id);
        info!(
            target: "audit",
            principal = %op.principal,
            method = %op.request.verb().as_str(),
            target = %op.request.target(),
            request_id = %op.request_id.as_deref().unwrap_or_default(),
            operation = %operation,
            outcome = %outcome,
            provider_request_id = %provider_request_id,
            "audit"
        );
        if let Err(e) = self
            .store
            .complete(&operation, now_ms(), outcome, provider_request_id)
            .await
        {
            warn!(target: "audit", error = %e, %operation, "could not write the final outcome");
        }
    }
}
