//! Allowed calls, packed: the one kind of entry written at the call rate.
//!
//! One SQLite row per entry cost a quarter of the gateway's throughput
//! (the row insert, its ten bound values, the B-tree) when every allowed
//! call was audited. Allowed calls are instead kept as packs: each writer
//! batch's allowed calls become one row of `audit_packs`, in sequence
//! order, the strings they share written once ([`Header`]). Every call still has its own entry, with
//! its own sequence number, time, caller, function, rule and outcome;
//! only the storage is shared. Everything else — denials, unknown
//! functions, registrations, admin changes — stays one row per entry in
//! `audit_log`, so a query that cannot match an allowed call never reads
//! a pack.

use std::collections::HashMap;

use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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

/// A pack's text: a header line naming the format and the strings its
/// entries share, then one JSON array per entry,
/// `[seq, at_ms, subject, tenant, action, object, rule, detail]`, the five
/// strings as indexes into the header's. The caller, function and rule of
/// a burst of calls repeat on every entry; written once, an entry is about
/// a third of its JSON object's size, and the bytes are what the writer
/// pays for (the WAL, then the checkpoint).
#[derive(Serialize, Deserialize)]
struct Header<'a> {
    v: u32,
    #[serde(borrow)]
    strings: Vec<std::borrow::Cow<'a, str>>,
}

const FORMAT: u32 = 2;

type Line<'a> = (i64, i64, usize, usize, usize, usize, usize, &'a Value);

fn encode<'a>(entries: &[&'a AuditEntry]) -> Result<String, serde_json::Error> {
    let mut index: HashMap<&'a str, usize> = HashMap::new();
    let mut strings: Vec<&'a str> = Vec::new();
    let mut intern = |text: &'a str| -> usize {
        *index.entry(text).or_insert_with(|| {
            strings.push(text);
            strings.len() - 1
        })
    };
    let mut lines = Vec::with_capacity(entries.len());
    for entry in entries {
        lines.push((
            entry.seq,
            entry.at_ms,
            intern(&entry.subject),
            intern(&entry.tenant),
            intern(&entry.action),
            intern(&entry.object),
            intern(&entry.rule),
            &entry.detail,
        ));
    }
    let header = Header {
        v: FORMAT,
        strings: strings
            .into_iter()
            .map(std::borrow::Cow::Borrowed)
            .collect(),
    };
    let mut text = serde_json::to_string(&header)?;
    for line in &lines {
        text.push('\n');
        text.push_str(&serde_json::to_string::<Line>(line)?);
    }
    Ok(text)
}

/// The entries of a pack's text, in sequence order.
fn decode(text: &str) -> Result<Vec<AuditEntry>, String> {
    let mut lines = text.lines();
    let header: Header = serde_json::from_str(lines.next().unwrap_or_default())
        .map_err(|error| format!("pack header: {error}"))?;
    if header.v != FORMAT {
        return Err(format!("pack format {} is not {FORMAT}", header.v));
    }
    let string = |at: usize| -> Result<String, String> {
        header
            .strings
            .get(at)
            .map(|s| s.to_string())
            .ok_or_else(|| format!("string {at} is not in the pack"))
    };
    lines
        .map(|line| {
            let (seq, at_ms, subject, tenant, action, object, rule, detail): (
                i64,
                i64,
                usize,
                usize,
                usize,
                usize,
                usize,
                Value,
            ) = serde_json::from_str(line).map_err(|error| format!("pack entry: {error}"))?;
            Ok(AuditEntry {
                seq,
                at_ms,
                kind: "call".into(),
                subject: string(subject)?,
                tenant: string(tenant)?,
                action: string(action)?,
                object: string(object)?,
                allowed: true,
                rule: string(rule)?,
                detail,
            })
        })
        .collect()
}

/// Writes `entries` (allowed calls, sorted by sequence number) as one pack.
pub(super) async fn insert(
    connection: &mut sqlx::AnyConnection,
    entries: &[&AuditEntry],
) -> Result<(), StoreError> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    let text = encode(entries).map_err(|error| StoreError::Query {
        doing: "encoding audit entries",
        reason: error.to_string(),
    })?;
    sqlx::query(
        "INSERT INTO audit_packs (first_seq, last_seq, entry_count, entries) VALUES ($1, $2, $3, $4)",
    )
    .bind(first.seq)
    .bind(last.seq)
    .bind(i64::try_from(entries.len()).unwrap_or(i64::MAX))
    .bind(text)
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
        let entries = match decode(&text) {
            Ok(entries) => entries,
            Err(reason) => {
                tracing::warn!(%reason, "skipping an audit pack that does not parse");
                continue;
            }
        };
        for entry in entries.into_iter().rev() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(seq: i64, subject: &str, object: &str, detail: Value) -> AuditEntry {
        AuditEntry {
            seq,
            at_ms: 1_764_650_000_000 + seq,
            kind: "call".into(),
            subject: subject.into(),
            tenant: "default".into(),
            action: "call".into(),
            object: object.into(),
            allowed: true,
            rule: "policies/a.csv:3: p, role:\"x\", *, billing::*, call, allow".into(),
            detail,
        }
    }

    #[test]
    fn a_pack_reads_back_exactly_what_was_written_and_shares_its_strings() {
        let entries = [
            entry(
                7,
                "agent:a",
                "billing::refund",
                json!({"outcome": "ok", "micros": 41, "version": "1.0.0"}),
            ),
            entry(
                8,
                "agent:ü\\u{1b}b",
                "billing::refund",
                json!({"outcome": "TIMEOUT", "micros": 30000000}),
            ),
            entry(
                9,
                "agent:a",
                "billing::charge",
                json!({"outcome": "ok", "micros": 7, "input": {"amount": 1.5, "note": "line\nbreak"}}),
            ),
        ];
        let refs: Vec<&AuditEntry> = entries.iter().collect();
        let text = encode(&refs).unwrap();
        assert_eq!(decode(&text).unwrap(), entries);
        // The rule, tenant and action appear once, however many entries.
        assert_eq!(text.matches("policies/a.csv:3").count(), 1, "{text}");
        assert_eq!(text.matches("\"default\"").count(), 1, "{text}");
        let object_bytes = serde_json::to_string(&entries[0]).unwrap().len();
        let line_bytes = text.lines().nth(1).unwrap().len();
        assert!(
            line_bytes * 2 < object_bytes,
            "{line_bytes} vs {object_bytes}"
        );
    }

    #[test]
    fn a_damaged_pack_is_refused_not_misread() {
        let refs = [&entry(1, "agent:a", "a::b", json!({}))];
        let text = encode(&refs).unwrap();
        assert!(
            decode(&text.replace("\"v\":2", "\"v\":9"))
                .unwrap_err()
                .contains("format 9")
        );
        assert!(
            decode(&text.replace(",0,", ",99,"))
                .unwrap_err()
                .contains("not in the pack")
        );
        assert!(decode("not json").is_err());
    }
}
