//! Triggers registered through the admin API, kept across restarts.
//!
//! A worker's triggers live and end with its connection and are not
//! stored; configuration's come from the configuration at every start.
//! These are the ones only the store remembers. Each write is awaited: the
//! answer that says a trigger was registered or removed is sent after it is
//! on disk.

use sqlx::Row;

use super::{Store, StoreError, now_ms, query_error};

/// A stored trigger, as the admin API registered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTrigger {
    /// The identity that registered it (`agent:NAME`): its calls are made
    /// as that identity.
    pub owner: String,
    /// The owner's tenant, when not the default.
    pub tenant: Option<String>,
    pub id: String,
    pub trigger_type: String,
    pub function_id: String,
    /// The trigger's config, as JSON text.
    pub config: String,
}

impl Store {
    /// Stores a trigger, replacing the owner's trigger of the same id.
    pub async fn save_trigger(&self, trigger: &StoredTrigger) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO triggers (owner, id, tenant, trigger_type, function_id, config, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (owner, id) DO UPDATE SET tenant = excluded.tenant,
               trigger_type = excluded.trigger_type, function_id = excluded.function_id,
               config = excluded.config",
        )
        .bind(trigger.owner.as_str())
        .bind(trigger.id.as_str())
        .bind(trigger.tenant.as_deref())
        .bind(trigger.trigger_type.as_str())
        .bind(trigger.function_id.as_str())
        .bind(trigger.config.as_str())
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(query_error("storing a trigger"))?;
        Ok(())
    }

    /// Forgets a stored trigger; false if there was none.
    pub async fn delete_trigger(&self, owner: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM triggers WHERE owner = $1 AND id = $2")
            .bind(owner)
            .bind(id)
            .execute(self.pool())
            .await
            .map_err(query_error("removing a trigger"))?;
        Ok(done.rows_affected() > 0)
    }

    /// Every stored trigger, oldest first.
    pub async fn triggers(&self) -> Result<Vec<StoredTrigger>, StoreError> {
        let rows = sqlx::query(
            "SELECT owner, tenant, id, trigger_type, function_id, config FROM triggers ORDER BY created_ms, owner, id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(query_error("reading triggers"))?;
        rows.iter()
            .map(|row| {
                Ok(StoredTrigger {
                    owner: row.try_get(0)?,
                    tenant: row.try_get(1)?,
                    id: row.try_get(2)?,
                    trigger_type: row.try_get(3)?,
                    function_id: row.try_get(4)?,
                    config: row.try_get(5)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error("reading triggers"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn triggers_are_kept_replaced_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let route = StoredTrigger {
            owner: "agent:ops".into(),
            tenant: None,
            id: "refunds".into(),
            trigger_type: "http".into(),
            function_id: "billing::refund".into(),
            config: r#"{"api_path":"/refunds"}"#.into(),
        };
        store.save_trigger(&route).await.unwrap();
        let moved = StoredTrigger {
            config: r#"{"api_path":"/refunds/v2"}"#.into(),
            ..route.clone()
        };
        store.save_trigger(&moved).await.unwrap();
        drop(store);
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        assert_eq!(store.triggers().await.unwrap(), [moved]);
        assert!(store.delete_trigger("agent:ops", "refunds").await.unwrap());
        assert!(!store.delete_trigger("agent:ops", "refunds").await.unwrap());
        assert!(store.triggers().await.unwrap().is_empty());
    }
}
