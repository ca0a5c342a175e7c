//! How both engines report a configuration problem: the field and what to do about it.

use std::fmt;
use std::path::Path;

/// One thing wrong with a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The config key at fault, e.g. `proxies[1].local_addr`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Where in the TOML text, when the problem came from one (see
    /// [`config_file`](crate::config_file)).
    pub at: Option<Position>,
}

/// A place in a TOML text, both numbers counted from 1 (as editors and compilers do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The line.
    pub line: usize,
    /// The character in that line.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` of `text` (clamped to its end).
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let mut end = offset.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let before = &text[..end];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }
}

impl ConfigProblem {
    /// A problem with `field`; `message` is any text or error that says what to do.
    pub fn new(field: impl Into<String>, message: impl fmt::Display) -> Self {
        ConfigProblem {
            field: field.into(),
            message: message.to_string(),
            at: None,
        }
    }

    /// The same problem, placed at `at` in the file.
    pub fn placed(mut self, at: Position) -> Self {
        self.at = Some(at);
        self
    }

    /// Shown as `FILE:LINE:COLUMN: field: message` (without the numbers when the place is
    /// unknown), the form editors and terminals turn into a link to the line.
    pub fn in_file<'a>(&'a self, file: &'a Path) -> impl fmt::Display + 'a {
        InFile {
            problem: self,
            file,
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = self.at {
            write!(f, "{}:{}: ", at.line, at.column)?;
        }
        write!(f, "{}: {}", self.field, self.message)
    }
}

struct InFile<'a> {
    problem: &'a ConfigProblem,
    file: &'a Path,
}

impl fmt::Display for InFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = if self.problem.at.is_some() { ":" } else { ": " };
        write!(f, "{}{sep}{}", self.file.display(), self.problem)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters_from_one() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(
            Position::of_offset(text, 0),
            Position { line: 1, column: 1 }
        );
        // "bé = " is 6 bytes but 5 characters: the column counts characters.
        let quote = text.find('"').unwrap_or_default();
        assert_eq!(
            Position::of_offset(text, quote),
            Position { line: 2, column: 6 }
        );
        assert_eq!(Position::of_offset(text, 999).line, 3);
    }

    #[test]
    fn a_placed_problem_reads_like_a_compiler_message() {
        let p = ConfigProblem::new("proxies[0].name", "missing")
            .placed(Position { line: 7, column: 1 });
        assert_eq!(
            p.in_file(Path::new("c.toml")).to_string(),
            "c.toml:7:1: proxies[0].name: missing"
        );
        let p = ConfigProblem::new("auth_key", "missing");
        assert_eq!(
            p.in_file(Path::new("c.toml")).to_string(),
            "c.toml: auth_key: missing"
        );
    }
}
