//! `publish_port` as a port, `"auto"` or a block `"A-B"`, and the `local_addr` ports that go
//! with a block (`"127.0.0.1:7000-7010"`, or one local port for the whole block).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use tracing::info;
use tunnel_proto::{
    ItemKind, ItemResult, PeerText, PortRequest, ProxyKind, RegisterReply, MAX_PORT_BLOCK,
};

use crate::config::ProxyConfig;
use crate::{ClientError, ConfigProblem};

/// Where the server publishes a proxy: `publish_port = 8080`, `"auto"` or `"6000-6010"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublishPort {
    /// This port (`8080` or `"8080"`).
    Port(u16),
    /// A free port the server picks within its `allow_ports`; the same one again after a
    /// reconnect while it is free.
    Auto,
    /// Every port from `first` to `last`, published together or not at all; `local_addr`
    /// gives as many local ports, or one for all.
    Range {
        /// Lowest port.
        first: u16,
        /// Highest port.
        last: u16,
    },
}

impl From<u16> for PublishPort {
    fn from(port: u16) -> Self {
        PublishPort::Port(port)
    }
}

impl PublishPort {
    /// The fixed port, if this is one.
    pub fn port(self) -> Option<u16> {
        match self {
            PublishPort::Port(p) => Some(p),
            _ => None,
        }
    }

    /// What the server is asked for besides a fixed `publish_port`.
    pub(crate) fn request(self) -> Option<PortRequest> {
        match self {
            PublishPort::Port(_) => None,
            PublishPort::Auto => Some(PortRequest::Auto),
            PublishPort::Range { first, last } => Some(PortRequest::Block { first, last }),
        }
    }

    /// How many ports: 1 for a port or `"auto"`.
    fn len(self) -> u32 {
        match self {
            PublishPort::Range { first, last } => {
                (u32::from(last) + 1).saturating_sub(u32::from(first))
            }
            _ => 1,
        }
    }
}

impl fmt::Display for PublishPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishPort::Port(p) => write!(f, "{p}"),
            PublishPort::Auto => f.write_str("auto"),
            PublishPort::Range { first, last } => write!(f, "{first}-{last}"),
        }
    }
}

pub(crate) const EXPECTED: &str = "a port (8080), \"auto\", or a range \"6000-6010\"";

impl FromStr for PublishPort {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("auto") {
            return Ok(PublishPort::Auto);
        }
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| ClientError::PublishPortSyntax {
                    value: s.to_owned(),
                })
        };
        match s.split_once('-') {
            None => port(s).map(PublishPort::Port),
            Some((a, b)) => {
                let (first, last) = (port(a)?, port(b)?);
                if first > last {
                    return Err(ClientError::PublishPortEmptyRange {
                        value: s.to_owned(),
                    });
                }
                Ok(PublishPort::Range { first, last })
            }
        }
    }
}

impl<'de> Deserialize<'de> for PublishPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PublishPort;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PublishPort, E> {
                u16::try_from(v).map(PublishPort::Port).map_err(|_| {
                    E::custom(format!(
                        "{v} is not a port: use 1 to 65535, \"auto\" or a range"
                    ))
                })
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PublishPort, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<PublishPort, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `local_addr` split into host and ports: `("127.0.0.1", 7000, 7010)` for a range,
/// `(host, p, p)` for one port. `None` when it is neither.
pub(crate) fn local_ports(local_addr: &str) -> Option<(&str, u16, u16)> {
    let (host, ports) = local_addr.rsplit_once(':')?;
    if host.is_empty() {
        return None;
    }
    match ports.split_once('-') {
        None => ports.parse().ok().map(|p| (host, p, p)),
        Some((a, b)) => {
            let (a, b) = (a.parse().ok()?, b.parse().ok()?);
            (a <= b && a > 0).then_some((host, a, b))
        }
    }
}

/// The `local_addr` one user connection is dialled at: for a block with a local range, the
/// local port at the same offset as the public port the user reached (`dest`); otherwise
/// `local_addr` as written. A connection without a destination (a visitor's) goes to the
/// first local port.
pub(crate) fn local_addr_for(cfg: &ProxyConfig, dest: Option<SocketAddr>) -> String {
    let Some((host, first, last)) = local_ports(&cfg.local_addr) else {
        return cfg.local_addr.clone();
    };
    if first == last {
        return cfg.local_addr.clone();
    }
    let offset = cfg
        .publish_port
        .and_then(PublishPort::request)
        .zip(dest)
        .and_then(|(req, d)| req.offset(d.port()))
        .unwrap_or(0);
    let port = first.saturating_add(offset).min(last);
    format!("{host}:{port}")
}

/// Whether `local_addr` is acceptable as written: `host:port`, or `host:A-B` for a block.
pub(crate) fn is_local_addr(p: &ProxyConfig) -> bool {
    crate::config::is_host_port(&p.local_addr) || local_ports(&p.local_addr).is_some()
}

/// The problems of `publish_port` and of a `local_addr` range, each naming the field(s) and
/// the fix.
pub(crate) fn problems(p: &ProxyConfig, i: usize, out: &mut Vec<ConfigProblem>) {
    let at = |f: &str| format!("proxies[{i}].{f}");
    let publish = p.publish_port;
    if publish == Some(PublishPort::Port(0)) {
        out.push(ConfigProblem::new(
            at("publish_port"),
            "0 is not a port: leave publish_port out for a private proxy, or use \"auto\"",
        ));
    }
    let ranged_or_auto = publish.and_then(PublishPort::request);
    if let Some(req) = ranged_or_auto {
        if !matches!(p.kind, ProxyKind::Tcp | ProxyKind::Udp) {
            out.push(ConfigProblem::new(
                at("publish_port"),
                format!(
                    "{:?} is for tcp and udp proxies; a {} proxy is reached by its domains or \
                     subdomain: use a fixed port or none",
                    publish.map(|x| x.to_string()).unwrap_or_default(),
                    p.kind
                ),
            ));
        }
        if let Err(m) = req.check() {
            out.push(ConfigProblem::new(at("publish_port"), m.to_string()));
        }
    }
    let Some((_, first, last)) = local_ports(&p.local_addr) else {
        return;
    };
    if first == last {
        return;
    }
    let local_len = u32::from(last) - u32::from(first) + 1;
    match publish {
        Some(PublishPort::Range { first: a, last: b }) => {
            let len = publish.map_or(1, PublishPort::len);
            if len != local_len && len <= u32::from(MAX_PORT_BLOCK) {
                out.push(ConfigProblem::new(
                    at("local_addr"),
                    format!(
                        "has {local_len} ports ({first}-{last}) but publish_port has {len} \
                         ({a}-{b}): give local_addr and publish_port ranges of equal length, \
                         or one local port for the whole block"
                    ),
                ));
            }
        }
        _ => out.push(ConfigProblem::new(
            at("local_addr"),
            format!(
                "a port range ({first}-{last}) needs a ranged publish_port of as many ports \
                 (e.g. publish_port = \"6000-{}\"); otherwise give one local port",
                6000 + local_len - 1
            ),
        )),
    }
}

/// Log the port(s) each proxy of `reply` was published on when the server chose them or
/// they form a block: all on a new session (`before` is `None`), the changed ones on a
/// reload's reply.
pub(crate) fn log_published(
    shared: &crate::Shared,
    before: Option<&RegisterReply>,
    reply: &RegisterReply,
) {
    for item in &reply.results {
        let (ItemKind::Proxy, None, Some(port)) = (item.kind, &item.error, item.port) else {
            continue;
        };
        let same = |o: &ItemResult| o.kind == ItemKind::Proxy && o.name == item.name;
        if before.is_some_and(|b| b.results.iter().any(|o| same(o) && o.port == Some(port))) {
            continue;
        }
        let what = match shared.proxy_config(&item.name).and_then(|c| c.publish_port) {
            Some(PublishPort::Range { first, last }) => format!("ports {first}-{last}"),
            _ => format!("port {port} (auto)"),
        };
        info!("proxy {} published on {what}", PeerText(&item.name));
    }
}

/// The port the server gave each proxy of `reply` (an automatic one, or a block's first).
pub(crate) fn given_ports(reply: &RegisterReply) -> HashMap<String, u16> {
    reply
        .results
        .iter()
        .filter(|r| r.kind == ItemKind::Proxy && r.error.is_none())
        .filter_map(|r| Some((r.name.clone(), r.port?)))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn publish_port_parses_every_form() {
        let parse = |s: &str| s.parse::<PublishPort>().ok();
        assert_eq!(parse("8080"), Some(PublishPort::Port(8080)));
        assert_eq!(parse("auto"), Some(PublishPort::Auto));
        assert_eq!(parse(" AUTO "), Some(PublishPort::Auto));
        assert_eq!(
            parse("6000-6010"),
            Some(PublishPort::Range {
                first: 6000,
                last: 6010
            })
        );
        for bad in ["", "x", "70000", "6010-6000", "1-2-3", "-5", "5-"] {
            assert!(bad.parse::<PublishPort>().is_err(), "{bad:?} accepted");
        }
        let e = "6010-6000".parse::<PublishPort>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"6010-6000\" is an empty range: write the lower port first"
        );
        let e = "x".parse::<PublishPort>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"x\" is not a port (8080), \"auto\", or a range \"6000-6010\", with ports up to 65535"
        );
    }

    #[test]
    fn local_ports_split_host_and_ports() {
        assert_eq!(
            local_ports("127.0.0.1:7000"),
            Some(("127.0.0.1", 7000, 7000))
        );
        assert_eq!(
            local_ports("127.0.0.1:7000-7004"),
            Some(("127.0.0.1", 7000, 7004))
        );
        assert_eq!(local_ports("[::1]:7000-7001"), Some(("[::1]", 7000, 7001)));
        for bad in ["7000", ":7000", "h:7001-7000", "h:0-3", "h:a-b", "h:"] {
            assert_eq!(local_ports(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_block_dials_the_local_port_at_the_same_offset() {
        let mut cfg = ProxyConfig::tcp("b", "127.0.0.1:7000-7004", None);
        cfg.publish_port = Some(PublishPort::Range {
            first: 6000,
            last: 6004,
        });
        let dest = |p: u16| Some(SocketAddr::from(([127, 0, 0, 1], p)));
        assert_eq!(local_addr_for(&cfg, dest(6000)), "127.0.0.1:7000");
        assert_eq!(local_addr_for(&cfg, dest(6003)), "127.0.0.1:7003");
        // Not a port of the block (a visitor, or no destination): the first local port.
        assert_eq!(local_addr_for(&cfg, dest(5000)), "127.0.0.1:7000");
        assert_eq!(local_addr_for(&cfg, None), "127.0.0.1:7000");
        cfg.local_addr = "127.0.0.1:7000".into();
        assert_eq!(local_addr_for(&cfg, dest(6003)), "127.0.0.1:7000");
    }

    const BASE: &str = "server_addr = \"example.com:8443\"\nauth_key = \"k\"\n";

    fn problems(proxies: &str) -> Vec<(String, String)> {
        let c = crate::ClientConfig::from_toml(&format!("{BASE}{proxies}")).unwrap();
        c.problems()
            .into_iter()
            .map(|p| (p.field, p.message))
            .collect()
    }

    #[test]
    fn the_config_file_takes_auto_and_ranges() {
        let c = crate::ClientConfig::from_toml(&format!(
            "{BASE}[[proxies]]\nname=\"a\"\nlocal_addr=\"127.0.0.1:1\"\npublish_port=\"auto\"\n\
             [[proxies]]\nname=\"b\"\ntype=\"udp\"\nlocal_addr=\"127.0.0.1:7000-7010\"\n\
             publish_port=\"6000-6010\"\n\
             [[proxies]]\nname=\"c\"\nlocal_addr=\"127.0.0.1:7000\"\npublish_port=\"6000-6999\"\n\
             [[proxies]]\nname=\"d\"\nlocal_addr=\"127.0.0.1:1\"\npublish_port=\"8080\"\n"
        ))
        .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let specs = c.register_request().proxies;
        assert_eq!(specs[0].publish_ports, Some(PortRequest::Auto));
        assert_eq!(specs[0].publish_port, None);
        assert_eq!(
            specs[1].publish_ports,
            Some(PortRequest::Block {
                first: 6000,
                last: 6010
            })
        );
        assert_eq!(
            (specs[3].publish_port, specs[3].publish_ports),
            (Some(8080), None)
        );
    }

    #[test]
    fn a_block_over_the_cap_is_named_with_the_cap() {
        let p = problems(
            "[[proxies]]\nname=\"a\"\nlocal_addr=\"127.0.0.1:7000\"\npublish_port=\"6000-7000\"\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "proxies[0].publish_port");
        assert!(
            p[0].1.contains("1001 ports") && p[0].1.contains("at most 1000"),
            "{p:?}"
        );
    }

    #[test]
    fn ranges_of_different_lengths_name_both_fields() {
        let p = problems(
            "[[proxies]]\nname=\"a\"\nlocal_addr=\"127.0.0.1:7000-7002\"\n\
             publish_port=\"6000-6004\"\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "proxies[0].local_addr");
        assert!(
            p[0].1.contains("publish_port") && p[0].1.contains("equal length"),
            "{p:?}"
        );
        // A local range with a single publish port, or none: the range is told to go.
        for publish in ["publish_port=6000\n", "publish_port=\"auto\"\n", ""] {
            let p = problems(&format!(
                "[[proxies]]\nname=\"a\"\nlocal_addr=\"127.0.0.1:7000-7002\"\n{publish}"
            ));
            assert_eq!(p.len(), 1, "{p:?}");
            assert!(p[0].1.contains("needs a ranged publish_port"), "{p:?}");
        }
    }

    #[test]
    fn http_proxies_are_told_why_not() {
        let p = problems(
            "[[proxies]]\nname=\"a\"\ntype=\"http\"\nlocal_addr=\"127.0.0.1:1\"\n\
             publish_port=\"auto\"\n",
        );
        assert!(
            p.iter()
                .any(|(f, m)| f == "proxies[0].publish_port" && m.contains("domains")),
            "{p:?}"
        );
    }

    #[test]
    fn a_bad_value_is_a_syntax_error_at_its_place() {
        for bad in ["\"sometimes\"", "\"7000-6000\"", "70000", "-1"] {
            let text =
                format!("{BASE}[[proxies]]\nname=\"a\"\nlocal_addr=\"h:1\"\npublish_port={bad}\n");
            let e = crate::ClientConfig::from_toml(&text)
                .unwrap_err()
                .to_string();
            assert!(e.contains("proxies[0].publish_port"), "{bad}: {e}");
        }
    }
}
