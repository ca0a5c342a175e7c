//! Registration: what a client asks the server to publish, and the per-item answer.
//!
//! These travel as JSON inside [`Message::Register`](crate::Message::Register) and
//! [`Message::RegisterReply`](crate::Message::RegisterReply). Unknown fields are refused
//! rather than ignored: a typo in a client's config should fail loudly at registration,
//! not silently publish something other than what the user meant.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ProtoError;

/// Everything a client wants published in one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Local services to expose through the server.
    #[serde(default)]
    pub proxies: Vec<ProxySpec>,
    /// Other clients' proxies this client wants to reach.
    #[serde(default)]
    pub visitors: Vec<VisitorSpec>,
}

/// One service to expose.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    /// Unique within the client; see [`validate_name`].
    pub name: String,
    /// How the server routes users to it.
    #[serde(rename = "type")]
    pub kind: ProxyKind,
    /// Port the server listens on for it; `None` for proxies reached only by visitors or by
    /// HTTP host routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_port: Option<u16>,
    /// A port the server chooses, or a block of ports (see [`crate::publish`]); `None`:
    /// `publish_port` alone says where to publish. Set, `publish_port` is unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_ports: Option<crate::PortRequest>,
    /// Secret a visitor must present; never printed by `Debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Client ids allowed to visit; empty means none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_visitors: Vec<String>,
    /// Virtual-host routing and basic auth of an `http`/`http2` proxy, which the server
    /// enforces. Client-only settings (headers, host rewrite, PROXY protocol) never travel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpRoute>,
    /// Seconds a public connection (a publish port or a virtual-host upgrade) may stay idle,
    /// in both directions, before the server closes it: an idle user must not hold one of the
    /// client's stream slots forever. `Some(0)` turns it off (long-lived protocols); `None`
    /// leaves the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// User addresses allowed in (CIDRs or addresses, see [`IpFilter`](crate::IpFilter));
    /// empty means all. The server checks them before it opens a stream, so the client's
    /// users cannot get around them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_ips: Vec<String>,
    /// User addresses refused, even when `allow_ips` lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_ips: Vec<String>,
    /// Bytes per second each direction of the proxy's connections may move together; the
    /// server enforces it (and may lower it, never raise it). `None`: no limit of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_limit: Option<u64>,
    /// Load-balancing group: proxies of any clients with the same `group` and `group_key`
    /// share one `publish_port` (or the same domains), and the server spreads users over them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The secret that lets a proxy join `group`; set by its first member, compared in
    /// constant time, never printed by `Debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_key: Option<String>,
}

/// Where the server's HTTP virtual host sends requests, and who may send them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HttpRoute {
    /// Host names, exact (`app.example.com`) or wildcard (`*.example.com`, any depth).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    /// Claims `<subdomain>.<subdomain_host>` of the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    /// Path prefixes within those hosts; empty means `["/"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
    /// Basic-auth user the server requires (with `http_password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_user: Option<String>,
    /// Basic-auth password; never printed by `Debug`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_password: Option<String>,
}

// Manual so that logging a registration never leaks the password.
impl fmt::Debug for HttpRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRoute")
            .field("domains", &self.domains)
            .field("subdomain", &self.subdomain)
            .field("locations", &self.locations)
            .field("http_user", &self.http_user)
            .field("http_password", &self.http_password.as_ref().map(|_| "***"))
            .finish()
    }
}

// Manual so that logging a registration never leaks a secret.
impl ProxySpec {
    /// A proxy `name` of `kind` with nothing else set: private, no rules, no limits. Set the
    /// fields that matter with struct update syntax:
    ///
    /// ```
    /// use tunnel_proto::{ProxyKind, ProxySpec};
    /// let web = ProxySpec {
    ///     publish_port: Some(8080),
    ///     ..ProxySpec::new("web", ProxyKind::Tcp)
    /// };
    /// assert_eq!((web.name.as_str(), web.secret), ("web", None));
    /// ```
    pub fn new(name: impl Into<String>, kind: ProxyKind) -> Self {
        Self {
            name: name.into(),
            kind,
            publish_port: None,
            publish_ports: None,
            secret: None,
            allow_visitors: Vec::new(),
            http: None,
            idle_timeout: None,
            allow_ips: Vec::new(),
            deny_ips: Vec::new(),
            bandwidth_limit: None,
            group: None,
            group_key: None,
        }
    }
}

impl fmt::Debug for ProxySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySpec")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("publish_port", &self.publish_port)
            .field("publish_ports", &self.publish_ports)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("allow_visitors", &self.allow_visitors)
            .field("http", &self.http)
            .field("idle_timeout", &self.idle_timeout)
            .field("allow_ips", &self.allow_ips)
            .field("deny_ips", &self.deny_ips)
            .field("bandwidth_limit", &self.bandwidth_limit)
            .field("group", &self.group)
            .field("group_key", &self.group_key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Protocol a proxy carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    /// Raw TCP.
    Tcp,
    /// HTTP/1.1.
    Http,
    /// HTTP/2.
    Http2,
    /// UDP: each user address is a flow of datagrams (see [`crate::datagram`]).
    Udp,
    /// TLS routed by the ClientHello's server name (SNI) and passed through undecrypted: the
    /// user's TLS session ends at the client's local service. Claims `domains` or
    /// `subdomain` like `http` (in a namespace of its own), never locations or basic auth.
    Https,
}

impl fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
            Self::Http2 => "http2",
            Self::Udp => "udp",
            Self::Https => "https",
        })
    }
}

/// A local entry point into another client's proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisitorSpec {
    /// Unique within the client; see [`validate_name`].
    pub name: String,
    /// Name of the proxy to reach.
    pub proxy: String,
    /// Local port the visitor listens on (0 when the client picks).
    #[serde(default)]
    pub publish_port: u16,
}

/// The server's answer: one result per requested item, in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RegisterReply {
    /// One entry per proxy and visitor of the request.
    pub results: Vec<ItemResult>,
}

/// Outcome for one proxy or visitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemResult {
    /// Whether `name` refers to a proxy or a visitor.
    pub kind: ItemKind,
    /// The item's name as requested.
    pub name: String,
    /// `None` on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<FieldError>,
    /// The port the proxy was published on when the server chose it (`publish_ports =
    /// "auto"`), or the first port of a block; `None` otherwise, so that older clients,
    /// which never ask for either, see no new field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Which list of the request an [`ItemResult`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemKind {
    /// An entry of [`RegisterRequest::proxies`].
    Proxy,
    /// An entry of [`RegisterRequest::visitors`].
    Visitor,
}

/// Why one item was refused, pointing at the offending field so the user can fix the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldError {
    /// Config field at fault, e.g. `publish_port`.
    pub field: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Longest accepted proxy or visitor name.
pub const MAX_NAME: usize = 64;

/// Checks a proxy or visitor name: 1..=64 characters of `[A-Za-z0-9_.-]`.
///
/// Names end up in logs, metrics labels and HTTP routing, so they are kept to a set that
/// needs no escaping anywhere.
///
/// # Errors
///
/// [`ProtoError::EmptyName`], [`ProtoError::NameCharacter`] or [`ProtoError::NameTooLong`]:
/// its text says what is wrong and restates the rule.
///
/// ```
/// use tunnel_proto::{validate_name, ProtoError};
///
/// assert!(validate_name("web-1").is_ok());
/// match validate_name("my proxy") {
///     Err(ProtoError::NameCharacter { bad }) => assert_eq!(bad, ' '),
///     other => panic!("expected a bad character, got {other:?}"),
/// }
/// ```
pub fn validate_name(name: &str) -> Result<(), ProtoError> {
    if name.is_empty() {
        return Err(ProtoError::EmptyName);
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(ProtoError::NameCharacter { bad });
    }
    // All ASCII by now, so bytes == characters.
    if name.len() > MAX_NAME {
        return Err(ProtoError::NameTooLong { len: name.len() });
    }
    Ok(())
}
