//! The windows cron jobs fired, so that a job fires once per window
//! however many gateways share the store, and a restarted gateway knows
//! which windows it missed.
//!
//! Claiming a window is one conditional upsert: it moves the job's last
//! window forward only if it is behind, so of two gateways claiming the
//! same window exactly one sees its row change. The claim is taken before
//! the call is made: a gateway that dies between the two loses that one
//! window (at most once per window, never twice).

use sqlx::Row;

use super::{Store, StoreError, now_ms, query_error};

impl Store {
    /// The last window `job` fired, in Unix milliseconds.
    pub async fn last_cron_window(&self, job: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query("SELECT window_ms FROM cron_windows WHERE job = $1")
            .bind(job)
            .fetch_optional(self.pool())
            .await
            .map_err(query_error("reading a cron job's last window"))?;
        row.map(|row| row.try_get(0))
            .transpose()
            .map_err(query_error("reading a cron job's last window"))
    }

    /// Claims `window_ms` for `job` on behalf of `holder`: true if this
    /// caller is the one to fire it, false if the window (or a later one)
    /// was already claimed.
    pub async fn claim_cron_window(
        &self,
        job: &str,
        window_ms: i64,
        holder: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO cron_windows (job, window_ms, fired_by, fired_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job) DO UPDATE SET window_ms = excluded.window_ms,
               fired_by = excluded.fired_by, fired_ms = excluded.fired_ms
             WHERE cron_windows.window_ms < excluded.window_ms",
        )
        .bind(job)
        .bind(window_ms)
        .bind(holder)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(query_error("claiming a cron window"))?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_window_is_claimed_once_and_never_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let other = Store::open_sqlite(dir.path()).await.unwrap();
        assert_eq!(store.last_cron_window("job").await.unwrap(), None);
        assert!(store.claim_cron_window("job", 1_000, "a").await.unwrap());
        assert!(!other.claim_cron_window("job", 1_000, "b").await.unwrap());
        assert!(!other.claim_cron_window("job", 999, "b").await.unwrap());
        assert!(other.claim_cron_window("job", 2_000, "b").await.unwrap());
        assert!(!store.claim_cron_window("job", 2_000, "a").await.unwrap());
        assert!(
            store
                .claim_cron_window("other-job", 1_000, "a")
                .await
                .unwrap()
        );
        drop((store, other));
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        assert_eq!(store.last_cron_window("job").await.unwrap(), Some(2_000));
    }
}
