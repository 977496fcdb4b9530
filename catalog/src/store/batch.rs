//! One write transaction, for a writer that gathers many changes into it.
//!
//! Begun `IMMEDIATE` on SQLite, so that a second gateway on the same file
//! waits for it rather than failing mid-way; a batch dropped before its
//! commit closes its connection instead of handing it back to the pool
//! inside a transaction.

use sqlx::pool::PoolConnection;

use super::{Store, StoreError, query_error};

/// A write transaction on the store.
pub struct Batch {
    pub(crate) connection: PoolConnection<sqlx::Any>,
    open: bool,
    /// This process's turn to write, held until the batch ends.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Store {
    /// Begins a write transaction.
    pub async fn batch(&self) -> Result<Batch, StoreError> {
        let turn = self.write_turn().await;
        let mut connection = self
            .pool()
            .acquire()
            .await
            .map_err(query_error("starting a write"))?;
        let begin = if self.is_sqlite() {
            "BEGIN IMMEDIATE"
        } else {
            "BEGIN"
        };
        sqlx::query(begin)
            .execute(&mut *connection)
            .await
            .map_err(query_error("starting a write"))?;
        Ok(Batch {
            connection,
            open: true,
            _turn: turn,
        })
    }
}

impl Batch {
    /// Makes every write of the batch durable.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.open = false;
        sqlx::query("COMMIT")
            .execute(&mut *self.connection)
            .await
            .map_err(query_error("committing writes"))?;
        Ok(())
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        if self.open {
            // Detached: a connection in an unknown state is closed, not reused.
            self.connection.close_on_drop();
        }
    }
}
