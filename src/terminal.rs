//! Text from outside (event ids, payloads, API errors, hook output) made
//! safe to print for a person at a terminal.
//!
//! A signed payload is still the sender's text: printed raw, an ESC or OSC
//! sequence in it clears the screen or retitles the window, a newline in an
//! id breaks the `events list` table, and a bidirectional override shows an
//! id in another order than it is stored. Human output goes through
//! [`escape`]; `--json` output needs nothing, JSON strings escape controls.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is escaped: a control character (C0, DEL, C1 U+0080–U+009F,
/// which some terminals obey as 8-bit CSI/OSC), a line or paragraph
/// separator, or a bidirectional mark, embedding, override or isolate.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}'
                | '\u{2029}'
                | '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `text` on one line with every character of [`needs_escape`] written as a
/// visible escape: `\n`, `\r`, `\t`, else `\u{1b}` (Rust's notation).
/// Everything else is unchanged, backslashes included, so JSON escapes and
/// paths stay readable.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => {
                // Writing into a String cannot fail.
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// [`escape`] for text of several lines (pretty JSON, hook output): each
/// `\n` stays a line break, everything else is escaped.
pub fn escape_lines(text: &str) -> String {
    text.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        let cases = [
            ("evt_1", "evt_1"),
            ("a\nb\r\tc", "a\\nb\\r\\tc"),
            (
                "\u{1b}[2J\u{1b}]0;owned\u{7}",
                "\\u{1b}[2J\\u{1b}]0;owned\\u{7}",
            ),
            ("nul\0del\u{7f}", "nul\\u{0}del\\u{7f}"),
            ("c1 \u{9b}31m \u{9d}", "c1 \\u{9b}31m \\u{9d}"),
            ("abc\u{202e}fed", "abc\\u{202e}fed"),
            ("\u{2066}x\u{2069}", "\\u{2066}x\\u{2069}"),
            ("line\u{2028}sep", "line\\u{2028}sep"),
            ("café ☃ 中 \\n", "café ☃ 中 \\n"),
        ];
        for (raw, shown) in cases {
            assert_eq!(escape(raw), shown, "{raw:?}");
        }
    }

    #[test]
    fn escaped_text_has_no_control_character_left() {
        let all: String = (0u32..=0x3000).filter_map(char::from_u32).collect();
        assert!(!escape(&all).chars().any(needs_escape));
        assert!(!escape_lines(&all)
            .chars()
            .any(|c| c != '\n' && needs_escape(c)));
    }

    #[test]
    fn escape_lines_keeps_line_breaks_and_escapes_the_rest() {
        assert_eq!(
            escape_lines("{\n  \"a\": \"\u{9b}x\"\r\n}"),
            "{\n  \"a\": \"\\u{9b}x\"\\r\n}"
        );
    }
}
