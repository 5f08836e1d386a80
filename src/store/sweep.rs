//! The retention sweep: a background task that keeps the store's tables bounded, and reads
//! what `streamgate_oldest_unfinished_operation_age_seconds` reports.
//!
//! Finished operations that finished more than `[store] operation_retention` ago, and audit
//! rows (calls and final outcomes) older than `[store] audit_retention`, are deleted oldest
//! first, [`BATCH`] rows per statement with a [`PAUSE`] between statements: each delete is a
//! short transaction, so the calls and operations writing meanwhile wait for one batch at most.
//! Unfinished operations are never deleted, however old. Every replica sharing a store sweeps
//! it; two deleting the same rows at once delete each row once.
//!
//! The sweep runs at start and then every [`MAX_INTERVAL`] (or every shortest retention, if
//! shorter, but at most once a second).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::SqlStore;
use super::batch::Statement;
use crate::domain::now_ms;
use crate::error::Result;
use crate::telemetry::Telemetry;

/// Rows deleted per statement.
pub const BATCH: i64 = 500;
/// The pause between two deletes of one sweep.
pub const PAUSE: Duration = Duration::from_millis(100);
/// The longest time between two sweeps.
pub const MAX_INTERVAL: Duration = Duration::from_secs(15);

/// How long rows are kept (`[store] operation_retention` and `audit_retention`).
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    /// Finished operations, from when they finished.
    pub operations: Duration,
    /// Audit rows, from when they were written.
    pub audit: Duration,
}

impl Retention {
    /// The time between two sweeps.
    fn interval(&self) -> Duration {
        self.operations
            .min(self.audit)
            .clamp(Duration::from_secs(1), MAX_INTERVAL)
    }
}

/// Milliseconds since the epoch, `age` before `now_ms`.
fn before(now_ms: i64, age: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

impl SqlStore {
    /// Deletes up to `limit` finished operations that finished before `before_ms`, oldest
    /// first; how many it deleted.
    pub async fn delete_finished_operations(&self, before_ms: i64, limit: i64) -> Result<u64> {
        // An operation finishes after it was created: the candidates are read in the order
        // of operations_newest (create_time_ms, id), the old unfinished ones skipped. `+done`
        // keeps SQLite from reading every finished operation through operations_unfinished
        // (done, id) and sorting them (PostgreSQL reads it as `done`).
        let deleted = self
            .db()
            .execute(
                Statement::new(
                    "DELETE FROM operations WHERE id IN (SELECT id FROM operations \
                     WHERE create_time_ms < $1 AND +done = 1 AND update_time_ms < $2 \
                     ORDER BY create_time_ms, id LIMIT $3)",
                )
                .bind(before_ms)
                .bind(before_ms)
                .bind(limit),
            )
            .await?;
        Ok(deleted)
    }

    /// Deletes up to `limit` call records and up to `limit` final outcomes written before
    /// `before_ms`, oldest first; how many it deleted.
    pub async fn delete_audit_rows(&self, before_ms: i64, limit: i64) -> Result<u64> {
        let records = self
            .db()
            .execute(
                Statement::new(
                    "DELETE FROM audit_records WHERE id IN (SELECT id FROM audit_records \
                     WHERE time_ms < $1 ORDER BY time_ms, id LIMIT $2)",
                )
                .bind(before_ms)
                .bind(limit),
            )
            .await?;
        let completions = self
            .db()
            .execute(
                Statement::new(
                    "DELETE FROM audit_completions WHERE operation IN (SELECT operation \
                     FROM audit_completions WHERE time_ms < $1 ORDER BY time_ms LIMIT $2)",
                )
                .bind(before_ms)
                .bind(limit),
            )
            .await?;
        Ok(records + completions)
    }

    /// When the oldest unfinished operation was accepted (milliseconds since the epoch), if
    /// any is unfinished.
    pub async fn oldest_unfinished_ms(&self) -> Result<Option<i64>> {
        let row = self
            .db()
            .fetch_optional(Statement::new(
                "SELECT create_time_ms FROM operations WHERE done = 0 \
                 ORDER BY create_time_ms LIMIT 1",
            ))
            .await?;
        Ok(row.map(|row| row.try_get("create_time_ms")).transpose()?)
    }
}

/// Runs `delete` (one batch) until a batch deletes fewer than [`BATCH`] rows or `stop` is
/// cancelled, pausing between batches; how many rows it deleted.
async fn in_batches<F, Fut>(stop: &CancellationToken, mut delete: F) -> Result<u64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64>>,
{
    let mut total = 0;
    loop {
        let deleted = delete().await?;
        total += deleted;
        if deleted < BATCH as u64 {
            return Ok(total);
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(total),
            () = tokio::time::sleep(PAUSE) => {}
        }
    }
}

/// One sweep: the gauge, then the deletes.
async fn sweep(
    store: &SqlStore,
    retention: Retention,
    telemetry: &Telemetry,
    stop: &CancellationToken,
) -> Result<()> {
    let now = now_ms();
    let age = match store.oldest_unfinished_ms().await? {
        Some(accepted) => Duration::from_millis(u64::try_from(now - accepted).unwrap_or(0)),
        None => Duration::ZERO,
    };
    telemetry.metrics().oldest_unfinished_operation(age);
    let operations_before = before(now, retention.operations);
    let operations = in_batches(stop, || {
        store.delete_finished_operations(operations_before, BATCH)
    })
    .await?;
    let audit_before = before(now, retention.audit);
    let audit = in_batches(stop, || store.delete_audit_rows(audit_before, BATCH)).await?;
    if operations + audit > 0 {
        info!(
            operations,
            audit_rows = audit,
            "retention sweep: deleted finished operations and audit rows past their retention"
        );
    }
    Ok(())
}

/// Sweeps `store` until `stop` is cancelled.
pub async fn run(
    store: SqlStore,
    retention: Retention,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) {
    loop {
        if let Err(e) = sweep(&store, retention, &telemetry, &stop).await {
            warn!(error = %e, "retention sweep failed; trying again at the next one");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(retention.interval()) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_come_as_often_as_the_shortest_retention_within_bounds() {
        let day = Duration::from_secs(24 * 3600);
        let retention = |operations, audit| Retention { operations, audit };
        assert_eq!(retention(30 * day, 400 * day).interval(), MAX_INTERVAL);
        let seconds = |n| Duration::from_secs(n);
        assert_eq!(retention(seconds(5), day).interval(), seconds(5));
        assert_eq!(
            retention(day, Duration::from_millis(10)).interval(),
            seconds(1)
        );
    }
}
