//! [`Db`]: the store's single statements, with group commit on SQLite.
//!
//! Through sqlx, a SQLite connection lives on a worker thread of its own and each statement is
//! a trip to that thread and back (on one core, two context switches each way), and each
//! statement outside a transaction is a commit of its own (the WAL frames of every page it
//! touched, file locks). A create → wait → delete cycle made 16 such trips and 11 commits; the
//! kernel's side of them was half of the cycle's CPU (docs/PERFORMANCE.md, (d)).
//!
//! On SQLite, [`Db`] hands statements to a thread that owns a connection of its own (rusqlite):
//! whatever statements are queued when it turns to the database run in one transaction, each
//! from SQLite's prepared-statement cache, and every caller gets its own rows and count once the
//! transaction committed — so an answer still means the statement is durable. When one
//! statement of a batch fails (a unique key, say) the batch is rolled back and its statements
//! run again one by one, each with its own outcome, so nothing of a failed batch stays. A
//! statement that finds the queue empty runs alone. Statements handed over together
//! ([`Db::run_together`]: an operation and the audit record of the call that started it) are
//! one job: they share every batch's fate, and when run again alone they are a transaction of
//! their own. The store's other statements (claims,
//! lease renewals, listings, migrations) stay on sqlx's pool, a second connection to the same
//! WAL database: they are rare (every few seconds) and wait in SQLite's busy handler when they
//! meet a batch. On PostgreSQL (a pool of connections, no worker thread) statements run
//! directly through sqlx, and statements handed over together in a transaction of their own.
//!
//! Written by hand: no crate does group commit. (A first version sent each batch to sqlx's
//! worker as one query string, `BEGIN; s1; …; COMMIT`; SQLite then parsed every statement of
//! every batch anew, 29% of a cycle's instructions, since sqlx keeps statements prepared per
//! query string.)

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use futures::TryStreamExt;
use rusqlite::types::{Value, ValueRef};
use sqlx::any::AnyRow;
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::{Any, AnyPool, Either};
use tokio::sync::oneshot;

/// The most statements one transaction takes.
const MAX_BATCH: usize = 64;
/// Prepared statements kept per connection (the store has about twenty).
const PREPARED: usize = 64;

/// One bound value.
#[derive(Clone, Debug)]
pub enum Arg {
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// NULL (of a text column).
    Null,
}

impl From<i64> for Arg {
    fn from(value: i64) -> Self {
        Arg::Int(value)
    }
}

impl From<String> for Arg {
    fn from(value: String) -> Self {
        Arg::Text(value)
    }
}

impl From<&str> for Arg {
    fn from(value: &str) -> Self {
        Arg::Text(value.to_string())
    }
}

impl From<&String> for Arg {
    fn from(value: &String) -> Self {
        Arg::Text(value.clone())
    }
}

impl<T: Into<Arg>> From<Option<T>> for Arg {
    fn from(value: Option<T>) -> Self {
        value.map_or(Arg::Null, Into::into)
    }
}

/// One SQL statement (no `;`, no `$` but in its `$1`, `$2`, … placeholders), and its values.
#[derive(Clone, Debug)]
pub struct Statement {
    sql: String,
    args: Vec<Arg>,
}

impl Statement {
    /// A statement without values yet.
    pub fn new(sql: impl Into<String>) -> Self {
        Statement {
            sql: sql.into(),
            args: Vec::new(),
        }
    }

    /// Binds the next placeholder.
    pub fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }
}

/// A column type the store reads: text or an integer.
pub trait Cell: Sized + for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any> {
    /// The value of a SQLite cell, if it has this type.
    fn from_sqlite(value: &Value) -> Option<Self>;
}

impl Cell for String {
    fn from_sqlite(value: &Value) -> Option<Self> {
        match value {
            Value::Text(text) => Some(text.clone()),
            _ => None,
        }
    }
}

impl Cell for i64 {
    fn from_sqlite(value: &Value) -> Option<Self> {
        match value {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    }
}

/// A row a statement returned.
pub enum Row {
    /// From sqlx (PostgreSQL, or the pool).
    Any(AnyRow),
    /// From the SQLite thread: column names and values.
    Sqlite(Arc<[String]>, Vec<Value>),
}

impl Row {
    /// The value of column `name`.
    pub fn try_get<T: Cell>(&self, name: &str) -> Result<T, sqlx::Error> {
        match self {
            Row::Any(row) => sqlx::Row::try_get(row, name),
            Row::Sqlite(names, values) => {
                let at = names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| sqlx::Error::ColumnNotFound(name.to_string()))?;
                T::from_sqlite(&values[at]).ok_or_else(|| sqlx::Error::ColumnDecode {
                    index: name.to_string(),
                    source: format!("unexpected SQLite value {:?}", values[at].data_type()).into(),
                })
            }
        }
    }
}

/// What a statement returned.
#[derive(Default)]
pub struct Answer {
    /// Its rows (a SELECT, or RETURNING).
    pub rows: Vec<Row>,
    /// The rows it changed (INSERT, UPDATE, DELETE; for a SELECT, SQLite repeats the count of
    /// the connection's last change).
    pub rows_affected: u64,
}

type Reply = oneshot::Sender<Result<Vec<Answer>, sqlx::Error>>;

/// Statements that take effect together or not at all, and where their answers go.
struct Job {
    statements: Vec<Statement>,
    reply: Reply,
}

/// The answers of one trip, with where each goes.
type Replies = Vec<(Reply, Result<Vec<Answer>, sqlx::Error>)>;

/// Runs statements: on SQLite through the group-committing thread, else on the pool.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    // Some on SQLite.
    queue: Option<mpsc::Sender<Job>>,
    // Trips to the database the SQLite thread made (in Debug, and for tests).
    trips: Arc<AtomicU64>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("grouped", &self.queue.is_some())
            .field("trips", &self.trips.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Statements on `pool`, or on the SQLite database at `sqlite` (migrated already) through a
    /// thread of its own, which ends when the last clone of this `Db` is dropped; there a
    /// statement waits at most `busy` for another connection's write lock.
    pub fn new(pool: AnyPool, sqlite: Option<&Path>, busy: Duration) -> Result<Self, sqlx::Error> {
        let trips = Arc::new(AtomicU64::new(0));
        let queue = match sqlite {
            None => None,
            Some(path) => {
                let connection = open(path, busy).map_err(from_sqlite)?;
                let (tx, rx) = mpsc::channel();
                let counted = Arc::clone(&trips);
                let courier = Courier::start();
                std::thread::Builder::new()
                    .name("streamgate-sqlite".into())
                    .spawn(move || serve(&connection, &rx, &counted, &courier))
                    .map_err(sqlx::Error::Io)?;
                Some(tx)
            }
        };
        Ok(Db { pool, queue, trips })
    }

    /// The pool, for what does not go through [`Db`].
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Runs `statement`; returns its rows and count once it is durable. Within the caller's
    /// deadline, if there is one (see [`within_deadline`]).
    pub async fn run(&self, statement: Statement) -> Result<Answer, sqlx::Error> {
        let Some(queue) = &self.queue else {
            return within_deadline(alone(&self.pool, &statement)).await;
        };
        let answers = within_deadline(enqueue(queue, vec![statement])).await?;
        answers.into_iter().next().ok_or(sqlx::Error::RowNotFound)
    }

    /// Runs `statements` in one transaction: every one takes effect, or (on the first error,
    /// which is returned) none does. Their answers, in order, once they are durable. Within
    /// the caller's deadline, as [`Db::run`].
    pub async fn run_together(
        &self,
        statements: Vec<Statement>,
    ) -> Result<Vec<Answer>, sqlx::Error> {
        let Some(queue) = &self.queue else {
            return within_deadline(async {
                let mut transaction = self.pool.begin().await?;
                let mut answers = Vec::with_capacity(statements.len());
                for statement in &statements {
                    answers.push(alone(&mut *transaction, statement).await?);
                }
                transaction.commit().await?;
                Ok(answers)
            })
            .await;
        };
        within_deadline(enqueue(queue, statements)).await
    }

    /// Runs `statement`; the rows it changed.
    pub async fn execute(&self, statement: Statement) -> Result<u64, sqlx::Error> {
        Ok(self.run(statement).await?.rows_affected)
    }

    /// Runs `statement`; its first row, if any.
    pub async fn fetch_optional(&self, statement: Statement) -> Result<Option<Row>, sqlx::Error> {
        Ok(self.run(statement).await?.rows.into_iter().next())
    }

    /// Runs `statement`; its first row, or `RowNotFound`.
    pub async fn fetch_one(&self, statement: Statement) -> Result<Row, sqlx::Error> {
        self.fetch_optional(statement)
            .await?
            .ok_or(sqlx::Error::RowNotFound)
    }

    /// Runs `statement`; all its rows.
    pub async fn fetch_all(&self, statement: Statement) -> Result<Vec<Row>, sqlx::Error> {
        Ok(self.run(statement).await?.rows)
    }
}

/// Runs `call`, a store call a caller waits on, within the caller's deadline (less the time to
/// answer, see [`crate::deadline::bounded`]): a store that does not answer by then — a pool
/// wait, a connection or a statement that hangs — fails as unreachable, so that the caller is
/// told UNAVAILABLE / `STORE_UNAVAILABLE` rather than DEADLINE_EXCEEDED with no word of why.
/// A statement given up on this way may still take effect. Outside a call (the runner's own
/// work) it runs to its end, which the pool's acquire timeout and the database's statement
/// timeout bound (but for a connection whose peer vanished without closing it).
pub(super) async fn within_deadline<T>(
    call: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    crate::deadline::bounded(call).await.unwrap_or_else(|| {
        Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the store did not answer before the call's deadline",
        )))
    })
}

/// Hands `statements` to the SQLite thread, as one job; their answers.
async fn enqueue(
    queue: &mpsc::Sender<Job>,
    statements: Vec<Statement>,
) -> Result<Vec<Answer>, sqlx::Error> {
    let (reply, answer) = oneshot::channel();
    queue
        .send(Job { statements, reply })
        .map_err(|_| sqlx::Error::PoolClosed)?;
    answer.await.map_err(|_| sqlx::Error::PoolClosed)?
}

/// Runs one statement through sqlx, on the pool or in a transaction.
async fn alone<'c, E>(executor: E, statement: &Statement) -> Result<Answer, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = Any>,
{
    let mut query = sqlx::query(&statement.sql);
    for arg in &statement.args {
        query = match arg {
            Arg::Int(value) => query.bind(*value),
            Arg::Text(value) => query.bind(value.as_str()),
            Arg::Null => query.bind(None::<String>),
        };
    }
    let mut answer = Answer::default();
    // `fetch_many` is deprecated for several statements per query string (sqlx#3108); here it
    // is one statement whose rows and count are both wanted.
    #[allow(deprecated)]
    let mut results = query.fetch_many(executor);
    while let Some(item) = results.try_next().await? {
        match item {
            Either::Left(done) => answer.rows_affected += done.rows_affected(),
            Either::Right(row) => answer.rows.push(Row::Any(row)),
        }
    }
    Ok(answer)
}

/// A SQLite error as sqlx reports one, so callers handle both drivers alike: a busy database is
/// an I/O error (temporary), a unique key a unique violation.
#[derive(Debug)]
struct SqliteError {
    message: String,
    kind: ErrorKind,
}

impl std::fmt::Display for SqliteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SqliteError {}

impl DatabaseError for SqliteError {
    fn message(&self) -> &str {
        &self.message
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> ErrorKind {
        match self.kind {
            ErrorKind::UniqueViolation => ErrorKind::UniqueViolation,
            _ => ErrorKind::Other,
        }
    }
}

fn from_sqlite(error: rusqlite::Error) -> sqlx::Error {
    use rusqlite::ffi;
    let message = error.to_string();
    match error.sqlite_error() {
        Some(e)
            if matches!(
                e.code,
                ffi::ErrorCode::DatabaseBusy | ffi::ErrorCode::DatabaseLocked
            ) =>
        {
            sqlx::Error::Io(std::io::Error::other(message))
        }
        Some(e)
            if e.extended_code == ffi::SQLITE_CONSTRAINT_UNIQUE
                || e.extended_code == ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            sqlx::Error::Database(Box::new(SqliteError {
                message,
                kind: ErrorKind::UniqueViolation,
            }))
        }
        _ => sqlx::Error::Database(Box::new(SqliteError {
            message,
            kind: ErrorKind::Other,
        })),
    }
}

/// The SQLite thread's connection: the settings of sqlx's (WAL, `synchronous = NORMAL`, the
/// busy timeout `[store] statement_timeout`).
fn open(path: &Path, busy: Duration) -> rusqlite::Result<rusqlite::Connection> {
    let connection = rusqlite::Connection::open(path)?;
    connection.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.busy_timeout(busy)?;
    connection.set_prepared_statement_cache_capacity(PREPARED);
    Ok(connection)
}

/// `sql` with each `$n` written `?n` (SQLite numbers `$n` by first appearance, `?n` by n).
fn numbered(sql: &str) -> String {
    sql.replace('$', "?")
}

/// Runs one statement on the SQLite connection.
fn execute(connection: &rusqlite::Connection, statement: &Statement) -> rusqlite::Result<Answer> {
    let mut prepared = connection.prepare_cached(&numbered(&statement.sql))?;
    for (at, arg) in statement.args.iter().enumerate() {
        match arg {
            Arg::Int(value) => prepared.raw_bind_parameter(at + 1, value)?,
            Arg::Text(value) => prepared.raw_bind_parameter(at + 1, value.as_str())?,
            Arg::Null => prepared.raw_bind_parameter(at + 1, rusqlite::types::Null)?,
        }
    }
    let columns = prepared.column_count();
    // The column names, taken when the first row comes: most statements return none.
    let mut names: Option<Arc<[String]>> = None;
    let mut answer = Answer::default();
    let mut rows = prepared.raw_query();
    while let Some(row) = rows.next()? {
        let names = names.get_or_insert_with(|| {
            (0..columns)
                .map(|at| row.as_ref().column_name(at).unwrap_or_default().to_string())
                .collect()
        });
        let values = (0..columns)
            .map(|at| row.get_ref(at).map(ValueRef::into))
            .collect::<rusqlite::Result<Vec<Value>>>()?;
        answer.rows.push(Row::Sqlite(Arc::clone(names), values));
    }
    drop(rows);
    answer.rows_affected = connection.changes();
    Ok(answer)
}

/// Runs `statements` in one transaction: their answers, in order, once it committed. On any
/// error the transaction is rolled back.
fn together<'s>(
    connection: &rusqlite::Connection,
    statements: impl Iterator<Item = &'s Statement>,
) -> rusqlite::Result<Vec<Answer>> {
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let answers = statements
        .map(|statement| execute(connection, statement))
        .collect::<rusqlite::Result<Vec<Answer>>>()
        .and_then(|answers| connection.execute_batch("COMMIT").map(|()| answers));
    if answers.is_err() && !connection.is_autocommit() {
        // The failed statement undid itself; the ones before it are undone here.
        let _ = connection.execute_batch("ROLLBACK");
    }
    answers
}

/// Hands a trip's answers to their callers.
///
/// A caller's task is woken when its answer is sent. Woken from this thread, a task of the
/// runtime is a wake-up from outside it, and on the current-thread scheduler each of those
/// writes the runtime's eventfd: one `write` per statement, ~12 per create/wait/delete cycle
/// (docs/PERFORMANCE.md, (d)). So the answers of a trip go to a task on the runtime in one
/// message, one wake-up at most, and that task sends them, which wakes the callers from
/// inside the runtime. Without a runtime (or once it is gone) they are sent from here.
struct Courier {
    to_runtime: Option<tokio::sync::mpsc::UnboundedSender<Replies>>,
}

impl Courier {
    /// A courier whose task runs on the current runtime, if there is one.
    fn start() -> Self {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Courier { to_runtime: None };
        };
        let (to_runtime, mut trips) = tokio::sync::mpsc::unbounded_channel::<Replies>();
        runtime.spawn(async move {
            while let Some(replies) = trips.recv().await {
                hand_out(replies);
            }
        });
        Courier {
            to_runtime: Some(to_runtime),
        }
    }

    fn deliver(&self, replies: Replies) {
        let replies = match &self.to_runtime {
            Some(to_runtime) => match to_runtime.send(replies) {
                Ok(()) => return,
                Err(tokio::sync::mpsc::error::SendError(replies)) => replies,
            },
            None => replies,
        };
        hand_out(replies);
    }
}

fn hand_out(replies: Replies) {
    for (reply, answer) in replies {
        // A caller that went away (its call cancelled) needs no answer.
        let _ = reply.send(answer);
    }
}

fn serve(
    connection: &rusqlite::Connection,
    queue: &mpsc::Receiver<Job>,
    trips: &AtomicU64,
    courier: &Courier,
) {
    while let Ok(first) = queue.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH
            && let Ok(job) = queue.try_recv()
        {
            jobs.push(job);
        }
        if jobs.len() > 1 {
            trips.fetch_add(1, Ordering::Relaxed);
            let statements = jobs.iter().flat_map(|job| &job.statements);
            if let Ok(answers) = together(connection, statements) {
                let mut answers = answers.into_iter();
                courier.deliver(
                    jobs.into_iter()
                        .map(|job| {
                            let own = answers.by_ref().take(job.statements.len()).collect();
                            (job.reply, Ok(own))
                        })
                        .collect(),
                );
                continue;
            }
        }
        // One job, or a batch that failed: each on its own, with its own outcome.
        let replies = jobs
            .into_iter()
            .map(|job| {
                trips.fetch_add(1, Ordering::Relaxed);
                let answers = match job.statements.as_slice() {
                    [statement] => execute(connection, statement).map(|answer| vec![answer]),
                    statements => together(connection, statements.iter()),
                };
                (job.reply, answers.map_err(from_sqlite))
            })
            .collect();
        courier.deliver(replies);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures::future::join_all;

    use super::*;
    use crate::store::SqlStore;

    async fn store() -> (tempfile::TempDir, SqlStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/batch.db", dir.path().display());
        let store = SqlStore::open(&url).await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL, note TEXT)")
            .execute(store.pool())
            .await
            .unwrap();
        (dir, store)
    }

    /// Runs `statements` at once while the pool's connection holds the write lock, so that all
    /// but the first queue up behind it: the first runs alone, the others as one batch.
    async fn queued(
        store: &SqlStore,
        statements: Vec<Statement>,
    ) -> Vec<Result<Answer, sqlx::Error>> {
        let mut lock = store.pool().acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *lock)
            .await
            .unwrap();
        let db = store.db().clone();
        let runs =
            tokio::spawn(async move { join_all(statements.into_iter().map(|s| db.run(s))).await });
        // Long enough for every statement to be queued behind the lock even on a loaded
        // machine (100 ms was not, once, with two other builds running: 14 trips for 21).
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        sqlx::query("COMMIT").execute(&mut *lock).await.unwrap();
        drop(lock);
        runs.await.unwrap()
    }

    fn insert(k: &str, n: i64) -> Statement {
        Statement::new("INSERT INTO t (k, n, note) VALUES ($1, $2, $3) RETURNING k, n")
            .bind(k)
            .bind(n)
            .bind(None::<String>)
    }

    #[tokio::test]
    async fn concurrent_statements_share_trips_and_each_gets_its_own_rows() {
        let (_dir, store) = store().await;
        let db = store.db();
        let answers = queued(
            &store,
            (0..50).map(|i| insert(&format!("k{i}"), i)).collect(),
        )
        .await;
        for (i, answer) in answers.into_iter().enumerate() {
            let answer = answer.unwrap();
            assert_eq!(answer.rows_affected, 1);
            assert_eq!(answer.rows.len(), 1);
            let k: String = answer.rows[0].try_get("k").unwrap();
            let n: i64 = answer.rows[0].try_get("n").unwrap();
            assert_eq!((k, n), (format!("k{i}"), i as i64));
        }
        let trips = db.trips.load(Ordering::SeqCst);
        assert!(
            trips < 10,
            "50 statements queued at once took {trips} trips"
        );
        // Reads and counts come back per statement too.
        let answers = join_all([
            db.run(Statement::new("UPDATE t SET n = n + 100 WHERE n < $1").bind(10)),
            db.run(Statement::new("SELECT k FROM t WHERE n >= $1 ORDER BY k").bind(100)),
            db.run(Statement::new("DELETE FROM t WHERE k = $1").bind("missing")),
        ])
        .await;
        let answers: Vec<Answer> = answers.into_iter().map(Result::unwrap).collect();
        assert_eq!(answers[0].rows_affected, 10);
        assert_eq!(
            answers[1].rows.len(),
            10,
            "the read sees the update before it"
        );
        assert_eq!(answers[2].rows_affected, 0);
    }

    #[tokio::test]
    async fn a_failing_statement_fails_alone_and_the_others_are_kept() {
        let (_dir, store) = store().await;
        let db = store.db();
        db.run(insert("taken", 0)).await.unwrap();
        let before = db.trips.load(Ordering::SeqCst);
        let statements: Vec<Statement> = (0..20)
            .map(|i| {
                if i == 7 {
                    insert("taken", 7)
                } else {
                    insert(&format!("k{i}"), i)
                }
            })
            .collect();
        let answers = queued(&store, statements).await;
        for (i, answer) in answers.into_iter().enumerate() {
            match answer {
                Err(sqlx::Error::Database(e)) if i == 7 => assert!(e.is_unique_violation()),
                Ok(answer) if i != 7 => assert_eq!(answer.rows_affected, 1),
                other => panic!("statement {i}: {:?}", other.map(|a| a.rows_affected)),
            }
        }
        // Queued behind the lock, the statements go in as the first alone, the failed batch of
        // the others, then each of those again alone: 21 trips. On a loaded machine some may
        // arrive after the lock is gone, in smaller batches: fewer trips, never more (k batches
        // and a failed one of at most 21 - k statements).
        let trips = db.trips.load(Ordering::SeqCst) - before;
        assert!(
            (2..=1 + 1 + 19).contains(&trips),
            "{trips} trips: none of the others ran more than twice"
        );
        let rows: Vec<(String, i64)> = sqlx::query_as("SELECT k, n FROM t ORDER BY n, k")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(rows.len(), 20, "{rows:?}");
        assert!(
            rows.contains(&("taken".to_string(), 0)),
            "the first row is untouched"
        );
    }

    #[tokio::test]
    async fn statements_run_together_take_effect_whole_or_not_at_all() {
        let (_dir, store) = store().await;
        let db = store.db();
        db.run(insert("taken", 0)).await.unwrap();
        // Alone: the second statement fails, and the first is undone with it.
        let failed = db
            .run_together(vec![insert("pair-1", 1), insert("taken", 1)])
            .await;
        assert!(matches!(failed, Err(sqlx::Error::Database(e)) if e.is_unique_violation()));
        // Queued among others: the pair that fails is undone whole, the others are kept,
        // and a pair that succeeds answers each of its statements.
        let (lone, pairs) = tokio::join!(
            queued(&store, vec![insert("before", 2), insert("after", 3)]),
            async {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                tokio::join!(
                    db.run_together(vec![insert("pair-2", 4), insert("taken", 4)]),
                    db.run_together(vec![insert("pair-3", 5), insert("pair-4", 6)]),
                )
            }
        );
        assert!(lone.iter().all(Result::is_ok));
        assert!(pairs.0.is_err());
        let answers = pairs.1.unwrap();
        assert_eq!(answers.len(), 2);
        let k: String = answers[1].rows[0].try_get("k").unwrap();
        assert_eq!(k, "pair-4");
        let keys: Vec<String> = sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(keys, ["after", "before", "pair-3", "pair-4", "taken"]);
    }

    #[tokio::test]
    async fn postgres_style_placeholders_bind_in_order_alone() {
        let (_dir, store) = store().await;
        let db = Arc::new(store.db().clone());
        let answer = db
            .run(
                Statement::new("SELECT $2 AS b, $1 AS a")
                    .bind(1)
                    .bind("two"),
            )
            .await
            .unwrap();
        let a: i64 = answer.rows[0].try_get("a").unwrap();
        let b: String = answer.rows[0].try_get("b").unwrap();
        assert_eq!((a, b.as_str()), (1, "two"));
    }

    fn answered(n: u64) -> Result<Vec<Answer>, sqlx::Error> {
        Ok(vec![Answer {
            rows: Vec::new(),
            rows_affected: n,
        }])
    }

    #[test]
    fn the_courier_hands_out_a_trip_on_its_runtime_and_without_one_itself() {
        // No runtime: the answers are sent by the caller of deliver.
        let courier = Courier::start();
        assert!(courier.to_runtime.is_none());
        let (reply, answer) = oneshot::channel();
        courier.deliver(vec![(reply, answered(7))]);
        assert_eq!(answer.blocking_recv().unwrap().unwrap()[0].rows_affected, 7);

        // On a runtime: a trip's answers go to its task in one message, which sends them.
        let runtime = crate::runtime::build(1).unwrap();
        let courier = runtime.block_on(async { Courier::start() });
        assert!(courier.to_runtime.is_some());
        let (replies, answers): (Vec<_>, Vec<_>) = (0..3).map(|_| oneshot::channel()).unzip();
        let courier = std::thread::spawn(move || {
            courier.deliver(
                replies
                    .into_iter()
                    .zip(0..)
                    .map(|(reply, n)| (reply, answered(n)))
                    .collect(),
            );
            courier
        })
        .join()
        .unwrap();
        let counts: Vec<u64> = runtime.block_on(async {
            join_all(answers)
                .await
                .into_iter()
                .map(|a| a.unwrap().unwrap()[0].rows_affected)
                .collect()
        });
        assert_eq!(counts, [0, 1, 2]);

        // Its runtime gone, the courier sends them itself again.
        drop(runtime);
        let (reply, answer) = oneshot::channel();
        courier.deliver(vec![(reply, answered(9))]);
        assert_eq!(answer.blocking_recv().unwrap().unwrap()[0].rows_affected, 9);
    }

    #[test]
    fn placeholders_are_numbered_explicitly() {
        assert_eq!(
            numbered("UPDATE t SET a = $2, b = $12 WHERE c = $1"),
            "UPDATE t SET a = ?2, b = ?12 WHERE c = ?1"
        );
    }
}
