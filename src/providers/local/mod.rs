//! The `local` provider: streams kept by streamgate itself in its store, the default kind, so
//! that a new user can drive the whole API without a cloud account.
//!
//! It behaves like a real asynchronous provider: a new stream is CREATING for `create_delay`
//! before it turns ACTIVE (with `create_delay = "0s"` it is ACTIVE from the start), every
//! change issues a new etag, a stale etag is refused, and every change is published to
//! WatchStream subscribers of every replica sharing the store.
//!
//! - `config.rs`: the kind-specific keys.
//! - `backend.rs`: the [`Provider`](crate::providers::Provider) impl: the prechecks and the
//!   steps of its operations (insert, then activate after `create_delay`; update; delete one
//!   or a batch; cancel) on `core.rs`, and the notice of each change to every replica.
//! - `watchers.rs`: keeps this replica's WatchStream subscribers current: re-reads a watched
//!   stream on each notice of its change (from any replica), or every second while notices
//!   from other replicas cannot come.
//! - `core.rs`: the SQL on the `local_streams` table.
//! - `endpoints.rs`: placeholder endpoints (`local://`) for developing clients.
//! - `cache.rs`: its rows in memory, when the store is this process's alone (SQLite).
//! - `row.rs`: one row, as `core.rs` decodes it and `cache.rs` keeps it.
//! - `error.rs`: the adapter's errors and their mapping to the taxonomy.

mod backend;
mod cache;
mod config;
mod core;
mod endpoints;
mod error;
mod row;
mod watchers;

pub use backend::LocalProvider;
pub use config::LocalSettings;

use crate::providers::KindEntry;

/// The kind name in the configuration.
pub const KIND: &str = "local";

/// The kind's entry in [`KINDS`](crate::providers::KINDS).
pub const ENTRY: KindEntry = KindEntry {
    names: &[KIND],
    prepare: |config| Ok(Box::new(LocalSettings::parse(config)?)),
};
