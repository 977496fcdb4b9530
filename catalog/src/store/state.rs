//! State values, kept by scope and key as JSON text.
//!
//! Writes come in batches from one writer (adapters' state store): a batch
//! is one write transaction ([`Batch`]) that reads the values it replaces
//! inside it — an update is atomic whoever else writes.

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;

use super::{Batch, Store, StoreError, fixed_sizes, now_ms, query_error};

/// A value's place: scope, key.
pub type StateKey = (String, String);

/// `($1, $2), ($3, $4), …` for `count` keys.
fn pairs(count: usize) -> String {
    (0..count)
        .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
        .collect::<Vec<_>>()
        .join(", ")
}

fn select_sql(count: usize) -> String {
    format!(
        "SELECT scope, key, value FROM state_values WHERE (scope, key) IN (VALUES {})",
        pairs(count)
    )
}

fn bind_keys<'q>(
    mut query: Query<'q, sqlx::Any, AnyArguments<'q>>,
    keys: &'q [StateKey],
) -> Query<'q, sqlx::Any, AnyArguments<'q>> {
    for (scope, key) in keys {
        query = query.bind(scope.as_str()).bind(key.as_str());
    }
    query
}

fn collect_rows(rows: &[AnyRow], found: &mut HashMap<StateKey, String>) -> Result<(), StoreError> {
    for row in rows {
        let read = || -> Result<(StateKey, String), sqlx::Error> {
            Ok(((row.try_get(0)?, row.try_get(1)?), row.try_get(2)?))
        };
        let (key, value) = read().map_err(query_error("reading state values"))?;
        found.insert(key, value);
    }
    Ok(())
}

/// A value as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    pub key: String,
    /// JSON text.
    pub value: String,
}

impl Store {
    /// The values at `keys` that exist, as JSON text.
    pub async fn state_get_many(
        &self,
        keys: &[StateKey],
    ) -> Result<HashMap<StateKey, String>, StoreError> {
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in fixed_sizes(keys) {
            let rows = bind_keys(sqlx::query(&select_sql(chunk.len())), chunk)
                .fetch_all(self.pool())
                .await
                .map_err(query_error("reading state values"))?;
            collect_rows(&rows, &mut found)?;
        }
        Ok(found)
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
}

impl Batch {
    /// The values at `keys` that exist, as this transaction sees them.
    pub async fn get_many(
        &mut self,
        keys: &[StateKey],
    ) -> Result<HashMap<StateKey, String>, StoreError> {
        let mut found = HashMap::with_capacity(keys.len());
        for chunk in fixed_sizes(keys) {
            let rows = bind_keys(sqlx::query(&select_sql(chunk.len())), chunk)
                .fetch_all(&mut *self.connection)
                .await
                .map_err(query_error("reading state values"))?;
            collect_rows(&rows, &mut found)?;
        }
        Ok(found)
    }

    /// Writes `(key, JSON text)` pairs, each key at most once.
    pub async fn put_many(&mut self, entries: &[(StateKey, String)]) -> Result<(), StoreError> {
        let now = now_ms();
        for chunk in fixed_sizes(entries) {
            let rows = (0..chunk.len())
                .map(|i| {
                    format!(
                        "(${}, ${}, ${}, ${})",
                        4 * i + 1,
                        4 * i + 2,
                        4 * i + 3,
                        4 * i + 4
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO state_values (scope, key, value, updated_ms) VALUES {rows}
                 ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value,
                   updated_ms = excluded.updated_ms"
            );
            let mut query = sqlx::query(&sql);
            for ((scope, key), value) in chunk {
                query = query
                    .bind(scope.as_str())
                    .bind(key.as_str())
                    .bind(value.as_str())
                    .bind(now);
            }
            query
                .execute(&mut *self.connection)
                .await
                .map_err(query_error("writing state values"))?;
        }
        Ok(())
    }

    pub async fn delete_many(&mut self, keys: &[StateKey]) -> Result<(), StoreError> {
        for chunk in fixed_sizes(keys) {
            let sql = format!(
                "DELETE FROM state_values WHERE (scope, key) IN (VALUES {})",
                pairs(chunk.len())
            );
            bind_keys(sqlx::query(&sql), chunk)
                .execute(&mut *self.connection)
                .await
                .map_err(query_error("deleting state values"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(scope: &str, key: &str) -> StateKey {
        (scope.to_owned(), key.to_owned())
    }

    #[tokio::test]
    async fn values_are_written_in_batches_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let mut batch = store.batch().await.unwrap();
        batch
            .put_many(&[
                (key("orders", "a"), "1".into()),
                (key("orders", "b"), "2".into()),
            ])
            .await
            .unwrap();
        let seen = batch
            .get_many(&[key("orders", "a"), key("orders", "zzz")])
            .await
            .unwrap();
        assert_eq!(seen, HashMap::from([(key("orders", "a"), "1".to_owned())]));
        batch
            .put_many(&[
                (key("orders", "a"), "3".into()),
                (key("carts", "x"), "{}".into()),
            ])
            .await
            .unwrap();
        batch.delete_many(&[key("orders", "b")]).await.unwrap();
        batch.commit().await.unwrap();
        // Dropped without commit: nothing of it stays.
        let mut abandoned = store.batch().await.unwrap();
        abandoned
            .put_many(&[(key("orders", "lost"), "0".into())])
            .await
            .unwrap();
        drop(abandoned);
        drop(store);
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let many: Vec<StateKey> = (0..600).map(|n| key("orders", &n.to_string())).collect();
        let mut asked = many.clone();
        asked.extend([
            key("orders", "a"),
            key("orders", "b"),
            key("orders", "lost"),
        ]);
        assert_eq!(
            store.state_get_many(&asked).await.unwrap(),
            HashMap::from([(key("orders", "a"), "3".to_owned())])
        );
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
