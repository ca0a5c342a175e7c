//! Syntax errors, all of them. toml's parser recovers from most (a broken string or array) but
//! drops the rest of the document after some (a line with a key and no `=`), so the lines of
//! each error found are blanked and the text parsed again, until no new error shows.

use std::ops::Range;

use toml::de::DeTable;

use super::index::Index;

/// Most parses: every round finds at least one new error.
const MAX_ROUNDS: usize = 16;

/// What [`recover`] found.
pub(super) struct Recovered {
    /// The version of the text (the original, or with the lines of errors blanked) that parses
    /// into the most keys. Blanking keeps every byte offset, so its spans are places in the
    /// original.
    pub(super) text: String,
    pub(super) errors: Vec<toml::de::Error>,
    /// The keys of the blanked lines: one that then goes missing is no news.
    pub(super) blanked: Vec<String>,
}

/// Every syntax error of `text`, and a text to go on with.
pub(super) fn recover(text: &str) -> Recovered {
    let mut errors: Vec<toml::de::Error> = Vec::new();
    let mut blanked = Vec::new();
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
            blank_lines(&mut current, e.span().unwrap_or(0..0), &mut blanked);
        }
        errors.extend(new);
    }
    Recovered {
        text: best.1,
        errors,
        blanked,
    }
}

/// Replaces the lines `span` touches with spaces, newlines kept; notes their keys.
fn blank_lines(text: &mut String, span: Range<usize>, keys: &mut Vec<String>) {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let from_end = span.end.max(span.start).min(text.len());
    let end = text[from_end..]
        .find('\n')
        .map_or(text.len(), |i| from_end + i);
    for line in text[start..end].lines() {
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
            keys.push(key.rsplit('.').next().unwrap_or(key).trim().to_owned());
        }
    }
    // One ASCII character per byte: the length, and so every later offset, stays.
    let blank: String = text[start..end]
        .bytes()
        .map(|b| if b == b'\n' { '\n' } else { ' ' })
        .collect();
    text.replace_range(start..end, &blank);
}
