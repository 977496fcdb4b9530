//! Whether a catalog database can be trusted, and a consistent copy of it.
//!
//! A gateway that opened a truncated or foreign file as an empty catalog
//! would forget every pinned definition hash and let another definition
//! take the same version; so an existing file must hold capgate's tables,
//! and damage is reported naming the file and what to do.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sqlx::Row;

use super::{SQLITE_FILE, Store, StoreError, query_error};

/// What `capgate store check` found.
#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    pub file: PathBuf,
    pub versions: i64,
    pub redefinitions: i64,
    pub audit_entries: i64,
    /// SQLite's `integrity_check` findings; empty when sound.
    pub problems: Vec<String>,
}

impl StoreReport {
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Whether `file` exists; an empty one is damaged (truncated, or a first
/// start interrupted before anything was written).
pub(super) fn existing_file(file: &Path) -> Result<bool, StoreError> {
    match std::fs::metadata(file) {
        Ok(metadata) if metadata.len() == 0 => Err(StoreError::Damaged {
            path: file.to_owned(),
            reason:
                "the file is empty (0 bytes) — it was truncated, or its first start was interrupted"
                    .into(),
        }),
        Ok(_) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(StoreError::Damaged {
            path: file.to_owned(),
            reason: format!("it cannot be read ({error})"),
        }),
    }
}

/// Refuses an existing file without capgate's catalog table.
pub(super) async fn require_catalog(store: &Store, file: &Path) -> Result<(), StoreError> {
    let found = sqlx::query(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'capability_versions'",
    )
    .fetch_one(store.pool())
    .await
    .and_then(|row| row.try_get::<i64, _>(0))
    .map_err(query_error("reading the schema"))?;
    if found == 0 {
        return Err(StoreError::Damaged {
            path: file.to_owned(),
            reason: "it is a SQLite database but holds no capgate catalog (no capability_versions table)".into(),
        });
    }
    Ok(())
}

/// Walks every table once, so damage shows at start rather than at the
/// first write that touches it.
pub(super) async fn probe(store: &Store) -> Result<(), StoreError> {
    counts(store).await.map(|_| ())
}

async fn counts(store: &Store) -> Result<(i64, i64, i64), StoreError> {
    let mut counted = [0i64; 3];
    for (slot, count) in counted.iter_mut().zip([
        "SELECT COUNT(*) FROM capability_versions",
        "SELECT COUNT(*) FROM capability_redefinitions",
        "SELECT (SELECT COUNT(*) FROM audit_log) + (SELECT COALESCE(SUM(entry_count), 0) FROM audit_packs)",
    ]) {
        *slot = sqlx::query(count)
            .fetch_one(store.pool())
            .await
            .and_then(|row| row.try_get(0))
            .map_err(query_error("reading the catalog"))?;
    }
    Ok((counted[0], counted[1], counted[2]))
}

impl Store {
    /// Opens the existing `capgate.db` in `data_dir` for checking or
    /// copying, without creating or changing anything; safe while a
    /// gateway is serving from it (WAL readers see a consistent snapshot).
    pub async fn open_existing_sqlite(data_dir: &Path) -> Result<(Self, PathBuf), StoreError> {
        let file = data_dir.join(SQLITE_FILE);
        if !existing_file(&file)? {
            return Err(StoreError::DataDir {
                path: data_dir.to_owned(),
                reason: format!("there is no {SQLITE_FILE} in it"),
            });
        }
        Ok((Self::open_existing_file(&file).await?, file))
    }

    /// Opens an existing catalog database file (a backup, say) as
    /// [`Store::open_existing_sqlite`] does.
    pub async fn open_existing_file(file: &Path) -> Result<Self, StoreError> {
        if !existing_file(file)? {
            return Err(StoreError::Open {
                url: file.display().to_string(),
                reason: "no such file".into(),
            });
        }
        let url = format!("sqlite://{}?mode=rw", file.display());
        let opened = async {
            let store = Self::pool_for(&url).await?;
            require_catalog(&store, file).await?;
            Ok(store)
        };
        opened
            .await
            .map_err(|error: StoreError| error.on_file(file))
    }

    /// SQLite's full `integrity_check` and what the catalog holds.
    pub async fn check(&self, file: &Path) -> Result<StoreReport, StoreError> {
        let rows = sqlx::query("PRAGMA integrity_check")
            .fetch_all(self.pool())
            .await
            .map_err(query_error("checking integrity"))
            .map_err(|error| error.on_file(file))?;
        let problems: Vec<String> = rows
            .iter()
            .filter_map(|row| row.try_get::<String, _>(0).ok())
            .filter(|line| line != "ok")
            .collect();
        let (versions, redefinitions, audit_entries) = if problems.is_empty() {
            counts(self).await.map_err(|error| error.on_file(file))?
        } else {
            (0, 0, 0)
        };
        Ok(StoreReport {
            file: file.to_owned(),
            versions,
            redefinitions,
            audit_entries,
            problems,
        })
    }

    /// Writes a consistent copy of the whole database to `to` (SQLite's
    /// `VACUUM INTO`: one read transaction, so writes made meanwhile by a
    /// serving gateway are either all in the copy or not at all). Refuses
    /// to overwrite a file.
    pub async fn backup(&self, to: &Path) -> Result<(), StoreError> {
        if to.exists() {
            return Err(StoreError::Query {
                doing: "backing up",
                reason: format!(
                    "{} already exists; name a new file (a backup never overwrites)",
                    to.display()
                ),
            });
        }
        let target = to.to_str().ok_or_else(|| StoreError::Query {
            doing: "backing up",
            reason: format!("{} is not a UTF-8 path", to.display()),
        })?;
        sqlx::query("VACUUM INTO $1")
            .bind(target)
            .execute(self.pool())
            .await
            .map_err(query_error("writing the backup"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Draft;

    async fn catalog_with_one_version(dir: &Path) {
        let catalog = crate::Catalog::open(Store::open_sqlite(dir).await.unwrap())
            .await
            .unwrap();
        let capability = Draft {
            id: "a::kept".into(),
            ..Default::default()
        }
        .build()
        .unwrap();
        catalog.define(capability).unwrap();
        catalog.flush().await.unwrap();
    }

    fn damaged_reason(error: StoreError) -> String {
        match &error {
            StoreError::Damaged { .. } => error.to_string(),
            other => panic!("expected a damaged-file error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_truncated_database_is_refused_not_opened_empty() {
        let dir = tempfile::tempdir().unwrap();
        catalog_with_one_version(dir.path()).await;
        let file = dir.path().join(SQLITE_FILE);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(0)
            .unwrap();
        let message = damaged_reason(Store::open_sqlite(dir.path()).await.err().unwrap());
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.contains("empty (0 bytes)"), "{message}");
        assert!(message.contains("Restore it from a backup"), "{message}");
        assert!(message.contains("move it aside"), "{message}");
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_database_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(SQLITE_FILE);
        std::fs::write(&file, vec![0x5a; 8192]).unwrap();
        let message = damaged_reason(Store::open_sqlite(dir.path()).await.err().unwrap());
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.contains("not a database"), "{message}");
        // Nothing was written over it.
        assert_eq!(std::fs::read(&file).unwrap(), vec![0x5a; 8192]);
    }

    #[tokio::test]
    async fn a_foreign_sqlite_database_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(SQLITE_FILE);
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let other = Store::pool_for(&url).await.unwrap();
        sqlx::query("CREATE TABLE invoices (id BIGINT)")
            .execute(other.pool())
            .await
            .unwrap();
        other.pool().close().await;
        let message = damaged_reason(Store::open_sqlite(dir.path()).await.err().unwrap());
        assert!(message.contains("holds no capgate catalog"), "{message}");
    }

    #[tokio::test]
    async fn a_damaged_page_is_reported_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open_sqlite(dir.path()).await.unwrap();
            let catalog = crate::Catalog::open(store.clone()).await.unwrap();
            for n in 0..400 {
                let capability = Draft {
                    id: format!("a::f{n}"),
                    description: Some("x".repeat(200)),
                    ..Default::default()
                }
                .build()
                .unwrap();
                catalog.define(capability).unwrap();
            }
            catalog.flush().await.unwrap();
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(store.pool())
                .await
                .unwrap();
            store.pool().close().await;
        }
        let file = dir.path().join(SQLITE_FILE);
        let mut bytes = std::fs::read(&file).unwrap();
        assert!(bytes.len() > 16 * 4096, "{} bytes", bytes.len());
        // Scribble over the second half of the file: the pages of the rows
        // written last, past the schema's pages (which grew beyond the
        // first page as tables were added) — the file still opens.
        let from = bytes.len() / 2 / 4096 * 4096;
        for byte in &mut bytes[from..] {
            *byte = 0xa5;
        }
        std::fs::write(&file, bytes).unwrap();
        let message = damaged_reason(Store::open_sqlite(dir.path()).await.err().unwrap());
        assert!(message.contains(&file.display().to_string()), "{message}");
        assert!(message.contains("malformed"), "{message}");

        let (store, file) = Store::open_existing_sqlite(dir.path()).await.unwrap();
        let report = store.check(&file).await;
        match report {
            Ok(report) => assert!(!report.is_sound(), "{report:?}"),
            Err(error) => assert!(damaged_reason(error).contains("malformed")),
        }
    }

    #[tokio::test]
    async fn a_backup_taken_while_open_is_a_sound_catalog() {
        let dir = tempfile::tempdir().unwrap();
        catalog_with_one_version(dir.path()).await;
        let (store, file) = Store::open_existing_sqlite(dir.path()).await.unwrap();
        let report = store.check(&file).await.unwrap();
        assert!(report.is_sound(), "{report:?}");
        assert_eq!(report.versions, 1);

        let copy = tempfile::tempdir().unwrap();
        let target = copy.path().join(SQLITE_FILE);
        store.backup(&target).await.unwrap();
        let refused = store.backup(&target).await.unwrap_err().to_string();
        assert!(refused.contains("already exists"), "{refused}");
        let restored = crate::Catalog::open(Store::open_sqlite(copy.path()).await.unwrap())
            .await
            .unwrap();
        assert_eq!(restored.list().len(), 1);
    }
}
