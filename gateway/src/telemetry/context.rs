//! W3C trace context as it arrives: checked, so that what the gateway
//! passes on is well formed and bounded whatever a caller sent.

use capgate_catalog::TraceContext;

/// Baggage longer than this is dropped, not cut: a cut entry would change
/// its meaning. W3C asks propagators to carry at least 8,192 bytes.
pub const MAX_BAGGAGE_BYTES: usize = 8_192;
/// W3C allows 32 list members of at most 256 bytes each in `tracestate`.
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// What was dropped from a context, for the count in `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub traceparent: bool,
    pub baggage: bool,
}

/// Keeps what is well formed: a `traceparent` of the W3C form (version 00,
/// or a later version read as 00 with what follows ignored, as the
/// specification says), `tracestate` only beside it, printable `baggage`
/// within [`MAX_BAGGAGE_BYTES`]. The rest is removed, and said.
pub fn sanitize(trace: &mut TraceContext) -> Dropped {
    let mut dropped = Dropped::default();
    if let Some(text) = &trace.traceparent {
        match canonical_traceparent(text) {
            Some(Some(canonical)) => trace.traceparent = Some(canonical),
            Some(None) => {}
            None => {
                trace.traceparent = None;
                dropped.traceparent = true;
            }
        }
    }
    if trace.traceparent.is_none()
        || trace
            .tracestate
            .as_ref()
            .is_some_and(|state| state.len() > MAX_TRACESTATE_BYTES || !printable(state))
    {
        trace.tracestate = None;
    }
    if trace
        .baggage
        .as_ref()
        .is_some_and(|baggage| baggage.len() > MAX_BAGGAGE_BYTES || !printable(baggage))
    {
        trace.baggage = None;
        dropped.baggage = true;
    }
    dropped
}

/// `None`: not a traceparent. `Some(None)`: already canonical.
/// `Some(Some(text))`: a later version's, reduced to the version-00 form.
fn canonical_traceparent(text: &str) -> Option<Option<String>> {
    let bytes = text.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = &text[..2];
    let hex = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let dashes = bytes[2] == b'-' && bytes[35] == b'-' && bytes[52] == b'-';
    if !dashes || !hex(0..2) || !hex(3..35) || !hex(36..52) || !hex(53..55) || version == "ff" {
        return None;
    }
    let zero = |range: std::ops::Range<usize>| bytes[range].iter().all(|b| *b == b'0');
    if zero(3..35) || zero(36..52) {
        return None;
    }
    match (version, bytes.len()) {
        ("00", 55) => Some(None),
        ("00", _) => None,
        // A later version may append fields after a dash.
        (_, 55) => Some(Some(format!("00{}", &text[2..55]))),
        (_, _) if bytes[55] == b'-' => Some(Some(format!("00{}", &text[2..55]))),
        _ => None,
    }
}

fn printable(text: &str) -> bool {
    text.bytes().all(|b| (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn context(traceparent: &str, baggage: &str) -> TraceContext {
        TraceContext {
            traceparent: Some(traceparent.into()),
            tracestate: Some("vendor=1".into()),
            baggage: Some(baggage.into()),
        }
    }

    #[test]
    fn well_formed_context_passes_unchanged() {
        let mut trace = context(GOOD, "tenant=acme,region=eu");
        assert_eq!(sanitize(&mut trace), Dropped::default());
        assert_eq!(trace, context(GOOD, "tenant=acme,region=eu"));
    }

    #[test]
    fn malformed_traceparents_are_dropped_with_their_tracestate() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        ] {
            let mut trace = context(bad, "a=1");
            let dropped = sanitize(&mut trace);
            assert!(dropped.traceparent, "{bad}");
            assert_eq!(trace.traceparent, None);
            assert_eq!(trace.tracestate, None);
            assert_eq!(trace.baggage.as_deref(), Some("a=1"));
        }
    }

    #[test]
    fn a_later_version_is_read_as_version_00() {
        let mut trace = context(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more",
            "a=1",
        );
        sanitize(&mut trace);
        assert_eq!(trace.traceparent.as_deref(), Some(GOOD));
    }

    #[test]
    fn oversized_or_unprintable_baggage_is_dropped_whole() {
        let mut big = context(GOOD, &"k=v,".repeat(MAX_BAGGAGE_BYTES / 4 + 1));
        assert!(sanitize(&mut big).baggage);
        assert_eq!(big.baggage, None);
        assert_eq!(big.traceparent.as_deref(), Some(GOOD));
        let mut escape = context(GOOD, "k=\u{1b}[31m");
        assert!(sanitize(&mut escape).baggage);
        let mut limit = context(GOOD, &"k".repeat(MAX_BAGGAGE_BYTES));
        assert!(!sanitize(&mut limit).baggage);
    }
}
