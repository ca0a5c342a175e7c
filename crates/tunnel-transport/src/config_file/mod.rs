//! Reading a TOML configuration so that one run reports every problem in it, each at its line
//! and column, instead of stopping at the first (a file with six mistakes took four rounds of
//! `--check`). Both engines load their files through [`parse`].
//!
//! toml's parser recovers from syntax errors and keeps every span; serde stops at the first
//! problem. So the parsed tree is deserialized again and again: each time, the key at fault is
//! recorded and taken out (or, for a missing key, a placeholder stands in for it), until the
//! tree deserializes or [`MAX_PROBLEMS`] are found. Where serde loses the key's place (a
//! `#[serde(flatten)]` struct blames its whole table), the key is found by taking keys out one
//! by one until the error goes away.
//!
//! ```
//! use tunnel_transport::config_file::{self, Schema};
//!
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Config {
//!     bind: String,
//!     #[serde(default)]
//!     port: u16,
//! }
//!
//! let problems = config_file::parse::<Config>("port = \"x\"\nbnid = \"a\"\n", &Schema::new())
//!     .err()
//!     .unwrap_or_default();
//! let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
//! assert_eq!(shown, [
//!     "1:1: bind: required, but missing from the file",
//!     "1:8: port: invalid type: string \"x\", expected u16",
//!     "2:1: bnid: unknown key `bnid`: did you mean `bind`? valid keys here: bind, port",
//! ]);
//! ```

mod edit;
mod index;
mod run;
mod syntax;
mod wording;

use serde::de::DeserializeOwned;
use toml::de::DeTable;

use crate::problem::{ConfigProblem, Position};
use edit::Tree;
use index::{Index, Path};
use run::Run;

pub use wording::fields_of;

/// Most problems one run reports; a last line then says that there may be more.
pub const MAX_PROBLEMS: usize = 64;

/// Each problem costs an attempt, and a missing key up to one more per placeholder kind.
const MAX_ATTEMPTS: usize = MAX_PROBLEMS * (edit::PLACEHOLDER_KINDS + 1);

/// The valid keys of tables whose keys serde cannot list itself (a struct with a
/// `#[serde(flatten)]` field), for the "valid keys here" of an unknown key.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    tables: Vec<(String, Vec<&'static str>)>,
}

impl Schema {
    /// No tables: serde lists the keys of every struct without `flatten` by itself.
    pub fn new() -> Self {
        Self::default()
    }

    /// The keys of the table at `path`, written with `[]` for any element: `"proxies[]"`.
    pub fn table(mut self, path: &str, keys: impl IntoIterator<Item = &'static str>) -> Self {
        self.tables
            .push((path.to_owned(), keys.into_iter().collect()));
        self
    }

    pub(super) fn keys(&self, pattern: &str) -> Option<&[&'static str]> {
        self.tables
            .iter()
            .find(|(p, _)| p == pattern)
            .map(|(_, k)| k.as_slice())
    }
}

/// Deserializes `T` from `text`, or gives every problem found (syntax, types, unknown and
/// missing keys, bad values), each with its line and column, in file order.
pub fn parse<T: DeserializeOwned>(text: &str, schema: &Schema) -> Result<T, Vec<ConfigProblem>> {
    let attempt = |tree: &Tree<'_>| T::deserialize(toml::de::Deserializer::from(tree.clone()));
    let recovered = syntax::recover(text);
    let (tree, _) = DeTable::parse_recoverable(&recovered.text);
    let mut run = Run::new(text, schema, tree, recovered.blanked);
    for e in &recovered.errors {
        run.syntax(e);
    }
    for _ in 0..MAX_ATTEMPTS {
        let err = match attempt(run.tree()) {
            Ok(value) if run.clean() => return Ok(value),
            Ok(_) => break,
            Err(e) => e,
        };
        if run.full() || !run.handle(&err, &|t| attempt(t).err()) {
            break;
        }
    }
    Err(run.finish())
}

/// Places each problem that has no position yet at the key its field names (or, when that key
/// is not in the file, at the table it belongs in): for the checks made after parsing, which
/// only know the field.
pub fn locate(text: &str, problems: &mut [ConfigProblem]) {
    let (root, _) = DeTable::parse_recoverable(text);
    let index = Index::new(&root);
    for p in problems.iter_mut().filter(|p| p.at.is_none()) {
        let Some(i) = Path::parse(&p.field).and_then(|path| index.find(&path)) else {
            continue;
        };
        let node = &index.nodes[i];
        let offset = node.key.as_ref().map_or(node.span.start, |k| k.start);
        p.at = Some(Position::of_offset(text, offset));
    }
}

/// The lines to show for `problems` of the config in `file` (`None`: built from defaults and
/// flags), one per problem: `FILE:LINE:COLUMN: field: message`. Problems without a position
/// yet are placed at their key in the file first.
pub fn report(file: Option<&std::path::Path>, problems: &[ConfigProblem]) -> Vec<String> {
    let mut problems = problems.to_vec();
    let Some(file) = file else {
        return problems.iter().map(|p| format!("error: {p}")).collect();
    };
    if let Ok(text) = std::fs::read_to_string(file) {
        locate(&text, &mut problems);
    }
    problems
        .iter()
        .map(|p| p.in_file(file).to_string())
        .collect()
}

#[cfg(test)]
mod tests;
