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
//!
//! A change whose statement returned the row it left (INSERT or UPDATE … RETURNING) may keep
//! that row as it ends ([`Invalidation::settle`]), so the next read of a stream just created or
//! changed skips its statement too — but only when no other change began or ended while it
//! ran (the generation did not move and no other change is open): then nothing can have
//! changed the row after its statement.
//! Bounded: at [`CAPACITY`] rows it starts over empty.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::row::StoredStream;

/// The most rows kept.
const CAPACITY: usize = 10_000;

/// The rows of one provider instance (an empty, disabled cache when the store is shared).
pub(super) struct RowCache {
    inner: Option<Arc<Mutex<Inner>>>,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    // Changes begun and not yet ended (live [`Invalidation`]s).
    open: usize,
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
        Self::keep(&mut inner, row);
    }

    fn keep(inner: &mut Inner, row: &StoredStream) {
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
        let mut generation = 0;
        if let Some(inner) = &inner {
            let mut locked = Self::lock(inner);
            Self::forget(&mut locked, stream_id);
            locked.open += 1;
            generation = locked.generation;
        }
        Invalidation {
            inner,
            stream_id: stream_id.to_string(),
            generation,
        }
    }

    fn forget(inner: &mut Inner, stream_id: &str) {
        inner.generation += 1;
        inner.rows.remove(stream_id);
    }
}

/// Forgets a row when dropped (after its change's statement ended, or was cancelled).
pub(super) struct Invalidation {
    inner: Option<Arc<Mutex<Inner>>>,
    stream_id: String,
    // The generation right after this change began.
    generation: u64,
}

impl Invalidation {
    /// Ends the change, whose statement left `row` in the table, and keeps `row` if this was
    /// the only change since it began.
    pub fn settle(mut self, row: &StoredStream) {
        if let Some(inner) = self.inner.take() {
            let mut locked = RowCache::lock(&inner);
            let alone = locked.generation == self.generation && locked.open == 1;
            RowCache::forget(&mut locked, &self.stream_id);
            locked.open -= 1;
            if alone && row.stream.name.stream == self.stream_id {
                RowCache::keep(&mut locked, row);
            }
        }
    }
}

impl Drop for Invalidation {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            let mut locked = RowCache::lock(inner);
            RowCache::forget(&mut locked, &self.stream_id);
            locked.open -= 1;
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
    fn a_change_alone_keeps_the_row_it_left() {
        let cache = RowCache::new(true);
        let change = cache.invalidate("s");
        change.settle(&row("s", "mine"));
        assert!(matches!(cache.get("s"), Ok(row) if row.stream.etag == "mine"));
    }

    #[test]
    fn a_change_that_overlapped_another_keeps_nothing() {
        let cache = RowCache::new(true);
        // Another change began before this one and is still open: its statement may commit
        // after this one's.
        let earlier = cache.invalidate("s");
        let change = cache.invalidate("s");
        change.settle(&row("s", "mine"));
        assert!(cache.get("s").is_err());
        drop(earlier);
        assert!(cache.get("s").is_err());

        // Another change began and ended while this one ran (of any row).
        let change = cache.invalidate("s");
        drop(cache.invalidate("t"));
        change.settle(&row("s", "mine"));
        assert!(cache.get("s").is_err());

        // A change that began after this one and is still open.
        let change = cache.invalidate("s");
        let later = cache.invalidate("s");
        change.settle(&row("s", "mine"));
        assert!(cache.get("s").is_err());
        later.settle(&row("s", "later"));
        assert!(
            cache.get("s").is_err(),
            "the later change began while the first was open"
        );

        // Once every change has ended, the next one alone keeps its row again.
        let change = cache.invalidate("s");
        change.settle(&row("s", "last"));
        assert!(matches!(cache.get("s"), Ok(row) if row.stream.etag == "last"));
    }

    #[test]
    fn a_read_during_a_settled_change_does_not_fill_in() {
        let cache = RowCache::new(true);
        let change = cache.invalidate("s");
        // A read that began while the change was open (it may have read the old row).
        let during = missed(&cache, "s");
        change.settle(&row("s", "new"));
        cache.fill(during, &row("s", "old"));
        assert!(matches!(cache.get("s"), Ok(row) if row.stream.etag == "new"));
    }

    #[test]
    fn disabled_keeps_nothing() {
        let cache = RowCache::new(false);
        let miss = missed(&cache, "s");
        assert!(miss.is_none());
        cache.fill(miss, &row("s", "e"));
        assert!(cache.get("s").is_err());
        cache.invalidate("s").settle(&row("s", "e"));
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
