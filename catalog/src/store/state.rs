//! State values, kept by scope and key as JSON text.
//!
//! Writes come in batches from one writer (adapters' state store): a batch
//! is one write transaction, begun `IMMEDIATE` so that a second gateway on
//! the same file waits for it rather than failing mid-way, and reads the
//! values it replaces inside it — an update is atomic whoever else writes.

use sqlx::Row;
use sqlx::pool::PoolConnection;

use super::{Store, StoreError, now_ms, query_error};

/// A value as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    pub key: String,
    /// JSON text.
    pub value: String,
}

/// One write transaction on state values.
pub struct StateBatch {
    connection: PoolConnection<sqlx::Any>,
    open: bool,
}

impl Store {
    /// The value at `scope`/`key`, as JSON text.
    pub async fn state_get(&self, scope: &str, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query("SELECT value FROM state_values WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .fetch_optional(self.pool())
            .await
            .and_then(|row| row.map(|row| row.try_get(0)).transpose())
            .map_err(query_error("reading a state value"))
    }

    /// Up to `limit` entries of `scope`, by key.
    pub async fn state_list(
        &self,
        scope: &str,
        limit: usize,
    ) -> Result<Vec<StateEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, value FROM state_values WHERE scope = $1 ORDER BY key LIMIT $2",
        )
        .bind(scope)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(query_error("listing a state scope"))?;
        rows.iter()
            .map(|row| {
                Ok(StateEntry {
                    key: row.try_get(0)?,
                    value: row.try_get(1)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error("listing a state scope"))
    }

    /// Up to `limit` scopes holding a value, with how many each holds.
    pub async fn state_scopes(&self, limit: usize) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT scope, COUNT(*) FROM state_values GROUP BY scope ORDER BY scope LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.pool())
        .await
        .map_err(query_error("listing state scopes"))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error("listing state scopes"))
    }

    /// How many values are stored in all.
    pub async fn state_count(&self) -> Result<i64, StoreError> {
        sqlx::query("SELECT COUNT(*) FROM state_values")
            .fetch_one(self.pool())
            .await
            .and_then(|row| row.try_get(0))
            .map_err(query_error("counting state values"))
    }

    /// Begins a write transaction on state values.
    pub async fn state_batch(&self) -> Result<StateBatch, StoreError> {
        let mut connection = self
            .pool()
            .acquire()
            .await
            .map_err(query_error("starting a state write"))?;
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *connection)
            .await
            .map_err(query_error("starting a state write"))?;
        Ok(StateBatch {
            connection,
            open: true,
        })
    }
}

impl StateBatch {
    /// The value at `scope`/`key` as this transaction sees it.
    pub async fn get(&mut self, scope: &str, key: &str) -> Result<Option<String>, StoreError> {
        sqlx::query("SELECT value FROM state_values WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .fetch_optional(&mut *self.connection)
            .await
            .and_then(|row| row.map(|row| row.try_get(0)).transpose())
            .map_err(query_error("reading a state value"))
    }

    pub async fn put(&mut self, scope: &str, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO state_values (scope, key, value, updated_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value,
               updated_ms = excluded.updated_ms",
        )
        .bind(scope)
        .bind(key)
        .bind(value)
        .bind(now_ms())
        .execute(&mut *self.connection)
        .await
        .map_err(query_error("writing a state value"))?;
        Ok(())
    }

    pub async fn delete(&mut self, scope: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM state_values WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .execute(&mut *self.connection)
            .await
            .map_err(query_error("deleting a state value"))?;
        Ok(())
    }

    /// Makes every write of the batch durable.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.open = false;
        sqlx::query("COMMIT")
            .execute(&mut *self.connection)
            .await
            .map_err(query_error("committing state writes"))?;
        Ok(())
    }
}

impl Drop for StateBatch {
    /// A batch dropped before its commit is rolled back: the connection
    /// must not go back to the pool inside a transaction.
    fn drop(&mut self) {
        if self.open {
            // Detached: a connection in an unknown state is closed, not reused.
            self.connection.close_on_drop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_are_written_in_batches_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let mut batch = store.state_batch().await.unwrap();
        batch.put("orders", "a", "1").await.unwrap();
        batch.put("orders", "b", "2").await.unwrap();
        assert_eq!(
            batch.get("orders", "a").await.unwrap().as_deref(),
            Some("1")
        );
        batch.put("orders", "a", "3").await.unwrap();
        batch.put("carts", "x", "{}").await.unwrap();
        batch.delete("orders", "b").await.unwrap();
        batch.commit().await.unwrap();
        // Dropped without commit: nothing of it stays.
        let mut abandoned = store.state_batch().await.unwrap();
        abandoned.put("orders", "lost", "0").await.unwrap();
        drop(abandoned);
        drop(store);
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        assert_eq!(
            store.state_get("orders", "a").await.unwrap().as_deref(),
            Some("3")
        );
        assert_eq!(store.state_get("orders", "b").await.unwrap(), None);
        assert_eq!(store.state_get("orders", "lost").await.unwrap(), None);
        assert_eq!(
            store.state_list("orders", 10).await.unwrap(),
            [StateEntry {
                key: "a".into(),
                value: "3".into()
            }]
        );
        assert_eq!(
            store.state_scopes(10).await.unwrap(),
            [("carts".to_owned(), 1), ("orders".to_owned(), 1)]
        );
        assert_eq!(store.state_count().await.unwrap(), 2);
    }
}
