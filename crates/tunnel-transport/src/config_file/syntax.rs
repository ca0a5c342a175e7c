//! Syntax errors, all of them. toml's parser recovers from most (a broken string or array) but
//! drops the rest of the document after some (a line with a key and no `=`), so the lines of
//! each error found are blanked and the text parsed again, until no new error shows.

use std::ops::Range;

use toml::de::DeTable;

use super::index::Index;

/// Most parses: every round finds at least one new error.
const MAX_ROUNDS: usize = 16;

/// Every syntax error of `text`, and the version of the text (the original, or with the lines of
/// errors blanked) that parses into the most keys. Blanking keeps every byte offset, so the
/// spans of either text are places in the original.
pub(super) fn recover(text: &str) -> (String, Vec<toml::de::Error>) {
    let mut errors: Vec<toml::de::Error> = Vec::new();
    let mut current = text.to_owned();
    let mut best = (0, text.to_owned());
    for _ in 0..MAX_ROUNDS {
        let (tree, found) = DeTable::parse_recoverable(&current);
        let nodes = Index::new(&tree).nodes.len();
        if nodes > best.0 {
            best = (nodes, current.clone());
        }
        let new: Vec<_> = found
            .into_iter()
            .filter(|e| {
                !errors
                    .iter()
                    .any(|o| o.span() == e.span() && o.message() == e.message())
            })
            .collect();
        if new.is_empty() {
            break;
        }
        for e in &new {
            blank_lines(&mut current, e.span().unwrap_or(0..0));
        }
        errors.extend(new);
    }
    (best.1, errors)
}

/// Replaces the lines `span` touches with spaces, newlines kept.
fn blank_lines(text: &mut String, span: Range<usize>) {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let from_end = span.end.max(span.start).min(text.len());
    let end = text[from_end..]
        .find('\n')
        .map_or(text.len(), |i| from_end + i);
    // One ASCII character per byte: the length, and so every later offset, stays.
    let blank: String = text[start..end]
        .bytes()
        .map(|b| if b == b'\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(start..end, &blank);
}
