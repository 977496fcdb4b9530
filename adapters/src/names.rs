//! The rules names and keys share across adapters (each adapter words its
//! own refusal).

/// 1 to `max_chars` of letters, digits, `_`, `-` and `.`: one segment of a
/// policy object such as `state::SCOPE` or `queue::TOPIC`.
pub fn is_segment(name: &str, max_chars: usize) -> bool {
    !name.is_empty()
        && name.chars().count() <= max_chars
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// 1 to `max_bytes` bytes of text without control characters (safe to
/// print in a terminal and a log line).
pub fn is_plain_text(text: &str, max_bytes: usize) -> bool {
    !text.is_empty() && text.len() <= max_bytes && !text.chars().any(char::is_control)
}
