//! Persistence of capability definitions.
//!
//! One SQL dialect for the embedded SQLite default and for PostgreSQL: sqlx's
//! `Any` driver, `$n` parameters, `ON CONFLICT ... DO UPDATE` and only the
//! column types both share (TEXT, BIGINT). Registration never waits for the
//! disk: the [`StoreWriter`] batches definitions into transactions in the
//! background, and [`StoreWriter::flush`] waits for them (shutdown, tests).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::Row;
use sqlx::any::AnyPoolOptions;
use tokio::sync::{mpsc, oneshot};

use crate::definition::{Capability, CapabilityDefinition};

mod batch;
mod cron;
mod integrity;
mod queue;
mod rest;
mod state;
mod triggers;

pub use batch::Batch;
pub use integrity::StoreReport;
pub use queue::{DeadLetter, Delivered, NewMessage, QueueCounts, QueueStep};
pub use state::{StateEntry, StateKey};
pub use triggers::StoredTrigger;

/// Largest batch written in one transaction.
const MAX_BATCH: usize = 1024;
/// Name of the SQLite file inside the data directory.
pub const SQLITE_FILE: &str = "capgate.db";

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS capability_versions (
        function_id TEXT NOT NULL,
        version TEXT NOT NULL,
        definition_hash TEXT NOT NULL,
        definition TEXT NOT NULL,
        first_seen_ms BIGINT NOT NULL,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (function_id, version)
    )",
    "CREATE TABLE IF NOT EXISTS capability_redefinitions (
        function_id TEXT NOT NULL,
        version TEXT NOT NULL,
        old_hash TEXT NOT NULL,
        new_hash TEXT NOT NULL,
        differs TEXT NOT NULL,
        at_ms BIGINT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS audit_log (
        seq BIGINT PRIMARY KEY,
        at_ms BIGINT NOT NULL,
        kind TEXT NOT NULL,
        subject TEXT NOT NULL,
        tenant TEXT NOT NULL,
        action TEXT NOT NULL,
        object TEXT NOT NULL,
        allowed BIGINT NOT NULL,
        rule TEXT NOT NULL,
        detail TEXT NOT NULL
    )",
    // Allowed calls, many per row (audit/packs.rs).
    "CREATE TABLE IF NOT EXISTS audit_packs (
        first_seq BIGINT PRIMARY KEY,
        last_seq BIGINT NOT NULL,
        entry_count BIGINT NOT NULL,
        entries TEXT NOT NULL
    )",
    // No secondary index: every index is paid by each audited call.
    // Triggers registered through the admin API (store/triggers.rs).
    "CREATE TABLE IF NOT EXISTS triggers (
        owner TEXT NOT NULL,
        id TEXT NOT NULL,
        tenant TEXT,
        trigger_type TEXT NOT NULL,
        function_id TEXT NOT NULL,
        config TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        PRIMARY KEY (owner, id)
    )",
    // State: values by scope and key (store/state.rs).
    "CREATE TABLE IF NOT EXISTS state_values (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_ms BIGINT NOT NULL,
        PRIMARY KEY (scope, key)
    )",
    // The embedded durable queue (store/queue.rs): one row per message and
    // consumer group, dead letters kept in place.
    "CREATE TABLE IF NOT EXISTS queue_messages (
        seq BIGINT PRIMARY KEY,
        receipt TEXT NOT NULL,
        queue TEXT NOT NULL,
        consumer TEXT NOT NULL,
        msg_group TEXT,
        data TEXT NOT NULL,
        meta TEXT,
        attempts BIGINT NOT NULL,
        visible_ms BIGINT NOT NULL,
        enqueued_ms BIGINT NOT NULL,
        dead BIGINT NOT NULL,
        leased BIGINT NOT NULL,
        dead_ms BIGINT,
        last_error TEXT
    )",
    "CREATE INDEX IF NOT EXISTS queue_messages_ready
        ON queue_messages (queue, consumer, dead, seq)",
    "CREATE INDEX IF NOT EXISTS queue_messages_groups
        ON queue_messages (queue, consumer, msg_group, seq) WHERE msg_group IS NOT NULL",
    // The oldest live message of a queue, for its age limit.
    "CREATE INDEX IF NOT EXISTS queue_messages_age
        ON queue_messages (queue, dead, enqueued_ms)",
    "CREATE TABLE IF NOT EXISTS queue_consumers (
        queue TEXT NOT NULL,
        consumer TEXT NOT NULL,
        created_ms BIGINT NOT NULL,
        PRIMARY KEY (queue, consumer)
    )",
    "CREATE TABLE IF NOT EXISTS queue_dedup (
        queue TEXT NOT NULL,
        key TEXT NOT NULL,
        receipt TEXT NOT NULL,
        expires_ms BIGINT NOT NULL,
        PRIMARY KEY (queue, key)
    )",
    // REST services imported from OpenAPI documents (store/rest.rs).
    "CREATE TABLE IF NOT EXISTS rest_services (
        namespace TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        updated_ms BIGINT NOT NULL
    )",
    // The last window each cron job fired (store/cron.rs).
    "CREATE TABLE IF NOT EXISTS cron_windows (
        job TEXT PRIMARY KEY,
        window_ms BIGINT NOT NULL,
        fired_by TEXT NOT NULL,
        fired_ms BIGINT NOT NULL
    )",
];

/// One thing the writer stores.
pub(crate) enum Write {
    Definition(Arc<Capability>),
    Redefinition {
        old: Arc<Capability>,
        new: Arc<Capability>,
    },
}

/// A recorded redefinition of an unstable version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedefinitionRecord {
    pub function_id: String,
    pub version: String,
    pub old_hash: String,
    pub new_hash: String,
    /// Comma-separated field names.
    pub differs: String,
    pub at_ms: i64,
}

/// A store failure, with the place it happened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot use data directory {path}: {reason}; choose a writable directory with --data-dir or CAPGATE_DATA_DIR"
    )]
    DataDir { path: PathBuf, reason: String },
    #[error("cannot open the catalog database {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("catalog database error while {doing}: {reason}")]
    Query { doing: &'static str, reason: String },
    #[error("the catalog store writer has stopped")]
    WriterStopped,
    #[error(
        "the catalog database {path} is damaged: {reason}. Restore it from a backup (`capgate store backup FILE` makes one), or move it aside (mv {path} {path}.damaged) to start with an empty catalog; `capgate store check` reports what is wrong"
    )]
    Damaged { path: PathBuf, reason: String },
}

impl StoreError {
    /// Names `file` and what to do when the error says its content is
    /// damaged (SQLite's "malformed" and "not a database").
    fn on_file(self, file: &Path) -> Self {
        let reason = match &self {
            Self::Open { reason, .. } | Self::Query { reason, .. } => reason,
            _ => return self,
        };
        if reason.contains("malformed") || reason.contains("not a database") {
            Self::Damaged {
                path: file.to_owned(),
                reason: reason.clone(),
            }
        } else {
            self
        }
    }
}

pub(crate) fn query_error(doing: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |error| StoreError::Query {
        doing,
        reason: error.to_string(),
    }
}

/// A connection pool to the catalog database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// SQLite rather than PostgreSQL: where their SQL differs.
    sqlite: bool,
    /// Taken by every write transaction of this process, first come first
    /// served: SQLite has one writer at a time, and without this a writer
    /// that commits back to back (a queue under load) wins the lock again
    /// and again while the others sleep in SQLite's busy handler.
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// Starts the background writer that keeps the catalog's definitions.
    pub fn writer(&self) -> StoreWriter {
        StoreWriter::spawn(self.clone())
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn is_sqlite(&self) -> bool {
        self.sqlite
    }

    /// Waits for this process's turn to write (see `write_gate`).
    pub(crate) async fn write_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.write_gate.clone().lock_owned().await
    }

    /// Opens (creating if needed) `capgate.db` in `data_dir`. An existing
    /// file that is empty, is not a capgate catalog or is damaged is
    /// refused with [`StoreError::Damaged`] — never opened as an empty
    /// catalog.
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self, StoreError> {
        let data_dir_error = |reason: String| StoreError::DataDir {
            path: data_dir.to_owned(),
            reason,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| data_dir_error(e.to_string()))?;
        // Fail early and clearly on a read-only directory rather than on the
        // first write, which may come much later.
        let probe = data_dir.join(".capgate-write-probe");
        std::fs::write(&probe, b"").map_err(|e| data_dir_error(format!("not writable ({e})")))?;
        let _ = std::fs::remove_file(&probe);
        let file = data_dir.join(SQLITE_FILE);
        let existed = integrity::existing_file(&file)?;
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let opened = async {
            let store = Self::pool_for(&url).await?;
            if existed {
                integrity::require_catalog(&store, &file).await?;
            }
            store.migrate().await?;
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&store.pool)
                .await
                .map_err(query_error("enabling write-ahead logging"))?;
            integrity::probe(&store).await?;
            Ok(store)
        };
        opened
            .await
            .map_err(|error: StoreError| error.on_file(&file))
    }

    /// Connects to a database URL (`sqlite://...`, `postgres://...`) and
    /// brings its schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::pool_for(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    async fn pool_for(url: &str) -> Result<Self, StoreError> {
        static DRIVERS: Once = Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let pool = AnyPoolOptions::new()
            .max_connections(4)
            // sqlx pings every connection it hands out by default: one more
            // trip to the connection's thread per query, for a local file
            // that does not drop connections.
            .test_before_acquire(false)
            .connect(url)
            .await
            .map_err(|error| StoreError::Open {
                url: redact(url),
                reason: error.to_string(),
            })?;
        Ok(Self {
            pool,
            sqlite: url.starts_with("sqlite:"),
            write_gate: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        for statement in MIGRATIONS {
            sqlx::query(statement)
                .execute(&self.pool)
                .await
                .map_err(query_error("creating the schema"))?;
        }
        Ok(())
    }

    /// Writes definitions and redefinition records in one transaction
    /// (definitions insert or replace by id@version).
    pub(crate) async fn write(&self, writes: &[Write]) -> Result<(), StoreError> {
        let now = now_ms();
        let _turn = self.write_turn().await;
        let mut transaction = self
            .pool
            .begin()
            .await
            .map_err(query_error("starting a transaction"))?;
        for write in writes {
            match write {
                Write::Definition(capability) => {
                    let definition =
                        serde_json::to_string(&capability.definition()).map_err(|e| {
                            StoreError::Query {
                                doing: "encoding a definition",
                                reason: e.to_string(),
                            }
                        })?;
                    sqlx::query(
                        "INSERT INTO capability_versions
                            (function_id, version, definition_hash, definition, first_seen_ms, updated_ms)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (function_id, version) DO UPDATE SET
                            definition_hash = excluded.definition_hash,
                            definition = excluded.definition,
                            updated_ms = excluded.updated_ms",
                    )
                    .bind(capability.id().as_str())
                    .bind(capability.version().to_string())
                    .bind(capability.hash().to_hex())
                    .bind(definition)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *transaction)
                    .await
                    .map_err(query_error("saving a definition"))?;
                }
                Write::Redefinition { old, new } => {
                    let differs =
                        crate::redefinition::differing_fields(old.definition(), new.definition())
                            .join(",");
                    sqlx::query(
                        "INSERT INTO capability_redefinitions
                            (function_id, version, old_hash, new_hash, differs, at_ms)
                         VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(new.id().as_str())
                    .bind(new.version().to_string())
                    .bind(old.hash().to_hex())
                    .bind(new.hash().to_hex())
                    .bind(differs)
                    .bind(now)
                    .execute(&mut *transaction)
                    .await
                    .map_err(query_error("recording a redefinition"))?;
                }
            }
        }
        transaction
            .commit()
            .await
            .map_err(query_error("committing definitions"))
    }

    /// The recorded redefinitions of `function_id`, oldest first.
    pub async fn redefinitions(
        &self,
        function_id: &str,
    ) -> Result<Vec<RedefinitionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT function_id, version, old_hash, new_hash, differs, at_ms
             FROM capability_redefinitions WHERE function_id = $1 ORDER BY at_ms, version",
        )
        .bind(function_id)
        .fetch_all(&self.pool)
        .await
        .map_err(query_error("reading redefinitions"))?;
        rows.iter()
            .map(|row| {
                Ok(RedefinitionRecord {
                    function_id: row.try_get(0)?,
                    version: row.try_get(1)?,
                    old_hash: row.try_get(2)?,
                    new_hash: row.try_get(3)?,
                    differs: row.try_get(4)?,
                    at_ms: row.try_get(5)?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(query_error("reading redefinitions"))
    }

    /// Every stored definition. A row that no longer parses (written by a
    /// newer capgate, or edited by hand) is skipped with a warning rather than
    /// stopping the gateway.
    pub async fn load(&self) -> Result<Vec<Capability>, StoreError> {
        let rows = sqlx::query("SELECT function_id, version, definition FROM capability_versions ORDER BY function_id, version")
            .fetch_all(&self.pool)
            .await
            .map_err(query_error("loading definitions"))?;
        let mut capabilities = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row
                .try_get(0)
                .map_err(query_error("reading a definition"))?;
            let version: String = row
                .try_get(1)
                .map_err(query_error("reading a definition"))?;
            let text: String = row
                .try_get(2)
                .map_err(query_error("reading a definition"))?;
            let parsed = serde_json::from_str::<CapabilityDefinition>(&text)
                .map_err(|e| e.to_string())
                .and_then(|definition| {
                    Capability::from_definition(definition).map_err(|e| e.to_string())
                });
            match parsed {
                Ok(capability) => capabilities.push(capability),
                Err(reason) => {
                    tracing::warn!(%id, %version, %reason, "skipping a stored definition that does not load")
                }
            }
        }
        Ok(capabilities)
    }
}

enum WriterMessage {
    Write(Write),
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// Where the catalog hands the definitions it must keep; it knows nothing
/// else of the store.
pub trait DefinitionSink: Send + Sync {
    /// Keeps a new or changed definition (in the background).
    fn save(&self, capability: Arc<Capability>);
    /// Records that an unstable version's definition was replaced.
    fn record_redefinition(&self, old: &Arc<Capability>, new: &Arc<Capability>);
    /// Waits until everything handed over so far is written.
    fn flush(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>>;
}

/// The background task that writes definitions.
pub struct StoreWriter {
    sender: mpsc::UnboundedSender<WriterMessage>,
}

impl StoreWriter {
    fn spawn(store: Store) -> Self {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut last_error: Option<StoreError> = None;
            let mut batch = Vec::new();
            let mut flushes = Vec::new();
            loop {
                let mut messages = Vec::with_capacity(MAX_BATCH);
                if receiver.recv_many(&mut messages, MAX_BATCH).await == 0 {
                    break;
                }
                for message in messages {
                    match message {
                        WriterMessage::Write(write) => batch.push(write),
                        WriterMessage::Flush(reply) => flushes.push(reply),
                    }
                }
                if !batch.is_empty() {
                    if let Err(error) = store.write(&batch).await {
                        tracing::error!(%error, definitions = batch.len(), "could not persist definitions");
                        last_error = Some(error);
                    }
                    batch.clear();
                }
                for reply in flushes.drain(..) {
                    let _ = reply.send(match last_error.take() {
                        Some(error) => Err(error),
                        None => Ok(()),
                    });
                }
            }
        });
        Self { sender }
    }

    fn send(&self, write: Write) {
        if self.sender.send(WriterMessage::Write(write)).is_err() {
            tracing::error!("catalog store writer has stopped; a change was not persisted");
        }
    }
}

impl DefinitionSink for StoreWriter {
    fn save(&self, capability: Arc<Capability>) {
        self.send(Write::Definition(capability));
    }

    fn record_redefinition(&self, old: &Arc<Capability>, new: &Arc<Capability>) {
        self.send(Write::Redefinition {
            old: old.clone(),
            new: new.clone(),
        });
    }

    fn flush(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(async move {
            let (reply, done) = oneshot::channel();
            self.sender
                .send(WriterMessage::Flush(reply))
                .map_err(|_| StoreError::WriterStopped)?;
            done.await.map_err(|_| StoreError::WriterStopped)?
        })
    }
}

/// Rows (or keys) one statement names at most. Many-row statements come in
/// a few fixed sizes — 32, 16, 8, 4, 2, 1 — so that each is prepared once
/// per connection and kept; and small, because sqlx looks up every `$n`
/// among all of a statement's parameters: a 256-row insert spent more time
/// binding than writing (docs/benchmarks.md, queues).
pub(crate) const ROWS_PER_STATEMENT: usize = 32;

/// `rows` split into pieces of [`ROWS_PER_STATEMENT`], 16, 8, 4, 2 and 1.
pub(crate) fn fixed_sizes<T>(mut rows: &[T]) -> Vec<&[T]> {
    let mut pieces = Vec::new();
    let mut size = ROWS_PER_STATEMENT;
    while !rows.is_empty() {
        while size > rows.len() {
            size /= 2;
        }
        let (piece, rest) = rows.split_at(size);
        pieces.push(piece);
        rows = rest;
    }
    pieces
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A database URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::Draft;
    use crate::directory::ProviderId;
    use serde_json::json;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn statements_come_in_few_fixed_sizes() {
        let rows: Vec<u32> = (0..75).collect();
        let sizes: Vec<usize> = fixed_sizes(&rows).iter().map(|piece| piece.len()).collect();
        assert_eq!(sizes, [32, 32, 8, 2, 1]);
        assert_eq!(fixed_sizes(&rows).concat(), rows);
        assert!(fixed_sizes::<u32>(&[]).is_empty());
    }

    /// A row that no longer parses (written by a newer capgate, or edited
    /// by hand) is skipped; the rows around it still load.
    #[tokio::test]
    async fn a_stored_row_that_no_longer_parses_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let catalog = crate::Catalog::open(store.clone()).await.unwrap();
        for id in ["a::before", "c::after"] {
            let capability = Draft {
                id: id.into(),
                ..Default::default()
            }
            .build()
            .unwrap();
            catalog.define(capability).unwrap();
        }
        catalog.flush().await.unwrap();
        for (id, text) in [
            ("b::garbled", "{not json"),
            (
                "b::not_semver",
                r#"{"id": "b::not_semver", "version": "one"}"#,
            ),
            ("b::bad_id", r#"{"id": "B::Bad", "version": "1.0.0"}"#),
        ] {
            sqlx::query(
                "INSERT INTO capability_versions (function_id, version, definition_hash, definition, first_seen_ms, updated_ms) VALUES ($1, '1.0.0', 'x', $2, 0, 0)",
            )
            .bind(id)
            .bind(text)
            .execute(store.pool())
            .await
            .unwrap();
        }
        let loaded: Vec<String> = store
            .load()
            .await
            .unwrap()
            .iter()
            .map(|c| c.id().to_string())
            .collect();
        assert_eq!(loaded, ["a::before", "c::after"]);
        let reopened = crate::Catalog::open(store).await.unwrap();
        assert_eq!(reopened.list().len(), 2);
    }

    #[tokio::test]
    async fn definitions_survive_a_reopen_and_come_back_offline() {
        let dir = tempfile::tempdir().unwrap();
        {
            let catalog = crate::Catalog::open(Store::open_sqlite(dir.path()).await.unwrap())
                .await
                .unwrap();
            let capability = Draft {
                id: "a::f".into(),
                version: Some(json!("1.2.0")),
                input_schema: Some(json!({"type": "object"})),
                ..Default::default()
            }
            .build()
            .unwrap();
            catalog.register(capability, ProviderId(7)).unwrap();
            catalog.flush().await.unwrap();
        }
        let catalog = crate::Catalog::open(Store::open_sqlite(dir.path()).await.unwrap())
            .await
            .unwrap();
        let rows = catalog.list();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].capability.version().to_string(), "1.2.0");
        assert!(rows[0].providers.is_empty());
        assert!(catalog.live().is_empty());
    }

    #[tokio::test]
    async fn redefinitions_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let catalog = crate::Catalog::open(store.clone()).await.unwrap();
        for description in ["first", "second"] {
            let capability = Draft {
                id: "a::f".into(),
                version: Some(json!("0.1.0")),
                description: Some(description.into()),
                ..Default::default()
            }
            .build()
            .unwrap();
            catalog.register(capability, ProviderId(1)).unwrap();
        }
        catalog.flush().await.unwrap();
        let records = store.redefinitions("a::f").await.unwrap();
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0].version, "0.1.0");
        assert_eq!(records[0].differs, "description");
        assert_ne!(records[0].old_hash, records[0].new_hash);
    }

    #[tokio::test]
    async fn an_unwritable_data_dir_is_a_clear_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let error = Store::open_sqlite(&file.path().join("sub"))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("--data-dir"), "{error}");
    }
}
