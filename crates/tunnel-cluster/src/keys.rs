//! The key layout under the cluster prefix (design note, section 3, "Keys"):
//!
//! ```text
//! <prefix>server/<server_id>
//! <prefix>client/<client_id>
//! <prefix>proxy/<name>/<publish_port>      (0 for a private proxy, as the server's ProxyKey)
//! <prefix>port/<publish_port>
//! <prefix>domain/<host>
//! ```
//!
//! Names come from clients, so each one is escaped into a single path segment: a hostile name
//! (with `/`, `..`, control characters) cannot reach another key space, and two different
//! names never give the same key (the escaping is reversible). Over-long names are refused
//! rather than cut, as cutting would make two names collide.

use std::fmt::Write as _;

use crate::ClusterError;

/// The longest name (in bytes, before escaping) a key may carry: a DNS name fits (253), and
/// the key stays far below etcd's request size limit.
pub const MAX_SEGMENT: usize = 255;

/// What a registry key names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyKind {
    /// `server/<id>`: a server's presence and peer address.
    Server(String),
    /// `client/<id>`: which instance of a client id holds it, on which server.
    Client(String),
    /// `proxy/<name>/<port>`: a proxy (port 0: private).
    Proxy {
        /// The proxy name.
        name: String,
        /// The publish port, 0 for a private proxy.
        port: u16,
    },
    /// `port/<port>`: a publish port, unique cluster-wide.
    Port(u16),
    /// `domain/<host>`: a virtual host, unique cluster-wide.
    Domain(String),
}

/// Builds and parses the keys of one cluster prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys under `prefix` (checked by [`ClusterConfig`](crate::ClusterConfig): starts
    /// and ends with `/`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    /// The prefix, which every key starts with (the watch and re-list range).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix of all server keys.
    pub fn servers(&self) -> String {
        format!("{}server/", self.prefix)
    }

    /// The key of `kind`; `NameTooLong` past [`MAX_SEGMENT`].
    pub fn key(&self, kind: &KeyKind) -> Result<String, ClusterError> {
        let mut k = self.prefix.clone();
        match kind {
            KeyKind::Server(id) => {
                k.push_str("server/");
                push_segment(&mut k, "server_id", id)?;
            }
            KeyKind::Client(id) => {
                k.push_str("client/");
                push_segment(&mut k, "client_id", id)?;
            }
            KeyKind::Proxy { name, port } => {
                k.push_str("proxy/");
                push_segment(&mut k, "proxy name", name)?;
                let _ = write!(k, "/{port}");
            }
            KeyKind::Port(port) => {
                let _ = write!(k, "port/{port}");
            }
            KeyKind::Domain(host) => {
                k.push_str("domain/");
                push_segment(&mut k, "domain", host)?;
            }
        }
        Ok(k)
    }

    /// What `key` names, or `None` if it is not a registry key of this prefix (another
    /// writer's, or hostile: the cache skips it).
    pub fn parse(&self, key: &str) -> Option<KeyKind> {
        let rest = key.strip_prefix(&self.prefix)?;
        let (space, tail) = rest.split_once('/')?;
        match space {
            "server" => Some(KeyKind::Server(decode_segment(tail)?)),
            "client" => Some(KeyKind::Client(decode_segment(tail)?)),
            "proxy" => {
                let (name, port) = tail.split_once('/')?;
                Some(KeyKind::Proxy {
                    name: decode_segment(name)?,
                    port: parse_port(port)?,
                })
            }
            "port" => Some(KeyKind::Port(parse_port(tail)?)),
            "domain" => Some(KeyKind::Domain(decode_segment(tail)?)),
            _ => None,
        }
    }
}

/// Only canonical decimal ports (no sign, no leading zero), so one port has one key.
fn parse_port(s: &str) -> Option<u16> {
    let port: u16 = s.parse().ok()?;
    (port.to_string() == s).then_some(port)
}

/// Appends `name` as one segment: bytes outside `A-Z a-z 0-9 _ - .` as `%XX`, and the dots
/// of `.` and `..` too (a path-normalising tool must not see a parent reference). The empty
/// name is `%`, which no escaped name can be (an escape is always `%` and two hex digits).
fn push_segment(out: &mut String, what: &'static str, name: &str) -> Result<(), ClusterError> {
    if name.len() > MAX_SEGMENT {
        return Err(ClusterError::NameTooLong {
            what,
            len: name.len(),
            max: MAX_SEGMENT,
        });
    }
    if name.is_empty() {
        out.push('%');
        return Ok(());
    }
    let dots_only = name.bytes().all(|b| b == b'.') && name.len() <= 2;
    for b in name.bytes() {
        let plain = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.';
        if plain && !(dots_only && b == b'.') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Ok(())
}

/// The inverse of [`push_segment`]; `None` for anything it would not have written, so a key
/// that merely decodes to a name cannot alias the canonical key of that name.
fn decode_segment(seg: &str) -> Option<String> {
    if seg == "%" {
        return Some(String::new());
    }
    if seg.is_empty() || seg.len() > MAX_SEGMENT * 3 {
        return None;
    }
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = seg.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let name = String::from_utf8(out).ok()?;
    let mut canonical = String::new();
    push_segment(&mut canonical, "", &name).ok()?;
    (canonical == seg).then_some(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    fn keys() -> Keys {
        Keys::new("/tls-tunnel/")
    }

    #[test]
    fn layout() {
        let k = keys();
        assert_eq!(
            k.key(&KeyKind::Server("a".into())).unwrap(),
            "/tls-tunnel/server/a"
        );
        assert_eq!(
            k.key(&KeyKind::Client("c-1".into())).unwrap(),
            "/tls-tunnel/client/c-1"
        );
        assert_eq!(
            k.key(&KeyKind::Proxy {
                name: "web".into(),
                port: 8080
            })
            .unwrap(),
            "/tls-tunnel/proxy/web/8080"
        );
        assert_eq!(k.key(&KeyKind::Port(80)).unwrap(), "/tls-tunnel/port/80");
        assert_eq!(
            k.key(&KeyKind::Domain("*.dev.example.com".into())).unwrap(),
            "/tls-tunnel/domain/%2A.dev.example.com"
        );
    }

    #[test]
    fn hostile_names_stay_in_one_segment() {
        let k = keys();
        for name in ["../port/80", "a/b", "..", ".", "", "x\n\0", "%41", "é"] {
            let key = k.key(&KeyKind::Client(name.into())).unwrap();
            let seg = key.strip_prefix("/tls-tunnel/client/").unwrap();
            assert!(!seg.contains('/'), "{name:?} -> {key}");
            assert!(seg != "." && seg != "..", "{name:?} -> {key}");
            assert!(
                seg.bytes().all(|b| b.is_ascii_graphic()),
                "{name:?} -> {key}"
            );
            assert_eq!(k.parse(&key), Some(KeyKind::Client(name.into())));
        }
        // A proxy named like another key space stays a proxy.
        let key = k
            .key(&KeyKind::Proxy {
                name: "x/../../port".into(),
                port: 1,
            })
            .unwrap();
        assert!(matches!(
            k.parse(&key),
            Some(KeyKind::Proxy { port: 1, .. })
        ));
    }

    #[test]
    fn long_names_are_refused_not_cut() {
        let long = "a".repeat(MAX_SEGMENT + 1);
        let err = keys().key(&KeyKind::Domain(long)).unwrap_err();
        assert!(matches!(
            err,
            ClusterError::NameTooLong { what: "domain", .. }
        ));
        assert!(keys()
            .key(&KeyKind::Domain("a".repeat(MAX_SEGMENT)))
            .is_ok());
    }

    #[test]
    fn foreign_keys_do_not_parse() {
        let k = keys();
        for key in [
            "/other/client/a",
            "/tls-tunnel/client/a/b",
            "/tls-tunnel/client/%61",
            "/tls-tunnel/client/",
            "/tls-tunnel/port/080",
            "/tls-tunnel/port/+80",
            "/tls-tunnel/port/70000",
            "/tls-tunnel/proxy/web",
            "/tls-tunnel/nope/a",
            "/tls-tunnel/client/%zz",
        ] {
            assert_eq!(k.parse(key), None, "{key}");
        }
    }

    fn kind() -> impl Strategy<Value = KeyKind> {
        // Short names over a small alphabet of the troublesome characters collide often if
        // anything can collide.
        let name = || proptest::string::string_regex("[a./%\\-\\x00\\né]{0,6}").unwrap();
        prop_oneof![
            name().prop_map(KeyKind::Server),
            name().prop_map(KeyKind::Client),
            (name(), any::<u16>()).prop_map(|(name, port)| KeyKind::Proxy { name, port }),
            any::<u16>().prop_map(KeyKind::Port),
            name().prop_map(KeyKind::Domain),
        ]
    }

    proptest! {
        /// Reversible, so injective: two names never share a key.
        #[test]
        fn keys_round_trip_and_never_collide(a in kind(), b in kind()) {
            let k = keys();
            let (ka, kb) = (k.key(&a).unwrap(), k.key(&b).unwrap());
            prop_assert_eq!(k.parse(&ka), Some(a.clone()));
            prop_assert_eq!(ka == kb, a == b);
        }
    }
}
