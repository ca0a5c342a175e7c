//! One loading of a file: the tree as it is being edited, what was found so far, and how each
//! error is recorded and edited away.

use std::ops::Range;

use super::edit::{self, Tree};
use super::index::{Hit, Index, Seg};
use super::{wording, Schema, MAX_PROBLEMS};
use crate::problem::{ConfigProblem, Position};

pub(super) type Attempt<'a> = dyn Fn(&Tree<'_>) -> Option<toml::de::Error> + 'a;

/// One loading of a file.
pub(super) struct Run<'i, 's> {
    text: &'i str,
    schema: &'s Schema,
    /// The tree as parsed, for paths.
    index: Index,
    tree: Tree<'i>,
    problems: Vec<ConfigProblem>,
    /// Keys taken out for a problem of their own (table span, key): serde then calls them
    /// missing, which is no news.
    removed: Vec<(Range<usize>, String)>,
    /// Keys on lines blanked for a syntax error, already reported.
    blanked: Vec<String>,
    placeholders: Vec<Placeholder>,
}

/// A stand-in for a missing key. Its span lies past the end of the text, so an error about it
/// is recognised as "wrong kind of stand-in", never reported.
struct Placeholder {
    table: Range<usize>,
    key: String,
    span: Range<usize>,
    kind: usize,
}

impl<'i, 's> Run<'i, 's> {
    pub(super) fn new(
        text: &'i str,
        schema: &'s Schema,
        tree: Tree<'i>,
        blanked: Vec<String>,
    ) -> Self {
        Run {
            text,
            schema,
            index: Index::new(&tree),
            tree,
            problems: Vec::new(),
            removed: Vec::new(),
            blanked,
            placeholders: Vec::new(),
        }
    }

    /// The tree to deserialize next.
    pub(super) fn tree(&self) -> &Tree<'i> {
        &self.tree
    }

    /// Nothing found so far.
    pub(super) fn clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// As many problems as one run reports.
    pub(super) fn full(&self) -> bool {
        self.problems.len() >= MAX_PROBLEMS
    }

    /// Records a syntax error, named by the key it is in when there is one.
    pub(super) fn syntax(&mut self, e: &toml::de::Error) {
        let span = e.span().unwrap_or(0..0);
        match self.index.hit(&span) {
            Some(Hit::Key(i) | Hit::Value(i)) => {
                let field = self.index.nodes[i].path.to_string();
                self.record(span.start, field, format!("TOML syntax: {}", e.message()));
            }
            _ => self.record(span.start, "syntax".to_owned(), e.message().to_owned()),
        }
    }

    /// Records `err` and edits the tree so that the next attempt gets past it; false when
    /// nothing more can be learnt (every edit changes the tree, so no error comes back).
    pub(super) fn handle(&mut self, err: &toml::de::Error, attempt: &Attempt<'_>) -> bool {
        let message = err.message();
        let Some(span) = err.span() else {
            self.record(0, "(file)".to_owned(), message.to_owned());
            return false;
        };
        if span.start > self.text.len() {
            return self.next_placeholder(&span);
        }
        match self.index.hit(&span) {
            Some(Hit::Key(i)) => {
                let table = self.index.nodes[i].parent.unwrap_or(0);
                let known = self.schema.keys(&self.index.nodes[table].path.pattern());
                self.report_key(i, span.start, wording::reword(message, known))
            }
            Some(Hit::Table(t)) => self.table_problem(t, message, &span, attempt),
            Some(Hit::Value(v)) => {
                let entry = self.index.entry(v);
                self.report_key(entry, span.start, wording::reword(message, None))
            }
            None => {
                self.record(span.start, "(file)".to_owned(), message.to_owned());
                false
            }
        }
    }

    /// An error serde blames on a whole table.
    fn table_problem(
        &mut self,
        t: usize,
        message: &str,
        span: &Range<usize>,
        attempt: &Attempt<'_>,
    ) -> bool {
        let known = self.schema.keys(&self.index.nodes[t].path.pattern());
        if let Some(key) = wording::bare_unknown_field(message) {
            if let Some(c) = self.index.child(t, key) {
                let at = self.index.nodes[c]
                    .key
                    .as_ref()
                    .map_or(span.start, |k| k.start);
                return self.report_key(c, at, wording::reword(message, known));
            }
        }
        let node = &self.index.nodes[t];
        if let Some(key) = wording::missing_field(message) {
            let (table, key) = (node.span.clone(), key.to_owned());
            let reported =
                self.removed.contains(&(table.clone(), key.clone())) || self.blanked.contains(&key);
            if !reported {
                let field = node.path.child(Seg::Key(key.clone())).to_string();
                let from = if t == 0 { "the file" } else { "this table" };
                self.record(
                    span.start,
                    field,
                    format!("required, but missing from {from}"),
                );
            }
            return self.add_placeholder(table, key);
        }
        if let Some(c) = self.culprit(t, message, span, attempt) {
            let at = self.index.nodes[c].span.start;
            return self.report_key(c, at, wording::reword(message, None));
        }
        let field = node.path.to_string();
        self.record(span.start, field, message.to_owned());
        t != 0 && self.drop_node(t)
    }

    /// The key of table `t` serde meant: keys are taken out one by one (keeping the
    /// required ones) until the error changes; the last one taken is at fault.
    fn culprit(
        &self,
        t: usize,
        message: &str,
        span: &Range<usize>,
        attempt: &Attempt<'_>,
    ) -> Option<usize> {
        let mut trial = self.tree.clone();
        let keys = edit::keys(&mut trial, &self.index.nodes[t].span);
        for (name, key_span) in keys.into_iter().filter(|(_, s)| s.start <= self.text.len()) {
            let mut next = trial.clone();
            edit::remove_key(&mut next, &key_span);
            match attempt(&next) {
                Some(e) if wording::missing_field(e.message()) == Some(name.as_str()) => {}
                Some(e) if e.message() == message && e.span().as_ref() == Some(span) => {
                    trial = next;
                }
                _ => {
                    return self
                        .index
                        .nodes
                        .iter()
                        .position(|n| n.key.as_ref() == Some(&key_span));
                }
            }
        }
        None
    }

    /// Records a problem with node `i` (a key) and takes it out.
    fn report_key(&mut self, i: usize, at: usize, message: String) -> bool {
        let field = self.index.nodes[i].path.to_string();
        self.record(at, field, message);
        i != 0 && self.drop_node(i)
    }

    fn drop_node(&mut self, i: usize) -> bool {
        let node = &self.index.nodes[i];
        match &node.key {
            Some(key) => match edit::remove_key(&mut self.tree, key) {
                Some(taken) => {
                    self.removed.push(taken);
                    true
                }
                None => false,
            },
            None => edit::remove_element(&mut self.tree, &node.span),
        }
    }

    fn add_placeholder(&mut self, table: Range<usize>, key: String) -> bool {
        let start = self.text.len() + 1 + self.placeholders.len();
        let span = start..start + 1;
        let set = edit::set(
            &mut self.tree,
            &table,
            &key,
            span.clone(),
            edit::placeholder(0),
        );
        self.placeholders.push(Placeholder {
            table,
            key,
            span,
            kind: 0,
        });
        set
    }

    /// The stand-in at `span` was of the wrong kind: the next kind, or when none fits, the
    /// table goes (an array element) or loading stops.
    fn next_placeholder(&mut self, span: &Range<usize>) -> bool {
        let Some(p) = self.placeholders.iter_mut().find(|p| p.span == *span) else {
            return false;
        };
        p.kind += 1;
        if p.kind < edit::PLACEHOLDER_KINDS {
            return edit::set(
                &mut self.tree,
                &p.table,
                &p.key,
                p.span.clone(),
                edit::placeholder(p.kind),
            );
        }
        let table = p.table.clone();
        let element = self
            .index
            .nodes
            .iter()
            .any(|n| n.span == table && n.key.is_none() && n.parent.is_some());
        element && edit::remove_element(&mut self.tree, &table)
    }

    fn record(&mut self, offset: usize, field: String, message: String) {
        let p = ConfigProblem::new(field, message).placed(Position::of_offset(self.text, offset));
        if !self.problems.contains(&p) {
            self.problems.push(p);
        }
    }

    pub(super) fn finish(mut self) -> Vec<ConfigProblem> {
        self.problems.sort_by_key(|p| p.at);
        if self.problems.len() >= MAX_PROBLEMS {
            self.problems.truncate(MAX_PROBLEMS);
            self.problems.push(ConfigProblem::new(
                "(file)",
                format!("stopped after {MAX_PROBLEMS} problems: fix these and check again"),
            ));
        }
        if self.problems.is_empty() {
            // Cannot happen (an error always records something), but never claim success.
            self.problems.push(ConfigProblem::new(
                "(file)",
                "cannot be read as this configuration",
            ));
        }
        self.problems
    }
}
