//! What one client of the clients file may do, on top of the server's own rules.
//!
//! A key left out of the entry adds no restriction; a key that is present allows only what
//! it lists (`allow_names = []` allows no name at all). Patterns take `*` (any run of
//! characters, dots included) and `?` (one character); names and hosts are compared without
//! regard to case.

use std::fmt;

use serde::Serialize;
use tunnel_proto::{FieldError, ProxySpec};
use wildmatch::WildMatch;

use super::Bandwidth;
use crate::{PortRanges, ServerError};

/// One client's scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Ports it may publish on.
    pub allow_ports: Option<PortRanges>,
    /// Proxy names it may register.
    pub allow_names: Option<Patterns>,
    /// Host names (`domains`) its proxies may claim on the virtual host.
    pub allow_domains: Option<Patterns>,
    /// Labels its proxies may claim with `subdomain`.
    pub allow_subdomains: Option<Patterns>,
    /// Proxies of other clients it may visit: a pattern on the proxy name, or on
    /// `owner-id/proxy-name` when it holds a `/`.
    pub allow_visit: Option<Patterns>,
    /// Most proxies plus visitors it may register.
    pub max_proxies: Option<usize>,
    /// Most streams its session may have open at once.
    pub max_streams: Option<usize>,
    /// Its rate, each direction (enforced in a later release).
    pub bandwidth_limit: Option<Bandwidth>,
}

/// A list of glob patterns.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Patterns(Vec<String>);

impl Patterns {
    /// The patterns as written (compared in lower case).
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Self {
        Patterns(
            patterns
                .into_iter()
                .map(|p| p.to_ascii_lowercase())
                .collect(),
        )
    }

    /// Whether `text` matches one of them.
    pub fn matches(&self, text: &str) -> bool {
        let text = text.to_ascii_lowercase();
        self.0.iter().any(|p| WildMatch::new(p).matches(&text))
    }
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

impl fmt::Display for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let quoted: Vec<String> = self.0.iter().map(|p| format!("{p:?}")).collect();
        f.write_str(&quoted.join(", "))
    }
}

/// How a refusal names the scope: the key and what it allows, and where it is set.
fn outside(what: String, key: &'static str, allows: &dyn fmt::Display) -> ServerError {
    ServerError::OutsideScope {
        what,
        key,
        allows: allows.to_string(),
    }
}

impl Scope {
    /// Whether the proxy `spec` fits the scope; the refusal names the proxy's field and the
    /// scope key it broke. `max_proxies` is counted by the caller, over the whole request.
    pub fn check_proxy(&self, spec: &ProxySpec) -> Result<(), FieldError> {
        let refuse = |field: &str, e: ServerError| FieldError {
            field: field.to_owned(),
            message: e.to_string(),
        };
        if let Some(names) = &self.allow_names {
            if !names.matches(&spec.name) {
                let what = format!("proxy name {:?}", spec.name);
                return Err(refuse("name", outside(what, "allow_names", names)));
            }
        }
        if let (Some(port), Some(ports)) = (spec.publish_port, &self.allow_ports) {
            if !ports.contains(port) {
                let what = format!("port {port}");
                return Err(refuse("publish_port", outside(what, "allow_ports", ports)));
            }
        }
        let Some(route) = &spec.http else {
            return Ok(());
        };
        if let Some(domains) = &self.allow_domains {
            if let Some(d) = route.domains.iter().find(|d| !domains.matches(d)) {
                let what = format!("domain {d:?}");
                return Err(refuse("domains", outside(what, "allow_domains", domains)));
            }
        }
        if let (Some(sub), Some(subs)) = (&route.subdomain, &self.allow_subdomains) {
            if !subs.matches(sub) {
                let what = format!("subdomain {sub:?}");
                return Err(refuse("subdomain", outside(what, "allow_subdomains", subs)));
            }
        }
        Ok(())
    }

    /// Whether this client may visit proxy `proxy` of client `owner`.
    ///
    /// # Errors
    ///
    /// [`ServerError::OutsideScope`] naming `allow_visit`.
    pub fn check_visit(&self, owner: &str, proxy: &str) -> Result<(), ServerError> {
        let Some(visit) = &self.allow_visit else {
            return Ok(());
        };
        let full = format!("{owner}/{proxy}");
        let allowed = visit.0.iter().any(|p| {
            WildMatch::new(p).matches(&if p.contains('/') {
                full.to_ascii_lowercase()
            } else {
                proxy.to_ascii_lowercase()
            })
        });
        if allowed {
            Ok(())
        } else {
            Err(outside(format!("proxy {proxy:?}"), "allow_visit", visit))
        }
    }

    /// Whether `count` proxies and visitors fit `max_proxies`.
    ///
    /// # Errors
    ///
    /// [`ServerError::TooManyProxies`].
    pub fn check_count(&self, count: usize) -> Result<(), ServerError> {
        match self.max_proxies {
            Some(max) if count > max => Err(ServerError::TooManyProxies { count, max }),
            _ => Ok(()),
        }
    }

    /// The scope as the stats endpoint shows it: only the keys that are set.
    pub(crate) fn view(&self) -> ScopeView {
        let list = |p: &Option<Patterns>| p.as_ref().map(|p| p.0.clone());
        ScopeView {
            allow_ports: self.allow_ports.as_ref().map(ToString::to_string),
            allow_names: list(&self.allow_names),
            allow_domains: list(&self.allow_domains),
            allow_subdomains: list(&self.allow_subdomains),
            allow_visit: list(&self.allow_visit),
            max_proxies: self.max_proxies,
            max_streams: self.max_streams,
            bandwidth_limit: self.bandwidth_limit.map(|b| b.to_string()),
        }
    }
}

/// [`Scope`] in `/api/stats`.
#[derive(Debug, Serialize)]
pub(crate) struct ScopeView {
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_ports: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_names: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_domains: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_subdomains: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_visit: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_proxies: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_streams: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bandwidth_limit: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tunnel_proto::{HttpRoute, ProxyKind};

    fn patterns(p: &[&str]) -> Option<Patterns> {
        Some(Patterns::new(p.iter().map(|s| (*s).to_owned())))
    }

    fn proxy(name: &str, port: Option<u16>, domains: &[&str], sub: Option<&str>) -> ProxySpec {
        let http = (!domains.is_empty() || sub.is_some()).then(|| HttpRoute {
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            subdomain: sub.map(Into::into),
            ..HttpRoute::default()
        });
        ProxySpec {
            name: name.into(),
            kind: if http.is_some() {
                ProxyKind::Http
            } else {
                ProxyKind::Tcp
            },
            publish_port: port,
            publish_ports: None,
            secret: None,
            allow_visitors: Vec::new(),
            http,
            idle_timeout: None,
            allow_ips: Vec::new(),
            deny_ips: Vec::new(),
            bandwidth_limit: None,
            group: None,
            group_key: None,
        }
    }

    fn team_a() -> Scope {
        Scope {
            allow_ports: Some(
                ["6000-6010", "7000"]
                    .iter()
                    .map(|s| s.parse().unwrap())
                    .collect(),
            ),
            allow_names: patterns(&["app-*", "db"]),
            allow_domains: patterns(&["*.team-a.example.com"]),
            allow_subdomains: patterns(&["team-a-*"]),
            allow_visit: patterns(&["shared-*", "team-b/api"]),
            max_proxies: Some(2),
            ..Scope::default()
        }
    }

    #[test]
    fn an_empty_scope_allows_what_the_server_allows() {
        let s = Scope::default();
        assert!(s
            .check_proxy(&proxy("anything", Some(9999), &["x.org"], Some("y")))
            .is_ok());
        assert!(s.check_visit("anyone", "anything").is_ok());
        assert!(s.check_count(10_000).is_ok());
    }

    #[test]
    fn names_ports_domains_and_subdomains_are_checked_each_by_its_key() {
        let s = team_a();
        assert!(s
            .check_proxy(&proxy("app-web", Some(6005), &[], None))
            .is_ok());
        assert!(
            s.check_proxy(&proxy("DB", Some(7000), &[], None)).is_ok(),
            "case-blind"
        );
        let field = |p: ProxySpec| s.check_proxy(&p).unwrap_err();
        let e = field(proxy("web", Some(6005), &[], None));
        assert_eq!(e.field, "name");
        assert!(
            e.message.contains("allow_names: \"app-*\", \"db\""),
            "{}",
            e.message
        );
        let e = field(proxy("app-web", Some(6011), &[], None));
        assert_eq!(e.field, "publish_port");
        assert!(
            e.message.contains("allow_ports: 6000-6010, 7000"),
            "{}",
            e.message
        );
        assert!(s
            .check_proxy(&proxy("app-x", None, &["www.team-a.example.com"], None))
            .is_ok());
        assert!(s
            .check_proxy(&proxy("app-x", None, &["*.team-a.example.com"], None))
            .is_ok());
        let e = field(proxy("app-x", None, &["www.team-b.example.com"], None));
        assert_eq!(e.field, "domains");
        assert!(e.message.contains("allow_domains"), "{}", e.message);
        // A wider wildcard is not inside the narrower one.
        assert!(s
            .check_proxy(&proxy("app-x", None, &["*.example.com"], None))
            .is_err());
        assert!(s
            .check_proxy(&proxy("app-x", None, &[], Some("team-a-blog")))
            .is_ok());
        let e = field(proxy("app-x", None, &[], Some("blog")));
        assert_eq!(e.field, "subdomain");
        assert!(e.message.contains("allow_subdomains"), "{}", e.message);
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        let s = Scope {
            allow_names: patterns(&[]),
            ..Scope::default()
        };
        let e = s.check_proxy(&proxy("web", None, &[], None)).unwrap_err();
        assert!(e.message.contains("allow_names: none"), "{}", e.message);
    }

    #[test]
    fn visits_match_the_proxy_name_or_owner_slash_name() {
        let s = team_a();
        assert!(s.check_visit("team-c", "shared-db").is_ok());
        assert!(s.check_visit("team-b", "api").is_ok());
        let e = s.check_visit("team-c", "api").unwrap_err().to_string();
        assert!(e.contains("allow_visit"), "{e}");
        assert!(
            e.starts_with("proxy \"api\" is outside this client's scope (allow_visit: ")
                && e.ends_with(
                    ", in the server's clients_file); ask the server's operator to widen it, \
                     or pick one it allows"
                ),
            "{e}"
        );
        assert!(s.check_visit("team-b", "db").is_err());
        // Owner unknown (a proxy on another server of a cluster): only name patterns match.
        assert!(s.check_visit("", "shared-db").is_ok());
        assert!(s.check_visit("", "api").is_err());
    }

    #[test]
    fn max_proxies_counts_the_whole_request() {
        let s = team_a();
        assert!(s.check_count(2).is_ok());
        assert_eq!(
            s.check_count(3).unwrap_err().to_string(),
            "3 proxies and visitors, but this client may register 2 (max_proxies in the \
             server's clients_file)"
        );
    }
}
