//! When a cron job fires: croner's occurrences in the job's time zone,
//! with capgate's rule for daylight-saving changes — a window whose wall
//! time does not exist that day is skipped, and one whose wall time
//! happens twice fires once (at its first instant).

use std::str::FromStr;

use chrono::{DateTime, LocalResult, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Longest expression accepted (real ones are under 100 characters).
pub const MAX_EXPRESSION_CHARS: usize = 256;

/// How many of croner's occurrences in a row may be daylight-saving
/// artefacts before a search gives up (a real schedule has at most an
/// hour's worth).
const MAX_SKIPPED: usize = 4_000;

/// A parsed expression in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
}

impl Schedule {
    /// Parses an iii expression — 6 fields, seconds first, or 7 with the
    /// year — in an IANA time zone.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, String> {
        if expression.chars().count() > MAX_EXPRESSION_CHARS {
            return Err(format!(
                "expression is over {MAX_EXPRESSION_CHARS} characters"
            ));
        }
        let fields = expression.split_whitespace().count();
        if !(6..=7).contains(&fields) {
            return Err(format!(
                "expression '{expression}' has {fields} fields; use 6 with seconds first (\"0 */5 * * * *\" is every five minutes) or 7 with a year last"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Optional)
            .build()
            .parse(expression)
            .map_err(|error| {
                format!("expression '{expression}' is not a cron expression: {error}")
            })?;
        let zone = Tz::from_str(timezone).map_err(|_| {
            format!(
                "timezone '{timezone}' is not an IANA time zone; use a name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\""
            )
        })?;
        Ok(Self { cron, zone })
    }

    /// The first window after `instant`.
    pub fn next_after(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut cursor = instant.with_timezone(&self.zone);
        for _ in 0..MAX_SKIPPED {
            cursor = self.cron.find_next_occurrence(&cursor, false).ok()?;
            if self.is_window(&cursor) {
                return Some(cursor.with_timezone(&Utc));
            }
        }
        None
    }

    /// The last window at or before `instant`.
    pub fn last_at_or_before(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut cursor = instant.with_timezone(&self.zone);
        let mut inclusive = true;
        for _ in 0..MAX_SKIPPED {
            cursor = self
                .cron
                .find_previous_occurrence(&cursor, inclusive)
                .ok()?;
            inclusive = false;
            if self.is_window(&cursor) {
                return Some(cursor.with_timezone(&Utc));
            }
        }
        None
    }

    /// The windows in `(after, until]`, oldest first; at most the `limit`
    /// latest of them.
    pub fn windows_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut windows = Vec::new();
        let mut cursor = until;
        while windows.len() < limit {
            match self.last_at_or_before(cursor) {
                Some(window) if window > after => {
                    windows.push(window);
                    cursor = window - chrono::Duration::milliseconds(1);
                }
                _ => break,
            }
        }
        windows.reverse();
        windows
    }

    /// croner moves a fixed time that falls in a spring-forward gap to
    /// just after it, and runs wildcard times in a repeated hour twice;
    /// neither is a window here.
    fn is_window(&self, occurrence: &DateTime<Tz>) -> bool {
        if !self.cron.is_time_matching(occurrence).unwrap_or(false) {
            return false;
        }
        match self.zone.from_local_datetime(&occurrence.naive_local()) {
            LocalResult::Ambiguous(_, second) => second != *occurrence,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn six_or_seven_fields_in_a_known_zone() {
        assert!(Schedule::parse("* * * * * *", "UTC").is_ok());
        assert!(Schedule::parse("0 0 12 * * * 2030", "Europe/Berlin").is_ok());
        let five = Schedule::parse("*/5 * * * *", "UTC").unwrap_err();
        assert!(five.contains("has 5 fields"), "{five}");
        let bad = Schedule::parse("61 * * * * *", "UTC").unwrap_err();
        assert!(bad.contains("is not a cron expression"), "{bad}");
        let zone = Schedule::parse("* * * * * *", "Mars/Olympus").unwrap_err();
        assert!(
            zone.contains("'Mars/Olympus' is not an IANA time zone"),
            "{zone}"
        );
        let long = format!("* * * * * * {}", "1".repeat(300));
        assert!(Schedule::parse(&long, "UTC").is_err());
    }

    #[test]
    fn windows_are_in_the_jobs_time_zone() {
        let noon = Schedule::parse("0 0 12 * * *", "America/New_York").unwrap();
        // 12:00 in New York in winter is 17:00 UTC.
        assert_eq!(
            noon.next_after(at("2026-01-10T00:00:00Z")),
            Some(at("2026-01-10T17:00:00Z"))
        );
        // In summer, 16:00 UTC.
        assert_eq!(
            noon.next_after(at("2026-07-10T00:00:00Z")),
            Some(at("2026-07-10T16:00:00Z"))
        );
    }

    #[test]
    fn a_window_missing_in_a_spring_gap_is_skipped() {
        // Berlin: 2026-03-29 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let nightly = Schedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        let before = at("2026-03-28T12:00:00Z");
        // The 28th at 02:30 CET is 01:30 UTC... the next one after noon on
        // the 28th would be the 29th, which has none: the 30th at 02:30 CEST.
        assert_eq!(nightly.next_after(before), Some(at("2026-03-30T00:30:00Z")));
        // Wildcards skip the missing hour too.
        let quarter = Schedule::parse("0 */15 * * * *", "Europe/Berlin").unwrap();
        assert_eq!(
            quarter.next_after(at("2026-03-29T00:50:00Z")),
            Some(at("2026-03-29T01:00:00Z")) // 03:00 CEST
        );
    }

    #[test]
    fn a_window_repeated_in_an_autumn_overlap_fires_once() {
        // Berlin: 2026-10-25 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let nightly = Schedule::parse("0 30 2 * * *", "Europe/Berlin").unwrap();
        let first = nightly.next_after(at("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(first, at("2026-10-25T00:30:00Z")); // 02:30 CEST
        assert_eq!(nightly.next_after(first), Some(at("2026-10-26T01:30:00Z")));
        // A wildcard job fires each wall time of the repeated hour once.
        let quarter = Schedule::parse("0 */15 * * * *", "Europe/Berlin").unwrap();
        let windows =
            quarter.windows_between(at("2026-10-24T23:59:00Z"), at("2026-10-25T02:00:00Z"), 100);
        let expected: Vec<_> = [
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T00:15:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T00:45:00Z",
            // 02:00–02:45 CET repeat them: not windows.
            "2026-10-25T02:00:00Z", // 03:00 CET
        ]
        .into_iter()
        .map(at)
        .collect();
        assert_eq!(windows, expected);
    }

    #[test]
    fn windows_between_keeps_the_latest_up_to_the_limit() {
        let minutely = Schedule::parse("0 * * * * *", "UTC").unwrap();
        let windows =
            minutely.windows_between(at("2026-05-01T10:00:00Z"), at("2026-05-01T10:05:30Z"), 3);
        assert_eq!(
            windows,
            [
                at("2026-05-01T10:03:00Z"),
                at("2026-05-01T10:04:00Z"),
                at("2026-05-01T10:05:00Z")
            ]
        );
        // The bound is exclusive at the start, inclusive at the end.
        let all =
            minutely.windows_between(at("2026-05-01T10:00:00Z"), at("2026-05-01T10:02:00Z"), 100);
        assert_eq!(
            all,
            [at("2026-05-01T10:01:00Z"), at("2026-05-01T10:02:00Z")]
        );
    }
}
