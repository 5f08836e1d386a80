//! The SQL of the `local` provider on the `local_streams` table.
//!
//! Each mutation is one conditional statement (or one transaction), so concurrent calls never
//! interleave half-changes, and records the operation that made it (`last_op`, `created_by`) so
//! that a step re-run after a crash recognises its own earlier effect.

use std::collections::BTreeMap;

use super::cache::RowCache;
use super::error::LocalError;
use super::row::StoredStream;
use crate::domain::{
    ListQuery, Page, Stream, StreamDetails, StreamName, StreamPatch, StreamSpec, StreamState,
    now_ms,
};
use crate::store::{Db, Row, Statement};

type Result<T> = std::result::Result<T, LocalError>;

const COLUMNS: &str = "stream_id, etag, version, state, media_type, data_retention_hours, \
     device_name, kms_key_id, tags, create_time_ms, update_time_ms, created_by, last_op";

fn new_etag() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The `local_streams` table of one provider instance.
pub(super) struct LocalCore {
    // The shared store's statements; every one is scoped to `provider`.
    db: Db,
    provider: String,
    // Rows read by stream id; every statement below that changes a row holds its
    // invalidation until it ended.
    cache: RowCache,
}

impl LocalCore {
    /// `exclusive`: this process is the store's only user, so rows may be kept in memory.
    pub fn new(db: Db, provider: &str, exclusive: bool) -> Self {
        LocalCore {
            db,
            provider: provider.to_string(),
            cache: RowCache::new(exclusive),
        }
    }

    fn name(&self, stream_id: &str) -> StreamName {
        StreamName {
            provider: self.provider.clone(),
            video: None,
            stream: stream_id.to_string(),
        }
    }

    fn decode(&self, row: &Row) -> Result<StoredStream> {
        let tags: String = row.try_get("tags")?;
        let state: String = row.try_get("state")?;
        let stream_id: String = row.try_get("stream_id")?;
        let version: i64 = row.try_get("version")?;
        let retention: i64 = row.try_get("data_retention_hours")?;
        let stream = Stream {
            name: self.name(&stream_id),
            etag: row.try_get("etag")?,
            state: StreamState::parse(&state).unwrap_or(StreamState::Active),
            spec: StreamSpec {
                media_type: row.try_get("media_type")?,
                data_retention_hours: retention as i32,
                device_name: row.try_get("device_name")?,
                kms_key_id: row.try_get("kms_key_id")?,
                tags: serde_json::from_str::<BTreeMap<String, String>>(&tags).unwrap_or_default(),
                details: None,
            },
            create_time_ms: row.try_get("create_time_ms")?,
            update_time_ms: row.try_get("update_time_ms")?,
            provider_uid: format!("local:{}:{stream_id}", self.provider),
            details: StreamDetails::Local { version },
        };
        Ok(StoredStream {
            stream,
            created_by: row.try_get("created_by")?,
            last_op: row.try_get("last_op")?,
        })
    }

    pub async fn get(&self, stream_id: &str) -> Result<Option<StoredStream>> {
        let miss = match self.cache.get(stream_id) {
            Ok(row) => return Ok(Some(row)),
            Err(miss) => miss,
        };
        let row = self
            .db
            .fetch_optional(
                Statement::new(format!(
                    "SELECT {COLUMNS} FROM local_streams WHERE provider = $1 AND stream_id = $2"
                ))
                .bind(&self.provider)
                .bind(stream_id),
            )
            .await?;
        let stored = row.as_ref().map(|r| self.decode(r)).transpose()?;
        if let Some(stored) = &stored {
            self.cache.fill(miss, stored);
        }
        Ok(stored)
    }

    /// The stream, or NotFound.
    pub async fn require(&self, stream_id: &str) -> Result<StoredStream> {
        self.get(stream_id)
            .await?
            .ok_or_else(|| LocalError::NotFound(self.name(stream_id)))
    }

    pub async fn list(&self, query: &ListQuery) -> Result<Page<Stream>> {
        let mut sql = format!("SELECT {COLUMNS} FROM local_streams WHERE provider = $1");
        let mut n = 1;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if query.position.is_some() {
            sql += &format!(" AND stream_id > {}", next());
        }
        if query.stream_id_prefix.is_some() {
            let (len, prefix) = (next(), next());
            sql += &format!(" AND substr(stream_id, 1, CAST({len} AS INTEGER)) = {prefix}");
        }
        if query.state.is_some() {
            sql += &format!(" AND state = {}", next());
        }
        sql += &format!(" ORDER BY stream_id LIMIT {}", next());
        let mut q = Statement::new(sql).bind(&self.provider);
        if let Some(position) = &query.position {
            q = q.bind(position.clone());
        }
        if let Some(prefix) = &query.stream_id_prefix {
            q = q.bind(prefix.chars().count() as i64).bind(prefix.clone());
        }
        if let Some(state) = query.state {
            q = q.bind(state.as_str());
        }
        let rows = self
            .db
            .fetch_all(q.bind(query.page_size as i64 + 1))
            .await?;
        let mut items = rows
            .iter()
            .map(|r| self.decode(r).map(|row| row.stream))
            .collect::<Result<Vec<_>>>()?;
        let next = if items.len() > query.page_size {
            items.truncate(query.page_size);
            items.last().map(|s| s.name.stream.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Inserts a stream in `state` (CREATING, or ACTIVE when it is created at once) made by
    /// `op_id`; a row this operation made already counts as success, in whatever state it is.
    pub async fn insert(
        &self,
        stream_id: &str,
        spec: &StreamSpec,
        op_id: &str,
        state: StreamState,
    ) -> Result<Stream> {
        let change = self.cache.invalidate(stream_id);
        let now = now_ms();
        // RETURNING (SQLite and PostgreSQL alike) hands back the row without a second query.
        let statement = Statement::new(format!(
            "INSERT INTO local_streams (provider, stream_id, etag, version, state, media_type, \
             data_retention_hours, device_name, kms_key_id, tags, create_time_ms, update_time_ms, \
             created_by, last_op) VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             RETURNING {COLUMNS}"
        ))
        .bind(&self.provider)
        .bind(stream_id)
        .bind(new_etag())
        .bind(state.as_str())
        .bind(&spec.media_type)
        .bind(i64::from(spec.data_retention_hours))
        .bind(&spec.device_name)
        .bind(&spec.kms_key_id)
        .bind(serde_json::to_string(&spec.tags).unwrap_or_default())
        .bind(now)
        .bind(now)
        .bind(op_id)
        .bind(op_id);
        match self.db.fetch_one(statement).await {
            Ok(row) => {
                let stored = self.decode(&row)?;
                change.settle(&stored);
                Ok(stored.stream)
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                match self.get(stream_id).await? {
                    Some(row) if row.created_by == op_id => Ok(row.stream),
                    _ => Err(LocalError::AlreadyExists(self.name(stream_id))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Turns the stream `op_id` created ACTIVE. `None` if it was deleted meanwhile.
    pub async fn activate(&self, stream_id: &str, op_id: &str) -> Result<Option<Stream>> {
        let change = self.cache.invalidate(stream_id);
        let statement = Statement::new(format!(
            "UPDATE local_streams SET state = $1, etag = $2, version = version + 1, \
             update_time_ms = $3, last_op = $4 \
             WHERE provider = $5 AND stream_id = $6 AND created_by = $7 AND state = $8 \
             RETURNING {COLUMNS}"
        ))
        .bind(StreamState::Active.as_str())
        .bind(new_etag())
        .bind(now_ms())
        .bind(op_id)
        .bind(&self.provider)
        .bind(stream_id)
        .bind(op_id)
        .bind(StreamState::Creating.as_str());
        if let Some(row) = self.db.fetch_optional(statement).await? {
            let stored = self.decode(&row)?;
            change.settle(&stored);
            return Ok(Some(stored.stream));
        }
        // Not CREATING any more: a re-run after this step took effect, or deleted meanwhile.
        Ok(self
            .get(stream_id)
            .await?
            .filter(|row| row.created_by == op_id)
            .map(|row| row.stream))
    }

    /// Applies `patch` if the etag (when given) still matches; a re-run of the same operation
    /// returns the stream as it left it.
    pub async fn update(
        &self,
        stream_id: &str,
        patch: &StreamPatch,
        etag: Option<&str>,
        op_id: &str,
    ) -> Result<Stream> {
        let current = self.require(stream_id).await?;
        let _change = self.cache.invalidate(stream_id);
        if current.last_op == op_id {
            return Ok(current.stream);
        }
        check_writable(&current, etag, self.name(stream_id))?;
        let mut spec = current.stream.spec.clone();
        patch.apply(&mut spec);
        let statement = Statement::new(
            "UPDATE local_streams SET media_type = $1, data_retention_hours = $2, \
             device_name = $3, tags = $4, etag = $5, version = version + 1, update_time_ms = $6, \
             last_op = $7 WHERE provider = $8 AND stream_id = $9 AND etag = $10",
        )
        .bind(&spec.media_type)
        .bind(i64::from(spec.data_retention_hours))
        .bind(&spec.device_name)
        .bind(serde_json::to_string(&spec.tags).unwrap_or_default())
        .bind(new_etag())
        .bind(now_ms())
        .bind(op_id)
        .bind(&self.provider)
        .bind(stream_id)
        .bind(&current.stream.etag);
        if self.db.execute(statement).await? == 0 {
            // Someone changed it between our read and our write.
            return Err(LocalError::EtagMismatch(self.name(stream_id)));
        }
        Ok(self.require(stream_id).await?.stream)
    }

    /// Deletes the stream if the etag (when given) still matches. Returns the stream as it was.
    pub async fn delete(&self, stream_id: &str, etag: Option<&str>) -> Result<Stream> {
        let _change = self.cache.invalidate(stream_id);
        // One statement when it succeeds: RETURNING hands back the row that was deleted.
        let condition = if etag.is_some() { " AND etag = $3" } else { "" };
        let sql = format!(
            "DELETE FROM local_streams WHERE provider = $1 AND stream_id = $2{condition} \
             RETURNING {COLUMNS}"
        );
        let mut statement = Statement::new(sql).bind(&self.provider).bind(stream_id);
        if let Some(etag) = etag {
            statement = statement.bind(etag);
        }
        match self.db.fetch_optional(statement).await? {
            Some(row) => Ok(self.decode(&row)?.stream),
            None => match self.get(stream_id).await? {
                Some(_) => Err(LocalError::EtagMismatch(self.name(stream_id))),
                None => Err(LocalError::NotFound(self.name(stream_id))),
            },
        }
    }

    /// Deletes a CREATING stream that `op_id` made (a cancelled create). True if one was.
    pub async fn remove_created_by(&self, stream_id: &str, op_id: &str) -> Result<bool> {
        let _change = self.cache.invalidate(stream_id);
        let deleted = self
            .db
            .execute(
                Statement::new(
                    "DELETE FROM local_streams WHERE provider = $1 AND stream_id = $2 \
                     AND created_by = $3 AND state = $4",
                )
                .bind(&self.provider)
                .bind(stream_id)
                .bind(op_id)
                .bind(StreamState::Creating.as_str()),
            )
            .await?;
        Ok(deleted > 0)
    }
}

/// Refuses an update of a stream that is still CREATING or whose etag moved on.
pub(super) fn check_writable(
    current: &StoredStream,
    etag: Option<&str>,
    name: StreamName,
) -> Result<()> {
    if current.stream.state == StreamState::Creating {
        return Err(LocalError::Creating(name));
    }
    check_etag(current, etag, name)
}

/// Refuses a caller etag that is not the stream's current one.
pub(super) fn check_etag(
    current: &StoredStream,
    etag: Option<&str>,
    name: StreamName,
) -> Result<()> {
    match etag {
        Some(etag) if etag != current.stream.etag => Err(LocalError::EtagMismatch(name)),
        _ => Ok(()),
    }
}
