//! [`SqlStore`]: the operation store on SQLite or PostgreSQL through sqlx's `Any` driver.
//!
//! SQLite runs in WAL mode with `synchronous = NORMAL`: a committed operation survives a crash
//! of the process (kill -9), which is what durability means for the embedded default; use
//! PostgreSQL where a machine crash must not lose the last commits.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};

use super::batch::{Db, Row, Statement, within_deadline};
use super::probe::StoreProbe;
use super::{AuditRecord, Inserted, Lease, OperationFilter, OperationStore, Orphans, Renewed};
use crate::config::StoreConfig;
use crate::domain::Operation;
use crate::error::{Error, Result};

/// The embedded migrations, run at every start.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("src/store/migrations");

/// The SQL database behind the operation store and the `local` provider.
#[derive(Clone)]
pub struct SqlStore {
    // Shared by the runner, the API handlers and every `local` provider instance.
    pool: AnyPool,
    // SQLite: one process only.
    sqlite: bool,
    // The pool's single statements, group-committed on SQLite.
    db: Db,
    // PostgreSQL: how to open a connection outside the pool, for the readiness probe.
    probe_options: Option<AnyConnectOptions>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore").finish_non_exhaustive()
    }
}

/// Makes a SQLite URL create its file (and folder) if missing; returns the URL for sqlx and the
/// file's path.
fn prepare_sqlite_url(url: &str) -> Result<(String, PathBuf)> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or_default();
    // Percent-decoded, as sqlx reads it: the SQLite thread must open the same file.
    let path = percent_encoding::percent_decode_str(rest.split('?').next().unwrap_or_default())
        .decode_utf8_lossy()
        .into_owned();
    if path.is_empty() || path.starts_with(":memory:") {
        return Err(Error::internal(
            "store: an in-memory SQLite database is not durable; name a file",
        ));
    }
    if let Some(dir) = Path::new(&path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::internal(format_args!("store: cannot create {}: {e}", dir.display()))
        })?;
    }
    let path = PathBuf::from(path);
    Ok(if url.contains("mode=") {
        (url.to_string(), path)
    } else if url.contains('?') {
        (format!("{url}&mode=rwc"), path)
    } else {
        (format!("{url}?mode=rwc"), path)
    })
}

impl SqlStore {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) with the default pool settings and
    /// runs the migrations.
    pub async fn open(url: &str) -> Result<Self> {
        Self::connect(&StoreConfig {
            url: url.to_string(),
            ..StoreConfig::default()
        })
        .await
    }

    /// Connects to the store of `config`, with its pool settings, and runs the migrations.
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        sqlx::any::install_default_drivers();
        // PostgreSQL over TLS (`sslmode=require`, `verify-full` with `sslrootcert=…`) uses rustls.
        crate::tls::install_crypto_provider();
        let sqlite = config.url.starts_with("sqlite:");
        let (url, file) = if sqlite {
            let (url, file) = prepare_sqlite_url(&config.url)?;
            (url, Some(file))
        } else if config.url.starts_with("postgres://") || config.url.starts_with("postgresql://") {
            (config.url.clone(), None)
        } else {
            return Err(Error::internal(
                "store: url must start with sqlite:// or postgres://",
            ));
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(|e| Error::internal(format_args!("store: bad url: {e}")))?;
        let statement_ms = config.statement_timeout.as_millis();
        let pool = AnyPoolOptions::new()
            // SQLite lets one connection write at a time, and a writer that finds the lock
            // taken sleeps in its busy handler (1 ms, then longer): with several connections,
            // concurrent operations spent most of their time asleep. One connection queues
            // statements in the pool instead, without sleeping (docs/PERFORMANCE.md, (d)).
            // PostgreSQL: `[store] max_connections` per replica (docs/deployment.md sizes it).
            .max_connections(if sqlite { 1 } else { config.max_connections })
            // A SQLite connection is a file the process holds open: pinging it before every
            // statement only doubled the hand-offs to its worker thread.
            .test_before_acquire(!sqlite)
            // A refused connection is retried until then, and the statement fails with
            // STORE_UNAVAILABLE, instead of holding its caller (and an in-flight permit) for
            // sqlx's 30 s.
            .acquire_timeout(config.acquire_timeout)
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        let busy = format!("PRAGMA busy_timeout = {statement_ms}");
                        sqlx::query(&busy).execute(&mut *conn).await?;
                    } else {
                        let timeout = format!("SET statement_timeout = {statement_ms}");
                        sqlx::query(&timeout).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await?;
        if sqlite {
            MIGRATOR.run(&pool).await
        } else {
            // On a connection of its own, without the statement timeout: a migration may build
            // an index on a large table, and waits for another replica's migration to end.
            let own = AnyPoolOptions::new()
                .max_connections(1)
                .connect_with(options.clone())
                .await?;
            let migrated = MIGRATOR.run(&own).await;
            own.close().await;
            migrated
        }
        .map_err(|e| Error::internal(format_args!("store: migration failed: {e}")))?;
        let db = Db::new(pool.clone(), file.as_deref(), config.statement_timeout)?;
        Ok(SqlStore {
            pool,
            sqlite,
            db,
            probe_options: (!sqlite).then_some(options),
        })
    }

    /// A probe of the PostgreSQL store on a connection of its own; none on SQLite, a file of
    /// this process.
    pub fn probe(&self) -> Option<StoreProbe> {
        self.probe_options.clone().map(StoreProbe::new)
    }

    /// The pool, for the `local` provider's own table.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Single statements, group-committed on SQLite.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn decode(row: &Row) -> Result<Operation> {
    let record: String = row.try_get("record")?;
    let cancel: i64 = row.try_get("cancel_requested")?;
    let mut op: Operation = serde_json::from_str(&record)?;
    op.cancel_requested = cancel != 0;
    Ok(op)
}

const COLUMNS: &str = "record, cancel_requested";

/// How many ids one renewal statement names (far below both databases' limits on parameters).
const RENEW_CHUNK: usize = 500;

/// The database's clock, in milliseconds since the epoch, as SQL: leases end by it. Every
/// replica sharing a PostgreSQL server reads the same clock; SQLite has one process.
pub(super) fn now_ms_sql(sqlite: bool) -> &'static str {
    if sqlite {
        "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
    } else {
        "CAST(EXTRACT(EPOCH FROM now()) * 1000 AS BIGINT)"
    }
}

fn millis(length: Duration) -> i64 {
    i64::try_from(length.as_millis()).unwrap_or(i64::MAX)
}

/// The statement that records a call: alone (`AuditStore::record`), or with the operation the
/// call started (`OperationStore::insert`). A record already there is left as it is.
pub(super) fn insert_record(r: &AuditRecord) -> Statement {
    Statement::new(
        "INSERT INTO audit_records (id, time_ms, principal, method, target, request_id, \
         operation, outcome, provider_request_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (id) DO NOTHING",
    )
    .bind(&r.id)
    .bind(r.time_ms)
    .bind(&r.principal)
    .bind(&r.method)
    .bind(&r.target)
    .bind(&r.request_id)
    .bind(&r.operation)
    .bind(&r.outcome)
    .bind(&r.provider_request_id)
}

#[async_trait]
impl OperationStore for SqlStore {
    async fn insert(
        &self,
        op: &Operation,
        lease: &Lease,
        audit: Option<&AuditRecord>,
    ) -> Result<Inserted> {
        let record = serde_json::to_string(op)?;
        let operation = Statement::new(format!(
            "INSERT INTO operations (id, principal, request_id, provider, verb, target, done, \
             cancel_requested, create_time_ms, update_time_ms, record, owner, lease_until_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, {} + $13)",
            now_ms_sql(self.sqlite)
        ))
        .bind(&op.id)
        .bind(&op.principal)
        .bind(op.request_id.clone())
        .bind(op.request.provider())
        .bind(op.request.verb().as_str())
        .bind(op.request.target())
        .bind(i64::from(op.done()))
        .bind(i64::from(op.cancel_requested))
        .bind(op.create_time_ms)
        .bind(op.update_time_ms)
        .bind(record)
        .bind(&lease.owner)
        .bind(millis(lease.length));
        let mut statements = vec![operation];
        statements.extend(audit.map(insert_record));
        match self.db.run_together(statements).await {
            Ok(_) => Ok(Inserted::New),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                let request_id = op.request_id.as_deref().unwrap_or_default();
                match self.find_by_request_id(&op.principal, request_id).await? {
                    Some(existing) => Ok(Inserted::Existing(Box::new(existing))),
                    None => Err(Error::internal("operation id collision")),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Operation>> {
        let row = self
            .db
            .fetch_optional(
                Statement::new(format!("SELECT {COLUMNS} FROM operations WHERE id = $1")).bind(id),
            )
            .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn find_by_request_id(
        &self,
        principal: &str,
        request_id: &str,
    ) -> Result<Option<Operation>> {
        let row = self
            .db
            .fetch_optional(
                Statement::new(format!(
                    "SELECT {COLUMNS} FROM operations WHERE principal = $1 AND request_id = $2"
                ))
                .bind(principal)
                .bind(request_id),
            )
            .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn save(&self, op: &Operation, owner: &str) -> Result<bool> {
        let record = serde_json::to_string(op)?;
        let changed = self
            .db
            .execute(
                Statement::new(
                    "UPDATE operations SET done = $1, update_time_ms = $2, record = $3 \
                     WHERE id = $4 AND owner = $5",
                )
                .bind(i64::from(op.done()))
                .bind(op.update_time_ms)
                .bind(record)
                .bind(&op.id)
                .bind(owner),
            )
            .await?;
        Ok(changed > 0)
    }

    async fn request_cancel(&self, id: &str) -> Result<bool> {
        let changed = self
            .db
            .execute(
                Statement::new(
                    "UPDATE operations SET cancel_requested = 1 WHERE id = $1 AND done = 0",
                )
                .bind(id),
            )
            .await?;
        Ok(changed > 0)
    }

    async fn list(
        &self,
        filter: &OperationFilter,
        after: Option<(i64, String)>,
        limit: usize,
    ) -> Result<Vec<Operation>> {
        // Placeholders are numbered in the order they appear, as SQLite requires.
        let mut sql = format!("SELECT {COLUMNS} FROM operations WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.principal.is_some() {
            sql += &format!(" AND principal = {}", next());
        }
        if filter.done.is_some() {
            sql += &format!(" AND done = {}", next());
        }
        if filter.verb.is_some() {
            sql += &format!(" AND verb = {}", next());
        }
        if filter.target.is_some() {
            sql += &format!(" AND target = {}", next());
        }
        if after.is_some() {
            let (a, b, c) = (next(), next(), next());
            sql += &format!(" AND (create_time_ms < {a} OR (create_time_ms = {b} AND id < {c}))");
        }
        sql += &format!(" ORDER BY create_time_ms DESC, id DESC LIMIT {}", next());
        let mut query = sqlx::query(&sql);
        if let Some(principal) = &filter.principal {
            query = query.bind(principal.clone());
        }
        if let Some(done) = filter.done {
            query = query.bind(i64::from(done));
        }
        if let Some(verb) = &filter.verb {
            query = query.bind(verb.clone());
        }
        if let Some(target) = &filter.target {
            query = query.bind(target.clone());
        }
        if let Some((time, id)) = after {
            query = query.bind(time).bind(time).bind(id);
        }
        let rows = within_deadline(query.bind(limit as i64).fetch_all(&self.pool)).await?;
        rows.into_iter().map(|row| decode(&Row::Any(row))).collect()
    }

    async fn claim(&self, lease: &Lease, which: Orphans, limit: usize) -> Result<Vec<Operation>> {
        let now = now_ms_sql(self.sqlite);
        let orphan = match which {
            Orphans::Lapsed => format!("(owner IS NULL OR lease_until_ms < {now})"),
            Orphans::All => "1 = 1".to_string(),
        };
        let sql = if self.sqlite {
            // One process: the condition again on the row updated is all it takes.
            format!(
                "UPDATE operations SET owner = $1, lease_until_ms = {now} + $2 \
                 WHERE id IN (SELECT id FROM operations WHERE done = 0 AND {orphan} \
                 ORDER BY create_time_ms, id LIMIT $3) AND done = 0 AND {orphan} \
                 RETURNING {COLUMNS}"
            )
        } else {
            // Rows another replica's claim holds are skipped rather than waited for, and a
            // random pick spreads the orphans over the replicas claiming at once. The pick is
            // a CTE, evaluated once (a subquery in `IN` may run again per row, with another
            // random pick); a locked row is checked again against the condition once locked.
            format!(
                "WITH picked AS (SELECT id FROM operations WHERE done = 0 AND {orphan} \
                 ORDER BY random() LIMIT $3 FOR UPDATE SKIP LOCKED) \
                 UPDATE operations SET owner = $1, lease_until_ms = {now} + $2 \
                 FROM picked WHERE operations.id = picked.id RETURNING {COLUMNS}"
            )
        };
        let rows = sqlx::query(&sql)
            .bind(&lease.owner)
            .bind(millis(lease.length))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let mut claimed = rows
            .into_iter()
            .map(|row| decode(&Row::Any(row)))
            .collect::<Result<Vec<_>>>()?;
        if self.sqlite {
            claimed.sort_by(|a, b| (a.create_time_ms, &a.id).cmp(&(b.create_time_ms, &b.id)));
        }
        Ok(claimed)
    }

    async fn renew(&self, lease: &Lease, ids: &[String]) -> Result<Renewed> {
        let mut renewed = Renewed::default();
        for chunk in ids.chunks(RENEW_CHUNK) {
            let list = (0..chunk.len())
                .map(|i| format!("${}", i + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "UPDATE operations SET lease_until_ms = {} + $1 \
                 WHERE owner = $2 AND done = 0 AND id IN ({list}) RETURNING id, cancel_requested",
                now_ms_sql(self.sqlite)
            );
            let mut query = sqlx::query(&sql)
                .bind(millis(lease.length))
                .bind(&lease.owner);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                let row = Row::Any(row);
                let id: String = row.try_get("id")?;
                let cancel: i64 = row.try_get("cancel_requested")?;
                if cancel != 0 {
                    renewed.cancelled.push(id.clone());
                }
                renewed.held.push(id);
            }
        }
        Ok(renewed)
    }

    async fn release(&self, owner: &str) -> Result<()> {
        sqlx::query("UPDATE operations SET lease_until_ms = 0 WHERE owner = $1 AND done = 0")
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn release_one(&self, id: &str, owner: &str) -> Result<()> {
        sqlx::query(
            "UPDATE operations SET lease_until_ms = 0 WHERE id = $1 AND owner = $2 AND done = 0",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn exclusive(&self) -> bool {
        self.sqlite
    }

    async fn unfinished(&self) -> Result<Vec<Operation>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM operations WHERE done = 0 ORDER BY create_time_ms, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(|row| decode(&Row::Any(row))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sqlite_url_names_the_file_sqlx_opens() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/with%20space/sg.db", dir.path().display());
        let (for_sqlx, file) = prepare_sqlite_url(&url).unwrap();
        assert_eq!(for_sqlx, format!("{url}?mode=rwc"));
        assert_eq!(file, dir.path().join("with space/sg.db"));
        let (_, relative) = prepare_sqlite_url("sqlite:target/url-test/x.db?mode=rwc").unwrap();
        assert_eq!(relative, PathBuf::from("target/url-test/x.db"));
        // Both connections, sqlx's and the SQLite thread's, are on that one file.
        let store = SqlStore::open(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (x INTEGER)")
            .execute(store.pool())
            .await
            .unwrap();
        let inserted = store
            .db()
            .execute(Statement::new("INSERT INTO t (x) VALUES ($1)").bind(7))
            .await
            .unwrap();
        assert_eq!(inserted, 1);
        assert!(dir.path().join("with space/sg.db").is_file());
    }
}
