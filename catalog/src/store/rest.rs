//! REST services imported from OpenAPI documents, kept across restarts:
//! each as one record (what was asked, the document, the versions its
//! operations took). Each write is awaited: the answer that says a service
//! was imported or removed is sent after it is on disk.

use sqlx::Row;

use super::{Store, StoreError, now_ms, query_error};

impl Store {
    /// Stores a service's record, replacing the one of the same namespace.
    pub async fn save_rest_service(&self, namespace: &str, record: &str) -> Result<(), StoreError> {
        let _turn = self.write_turn().await;
        sqlx::query(
            "INSERT INTO rest_services (namespace, record, updated_ms) VALUES ($1, $2, $3)
             ON CONFLICT (namespace) DO UPDATE SET record = excluded.record, updated_ms = excluded.updated_ms",
        )
        .bind(namespace)
        .bind(record)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(query_error("storing a REST service"))?;
        Ok(())
    }

    /// Forgets a service; false if there was none.
    pub async fn delete_rest_service(&self, namespace: &str) -> Result<bool, StoreError> {
        let _turn = self.write_turn().await;
        let done = sqlx::query("DELETE FROM rest_services WHERE namespace = $1")
            .bind(namespace)
            .execute(self.pool())
            .await
            .map_err(query_error("removing a REST service"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Every stored service as (namespace, record), by namespace.
    pub async fn rest_services(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query("SELECT namespace, record FROM rest_services ORDER BY namespace")
            .fetch_all(self.pool())
            .await
            .map_err(query_error("reading REST services"))?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error("reading REST services"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rest_services_are_kept_replaced_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        store.save_rest_service("pets", r#"{"v":1}"#).await.unwrap();
        store.save_rest_service("pets", r#"{"v":2}"#).await.unwrap();
        drop(store);
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        assert_eq!(
            store.rest_services().await.unwrap(),
            [("pets".to_owned(), r#"{"v":2}"#.to_owned())]
        );
        assert!(store.delete_rest_service("pets").await.unwrap());
        assert!(!store.delete_rest_service("pets").await.unwrap());
        assert!(store.rest_services().await.unwrap().is_empty());
    }
}
