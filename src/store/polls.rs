//! [`PollStore`]: the fleet-wide poller of watched streams as the shared store holds it
//! (migration `0009_watch_polls.sql`), for replicas sharing one PostgreSQL.
//!
//! One row per watched stream in `watch_polls`: who polls it (the holder of its lease) and its
//! latest read, numbered by a version; one row per replica with watchers of it in
//! `watch_interest`. Lease ends, interest and read times are on the database's clock, which
//! every replica shares. What the rows mean — when to poll, when to stop — is the watch
//! module's ([`crate::watch`]); this file only reads and writes them. The SQL is portable (it
//! runs on SQLite too, where the unit tests run it).

use std::time::Duration;

use super::OperationStore;
use super::batch::{Db, Statement};
use super::sql::{SqlStore, now_ms_sql};
use crate::error::Result;

/// The stored rows of the fleet's polls of watched streams.
#[derive(Clone, Debug)]
pub struct PollStore {
    db: Db,
    // Which clock expression to use.
    sqlite: bool,
}

/// The latest stored read of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRead {
    /// Bumped by each stored read; 0 before the first.
    pub version: i64,
    /// When the read started, on the database's clock (ms since the epoch).
    pub read_time_ms: i64,
    /// What it found, as the poller wrote it (empty before the first read).
    pub record: String,
    /// The database's clock when this row was read.
    pub now_ms: i64,
}

fn millis(length: Duration) -> i64 {
    i64::try_from(length.as_millis()).unwrap_or(i64::MAX)
}

impl PollStore {
    /// The rows in `store`'s database.
    pub fn of(store: &SqlStore) -> Self {
        PollStore {
            db: store.db().clone(),
            sqlite: store.exclusive(),
        }
    }

    /// Replica `replica` polls (or wants to poll) `stream`: records its interest for
    /// `interest` from now if `interested`, then takes the stream's lease for `lease` if it is
    /// free (no holder, or its lease ran out) or renews it if `replica` holds it. Returns the
    /// database's clock when the lease was taken or renewed, or `None` when another replica
    /// holds it.
    pub async fn attend(
        &self,
        stream: &str,
        replica: &str,
        interested: Option<Duration>,
        lease: Duration,
    ) -> Result<Option<i64>> {
        let now = now_ms_sql(self.sqlite);
        if let Some(interest) = interested {
            self.db
                .execute(
                    Statement::new(format!(
                        "INSERT INTO watch_interest (stream, replica, until_ms) \
                         VALUES ($1, $2, {now} + $3) \
                         ON CONFLICT (stream, replica) DO UPDATE SET until_ms = excluded.until_ms"
                    ))
                    .bind(stream)
                    .bind(replica)
                    .bind(millis(interest)),
                )
                .await?;
        }
        self.db
            .execute(
                Statement::new(
                    "INSERT INTO watch_polls (stream, lease_until_ms, version, read_time_ms) \
                     VALUES ($1, 0, 0, 0) ON CONFLICT (stream) DO NOTHING",
                )
                .bind(stream),
            )
            .await?;
        // On PostgreSQL a second replica's update waits for the first's and then checks the
        // condition again on the row the first wrote: one of them takes the lease.
        let row = self
            .db
            .fetch_optional(
                Statement::new(format!(
                    "UPDATE watch_polls SET holder = $1, lease_until_ms = {now} + $2 \
                     WHERE stream = $3 AND (holder = $4 OR holder IS NULL OR lease_until_ms < {now}) \
                     RETURNING {now} AS now_ms"
                ))
                .bind(replica)
                .bind(millis(lease))
                .bind(stream)
                .bind(replica),
            )
            .await?;
        Ok(row.map(|row| row.try_get("now_ms")).transpose()?)
    }

    /// Stores what `replica` read of `stream` (started at `read_time_ms`, the clock
    /// [`PollStore::attend`] answered), if it still holds the stream's lease; its new version,
    /// or `None` when it does not hold the lease any more (nothing is written then).
    pub async fn store(
        &self,
        stream: &str,
        replica: &str,
        read_time_ms: i64,
        record: &str,
    ) -> Result<Option<i64>> {
        let row = self
            .db
            .fetch_optional(
                Statement::new(
                    "UPDATE watch_polls SET version = version + 1, read_time_ms = $1, record = $2 \
                     WHERE stream = $3 AND holder = $4 RETURNING version",
                )
                .bind(read_time_ms)
                .bind(record)
                .bind(stream)
                .bind(replica),
            )
            .await?;
        Ok(row.map(|row| row.try_get("version")).transpose()?)
    }

    /// The latest stored read of `stream`, if the fleet polls it.
    pub async fn latest(&self, stream: &str) -> Result<Option<StoredRead>> {
        let row = self
            .db
            .fetch_optional(
                Statement::new(format!(
                    "SELECT version, read_time_ms, COALESCE(record, '') AS record, \
                     {} AS now_ms FROM watch_polls WHERE stream = $1",
                    now_ms_sql(self.sqlite)
                ))
                .bind(stream),
            )
            .await?;
        row.map(|row| -> Result<StoredRead> {
            Ok(StoredRead {
                version: row.try_get("version")?,
                read_time_ms: row.try_get("read_time_ms")?,
                record: row.try_get("record")?,
                now_ms: row.try_get("now_ms")?,
            })
        })
        .transpose()
    }

    /// Whether some replica's interest in `stream` has not lapsed.
    pub async fn interested(&self, stream: &str) -> Result<bool> {
        let row = self
            .db
            .fetch_optional(
                Statement::new(format!(
                    "SELECT replica FROM watch_interest WHERE stream = $1 AND until_ms >= {} \
                     LIMIT 1",
                    now_ms_sql(self.sqlite)
                ))
                .bind(stream),
            )
            .await?;
        Ok(row.is_some())
    }

    /// `replica` has no watchers of `stream` any more: its interest goes (and lapsed interest
    /// of others with it).
    pub async fn withdraw(&self, stream: &str, replica: &str) -> Result<()> {
        self.db
            .execute(
                Statement::new(format!(
                    "DELETE FROM watch_interest WHERE stream = $1 AND (replica = $2 OR until_ms < {})",
                    now_ms_sql(self.sqlite)
                ))
                .bind(stream)
                .bind(replica),
            )
            .await?;
        Ok(())
    }

    /// `replica` stops polling `stream`: frees its lease, so that another replica takes it at
    /// once; the row goes if no interest is left.
    pub async fn release(&self, stream: &str, replica: &str) -> Result<()> {
        let now = now_ms_sql(self.sqlite);
        self.db
            .run_together(vec![
                Statement::new(format!(
                    "DELETE FROM watch_polls WHERE stream = $1 AND holder = $2 AND NOT EXISTS \
                     (SELECT 1 FROM watch_interest i WHERE i.stream = $3 AND i.until_ms >= {now})"
                ))
                .bind(stream)
                .bind(replica)
                .bind(stream),
                Statement::new(
                    "UPDATE watch_polls SET holder = NULL, lease_until_ms = 0 \
                     WHERE stream = $1 AND holder = $2",
                )
                .bind(stream)
                .bind(replica),
            ])
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqlStore;

    const LONG: Duration = Duration::from_secs(60);

    async fn polls() -> (tempfile::TempDir, PollStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open(&format!("sqlite://{}/polls.db", dir.path().display()))
            .await
            .unwrap();
        (dir, PollStore::of(&store))
    }

    #[tokio::test]
    async fn one_replica_holds_the_lease_until_it_lapses_or_is_freed() {
        let (_dir, polls) = polls().await;
        let taken = polls.attend("s", "a", Some(LONG), LONG).await.unwrap();
        assert!(taken.is_some());
        assert_eq!(
            polls.attend("s", "b", Some(LONG), LONG).await.unwrap(),
            None
        );
        // The holder renews; the other is still refused.
        assert!(polls.attend("s", "a", None, LONG).await.unwrap().is_some());
        assert_eq!(
            polls.attend("s", "b", Some(LONG), LONG).await.unwrap(),
            None
        );
        // A lease that ran out is taken over.
        assert!(
            polls
                .attend("t", "a", None, Duration::ZERO)
                .await
                .unwrap()
                .is_some()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(polls.attend("t", "b", None, LONG).await.unwrap().is_some());
        // A freed lease too; with interest left the row (and its read) stays.
        polls.release("s", "a").await.unwrap();
        assert!(polls.latest("s").await.unwrap().is_some());
        assert!(
            polls
                .attend("s", "b", Some(LONG), LONG)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn reads_are_stored_by_the_holder_only() {
        let (_dir, polls) = polls().await;
        let now = polls
            .attend("s", "a", Some(LONG), LONG)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(polls.store("s", "a", now, "one").await.unwrap(), Some(1));
        assert_eq!(polls.store("s", "b", now, "two").await.unwrap(), None);
        let latest = polls.latest("s").await.unwrap().unwrap();
        assert_eq!((latest.version, latest.record.as_str()), (1, "one"));
        assert_eq!(latest.read_time_ms, now);
        assert!(latest.now_ms >= now);
        assert_eq!(polls.latest("other").await.unwrap(), None);
    }

    #[tokio::test]
    async fn interest_lapses_or_is_withdrawn_and_the_row_goes_with_the_last() {
        let (_dir, polls) = polls().await;
        polls.attend("s", "a", Some(LONG), LONG).await.unwrap();
        polls
            .attend("s", "b", Some(Duration::ZERO), LONG)
            .await
            .unwrap();
        assert!(polls.interested("s").await.unwrap());
        polls.withdraw("s", "a").await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        // b's interest lapsed: nobody is interested.
        assert!(!polls.interested("s").await.unwrap());
        polls.release("s", "a").await.unwrap();
        assert_eq!(polls.latest("s").await.unwrap(), None);
    }
}
