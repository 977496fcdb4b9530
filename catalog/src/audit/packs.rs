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

use std::borrow::Cow;
use std::collections::HashMap;

use foldhash::fast::RandomState;
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use super::record::{Detail, Pending};
use super::{AuditEntry, AuditQuery, printable};
use crate::store::{Store, StoreError, query_error};

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

/// A pack's text (format 3): a header line naming the format, the first
/// entry's sequence number and time, and the strings its entries share;
/// then one JSON array per entry,
/// `[seq, at_ms, subject, tenant, action, object, rule, detail]`, where
/// `seq` and `at_ms` are differences from the entry before (so mostly `1`
/// and `0`), the five strings are indexes into the header's, and a call's
/// detail is `[outcome, micros, version, trigger type, trigger id, input]`
/// (strings again as indexes, `null` for none, trailing absent fields left
/// out) — any other detail `{"j": value}`.
/// The caller, function and rule of a burst of calls repeat on every
/// entry: written once, an entry is a tenth of its JSON object's size, and
/// the bytes are what the writer pays for (the WAL, then the checkpoint).
/// Strings are escaped ([`printable`]) as they enter the header — once per
/// pack, not once per entry.
///
/// Format 2 (before): absolute numbers and the detail as a JSON object;
/// still read.
#[derive(Serialize, Deserialize)]
struct Header<'a> {
    v: u32,
    #[serde(default)]
    seq: i64,
    #[serde(default)]
    at: i64,
    #[serde(borrow)]
    strings: Vec<Cow<'a, str>>,
}

const FORMAT: u32 = 3;

/// The strings of a pack, each once, escaped.
///
/// Looked up several times for every allowed call, so hashed with
/// foldhash (randomly seeded) rather than SipHash: a pack's strings are
/// names a policy allowed to call, bounded by the pack's size.
#[derive(Default)]
struct Strings<'a> {
    list: Vec<Cow<'a, str>>,
    plain: HashMap<&'a str, usize, RandomState>,
    /// Rules keep their line breaks; other strings do not.
    rules: HashMap<&'a str, usize, RandomState>,
    versions: HashMap<&'a semver::Version, usize, RandomState>,
}

/// A field's string and index in the entry before. The entries of a
/// burst of calls mostly repeat their caller, function and rule, and
/// comparing with the entry before is a fraction of the cost of a hash
/// lookup (callgrind: about 900 instructions an entry for the lookups).
struct Last<'a, T: ?Sized>(Option<(&'a T, usize)>);

impl<T: ?Sized> Default for Last<'_, T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'a, T: ?Sized + PartialEq> Last<'a, T> {
    fn or_index(&mut self, value: &'a T, index: impl FnOnce(&'a T) -> usize) -> usize {
        match self.0 {
            // The same text is mostly the same allocation (an id shared
            // with the catalog, a static name): no comparison of bytes.
            Some((seen, known)) if std::ptr::eq(seen, value) || seen == value => known,
            _ => {
                let known = index(value);
                self.0 = Some((value, known));
                known
            }
        }
    }
}

/// Each field's [`Last`], for the fields every call's entry has.
#[derive(Default)]
struct Lasts<'a> {
    subject: Last<'a, str>,
    tenant: Last<'a, str>,
    action: Last<'a, str>,
    object: Last<'a, str>,
    rule: Last<'a, str>,
    outcome: Last<'a, str>,
    version: Last<'a, semver::Version>,
}

impl<'a> Strings<'a> {
    fn index(&mut self, text: &'a str, multiline: bool) -> usize {
        let (table, list) = match multiline {
            true => (&mut self.rules, &mut self.list),
            false => (&mut self.plain, &mut self.list),
        };
        *table.entry(text).or_insert_with(|| {
            list.push(printable(text, multiline));
            list.len() - 1
        })
    }

    fn version(&mut self, version: &'a semver::Version) -> usize {
        let list = &mut self.list;
        *self.versions.entry(version).or_insert_with(|| {
            list.push(Cow::Owned(version.to_string()));
            list.len() - 1
        })
    }
}

/// Writes a number in decimal: every entry of a pack has about ten, and
/// `write!` goes through the formatting machinery for each. Most are one
/// digit (differences of 0 and 1, indexes into a pack's few strings) and
/// are written as one byte, without a copy out of a buffer.
fn push_number<N: itoa::Integer + TryInto<u8> + Copy>(lines: &mut String, number: N) {
    match number.try_into() {
        Ok(digit) if digit < 10 => lines.push(char::from(b'0' + digit)),
        _ => lines.push_str(itoa::Buffer::new().format(number)),
    }
}

fn encode<'a>(entries: &[&'a Pending]) -> Result<String, serde_json::Error> {
    let mut strings = Strings::default();
    let mut lasts = Lasts::default();
    let (first_seq, first_at) = entries.first().map_or((0, 0), |e| (e.seq, e.at_ms));
    let (mut seq, mut at) = (first_seq, first_at);
    let mut lines = String::with_capacity(entries.len() * 32);
    for entry in entries {
        let record = &entry.record;
        lines.push('\n');
        lines.push('[');
        // Differences: a clock set back makes a negative one.
        for number in [entry.seq - seq, entry.at_ms - at] {
            push_number(&mut lines, number);
            lines.push(',');
        }
        let mut plain = |last: &mut Last<'a, str>, text: &'a str| {
            last.or_index(text, |text| strings.index(text, false))
        };
        let fields = [
            plain(&mut lasts.subject, &record.subject),
            plain(&mut lasts.tenant, &record.tenant),
            plain(&mut lasts.action, &record.action),
            plain(&mut lasts.object, &record.object),
            lasts
                .rule
                .or_index(&record.rule, |rule| strings.index(rule, true)),
        ];
        for index in fields {
            push_number(&mut lines, index);
            lines.push(',');
        }
        (seq, at) = (entry.seq, entry.at_ms);
        match &record.detail {
            Detail::Call(call) => {
                // Written straight into the pack, no string per field: this
                // runs once per allowed call. Trailing absent fields are
                // left out (most calls have neither a trigger nor a
                // recorded input); a recorded input of `null` reads back
                // as none.
                let outcome = lasts
                    .outcome
                    .or_index(&call.outcome, |outcome| strings.index(outcome, false));
                let version = call
                    .version
                    .as_ref()
                    .map(|v| lasts.version.or_index(v, |v| strings.version(v)));
                let trigger = call.trigger.as_ref().map(|trigger| {
                    (
                        strings.index(&trigger.trigger_type, false),
                        strings.index(&trigger.trigger_id, false),
                    )
                });
                let input = match call.input.as_ref().filter(|input| !input.is_null()) {
                    Some(input) => Some(serde_json::to_string(input)?),
                    None => None,
                };
                lines.push('[');
                push_number(&mut lines, outcome);
                lines.push(',');
                push_number(&mut lines, call.micros);
                if version.is_some() || trigger.is_some() || input.is_some() {
                    match version {
                        Some(version) => {
                            lines.push(',');
                            push_number(&mut lines, version);
                        }
                        None => lines.push_str(",null"),
                    }
                }
                if trigger.is_some() || input.is_some() {
                    match trigger {
                        Some((kind, id)) => {
                            lines.push(',');
                            push_number(&mut lines, kind);
                            lines.push(',');
                            push_number(&mut lines, id);
                        }
                        None => lines.push_str(",null,null"),
                    }
                }
                if let Some(input) = input {
                    lines.push(',');
                    lines.push_str(&input);
                }
                lines.push(']');
            }
            Detail::Json(value) => {
                lines.push_str(r#"{"j":"#);
                lines.push_str(&serde_json::to_string(value)?);
                lines.push('}');
            }
        }
        lines.push(']');
    }
    let header = Header {
        v: FORMAT,
        seq: first_seq,
        at: first_at,
        strings: strings.list,
    };
    let mut text = serde_json::to_string(&header)?;
    text.push_str(&lines);
    Ok(text)
}

/// One line of a pack: `[seq, at_ms, subject, tenant, action, object, rule, detail]`.
type Line = (i64, i64, usize, usize, usize, usize, usize, Value);

/// The entries of a pack's text, in sequence order.
fn decode(text: &str) -> Result<Vec<AuditEntry>, String> {
    let mut lines = text.lines();
    let header: Header = serde_json::from_str(lines.next().unwrap_or_default())
        .map_err(|error| format!("pack header: {error}"))?;
    let relative = match header.v {
        2 => false,
        3 => true,
        other => {
            return Err(format!(
                "pack format {other} is not one this gateway reads (2 or {FORMAT})"
            ));
        }
    };
    let string = |at: usize| -> Result<String, String> {
        header
            .strings
            .get(at)
            .map(|s| s.to_string())
            .ok_or_else(|| format!("string {at} is not in the pack"))
    };
    let (mut seq, mut at) = (header.seq, header.at);
    lines
        .map(|line| {
            let (line_seq, line_at, subject, tenant, action, object, rule, detail): Line =
                serde_json::from_str(line).map_err(|error| format!("pack entry: {error}"))?;
            (seq, at) = match relative {
                true => (seq + line_seq, at + line_at),
                false => (line_seq, line_at),
            };
            Ok(AuditEntry {
                seq,
                at_ms: at,
                kind: "call".into(),
                subject: string(subject)?,
                tenant: string(tenant)?,
                action: string(action)?,
                object: string(object)?,
                allowed: true,
                rule: string(rule)?,
                detail: match relative {
                    true => call_detail(detail, &string)?,
                    false => detail,
                },
            })
        })
        .collect()
}

/// A format-3 detail as it reads back.
fn call_detail(
    detail: Value,
    string: &impl Fn(usize) -> Result<String, String>,
) -> Result<Value, String> {
    let index = |value: &Value| {
        value
            .as_u64()
            .and_then(|at| usize::try_from(at).ok())
            .ok_or_else(|| format!("detail string {value} is not an index"))
    };
    match detail {
        Value::Array(fields) => {
            if !(2..=6).contains(&fields.len()) {
                return Err(format!(
                    "call detail has {} fields, not 2 to 6",
                    fields.len()
                ));
            }
            let field = |at: usize| fields.get(at).unwrap_or(&Value::Null);
            let (outcome, micros, version) = (field(0), field(1), field(2));
            let trigger = (field(3), field(4));
            let input = fields.get(5);
            let mut map = serde_json::Map::new();
            map.insert("outcome".into(), Value::from(string(index(outcome)?)?));
            map.insert("micros".into(), micros.clone());
            if !version.is_null() {
                map.insert("version".into(), Value::from(string(index(version)?)?));
            }
            if !trigger.0.is_null() {
                map.insert(
                    "trigger".into(),
                    serde_json::json!({
                        "type": string(index(trigger.0)?)?,
                        "id": string(index(trigger.1)?)?,
                    }),
                );
            }
            if let Some(input) = input {
                map.insert("input".into(), input.clone());
            }
            Ok(Value::Object(map))
        }
        Value::Object(mut wrapped) => wrapped
            .remove("j")
            .ok_or_else(|| "detail object has no \"j\"".to_owned()),
        other => Err(format!("detail {other} is neither a call's nor JSON")),
    }
}

/// Writes `entries` (allowed calls, sorted by sequence number) as one pack.
pub(super) async fn insert(
    connection: &mut sqlx::AnyConnection,
    entries: &[&Pending],
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
    // Packs hold disjoint, increasing ranges: bounding `first_seq` (the
    // key) lets the delete walk only the packs it removes, not the table.
    sqlx::query("DELETE FROM audit_packs WHERE first_seq <= $1 AND last_seq <= $1")
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
    use crate::audit::{CallDetail, Record};
    use serde_json::json;

    const RULE: &str = "policies/a.csv:3: p, role:\"x\", *, billing::*, call, allow";

    fn pending(seq: i64, subject: &str, object: &str, detail: Detail) -> Pending {
        Pending {
            seq,
            at_ms: 1_764_650_000_000 + seq % 3,
            record: Record {
                kind: "call",
                subject: subject.to_owned().into(),
                tenant: "default".into(),
                action: "call".into(),
                object: object.into(),
                allowed: true,
                rule: RULE.into(),
                detail,
            },
        }
    }

    fn call(
        outcome: &'static str,
        micros: u64,
        version: Option<&str>,
        input: Option<Value>,
    ) -> Detail {
        Detail::Call(CallDetail {
            outcome: outcome.into(),
            micros,
            version: version.map(|v| semver::Version::parse(v).unwrap()),
            trigger: None,
            input,
        })
    }

    #[test]
    fn a_pack_reads_back_exactly_what_was_recorded_and_shares_its_strings() {
        let entries = [
            pending(
                7,
                "agent:a",
                "billing::refund",
                call("ok", 41, Some("1.0.0"), None),
            ),
            pending(
                8,
                "agent:ü\u{1b}b",
                "billing::refund",
                call("TIMEOUT", 30_000_000, None, None),
            ),
            pending(
                10,
                "agent:a",
                "billing::charge",
                call(
                    "ok",
                    7,
                    Some("1.0.0"),
                    Some(json!({"amount": 1.5, "note": "line\nbreak"})),
                ),
            ),
            pending(
                11,
                "agent:a",
                "billing::refund",
                Detail::Json(json!([1, {"j": 2}])),
            ),
            pending(
                12,
                "worker:shop",
                "billing::refund",
                Detail::Call(CallDetail {
                    outcome: "ok".into(),
                    micros: 9,
                    version: None,
                    trigger: Some(crate::TriggerSource {
                        trigger_type: "http".into(),
                        trigger_id: "refund-route".into(),
                    }),
                    input: None,
                }),
            ),
            // Absent fields before a present one are written as nulls.
            pending(
                13,
                "worker:shop",
                "billing::refund",
                call("ok", 3, None, Some(json!([null, "x"]))),
            ),
        ];
        let refs: Vec<&Pending> = entries.iter().collect();
        let text = encode(&refs).unwrap();
        let expected: Vec<AuditEntry> = entries.iter().map(Pending::to_entry).collect();
        assert_eq!(decode(&text).unwrap(), expected);
        // Escaped as the row table escapes.
        assert_eq!(expected[1].subject, "agent:ü\\u{1b}b");
        assert_eq!(
            expected[2].detail,
            json!({"outcome": "ok", "micros": 7, "version": "1.0.0", "input": {"amount": 1.5, "note": "line\nbreak"}})
        );
        assert_eq!(
            expected[4].detail,
            json!({"outcome": "ok", "micros": 9, "trigger": {"type": "http", "id": "refund-route"}})
        );
        // The rule, tenant, action and version appear once, however many entries.
        assert_eq!(text.matches("policies/a.csv:3").count(), 1, "{text}");
        assert_eq!(text.matches("\"default\"").count(), 1, "{text}");
        assert_eq!(text.matches("1.0.0").count(), 1, "{text}");
        // So do the subjects and objects, however the entries interleave.
        assert_eq!(text.matches("\"agent:a\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"billing::refund\"").count(), 1, "{text}");
        // An entry is a tenth of its JSON object.
        let object_bytes = serde_json::to_string(&expected[0]).unwrap().len();
        let line_bytes = text.lines().nth(1).unwrap().len();
        assert!(
            line_bytes * 8 < object_bytes,
            "{line_bytes} vs {object_bytes}: {text}"
        );
    }

    /// Packs written before format 3 (absolute numbers, the detail as an
    /// object) still read.
    #[test]
    fn format_2_packs_still_read() {
        let text = concat!(
            r#"{"v":2,"strings":["agent:a","default","call","a::b","r"]}"#,
            "\n",
            r#"[5,1000,0,1,2,3,4,{"outcome":"ok","micros":3}]"#,
            "\n",
            r#"[6,1001,0,1,2,3,4,{"outcome":"TIMEOUT","micros":9}]"#
        );
        let entries = decode(text).unwrap();
        assert_eq!(
            entries.iter().map(|e| (e.seq, e.at_ms)).collect::<Vec<_>>(),
            [(5, 1000), (6, 1001)]
        );
        assert_eq!(
            entries[1].detail,
            json!({"outcome": "TIMEOUT", "micros": 9})
        );
        assert_eq!(entries[0].object, "a::b");
    }

    #[test]
    fn a_damaged_pack_is_refused_not_misread() {
        let one = pending(1, "agent:a", "a::b", call("ok", 1, None, None));
        let text = encode(&[&one]).unwrap();
        assert!(
            decode(&text.replace("\"v\":3", "\"v\":9"))
                .unwrap_err()
                .contains("format 9")
        );
        // The first line is [0,0,0,1,2,3,4,[5,1]]: its subject is string 0,
        // its outcome string 5.
        assert!(
            decode(&text.replace("[0,0,0,", "[0,0,99,"))
                .unwrap_err()
                .contains("not in the pack"),
            "{text}"
        );
        assert!(text.contains(",[5,1]]"), "{text}");
        assert!(decode(&text.replace("[5,1]", "[5,1,null,null,null,{},7]")).is_err());
        assert!(decode(&text.replace("[5,1]", "[5]")).is_err());
        assert!(
            decode(&text.replace("[5,1]", "[5,1,null,3]")).is_err(),
            "a trigger type without its id"
        );
        assert!(decode("not json").is_err());
    }
}
