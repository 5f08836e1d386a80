//! This process as the holder of operation leases: claiming, renewing, adopting, releasing.
//!
//! Several processes may share one store (PostgreSQL): each unfinished operation is driven by
//! one process at a time, the holder of its lease ([`Lease`]). The store ends leases by the
//! database's clock; this process keeps, per operation, a local deadline that ends earlier (the
//! moment it sent the statement that took or renewed the lease, plus the lease, less a fifth of
//! it), which the [`Driver`]'s tasks check before each provider call and each save.
//!
//! About every third of the lease (with jitter, so that replicas' rounds spread out) this
//! process renews the leases of the operations whose task runs here and still holds (a task
//! that stopped, or whose lease lapsed, is not renewed: its lease runs out and it is adopted
//! again), acts on the cancellations requested through another process, and adopts operations
//! whose lease ran out (their process died or paused, or a task of this one stopped), handing
//! them to the [`Driver`]. On PostgreSQL a round adopts at most [`ADOPT_SHARE`] operations,
//! picked at random, so that the orphans of a replica that died are spread over the replicas
//! still running rather than all taken by the first one to look. A process that stops cleanly
//! releases its leases, so others adopt its operations at once.
//!
//! It does not drive operations (`driver.rs`) nor fence their saves (the store does, by owner).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tracing::{info, warn};

use super::driver::Driver;
use crate::error::Result;
use crate::store::{Lease, OperationStore, Orphans};

/// How many operations one adoption round takes at most, on a shared store: a replica's share
/// of the orphans it finds, the rest being left to the next round (its own or another
/// replica's).
const ADOPT_SHARE: usize = 32;

/// How many operations one claim takes at start-up when the store is this process's alone.
const CLAIM_ALL_BATCH: usize = 256;

/// This process's identity as an owner of operations, and the length of its leases.
pub(super) struct Leases {
    owner: String,
    lease: Duration,
}

impl Leases {
    /// A new owner (a fresh id) holding each operation for `lease` (at least 300 ms) after
    /// each renewal.
    pub(super) fn new(lease: Duration) -> Self {
        Leases {
            owner: uuid::Uuid::new_v4().simple().to_string(),
            lease: lease.max(Duration::from_millis(300)),
        }
    }

    /// This process, as the owner of the operations it drives.
    pub(super) fn owner(&self) -> &str {
        &self.owner
    }

    /// A lease of this process, from the statement that takes or renews it.
    pub(super) fn lease(&self) -> Lease {
        Lease {
            owner: self.owner.clone(),
            length: self.lease,
        }
    }

    /// Until when a lease taken or renewed by a statement sent at `sent` surely holds, on this
    /// process's clock: the database's clock may run apart from ours, but the lease starts on
    /// it after `sent`; a fifth of the lease is kept in hand for the delay before a provider
    /// call.
    pub(super) fn held_until(&self, sent: Instant) -> Instant {
        sent + self.lease - self.lease / 5
    }

    /// Takes unfinished operations and has `driver` drive them: every one, in batches, when the
    /// store is this process's alone (`all`); else one share of those whose lease ran out.
    pub(super) async fn adopt(&self, driver: &Arc<Driver>, all: bool) -> Result<usize> {
        let (which, limit) = if all {
            (Orphans::All, CLAIM_ALL_BATCH)
        } else {
            (Orphans::Lapsed, ADOPT_SHARE)
        };
        let mut count = 0;
        loop {
            let sent = Instant::now();
            let claimed = driver.store.claim(&self.lease(), which, limit).await?;
            let n = claimed.len();
            for mut op in claimed {
                op.replayed = true;
                driver.spawn(op, None, self.held_until(sent));
            }
            count += n;
            if !all || n < limit {
                return Ok(count);
            }
        }
    }

    /// Until the driver shuts down: about every third of the lease, renews the leases this
    /// process's tasks hold, passes on the cancellations requested elsewhere and adopts
    /// orphaned operations.
    pub(super) async fn keep(self: Arc<Self>, driver: Arc<Driver>) {
        loop {
            let period = self.lease.mul_f64(rand::rng().random_range(0.25..0.4));
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = driver.shutdown.cancelled() => return,
            }
            self.renew(&driver).await;
            match self.adopt(&driver, false).await {
                Ok(0) => {}
                Ok(count) => info!(count, "adopted operations whose process stopped"),
                Err(e) => warn!(error = %e, "could not adopt orphaned operations"),
            }
        }
    }

    /// Renews the leases this process's tasks hold; a task whose operation another process
    /// holds now (or that was done meanwhile) stops before its next provider call.
    async fn renew(&self, driver: &Driver) {
        let ids = driver.held();
        if ids.is_empty() {
            return;
        }
        let sent = Instant::now();
        match driver.store.renew(&self.lease(), &ids).await {
            Ok(renewed) => {
                let until = self.held_until(sent);
                let held: HashSet<&str> = renewed.held.iter().map(String::as_str).collect();
                for id in &ids {
                    if held.contains(id.as_str()) {
                        driver.extend(id, until);
                    } else {
                        driver.lose(id);
                    }
                }
                for id in renewed.cancelled {
                    driver.cancel(&id);
                }
            }
            Err(e) => warn!(error = %e, "could not renew the operation leases"),
        }
    }

    /// Gives up every lease of this process in `store`, so that others adopt its operations
    /// at once.
    pub(super) async fn release(&self, store: &dyn OperationStore) {
        if let Err(e) = store.release(&self.owner).await {
            warn!(error = %e, "could not release the operation leases; they run out instead");
        }
    }
}
