//! [`StoreProbe`]: whether the PostgreSQL store answers, asked with `SELECT 1` on a connection
//! of the probe's own. Not one of the pool's: a pool busy with slow statements still has a
//! store that answers, and a probe waiting for a free connection would say otherwise. The
//! server's readiness loop (`server/readiness.rs`) asks it every half second and turns the
//! answers into health statuses; this file only asks.

use std::time::Duration;

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, Connection};

/// A probe of the store, holding its connection between checks.
pub struct StoreProbe {
    options: AnyConnectOptions,
    // Kept while it answers; dropped (closed) after any failure, and opened again at the next
    // check, so that a connection the database or the network lost is not asked again.
    connection: Option<AnyConnection>,
}

impl std::fmt::Debug for StoreProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreProbe")
            .field("connected", &self.connection.is_some())
            .finish_non_exhaustive()
    }
}

impl StoreProbe {
    /// A probe that connects with `options` (the store's URL).
    pub(super) fn new(options: AnyConnectOptions) -> Self {
        StoreProbe {
            options,
            connection: None,
        }
    }

    /// Whether the store answers `SELECT 1` (connecting first if needed) within `timeout`;
    /// else why not. The database's text is in the error: log it, never send it.
    pub async fn check(&mut self, timeout: Duration) -> Result<(), sqlx::Error> {
        let checked = tokio::time::timeout(timeout, async {
            let connection = match &mut self.connection {
                Some(connection) => connection,
                None => self
                    .connection
                    .insert(AnyConnection::connect_with(&self.options).await?),
            };
            sqlx::query("SELECT 1").execute(connection).await.map(drop)
        })
        .await
        .unwrap_or_else(|_| {
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer to SELECT 1 within {timeout:?}"),
            )))
        });
        if checked.is_err() {
            self.connection = None;
        }
        checked
    }
}
