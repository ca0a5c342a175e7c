//! `server_addr`: one server, or a list of servers that serve the same clients (a cluster, or
//! plain standbys). A list is tried in an order shuffled at start, so that a fleet of clients
//! spreads over the servers instead of all landing on the first.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;

use crate::error::ConfigProblem;

/// The server(s) of a client: `server_addr = "host:port"` or `server_addr = ["a:1", "b:1"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerAddr {
    /// One server, `host:port`.
    One(String),
    /// Several servers, each `host:port`, any of which will do.
    List(Vec<String>),
}

impl ServerAddr {
    /// Every address, in the order written.
    pub fn addrs(&self) -> &[String] {
        match self {
            ServerAddr::One(a) => std::slice::from_ref(a),
            ServerAddr::List(l) => l,
        }
    }

    /// The field a problem with entry `i` is reported at: `server_addr`, or `server_addr[i]`
    /// for a list, which the config loader places at that element's line.
    fn field(&self, i: usize) -> String {
        match self {
            ServerAddr::One(_) => "server_addr".to_owned(),
            ServerAddr::List(_) => format!("server_addr[{i}]"),
        }
    }

    /// Malformed entries, duplicates, an empty list.
    pub(crate) fn problems(&self, out: &mut Vec<ConfigProblem>) {
        if self.addrs().is_empty() {
            out.push(ConfigProblem::new(
                "server_addr",
                "is an empty list: name at least one server as \"host:port\" \
                 (e.g. \"tunnel.example.com:8443\")",
            ));
        }
        for (i, addr) in self.addrs().iter().enumerate() {
            if !crate::config::is_host_port(addr) {
                out.push(ConfigProblem::new(
                    self.field(i),
                    format!("{addr:?} is not host:port (e.g. \"tunnel.example.com:8443\")"),
                ));
            } else if let Some(j) = self.addrs()[..i]
                .iter()
                .position(|a| a.eq_ignore_ascii_case(addr))
            {
                out.push(ConfigProblem::new(
                    self.field(i),
                    format!("{addr:?} is listed twice (also server_addr[{j}]): remove one"),
                ));
            }
        }
    }
}

/// The host of `host:port`, without the brackets of an IPv6 address: the default name the
/// server certificate must carry.
pub(crate) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addrs().join(", "))
    }
}

impl From<String> for ServerAddr {
    fn from(a: String) -> Self {
        ServerAddr::One(a)
    }
}

impl From<&str> for ServerAddr {
    fn from(a: &str) -> Self {
        ServerAddr::One(a.to_owned())
    }
}

impl From<Vec<String>> for ServerAddr {
    fn from(l: Vec<String>) -> Self {
        ServerAddr::List(l)
    }
}

// By hand rather than `#[serde(untagged)]`: an untagged enum answers a wrong type with "did
// not match any variant", where this names what is expected, and a bad list element is
// reported at the element.
impl<'de> Deserialize<'de> for ServerAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AddrVisitor)
    }
}

struct AddrVisitor;

impl<'de> Visitor<'de> for AddrVisitor {
    type Value = ServerAddr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"host:port\" or a list of them")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ServerAddr, E> {
        Ok(ServerAddr::One(v.to_owned()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ServerAddr, A::Error> {
        let mut list = Vec::new();
        while let Some(a) = seq.next_element::<String>()? {
            list.push(a);
        }
        Ok(ServerAddr::List(list))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fields(a: ServerAddr) -> Vec<String> {
        let mut out = Vec::new();
        a.problems(&mut out);
        out.into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn problems_name_the_entry() {
        assert!(fields("a:1".into()).is_empty());
        assert_eq!(fields("a".into()), ["server_addr"]);
        assert_eq!(fields(ServerAddr::List(vec![])), ["server_addr"]);
        let list = |l: &[&str]| ServerAddr::List(l.iter().map(|s| s.to_string()).collect());
        assert!(fields(list(&["a:1", "[::1]:2"])).is_empty());
        assert_eq!(
            fields(list(&["a:1", "b", "A:1", ":3"])),
            ["server_addr[1]", "server_addr[2]", "server_addr[3]"]
        );
    }

    #[test]
    fn host_of_strips_port_and_brackets() {
        assert_eq!(host_of("tunnel.example.com:8443"), "tunnel.example.com");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("bare"), "bare");
    }
}
