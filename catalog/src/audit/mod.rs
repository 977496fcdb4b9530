//! The audit log: who registered, called, deprecated or changed what, with
//! the policy rule that decided it, appended to the store.
//!
//! Recording never waits: [`AuditLog::record`] appends the entry to an
//! inbox that a background writer empties after gathering for 100 ms,
//! inserting what it took in one transaction (allowed calls as packs).
//! [`AuditLog::flush`] cuts the gathering short and waits for the commit:
//! an answer that depends on an entry (a denial, an admin change) is sent
//! only once the entry is on disk. If the writer falls more than [`QUEUE`]
//! entries behind, new entries of allowed calls (twice that for any other
//! entry) are counted as dropped (and the count logged) rather than slowing
//! calls down or growing memory without bound. Entries carry no secrets
//! and no payloads unless the gateway is configured to record payloads.

use std::borrow::Cow;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;
use tokio::sync::{Notify, oneshot};

use crate::store::{Store, StoreError, now_ms, query_error};

/// Entries waiting to be written before new ones are dropped.
pub const QUEUE: usize = 65_536;
/// Largest batch in one transaction (and so one pack).
const BATCH: usize = 8192;
/// How long the writer gathers entries before a transaction. Each
/// transaction costs a sync whatever its size: at 20 ms the SQLite thread
/// took about 1 µs of CPU per audited call under load, at 100 ms 0.15–0.3
/// µs (docs/benchmarks.md). Flushes do not wait for it.
const GATHER: std::time::Duration = std::time::Duration::from_millis(100);
/// Most entries one query returns.
pub const MAX_QUERY: usize = 10_000;

mod packs;
mod record;

use record::Pending;
pub use record::{CallDetail, Detail, Record};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Increasing position in the log.
    pub seq: i64,
    pub at_ms: i64,
    /// `call`, `registration`, `deprecation`, `declaration`, `policy` or `admin`.
    pub kind: String,
    /// `agent:NAME`, `worker:NAME`, `gateway`, or `operator` for file changes.
    pub subject: String,
    pub tenant: String,
    /// The policy action decided (`call`, `register`, …) or what was done.
    pub action: String,
    /// A function id, `id@version`, an admin object or a policy file.
    pub object: String,
    pub allowed: bool,
    /// The rule that decided, as `file:line: the line`, or why not.
    pub rule: String,
    /// Outcome and context (never secrets; payloads only when configured).
    pub detail: Value,
}

/// What to read back; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Entries after this position.
    pub after: Option<i64>,
    pub kind: Option<String>,
    pub subject: Option<String>,
    pub action: Option<String>,
    /// Exact object, or a prefix when it ends with `*`.
    pub object: Option<String>,
    pub allowed: Option<bool>,
    /// Newest N (default and maximum [`MAX_QUERY`]), returned oldest first.
    pub limit: Option<usize>,
}

type FlushReply = oneshot::Sender<Result<(), StoreError>>;

/// What waits for the writer. Recording an entry is a push under an
/// uncontended lock: no channel slot, no waker, no shared counter of its
/// own — it runs once per allowed call.
#[derive(Default)]
struct Inbox {
    /// The next entry's position; drawn under the lock, so the inbox is
    /// always in order.
    next: i64,
    entries: Vec<Pending>,
    flushes: Vec<FlushReply>,
    /// The log was dropped: write what is left and stop.
    closed: bool,
    /// The writer task ended (its runtime shut down): nothing more is written.
    stopped: bool,
}

/// The inbox and the writer's wake-ups, shared by the log and its writer.
#[derive(Default)]
struct Shared {
    inbox: Mutex<Inbox>,
    /// The first entry of a batch, a flush, or the close arrived.
    work: Notify,
    /// Someone waits for the commit: cut the gathering short.
    urgent: Notify,
}

impl Shared {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // An inbox is consistent after any panic: a push or a swap.
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `text` with control characters (C0, DEL, C1 — terminal escapes among
/// them) and bidirectional overrides written as `\u{..}` escapes; line
/// breaks and tabs kept only when `multiline`.
pub fn printable(text: &str, multiline: bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && !(multiline && matches!(c, '\n' | '\t')))
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| {
            if unsafe_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

fn kept_printable(text: String) -> String {
    match printable(&text, false) {
        Cow::Borrowed(_) => text,
        Cow::Owned(escaped) => escaped,
    }
}

/// The log: a writer task over the store, and reads straight from it.
pub struct AuditLog {
    store: Store,
    shared: Arc<Shared>,
    dropped: AtomicU64,
    /// Entries at or below this are trimmed (`retain`); a pack straddling
    /// it is kept until all of it is below.
    floor: Arc<AtomicI64>,
}

impl AuditLog {
    /// Opens the log in `store`, keeping the newest `retain` entries.
    pub async fn open(store: Store, retain: u64) -> Result<Arc<Self>, StoreError> {
        let rows: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) FROM audit_log")
            .fetch_one(store.pool())
            .await
            .and_then(|row| row.try_get(0))
            .map_err(query_error("reading the audit log"))?;
        let last = rows.max(packs::last_seq(&store).await?);
        let floor = Arc::new(AtomicI64::new(
            last.saturating_sub(i64::try_from(retain).unwrap_or(i64::MAX)),
        ));
        let shared = Arc::new(Shared::default());
        shared.inbox().next = last + 1;
        tokio::spawn(write_batches(
            store.clone(),
            WriterEnd(shared.clone()),
            Retention {
                retain,
                floor: floor.clone(),
            },
        ));
        Ok(Arc::new(Self {
            store,
            shared,
            dropped: AtomicU64::new(0),
            floor,
        }))
    }

    /// Appends an entry without waiting. It is escaped ([`printable`]) and
    /// encoded by the writer, off the caller's path.
    pub fn record(&self, record: Record) {
        let at_ms = now_ms();
        // Allowed calls are dropped first: the entries whose answers wait
        // for their commit (refusals, changes) have room until twice that.
        let limit = if record.allowed && record.kind == "call" {
            QUEUE
        } else {
            2 * QUEUE
        };
        let mut inbox = self.shared.inbox();
        if inbox.entries.len() >= limit || inbox.stopped {
            drop(inbox);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::error!(dropped, "audit log writer is behind; entries dropped");
            }
            return;
        }
        let first = inbox.entries.is_empty();
        let seq = inbox.next;
        inbox.next += 1;
        inbox.entries.push(Pending { seq, at_ms, record });
        drop(inbox);
        // Later entries of the batch find the writer already woken.
        if first {
            self.shared.work.notify_one();
        }
    }

    /// Entries waiting for the writer.
    pub fn queued(&self) -> usize {
        self.shared.inbox().entries.len()
    }

    /// Entries dropped because the writer was behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits until every entry recorded so far is committed. Concurrent
    /// waiters share one transaction.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        {
            let mut inbox = self.shared.inbox();
            if inbox.stopped {
                return Err(StoreError::WriterStopped);
            }
            inbox.flushes.push(reply);
        }
        self.shared.work.notify_one();
        self.shared.urgent.notify_one();
        done.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Reads entries matching `query`, oldest first.
    pub async fn query(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let mut sql = String::from(
            "SELECT seq, at_ms, kind, subject, tenant, action, object, allowed, rule, detail FROM audit_log WHERE 1 = 1",
        );
        let mut binds: Vec<String> = Vec::new();
        let mut condition = |sql: &mut String, clause: &str, value: String| {
            binds.push(value);
            sql.push_str(&format!(" AND {clause} ${}", binds.len()));
        };
        if let Some(kind) = &query.kind {
            condition(&mut sql, "kind =", kind.clone());
        }
        if let Some(subject) = &query.subject {
            condition(&mut sql, "subject =", subject.clone());
        }
        if let Some(action) = &query.action {
            condition(&mut sql, "action =", action.clone());
        }
        if let Some(object) = &query.object {
            match object.strip_suffix('*') {
                Some(prefix) => {
                    let escaped = prefix
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_");
                    condition(&mut sql, "object LIKE", format!("{escaped}%"));
                    sql.push_str(" ESCAPE '\\'");
                }
                None => condition(&mut sql, "object =", object.clone()),
            }
        }
        if let Some(after) = query.after {
            sql.push_str(&format!(" AND seq > {after}"));
        }
        if let Some(allowed) = query.allowed {
            sql.push_str(&format!(" AND allowed = {}", i64::from(allowed)));
        }
        let limit = query.limit.unwrap_or(MAX_QUERY).clamp(1, MAX_QUERY);
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT {limit}"));
        let mut statement = sqlx::query(&sql).persistent(false);
        for value in &binds {
            statement = statement.bind(value.as_str());
        }
        let rows = statement
            .fetch_all(self.store.pool())
            .await
            .map_err(query_error("reading the audit log"))?;
        let mut entries = rows
            .iter()
            .map(|row| {
                let detail: String = row.try_get(9)?;
                let allowed: i64 = row.try_get(7)?;
                Ok(AuditEntry {
                    seq: row.try_get(0)?,
                    at_ms: row.try_get(1)?,
                    kind: row.try_get(2)?,
                    subject: row.try_get(3)?,
                    tenant: row.try_get(4)?,
                    action: row.try_get(5)?,
                    object: row.try_get(6)?,
                    allowed: allowed != 0,
                    rule: row.try_get(8)?,
                    detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(query_error("reading the audit log"))?;
        // Packs hold only allowed calls: most security questions (denials,
        // registrations, admin changes) never read one.
        if packs::may_match(query) {
            let floor = self.floor.load(Ordering::Acquire);
            entries.extend(packs::newest(&self.store, query, floor, limit).await?);
            entries.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.seq));
            entries.truncate(limit);
        }
        entries.reverse();
        Ok(entries)
    }
}

/// How much of the log is kept.
struct Retention {
    retain: u64,
    /// Shared with readers: packed entries at or below it are trimmed.
    floor: Arc<AtomicI64>,
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.shared.inbox().closed = true;
        self.shared.work.notify_one();
        self.shared.urgent.notify_one();
    }
}

/// The writer's hold on the inbox. Dropped when the writer ends — also
/// when its runtime shuts down mid-write — it fails the flushes still
/// waiting, so no one waits for a commit that will never come.
struct WriterEnd(Arc<Shared>);

impl Drop for WriterEnd {
    fn drop(&mut self) {
        let mut inbox = self.0.inbox();
        inbox.stopped = true;
        for reply in inbox.flushes.drain(..) {
            let _ = reply.send(Err(StoreError::WriterStopped));
        }
    }
}

async fn write_batches(store: Store, end: WriterEnd, retention: Retention) {
    let shared = &end.0;
    let mut last_error = None;
    let mut spare = Vec::new();
    let mut written_since_trim = 0usize;
    loop {
        shared.work.notified().await;
        // Gather for a moment before writing: one transaction (one commit
        // and sync) per burst rather than per call when calls trickle in —
        // unless someone is waiting for the commit.
        let waited_for = {
            let inbox = shared.inbox();
            !inbox.flushes.is_empty() || inbox.closed
        };
        if !waited_for {
            tokio::select! {
                () = tokio::time::sleep(GATHER) => {}
                () = shared.urgent.notified() => {}
            }
        }
        let (mut entries, flushes, closed) = {
            let mut inbox = shared.inbox();
            (
                std::mem::replace(&mut inbox.entries, std::mem::take(&mut spare)),
                std::mem::take(&mut inbox.flushes),
                inbox.closed,
            )
        };
        for batch in entries.chunks(BATCH) {
            match insert(&store, batch).await {
                Ok(()) => written_since_trim += batch.len(),
                Err(error) => {
                    tracing::error!(%error, entries = batch.len(), "audit entries not written");
                    last_error = Some(error);
                }
            }
        }
        if let Some(newest) = entries.last().map(|e| e.seq)
            && written_since_trim >= 10_000
        {
            written_since_trim = 0;
            trim(&store, &retention, newest).await;
        }
        entries.clear();
        spare = entries;
        // A failure is told to the next flush, whichever batch it was in.
        if !flushes.is_empty() {
            let outcome = last_error.take().map_or(Ok(()), Err);
            for reply in flushes {
                let _ = reply.send(outcome.clone());
            }
        }
        if closed {
            return;
        }
    }
}

/// Keeps the newest `retain` entries.
async fn trim(store: &Store, retention: &Retention, newest: i64) {
    let floor = newest.saturating_sub(i64::try_from(retention.retain).unwrap_or(i64::MAX));
    // Positions start at 1: below that there is nothing to delete.
    if floor < 1 {
        return;
    }
    retention.floor.fetch_max(floor, Ordering::AcqRel);
    let rows = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
        .bind(floor)
        .execute(store.pool())
        .await
        .map_err(query_error("trimming the audit log"));
    if let Err(error) = rows.and(packs::trim(store, floor).await) {
        tracing::warn!(%error, "old audit entries not trimmed");
    }
}

/// Rows per multi-row INSERT: many rows per statement is what lets SQLite
/// keep up with tens of thousands of calls a second (10 parameters a row,
/// well under SQLite's limit of 32,766 per statement). One fixed size, so
/// the statement is prepared once per connection and kept: parsing a
/// fresh statement for every batch took a quarter of the writer's time.
const ROWS_PER_STATEMENT: usize = 64;

const INSERT_HEAD: &str = "INSERT INTO audit_log (seq, at_ms, kind, subject, tenant, action, object, allowed, rule, detail) ";

/// Writes a batch in one transaction: allowed calls as one pack, every
/// other entry as its own row.
async fn insert(store: &Store, entries: &[Pending]) -> Result<(), StoreError> {
    let _turn = store.write_turn().await;
    let mut transaction = store
        .pool()
        .begin()
        .await
        .map_err(query_error("starting a transaction"))?;
    let (mut packed, single): (Vec<&Pending>, Vec<&Pending>) =
        entries.iter().partition(|entry| entry.is_packed());
    // The inbox hands batches over in order; a pack's readers stop at
    // `limit` and rely on it, so it is enforced here, whatever the caller.
    packed.sort_unstable_by_key(|entry| entry.seq);
    if !packed.is_empty() {
        packs::insert(&mut transaction, &packed).await?;
    }
    let single: Vec<AuditEntry> = single.into_iter().map(Pending::to_entry).collect();
    let details: Vec<String> = single.iter().map(|e| e.detail.to_string()).collect();
    let rows: Vec<(&AuditEntry, &str)> = single
        .iter()
        .zip(details.iter().map(String::as_str))
        .collect();
    // Full chunks share one prepared statement; the rest (fewer than a
    // chunk) share the one-row statement. Two statements in all, so the
    // connection's statement cache stays small.
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let groups: Vec<&[(&AuditEntry, &str)]> = if chunk.len() == ROWS_PER_STATEMENT {
            vec![chunk]
        } else {
            chunk.chunks(1).collect()
        };
        for group in groups {
            let mut statement = sqlx::QueryBuilder::<sqlx::Any>::new(INSERT_HEAD);
            statement.push_values(group, |mut row, (entry, detail)| {
                row.push_bind(entry.seq)
                    .push_bind(entry.at_ms)
                    .push_bind(entry.kind.as_str())
                    .push_bind(entry.subject.as_str())
                    .push_bind(entry.tenant.as_str())
                    .push_bind(entry.action.as_str())
                    .push_bind(entry.object.as_str())
                    .push_bind(i64::from(entry.allowed))
                    .push_bind(entry.rule.as_str())
                    .push_bind(*detail);
            });
            statement
                .build()
                .execute(&mut *transaction)
                .await
                .map_err(query_error("writing audit entries"))?;
        }
    }
    transaction
        .commit()
        .await
        .map_err(query_error("committing audit entries"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn open_log(dir: &std::path::Path, retain: u64) -> Arc<AuditLog> {
        AuditLog::open(Store::open_sqlite(dir).await.unwrap(), retain)
            .await
            .unwrap()
    }

    fn record(subject: &str, object: &str, allowed: bool) -> Record {
        Record {
            kind: "call",
            subject: subject.to_owned().into(),
            tenant: "default".into(),
            action: "call".into(),
            object: object.into(),
            allowed,
            rule: "p.csv:1: p, *, *, *, *, allow".into(),
            detail: json!({"outcome": "ok"}).into(),
        }
    }

    #[test]
    fn terminal_escapes_and_fake_lines_are_written_out() {
        assert_eq!(printable("agent:alice", false), "agent:alice");
        assert_eq!(
            printable("a\u{1b}[2J\nagent:root\u{7}", false),
            "a\\u{1b}[2J\\u{a}agent:root\\u{7}"
        );
        assert_eq!(printable("\u{202e}gnp.exe", false), "\\u{202e}gnp.exe");
        assert_eq!(printable("two\nlines\u{9b}", true), "two\nlines\\u{9b}");
    }

    /// Refused input is recorded as given, but escaped: a function id with
    /// a terminal escape or a line break cannot act on whoever reads the log.
    #[tokio::test]
    async fn unprintable_input_is_stored_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), 100).await;
        let mut hostile = record("worker:w\u{1b}]0;owned\u{7}", "x\u{1b}[2J\ny::z", false);
        hostile.rule = "refused: \u{1b}[31mred".into();
        log.record(hostile);
        log.flush().await.unwrap();
        let entry = log.query(&AuditQuery::default()).await.unwrap().remove(0);
        assert_eq!(entry.subject, "worker:w\\u{1b}]0;owned\\u{7}");
        assert_eq!(entry.object, "x\\u{1b}[2J\\u{a}y::z");
        assert_eq!(entry.rule, "refused: \\u{1b}[31mred");
    }

    /// Allowed calls go to packs, everything else to rows; one query reads
    /// both in sequence order, every filter applying to both alike.
    #[tokio::test]
    async fn packed_and_single_entries_read_back_as_one_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), 1_000_000).await;
        for n in 0..30 {
            let allowed = n % 3 != 0;
            log.record(record(
                &format!("agent:a{}", n % 2),
                &format!("ns{}::f{n}", n % 5),
                allowed,
            ));
            if n % 7 == 0 {
                let mut registration = record("worker:w", &format!("ns0::r{n}"), true);
                registration.kind = "registration";
                log.record(registration);
            }
            if n == 14 {
                log.flush().await.unwrap();
            }
        }
        log.flush().await.unwrap();
        let (packs, rows): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM audit_packs), (SELECT COUNT(*) FROM audit_log)",
        )
        .fetch_one(log.store.pool())
        .await
        .unwrap();
        assert!(packs >= 1, "allowed calls are packed");
        assert_eq!(rows, 10 + 5, "denials and registrations are rows");

        let all = log.query(&AuditQuery::default()).await.unwrap();
        assert_eq!(all.len(), 35);
        let seqs: Vec<i64> = all.iter().map(|e| e.seq).collect();
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "oldest first, packed and single interleaved");

        let narrow = AuditQuery {
            subject: Some("agent:a1".into()),
            object: Some("ns1::*".into()),
            kind: Some("call".into()),
            ..Default::default()
        };
        let expected: Vec<String> = (0..30)
            .filter(|n| n % 2 == 1 && n % 5 == 1)
            .map(|n| format!("ns1::f{n}"))
            .collect();
        let got: Vec<String> = log
            .query(&narrow)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.object)
            .collect();
        assert_eq!(got, expected);

        let newest_two = log
            .query(&AuditQuery {
                allowed: Some(true),
                kind: Some("call".into()),
                limit: Some(2),
                ..Default::default()
            })
            .await
            .unwrap();
        let objects: Vec<&str> = newest_two.iter().map(|e| e.object.as_str()).collect();
        assert_eq!(objects, ["ns3::f28", "ns4::f29"]);

        let after = all[20].seq;
        let (followed, denied) = (
            AuditQuery {
                after: Some(after),
                ..Default::default()
            },
            AuditQuery {
                allowed: Some(false),
                ..Default::default()
            },
        );
        let followed = log.query(&followed).await.unwrap();
        assert_eq!(followed.len(), 14);
        assert!(followed.iter().all(|e| e.seq > after));
        assert_eq!(log.query(&denied).await.unwrap().len(), 10);
    }

    /// A batch handed to `insert` out of order is still packed in order
    /// and read newest first.
    #[tokio::test]
    async fn a_batch_out_of_order_is_packed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), 1_000_000).await;
        let entry = |seq: i64| Pending {
            seq,
            at_ms: seq,
            record: Record {
                object: format!("a::f{seq}").into(),
                ..record("agent:a", "", true)
            },
        };
        insert(&log.store, &[entry(3), entry(1), entry(2)])
            .await
            .unwrap();
        let newest = log
            .query(&AuditQuery {
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(newest[0].seq, 3);
        let followed = log
            .query(&AuditQuery {
                after: Some(2),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(followed.iter().map(|e| e.seq).collect::<Vec<_>>(), [3]);
    }

    /// `retain` keeps the newest entries: the log is trimmed every 10,000
    /// writes to the newest `retain`, so it never holds more than `retain`
    /// plus the writes since the last trim.
    #[tokio::test]
    async fn only_the_newest_retained_entries_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), 100).await;
        for n in 0..10_050 {
            log.record(record("agent:a", &format!("f::n{n}"), true));
            if n % 1000 == 999 {
                log.flush().await.unwrap();
            }
        }
        log.flush().await.unwrap();
        assert_eq!(log.dropped(), 0);
        let kept = log.query(&AuditQuery::default()).await.unwrap();
        let (count, oldest) = (kept.len(), kept[0].seq);
        assert!((100..=150).contains(&count), "{count} entries kept");
        assert!(oldest > 9_800, "the oldest kept is #{oldest}");
        // Storage follows: whole packs below the floor are gone.
        let (packed,): (i64,) =
            sqlx::query_as("SELECT COALESCE(SUM(entry_count), 0) FROM audit_packs")
                .fetch_one(log.store.pool())
                .await
                .unwrap();
        assert!(packed < 1_200, "{packed} entries still stored");
        let newest = log
            .query(&AuditQuery {
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(newest[0].object, "f::n10049", "the newest entry is kept");
    }

    #[tokio::test]
    async fn entries_persist_in_order_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), 1000).await;
        log.record(record("agent:a", "billing::refund", true));
        log.record(record("agent:b", "billing::charge", false));
        log.record(record("agent:a", "ops::restart", false));
        log.flush().await.unwrap();
        let all = log.query(&AuditQuery::default()).await.unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        let denied = log
            .query(&AuditQuery {
                allowed: Some(false),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(denied.len(), 2);
        let billing = log
            .query(&AuditQuery {
                object: Some("billing::*".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(billing.len(), 2);
        let a = log
            .query(&AuditQuery {
                subject: Some("agent:a".into()),
                limit: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].object, "ops::restart");
        let after = log
            .query(&AuditQuery {
                after: Some(all[0].seq),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(after.len(), 2);
        // A reopened log continues the sequence.
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let reopened = AuditLog::open(store, 1000).await.unwrap();
        reopened.record(record("agent:c", "x::y", true));
        reopened.flush().await.unwrap();
        let last = reopened.query(&AuditQuery::default()).await.unwrap();
        assert_eq!(last.len(), 4);
        assert_eq!(last[3].seq, all[2].seq + 1);
        assert_eq!(last[3].detail, json!({"outcome": "ok"}));
    }

    #[tokio::test]
    async fn large_batches_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), 100_000).await;
        for n in 0..3000 {
            log.record(record("agent:a", &format!("x::f{n}"), n % 2 == 0));
        }
        log.flush().await.unwrap();
        let all = log.query(&AuditQuery::default()).await.unwrap();
        assert_eq!(all.len(), 3000);
        assert_eq!(all[2999].object, "x::f2999");
        assert_eq!(log.dropped(), 0);
    }

    /// A full inbox drops allowed calls, not the refusals whose answers
    /// wait for their entry: one recorded past the limit is still written.
    /// (A current-thread runtime: the writer cannot run until the test
    /// awaits, so the inbox really fills.)
    #[tokio::test]
    async fn a_full_inbox_drops_allowed_calls_but_keeps_a_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), 1_000_000).await;
        for n in 0..=QUEUE {
            log.record(record("agent:a", &format!("a::f{n}"), true));
        }
        assert_eq!(log.dropped(), 1, "the allowed call past the limit");
        log.record(record("agent:mallory", "a::secret", false));
        assert_eq!(log.dropped(), 1, "the refusal was kept");
        log.flush().await.unwrap();
        let refused = log
            .query(&AuditQuery {
                allowed: Some(false),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].subject, "agent:mallory");
    }

    /// The writer's runtime is gone (a shut-down gateway, say): a flush is
    /// refused at once rather than waiting for a commit that never comes,
    /// and later entries are counted as dropped.
    #[test]
    fn a_flush_after_the_writer_stopped_is_refused_not_left_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let first = tokio::runtime::Runtime::new().unwrap();
        let log = first.block_on(async {
            let log = open_log(dir.path(), 100).await;
            log.record(record("agent:a", "x::kept", true));
            log.flush().await.unwrap();
            log
        });
        drop(first);
        let second = tokio::runtime::Runtime::new().unwrap();
        second.block_on(async {
            let flushed = tokio::time::timeout(std::time::Duration::from_secs(10), log.flush())
                .await
                .expect("a flush with no writer must not wait");
            assert!(
                matches!(flushed, Err(StoreError::WriterStopped)),
                "{flushed:?}"
            );
            log.record(record("agent:a", "x::lost", true));
            assert_eq!(log.dropped(), 1);
            let all = log.query(&AuditQuery::default()).await.unwrap();
            assert_eq!(all.len(), 1);
            assert_eq!(all[0].object, "x::kept");
        });
    }

    #[tokio::test]
    async fn like_wildcards_in_objects_are_literal() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), 1000).await;
        log.record(record("agent:a", "a_b::c", true));
        log.record(record("agent:a", "axb::c", true));
        log.flush().await.unwrap();
        let found = log
            .query(&AuditQuery {
                object: Some("a_b*".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
    }
}
