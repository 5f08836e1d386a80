//! [`AuditStore`] on the [`SqlStore`]: the `audit_records` table (one row per call) and the
//! `audit_completions` table (the final outcome of each operation), joined when read.

use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::batch::Statement;
use super::sql::insert_record;
use super::{AuditFilter, AuditRecord, AuditStore, SqlStore};
use crate::error::Result;

fn decode(row: &AnyRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        time_ms: row.try_get("time_ms")?,
        principal: row.try_get("principal")?,
        method: row.try_get("method")?,
        target: row.try_get("target")?,
        request_id: row.try_get("request_id")?,
        operation: row.try_get("operation")?,
        outcome: row.try_get("outcome")?,
        provider_request_id: row.try_get("provider_request_id")?,
        final_outcome: row
            .try_get::<Option<String>, _>("final_outcome")?
            .unwrap_or_default(),
        final_provider_request_id: row
            .try_get::<Option<String>, _>("final_provider_request_id")?
            .unwrap_or_default(),
    })
}

#[async_trait]
impl AuditStore for SqlStore {
    async fn record(&self, r: &AuditRecord) -> Result<()> {
        self.db().execute(insert_record(r)).await?;
        Ok(())
    }

    async fn complete(
        &self,
        operation: &str,
        time_ms: i64,
        outcome: &str,
        provider_request_id: &str,
    ) -> Result<()> {
        let statement = Statement::new(
            "INSERT INTO audit_completions (operation, time_ms, outcome, provider_request_id) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (operation) DO NOTHING",
        )
        .bind(operation)
        .bind(time_ms)
        .bind(outcome)
        .bind(provider_request_id);
        self.db().execute(statement).await?;
        Ok(())
    }

    async fn list_records(
        &self,
        filter: &AuditFilter,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>> {
        // Placeholders are numbered in the order they appear, as SQLite requires.
        let mut sql = String::from(
            "SELECT a.id, a.time_ms, a.principal, a.method, a.target, a.request_id, \
             a.operation, a.outcome, a.provider_request_id, c.outcome AS final_outcome, \
             c.provider_request_id AS final_provider_request_id \
             FROM audit_records a LEFT JOIN audit_completions c ON c.operation = a.operation \
             WHERE 1 = 1",
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        let terms = [
            ("a.principal", &filter.principal),
            ("a.method", &filter.method),
            ("a.target", &filter.target),
            ("a.operation", &filter.operation),
        ];
        for (column, value) in &terms {
            if value.is_some() {
                sql += &format!(" AND {column} = {}", next());
            }
        }
        if after.is_some() {
            let (a, b, c) = (next(), next(), next());
            sql += &format!(" AND (a.time_ms < {a} OR (a.time_ms = {b} AND a.id < {c}))");
        }
        sql += &format!(" ORDER BY a.time_ms DESC, a.id DESC LIMIT {}", next());
        let mut query = sqlx::query(&sql);
        for (_, value) in terms {
            if let Some(value) = value {
                query = query.bind(value.clone());
            }
        }
        if let Some((time, id)) = after {
            query = query.bind(time).bind(time).bind(id);
        }
        let rows = query.bind(limit as i64).fetch_all(self.pool()).await?;
        rows.iter().map(decode).collect()
    }
}
