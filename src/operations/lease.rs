//! This process as the holder of operation leases: claiming, renewing, adopting, releasing.
//!
//! Several processes may share one store (PostgreSQL): each unfinished operation is driven by
//! one process at a time, the holder of its lease ([`Lease`]). Every third of the lease this
//! process renews the leases of its operations, acts on the cancellations requested through
//! another process, and adopts operations whose lease ran out (their process died), handing
//! them to the [`Driver`]. A process that stops cleanly releases its leases, so others adopt
//! its operations at once.
//!
//! It does not drive operations (`driver.rs`) nor fence their saves (the store does, by owner).

use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::driver::Driver;
use crate::domain::now_ms;
use crate::error::Result;
use crate::store::{Lease, OperationStore};

/// How many operations one adoption round takes at most.
const CLAIM_BATCH: usize = 256;

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

    /// A lease of this process that runs from `now` (ms since the epoch).
    pub(super) fn lease_from(&self, now: i64) -> Lease {
        Lease {
            owner: self.owner.clone(),
            until_ms: now + self.lease.as_millis() as i64,
        }
    }

    /// Takes the unfinished operations whose lease ended (every one when `all`: the store is
    /// this process's alone) and has `driver` drive them.
    pub(super) async fn adopt(&self, driver: &Arc<Driver>, all: bool) -> Result<usize> {
        let mut count = 0;
        loop {
            let now = now_ms();
            let ended_before = if all { i64::MAX } else { now };
            let claimed = driver
                .store
                .claim(&self.lease_from(now), ended_before, CLAIM_BATCH)
                .await?;
            let n = claimed.len();
            for mut op in claimed {
                op.replayed = true;
                driver.spawn(op, None);
            }
            count += n;
            if n < CLAIM_BATCH {
                return Ok(count);
            }
        }
    }

    /// Until the driver shuts down: every third of the lease, renews this process's leases,
    /// passes on the cancellations requested elsewhere and adopts orphaned operations.
    pub(super) async fn keep(self: Arc<Self>, driver: Arc<Driver>) {
        let period = self.lease / 3;
        loop {
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = driver.shutdown.cancelled() => return,
            }
            match driver.store.renew(&self.lease_from(now_ms())).await {
                Ok(cancelled) => {
                    for id in cancelled {
                        driver.cancel(&id);
                    }
                }
                Err(e) => warn!(error = %e, "could not renew the operation leases"),
            }
            match self.adopt(&driver, false).await {
                Ok(0) => {}
                Ok(count) => info!(count, "adopted operations whose process stopped"),
                Err(e) => warn!(error = %e, "could not adopt orphaned operations"),
            }
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
