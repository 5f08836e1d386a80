//! The `local` provider's rows in memory, for reads of one stream (GetStream, and the reads
//! before each change), when this process is the store's only user (SQLite): a read served
//! here skips a statement on the store's SQLite thread, a trip there and back
//! (docs/PERFORMANCE.md, scenario (c)). With PostgreSQL, other replicas change rows
//! behind this process's back, so there is no cache.
//!
//! Hand-written rather than a cache crate (moka, quick_cache): what matters here is not
//! eviction but coherence with the table, which no cache crate gives. The rule:
//! - every change of a row invalidates it before its statement and again when the statement
//!   has ended (an [`Invalidation`] guard, so a call cancelled mid-statement still does), and
//!   each invalidation moves a generation counter;
//! - a read that missed fills the row in only if no invalidation happened since it began.
//!
//! So a read that raced a change (it may have read the row before the change committed)
//! never leaves its copy behind, and a row in the cache is always the row in the table.
//! Bounded: at [`CAPACITY`] rows it starts over empty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::core::StoredStream;

/// The most rows kept.
const CAPACITY: usize = 10_000;

/// The rows of one provider instance (an empty, disabled cache when the store is shared).
pub(super) struct RowCache {
    inner: Option<Arc<Mutex<Inner>>>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    rows: HashMap<String, StoredStream>,
}

/// Where a read that missed began: the generation to compare when it fills the row in.
#[derive(Clone, Copy)]
pub(super) struct Miss(u64);

impl RowCache {
    /// A cache, or none when `enabled` is false (the store is shared with other processes).
    pub fn new(enabled: bool) -> Self {
        RowCache {
            inner: enabled.then(Arc::default),
        }
    }

    fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
        // The map holds only whole rows: a panic elsewhere while locked leaves it usable.
        inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The row of `stream_id` if kept, else where the read that will fetch it begins.
    pub fn get(&self, stream_id: &str) -> Result<StoredStream, Option<Miss>> {
        let Some(inner) = &self.inner else {
            return Err(None);
        };
        let inner = Self::lock(inner);
        match inner.rows.get(stream_id) {
            Some(row) => Ok(row.clone()),
            None => Err(Some(Miss(inner.generation))),
        }
    }

    /// Keeps `row`, read after `miss`, unless a change happened since.
    pub fn fill(&self, miss: Option<Miss>, row: &StoredStream) {
        let (Some(inner), Some(Miss(generation))) = (&self.inner, miss) else {
            return;
        };
        let mut inner = Self::lock(inner);
        if inner.generation != generation {
            return;
        }
        if inner.rows.len() >= CAPACITY {
            inner.rows.clear();
        }
        inner
            .rows
            .insert(row.stream.name.stream.clone(), row.clone());
    }

    /// Forgets `stream_id` now and again when the returned guard is dropped: hold it across
    /// the statement that changes the row.
    pub fn invalidate(&self, stream_id: &str) -> Invalidation {
        let inner = self.inner.clone();
        if let Some(inner) = &inner {
            Self::forget(inner, stream_id);
        }
        Invalidation {
            inner,
            stream_id: stream_id.to_string(),
        }
    }

    fn forget(inner: &Mutex<Inner>, stream_id: &str) {
        let mut inner = Self::lock(inner);
        inner.generation += 1;
        inner.rows.remove(stream_id);
    }
}

/// Forgets a row when dropped (after its change's statement ended, or was cancelled).
pub(super) struct Invalidation {
    inner: Option<Arc<Mutex<Inner>>>,
    stream_id: String,
}

impl Drop for Invalidation {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            RowCache::forget(inner, &self.stream_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Stream, StreamDetails, StreamName, StreamSpec, StreamState};

    fn missed(cache: &RowCache, id: &str) -> Option<Miss> {
        match cache.get(id) {
            Ok(_) => panic!("{id} is kept"),
            Err(miss) => miss,
        }
    }

    fn row(id: &str, etag: &str) -> StoredStream {
        StoredStream {
            stream: Stream {
                name: StreamName {
                    provider: "local".into(),
                    video: None,
                    stream: id.into(),
                },
                etag: etag.into(),
                state: StreamState::Active,
                spec: StreamSpec::default(),
                create_time_ms: 0,
                update_time_ms: 0,
                provider_uid: String::new(),
                details: StreamDetails::Local { version: 1 },
            },
            created_by: "op".into(),
            last_op: "op".into(),
        }
    }

    #[test]
    fn a_read_that_raced_a_change_leaves_nothing_behind() {
        let cache = RowCache::new(true);
        let miss = missed(&cache, "s");
        assert!(miss.is_some());
        // A change begins after the read began and before it fills the row in.
        let change = cache.invalidate("s");
        cache.fill(miss, &row("s", "old"));
        assert!(
            cache.get("s").is_err(),
            "the racing read's copy was dropped"
        );
        // A read that began during the change: its copy goes when the change ends.
        let during = missed(&cache, "s");
        cache.fill(during, &row("s", "old"));
        drop(change);
        assert!(cache.get("s").is_err());
        // A read after the change is kept.
        let after = missed(&cache, "s");
        cache.fill(after, &row("s", "new"));
        assert!(matches!(cache.get("s"), Ok(row) if row.stream.etag == "new"));
    }

    #[test]
    fn disabled_keeps_nothing() {
        let cache = RowCache::new(false);
        let miss = missed(&cache, "s");
        assert!(miss.is_none());
        cache.fill(miss, &row("s", "e"));
        assert!(cache.get("s").is_err());
    }

    #[test]
    fn bounded() {
        let cache = RowCache::new(true);
        for i in 0..=CAPACITY {
            let id = format!("s{i}");
            let miss = missed(&cache, &id);
            cache.fill(miss, &row(&id, "e"));
        }
        let inner = RowCache::lock(cache.inner.as_ref().unwrap());
        assert!(inner.rows.len() <= CAPACITY);
    }
}
