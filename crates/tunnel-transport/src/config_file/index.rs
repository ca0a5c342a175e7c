//! Every key and array element of the document as first parsed, with its span and its path,
//! so that an error's byte span can be turned into `proxies[1].local_addr`.
//!
//! Built once from the untouched tree: the spans of the tree being edited never change, so
//! paths (and array indices) stay those of the file even after elements are taken out.

use std::fmt;
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// A path as the problems name it: `proxies[1].local_addr`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Path(pub(super) Vec<Seg>);

impl Path {
    pub(super) fn child(&self, seg: Seg) -> Path {
        let mut p = self.clone();
        p.0.push(seg);
        p
    }

    /// The same path with every index as `[]`, the form [`Schema`](super::Schema) keys use.
    pub(super) fn pattern(&self) -> String {
        let mut out = String::new();
        for seg in &self.0 {
            match seg {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Seg::Index(_) => out.push_str("[]"),
            }
        }
        out
    }

    /// Reads `proxies[1].local_addr`; `None` for anything else.
    pub(super) fn parse(text: &str) -> Option<Path> {
        let mut segs = Vec::new();
        for part in text.split('.') {
            let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
            if name.is_empty() {
                return None;
            }
            segs.push(Seg::Key(name.to_owned()));
            while !rest.is_empty() {
                let (n, after) = rest.split_once(']')?;
                segs.push(Seg::Index(n.parse().ok()?));
                rest = after.strip_prefix('[').unwrap_or(after);
            }
        }
        Some(Path(segs))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A key with its value, an array element, or the root.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) path: Path,
    /// The key's span; `None` for array elements and the root.
    pub(super) key: Option<Range<usize>>,
    /// The value's span (for a table under a `[header]`, the header's).
    pub(super) span: Range<usize>,
    pub(super) is_table: bool,
    pub(super) parent: Option<usize>,
}

/// What an error's span falls on.
#[derive(Debug, Clone, Copy)]
pub(super) enum Hit {
    /// A key: an unknown one.
    Key(usize),
    /// A whole table: a missing key, or serde lost track of which key (flattened structs).
    Table(usize),
    /// A value, or something inside one.
    Value(usize),
}

#[derive(Debug)]
pub(super) struct Index {
    pub(super) nodes: Vec<Node>,
}

impl Index {
    pub(super) fn new(root: &Spanned<DeTable<'_>>) -> Self {
        let mut index = Index {
            nodes: vec![Node {
                path: Path::default(),
                key: None,
                span: root.span(),
                is_table: true,
                parent: None,
            }],
        };
        index.add_table(root.get_ref(), 0);
        index
    }

    fn add_table(&mut self, table: &DeTable<'_>, parent: usize) {
        for (k, v) in table.iter() {
            let path = self.nodes[parent]
                .path
                .child(Seg::Key(k.get_ref().to_string()));
            let at = self.push(path, Some(k.span()), v, parent);
            self.add_value(v.get_ref(), at);
        }
    }

    fn add_value(&mut self, value: &DeValue<'_>, at: usize) {
        match value {
            DeValue::Table(t) => self.add_table(t, at),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let path = self.nodes[at].path.child(Seg::Index(i));
                    let elem = self.push(path, None, item, at);
                    self.add_value(item.get_ref(), elem);
                }
            }
            _ => {}
        }
    }

    fn push(
        &mut self,
        path: Path,
        key: Option<Range<usize>>,
        value: &Spanned<DeValue<'_>>,
        parent: usize,
    ) -> usize {
        self.nodes.push(Node {
            path,
            key,
            span: value.span(),
            is_table: matches!(value.get_ref(), DeValue::Table(_)),
            parent: Some(parent),
        });
        self.nodes.len() - 1
    }

    /// The node `span` belongs to. Exact matches first: the root's span is empty at offset 0,
    /// inside the first key; the first `[[proxies]]` header is the span of both the array and
    /// its first element (the element, deeper, wins).
    pub(super) fn hit(&self, span: &Range<usize>) -> Option<Hit> {
        let deepest = |it: &mut dyn Iterator<Item = (usize, &Node)>| {
            it.max_by_key(|(i, n)| (n.path.0.len(), *i)).map(|(i, _)| i)
        };
        if let Some(i) = self.nodes.iter().position(|n| n.key.as_ref() == Some(span)) {
            return Some(Hit::Key(i));
        }
        let exact = deepest(
            &mut self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| n.span == *span),
        );
        if let Some(i) = exact {
            return Some(if self.nodes[i].is_table {
                Hit::Table(i)
            } else {
                Hit::Value(i)
            });
        }
        let within = |r: &Range<usize>| r.start <= span.start && span.end <= r.end;
        let inner = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.parent.is_some() && within(&n.span))
            .min_by_key(|(i, n)| (n.span.len(), usize::MAX - n.path.0.len(), *i));
        if let Some((i, _)) = inner {
            return Some(Hit::Value(i));
        }
        self.nodes
            .iter()
            .position(|n| n.key.as_ref().is_some_and(within))
            .map(Hit::Key)
    }

    /// The key-value pair a node sits in: itself, or for an array element the nearest
    /// enclosing key.
    pub(super) fn entry(&self, mut i: usize) -> usize {
        while self.nodes[i].key.is_none() {
            match self.nodes[i].parent {
                Some(p) => i = p,
                None => break,
            }
        }
        i
    }

    /// The child of `table` named `key`.
    pub(super) fn child(&self, table: usize, key: &str) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.parent == Some(table)
                && n.key.is_some()
                && n.path.0.last() == Some(&Seg::Key(key.to_owned()))
        })
    }

    /// The node at `path`, or its nearest ancestor that is in the file (not the root).
    pub(super) fn find(&self, path: &Path) -> Option<usize> {
        (1..=path.0.len()).rev().find_map(|len| {
            self.nodes
                .iter()
                .position(|n| n.path.0.as_slice() == &path.0[..len])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_and_print_the_same() {
        for text in ["server_addr", "proxies[1].local_addr", "a[0][2].b"] {
            assert_eq!(
                Path::parse(text).map(|p| p.to_string()).as_deref(),
                Some(text)
            );
        }
        assert_eq!(
            Path::parse("proxies[1].local_addr").map(|p| p.pattern()),
            Some("proxies[].local_addr".to_owned())
        );
        assert!(Path::parse("proxies[x]").is_none() && Path::parse("a..b").is_none());
    }
}
