//! Text a peer chose, made safe to log.
//!
//! Reasons in [`crate::Rejected`] and [`crate::StreamStatus::Error`] are written by the other
//! side. Logged verbatim, a newline in one starts a line that looks like our own (a forged
//! `ERROR ...`), an escape sequence recolours or clears a terminal, and a bidi override makes
//! the line read differently from what it holds. [`PeerText`] shows such characters as
//! escapes, keeping the whole text on one line, and cuts it at a bound.

use std::fmt;

/// At most this many characters of a peer's text are shown; the rest is summarised.
pub const PEER_TEXT_MAX_CHARS: usize = 300;

/// Displays a peer's text on one line: control characters (C0, DEL, C1), line and paragraph
/// separators and bidi controls appear as `\n`, `\r`, `\t` or `\u{..}`, and text beyond
/// [`PEER_TEXT_MAX_CHARS`] is cut with a note of how much was left out.
///
/// ```
/// use tunnel_proto::PeerText;
/// let forged = "refused\n2026-01-01T00:00:00Z ERROR forged";
/// assert_eq!(
///     PeerText(forged).to_string(),
///     "refused\\n2026-01-01T00:00:00Z ERROR forged"
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PeerText<'a>(pub &'a str);

impl fmt::Display for PeerText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (shown, (at, c)) in self.0.char_indices().enumerate() {
            if shown == PEER_TEXT_MAX_CHARS {
                let left = self.0.len() - at;
                return write!(f, "... ({left} more bytes)");
            }
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if needs_escape(c) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        Ok(())
    }
}

/// Characters that change how a log line reads rather than what it says.
fn needs_escape(c: char) -> bool {
    c.is_control() // C0, DEL and C1: newlines, ESC (terminal escapes), NUL...
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' // line and paragraph separators
            | '\u{200e}' | '\u{200f}' | '\u{061c}' // direction marks
            | '\u{202a}'..='\u{202e}' // embeddings and overrides
            | '\u{2066}'..='\u{2069}' // isolates
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(s: &str) -> String {
        PeerText(s).to_string()
    }

    #[test]
    fn plain_text_passes_unchanged() {
        let s = "connection failed: 127.0.0.1:9: Connection refused (os error 111) – café \\n";
        assert_eq!(shown(s), s);
    }

    #[test]
    fn line_breaks_and_tabs_are_escaped_onto_one_line() {
        assert_eq!(shown("a\nb\r\nc\td"), "a\\nb\\r\\nc\\td");
        assert!(!shown("x\n\r\u{2028}\u{2029}\u{85}\u{b}\u{c}").contains(['\n', '\r']));
        assert_eq!(shown("\u{2028}\u{85}"), "\\u{2028}\\u{85}");
    }

    #[test]
    fn terminal_escapes_and_other_controls_are_escaped() {
        assert_eq!(shown("\u{1b}[31mred\u{1b}[0m"), "\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(shown("\0\u{7f}\u{9b}"), "\\u{0}\\u{7f}\\u{9b}");
    }

    #[test]
    fn bidi_controls_are_escaped() {
        assert_eq!(shown("user\u{202e}txt.exe"), "user\\u{202e}txt.exe");
        for c in ['\u{202a}', '\u{2066}', '\u{2069}', '\u{200f}', '\u{61c}'] {
            assert!(!shown(&c.to_string()).contains(c), "{c:?}");
        }
    }

    #[test]
    fn long_text_is_cut_with_the_count_left_out() {
        let s = "é".repeat(PEER_TEXT_MAX_CHARS + 10);
        let out = shown(&s);
        assert!(out.starts_with(&"é".repeat(PEER_TEXT_MAX_CHARS)));
        assert!(out.ends_with("... (20 more bytes)"), "{out}");
        // Exactly at the bound: nothing cut.
        let s = "x".repeat(PEER_TEXT_MAX_CHARS);
        assert_eq!(shown(&s), s);
    }

    #[test]
    fn escapes_count_as_one_character_towards_the_bound() {
        let s = "\n".repeat(PEER_TEXT_MAX_CHARS * 2);
        let out = shown(&s);
        assert!(out.starts_with(&"\\n".repeat(PEER_TEXT_MAX_CHARS)));
        assert!(out.ends_with(&format!("... ({PEER_TEXT_MAX_CHARS} more bytes)")));
    }
}
