//! The words of a problem: serde's messages, with the valid keys and the closest one to a typo.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The backquoted words of a serde message: ``unknown field `x`, expected `a` or `b` `` gives
/// `["x", "a", "b"]`.
fn quoted(message: &str) -> Vec<&str> {
    message.split('`').skip(1).step_by(2).collect()
}

/// The key of ``missing field `x` ``.
pub(super) fn missing_field(message: &str) -> Option<&str> {
    one_word(message.strip_prefix("missing field `")?)
}

/// `x` of "x`", when that is all.
fn one_word(rest: &str) -> Option<&str> {
    rest.strip_suffix('`').filter(|w| !w.contains('`'))
}

/// The key of a bare ``unknown field `x` ``: what serde says for a flattened struct, which
/// lists no valid keys and loses the key's place.
pub(super) fn bare_unknown_field(message: &str) -> Option<&str> {
    one_word(message.strip_prefix("unknown field `")?)
}

/// An unknown key or enum value, reworded to name the valid ones and the closest of them:
/// ``unknown field `local_adr`, expected one of ...`` becomes "unknown key `local_adr`: did you
/// mean `local_addr`? Valid keys here: ...". `known` stands in when serde listed none.
pub(super) fn reword(message: &str, known: Option<&[&'static str]>) -> String {
    let (what, listed) = if message.starts_with("unknown field `") {
        ("key", true)
    } else if message.starts_with("unknown variant `") {
        ("value", true)
    } else {
        ("", false)
    };
    if !listed {
        return message.to_owned();
    }
    let words = quoted(message);
    let Some((&word, rest)) = words.split_first() else {
        return message.to_owned();
    };
    let valid: Vec<&str> = if rest.is_empty() {
        known.map(<[_]>::to_vec).unwrap_or_default()
    } else {
        rest.to_vec()
    };
    let mut out = format!("unknown {what} `{word}`");
    if let Some(best) = closest(word, &valid) {
        out.push_str(&format!(": did you mean `{best}`?"));
    }
    if !valid.is_empty() {
        let sep = if out.ends_with('?') { " " } else { ": " };
        let plural = if what == "key" { "keys here" } else { "values" };
        out.push_str(&format!("{sep}valid {plural}: {}", valid.join(", ")));
    }
    out
}

/// The candidate a typo most likely meant: at most one edit (insertion, deletion, change or
/// swap of neighbours) per three characters of the typo.
pub(super) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edits(word, c), *c))
        .filter(|(d, _)| *d * 3 <= word.chars().count().max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal string alignment distance: Levenshtein plus the swap of two neighbours as one edit
/// (`bnid` for `bind`).
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: edits between a[..i] and b[..j].
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let change = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + change);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

/// The keys of a struct that derives `Deserialize` (without `flatten`, which hides them from
/// serde too): to list the valid keys where serde's own message cannot.
pub fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(FieldProbe(&mut fields));
    fields.unwrap_or(&[])
}

/// A deserializer that only records the field names a struct asks for, then gives up.
struct FieldProbe<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldProbe<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only the field names are wanted"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("only the field names are wanted"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_closest_key_and_the_list() {
        let m = "unknown field `local_adr`, expected one of `name`, `local_addr`, `secret`";
        assert_eq!(
            reword(m, None),
            "unknown key `local_adr`: did you mean `local_addr`? valid keys here: name, \
             local_addr, secret"
        );
        // A flattened struct's bare message: the caller's list stands in.
        assert_eq!(
            reword("unknown field `bnid`", Some(&["bind", "name"])),
            "unknown key `bnid`: did you mean `bind`? valid keys here: bind, name"
        );
        assert_eq!(
            reword("unknown field `zzz`, expected `a` or `b`", None),
            "unknown key `zzz`: valid keys here: a, b"
        );
        assert_eq!(
            reword("unknown variant `htp`, expected one of `tcp`, `http`", None),
            "unknown value `htp`: did you mean `http`? valid values: tcp, http"
        );
        assert_eq!(
            reword("invalid type: integer", None),
            "invalid type: integer"
        );
    }

    #[test]
    fn only_near_words_are_suggested() {
        assert_eq!(edits("bnid", "bind"), 1);
        assert_eq!(edits("local_adr", "local_addr"), 1);
        assert_eq!(closest("foo", &["id", "bind"]), None);
        assert_eq!(
            closest("publish-port", &["publish_port", "port"]),
            Some("publish_port")
        );
    }

    #[test]
    fn the_messages_serde_writes_are_read() {
        assert_eq!(missing_field("missing field `bind`"), Some("bind"));
        assert_eq!(bare_unknown_field("unknown field `x`"), Some("x"));
        assert_eq!(bare_unknown_field("unknown field `x`, expected `a`"), None);
    }

    #[test]
    fn fields_of_lists_a_structs_keys() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct S {
            a: u8,
            #[serde(rename = "type")]
            kind: String,
        }
        assert_eq!(fields_of::<S>(), ["a", "type"]);
        assert!(fields_of::<u8>().is_empty());
    }
}
