//! Allowed calls, packed: the one kind of entry written at the call rate.
//!
//! One SQLite row per entry cost a quarter of the gateway's throughput
//! (the row insert, its ten bound values, the B-tree) when every allowed
//! call was audited. Allowed calls are instead kept as packs: each writer
//! batch's allowed calls become one row of `audit_packs` holding them as
//! JSON lines, in sequence order. Every call still has its own entry, with
//! its own sequence number, time, caller, function, rule and outcome;
//! only the storage is shared. Everything else — denials, unknown
//! functions, registrations, admin changes — stays one row per entry in
//! `audit_log`, so a query that cannot match an allowed call never reads
//! a pack.

use futures_util::TryStreamExt;
use sqlx::Row;

use super::{AuditEntry, AuditQuery};
use crate::store::{Store, StoreError, query_error};

/// Whether `entry` goes in a pack.
pub(super) fn is_packed(entry: &AuditEntry) -> bool {
    entry.allowed && entry.kind == "call"
}

/// Whether a query may match packed entries at all.
pub(super) fn may_match(query: &AuditQuery) -> bool {
    query.kind.as_deref().is_none_or(|kind| kind == "call") && query.allowed != Some(false)
}

/// `query`'s filters (but its limit) applied to one entry, as the SQL of
/// the row table applies them.
fn matches(query: &AuditQuery, entry: &AuditEntry) -> bool {
    query.after.is_none_or(|after| entry.seq > after)
        && query.kind.as_deref().is_none_or(|kind| entry.kind == kind)
        && query
            .subject
            .as_deref()
            .is_none_or(|subject| entry.subject == subject)
        && query
            .action
            .as_deref()
            .is_none_or(|action| entry.action == action)
        && query.allowed.is_none_or(|allowed| entry.allowed == allowed)
        && query
            .object
            .as_deref()
            .is_none_or(|object| match object.strip_suffix('*') {
                Some(prefix) => entry.object.starts_with(prefix),
                None => entry.object == object,
            })
}

/// Writes `entries` (in sequence order, at least one) as one pack.
pub(super) async fn insert(
    connection: &mut sqlx::AnyConnection,
    entries: &[&AuditEntry],
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    let mut lines = Vec::with_capacity(entries.len() * 256);
    for entry in entries {
        serde_json::to_writer(&mut lines, entry).map_err(|error| StoreError::Query {
            doing: "encoding audit entries",
            reason: error.to_string(),
        })?;
        lines.push(b'\n');
    }
    let lines = String::from_utf8(lines).map_err(|error| StoreError::Query {
        doing: "encoding audit entries",
        reason: error.to_string(),
    })?;
    sqlx::query(
        "INSERT INTO audit_packs (first_seq, last_seq, entry_count, entries) VALUES ($1, $2, $3, $4)",
    )
    .bind(first.seq)
    .bind(last.seq)
    .bind(i64::try_from(entries.len()).unwrap_or(i64::MAX))
    .bind(lines)
    .execute(connection)
    .await
    .map_err(query_error("writing audit entries"))?;
    Ok(())
}

/// The newest `limit` packed entries matching `query` with a sequence
/// number above `floor` (what trimming has logically removed), newest
/// first. Packs are read newest first, one at a time, until enough match.
pub(super) async fn newest(
    store: &Store,
    query: &AuditQuery,
    floor: i64,
    limit: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    let after = query.after.unwrap_or(0).max(floor);
    let mut packs =
        sqlx::query("SELECT entries FROM audit_packs WHERE last_seq > $1 ORDER BY first_seq DESC")
            .bind(after)
            .fetch(store.pool());
    let mut found = Vec::new();
    while let Some(row) = packs
        .try_next()
        .await
        .map_err(query_error("reading the audit log"))?
    {
        let text: String = row
            .try_get(0)
            .map_err(query_error("reading the audit log"))?;
        for line in text.lines().rev() {
            let Ok(entry) = serde_json::from_str::<AuditEntry>(line) else {
                tracing::warn!("skipping an audit entry that does not parse");
                continue;
            };
            if entry.seq > after && matches(query, &entry) {
                found.push(entry);
                if found.len() == limit {
                    return Ok(found);
                }
            }
        }
    }
    Ok(found)
}

/// Removes packs whose every entry is at or below `floor`.
pub(super) async fn trim(store: &Store, floor: i64) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM audit_packs WHERE last_seq <= $1")
        .bind(floor)
        .execute(store.pool())
        .await
        .map_err(query_error("trimming the audit log"))?;
    Ok(())
}

/// The newest sequence number in any pack (0 when none).
pub(super) async fn last_seq(store: &Store) -> Result<i64, StoreError> {
    sqlx::query("SELECT COALESCE(MAX(last_seq), 0) FROM audit_packs")
        .fetch_one(store.pool())
        .await
        .and_then(|row| row.try_get(0))
        .map_err(query_error("reading the audit log"))
}
