//! Edits of the spanned tree between two attempts: take out a key or an array element, or
//! stand a placeholder in for a missing key. Nodes are found by span, which edits never change.

use std::borrow::Cow;
use std::ops::Range;

use toml::de::{DeArray, DeInteger, DeTable, DeValue};
use toml::Spanned;

pub(super) type Tree<'i> = Spanned<DeTable<'i>>;

/// Takes out the key at `key_span`; gives the span of its table and its name.
pub(super) fn remove_key(
    root: &mut Tree<'_>,
    key_span: &Range<usize>,
) -> Option<(Range<usize>, String)> {
    let span = root.span();
    remove_in_table(root.get_mut(), span, key_span)
}

fn remove_in_table(
    table: &mut DeTable<'_>,
    table_span: Range<usize>,
    key_span: &Range<usize>,
) -> Option<(Range<usize>, String)> {
    let name = table
        .iter()
        .find(|(k, _)| k.span() == *key_span)
        .map(|(k, _)| k.get_ref().to_string());
    if let Some(name) = name {
        table.remove(name.as_str());
        return Some((table_span, name));
    }
    table
        .iter_mut()
        .find_map(|(_, v)| remove_in_value(v, key_span))
}

fn remove_in_value(
    value: &mut Spanned<DeValue<'_>>,
    key_span: &Range<usize>,
) -> Option<(Range<usize>, String)> {
    let span = value.span();
    match value.get_mut() {
        DeValue::Table(t) => remove_in_table(t, span, key_span),
        DeValue::Array(items) => items.iter_mut().find_map(|v| remove_in_value(v, key_span)),
        _ => None,
    }
}

/// Takes out the array element at `span` (a `[[proxies]]` table that cannot be read at all).
pub(super) fn remove_element(root: &mut Tree<'_>, span: &Range<usize>) -> bool {
    root.get_mut()
        .iter_mut()
        .any(|(_, v)| remove_element_in(v, span))
}

fn remove_element_in(value: &mut Spanned<DeValue<'_>>, span: &Range<usize>) -> bool {
    match value.get_mut() {
        DeValue::Array(items) => {
            if let Some(i) = items.iter().position(|v| v.span() == *span) {
                let mut kept = DeArray::new();
                for (j, v) in items.iter().enumerate() {
                    if j != i {
                        kept.push(v.clone());
                    }
                }
                *items = kept;
                return true;
            }
            items.iter_mut().any(|v| remove_element_in(v, span))
        }
        DeValue::Table(t) => t.iter_mut().any(|(_, v)| remove_element_in(v, span)),
        _ => false,
    }
}

/// The table whose span (its header's, or the root's) is `span`.
pub(super) fn table_mut<'a, 'i>(
    root: &'a mut Tree<'i>,
    span: &Range<usize>,
) -> Option<&'a mut DeTable<'i>> {
    if root.span() == *span {
        return Some(root.get_mut());
    }
    root.get_mut()
        .iter_mut()
        .find_map(|(_, v)| table_in(v, span))
}

fn table_in<'a, 'i>(
    value: &'a mut Spanned<DeValue<'i>>,
    span: &Range<usize>,
) -> Option<&'a mut DeTable<'i>> {
    let here = value.span() == *span;
    match value.get_mut() {
        DeValue::Table(t) => {
            if here {
                Some(t)
            } else {
                t.iter_mut().find_map(|(_, v)| table_in(v, span))
            }
        }
        DeValue::Array(items) => items.iter_mut().find_map(|v| table_in(v, span)),
        _ => None,
    }
}

/// How many kinds of placeholder [`placeholder`] has.
pub(super) const PLACEHOLDER_KINDS: usize = 5;

/// A stand-in value of kind `kind` (0 to [`PLACEHOLDER_KINDS`] - 1): the missing key's type is
/// unknown, so each is tried until the struct accepts one.
pub(super) fn placeholder<'i>(kind: usize) -> DeValue<'i> {
    match kind {
        0 => DeValue::String(Cow::Borrowed("")),
        1 => DeValue::Integer(DeInteger::default()),
        2 => DeValue::Boolean(false),
        3 => DeValue::Array(DeArray::new()),
        _ => DeValue::Table(DeTable::new()),
    }
}

/// Puts `value` under `key` in the table at `table`, with the span `span`.
pub(super) fn set<'i>(
    root: &mut Tree<'i>,
    table: &Range<usize>,
    key: &str,
    span: Range<usize>,
    value: DeValue<'i>,
) -> bool {
    let Some(t) = table_mut(root, table) else {
        return false;
    };
    t.insert(
        Spanned::new(span.clone(), Cow::Owned(key.to_owned())),
        Spanned::new(span, value),
    );
    true
}

/// The keys of the table at `span`, with their spans.
pub(super) fn keys(root: &mut Tree<'_>, span: &Range<usize>) -> Vec<(String, Range<usize>)> {
    table_mut(root, span)
        .map(|t| {
            t.iter()
                .map(|(k, _)| (k.get_ref().to_string(), k.span()))
                .collect()
        })
        .unwrap_or_default()
}
