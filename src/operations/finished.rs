//! The bounded in-memory cache of operations this process finished lately.
//!
//! A finished operation never changes again, so GetOperation and WaitOperation of one — the
//! usual WaitOperation after a create — are answered from here without reading the store.
//! Batch deletes, which carry every name and its outcome, are not kept. It knows nothing of
//! the store or of the tasks that fill it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::domain::{OpRequest, Operation};

/// The most finished operations kept in memory: usually a kilobyte or two each, at most ~40 KB
/// (50 tags of full length, in the request and again in the result), so ≤ ~10 MiB. Batch
/// deletes, which carry every name and its outcome, are not kept.
const FINISHED_KEPT: usize = 256;

/// Operations this process finished lately (not batches), as it saved them.
#[derive(Default)]
pub(super) struct Finished {
    kept: Mutex<HashMap<String, Arc<Operation>>>,
}

impl Finished {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Operation>>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The operation `id`, if it is kept.
    pub(super) fn get(&self, id: &str) -> Option<Operation> {
        self.lock().get(id).map(|op| Operation::clone(op))
    }

    /// Keeps `op`, just saved done, for reads; `cancelled` says a cancellation was requested
    /// while its last step ran (it is in the store's column but maybe not in `op`). When full,
    /// the cache starts over.
    pub(super) fn keep(&self, op: &Operation, cancelled: bool) {
        if matches!(op.request, OpRequest::BatchDelete { .. }) {
            return;
        }
        let mut kept = op.clone();
        kept.cancel_requested |= cancelled;
        let mut finished = self.lock();
        if finished.len() >= FINISHED_KEPT {
            finished.clear();
        }
        finished.insert(kept.id.clone(), Arc::new(kept));
    }

    /// Marks the kept copy of `id`, if any, as asked to cancel: the request reached the store
    /// before the operation was saved done, after its task had kept it.
    pub(super) fn mark_cancel_requested(&self, id: &str) {
        if let Some(op) = self.lock().get_mut(id) {
            Arc::make_mut(op).cancel_requested = true;
        }
    }
}
