//! The HTTP settings of a proxy (`type = "http"` / `"http2"`) and their validation.
//!
//! They sit flat in the `[[proxies]]` table next to `name` and `local_addr`, as in frp.
//! Routing and auth settings (`domains`, `subdomain`, `locations`, `http_user`,
//! `http_password`) are sent to the server, which enforces them; everything else
//! (`host_rewrite`, headers, limits, `local_tls`) stays on this client.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use tunnel_proto::ProxyKind;

use crate::config::ProxyConfig;
use crate::error::ConfigProblem;

/// Default for `max_local_conns`.
pub const DEFAULT_MAX_LOCAL_CONNS: usize = 16;
/// Default for `max_header_size`, in bytes.
pub const DEFAULT_MAX_HEADER_SIZE: usize = 32 * 1024;
/// hyper cannot parse with a smaller buffer.
const MIN_HEADER_SIZE: usize = 8 * 1024;

/// HTTP settings of one proxy. Every key is optional.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpOptions {
    /// The `Host` header the local service sees (default: the user's).
    #[serde(default)]
    pub host_rewrite: Option<String>,
    /// Request headers set (or replaced) before the request reaches the local service.
    #[serde(default)]
    pub request_headers: BTreeMap<String, String>,
    /// Response headers set (or replaced) before the response reaches the user.
    #[serde(default)]
    pub response_headers: BTreeMap<String, String>,
    /// On the public port: append the user's address to `X-Forwarded-For` and set
    /// `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Real-IP` and `Forwarded`, replacing what
    /// the user sent (requests from the server's virtual host arrive with these set by the
    /// server, and keep them). Default true.
    #[serde(default = "yes")]
    pub forwarded_headers: bool,
    /// `http2` only: speak TLS 1.3 (ALPN h2) to `local_addr` instead of prior-knowledge h2c.
    /// The certificate is checked against the host of `local_addr` with the system roots, or
    /// `local_ca_cert`; `local_tls_insecure` skips the check (a self-signed local service).
    #[serde(default)]
    pub local_tls: bool,
    /// PEM CA bundle that signed the local service's certificate (with `local_tls`).
    #[serde(default)]
    pub local_ca_cert: Option<std::path::PathBuf>,
    /// Accept any certificate from the local service (with `local_tls`).
    #[serde(default)]
    pub local_tls_insecure: bool,
    /// `http`: most connections to `local_addr` open at once; requests beyond it wait for a
    /// free one. Default 16.
    #[serde(default = "default_max_local_conns")]
    pub max_local_conns: usize,
    /// Largest request head (request line + headers) accepted from a user, in bytes. Default
    /// 32768, at least 8192.
    #[serde(default = "default_max_header_size")]
    pub max_header_size: usize,
    /// Seconds an idle keep-alive connection (user side or local side) is kept. Default 60.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: u64,
    /// Seconds the local service has to start answering before the user gets a 504.
    /// Default 60.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: u64,
    /// Host names the server routes to this proxy (`vhost_http_bind`); `*.example.com`
    /// matches any depth of sub-domain.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Claims `<subdomain>.<server's subdomain_host>`.
    #[serde(default)]
    pub subdomain: Option<String>,
    /// Path prefixes of the host(s) this proxy serves (longest match wins). Default `["/"]`.
    #[serde(default)]
    pub locations: Vec<String>,
    /// With `http_password`: users must send these basic-auth credentials (checked by the
    /// server).
    #[serde(default)]
    pub http_user: Option<String>,
    /// See `http_user`. Never printed by `Debug`.
    #[serde(default)]
    pub http_password: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_max_local_conns() -> usize {
    DEFAULT_MAX_LOCAL_CONNS
}
fn default_max_header_size() -> usize {
    DEFAULT_MAX_HEADER_SIZE
}
fn default_idle_timeout() -> u64 {
    60
}
fn default_response_timeout() -> u64 {
    60
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            host_rewrite: None,
            request_headers: BTreeMap::new(),
            response_headers: BTreeMap::new(),
            forwarded_headers: true,
            local_tls: false,
            local_ca_cert: None,
            local_tls_insecure: false,
            max_local_conns: DEFAULT_MAX_LOCAL_CONNS,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            idle_timeout: default_idle_timeout(),
            response_timeout: default_response_timeout(),
            domains: Vec::new(),
            subdomain: None,
            locations: Vec::new(),
            http_user: None,
            http_password: None,
        }
    }
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpOptions")
            .field("host_rewrite", &self.host_rewrite)
            .field("request_headers", &self.request_headers)
            .field("response_headers", &self.response_headers)
            .field("domains", &self.domains)
            .field("subdomain", &self.subdomain)
            .field("locations", &self.locations)
            .field("http_user", &self.http_user)
            .field("http_password", &self.http_password.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl HttpOptions {
    /// What the server needs to route and guard this proxy; `None` for a `tcp` proxy.
    pub(crate) fn route(&self, kind: ProxyKind) -> Option<tunnel_proto::HttpRoute> {
        (kind != ProxyKind::Tcp).then(|| tunnel_proto::HttpRoute {
            domains: self.domains.clone(),
            subdomain: self.subdomain.clone(),
            locations: self.locations.clone(),
            http_user: self.http_user.clone(),
            http_password: self.http_password.clone(),
        })
    }

    pub(crate) fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_timeout)
    }

    pub(crate) fn response_timeout(&self) -> Duration {
        Duration::from_secs(self.response_timeout)
    }
}

impl ProxyConfig {
    /// An HTTP/1.1 proxy for `local_addr`: requests are parsed and sent over a pool of
    /// keep-alive connections.
    pub fn http(name: &str, local_addr: &str, publish_port: Option<u16>) -> Self {
        let mut p = ProxyConfig::tcp(name, local_addr, publish_port);
        p.kind = ProxyKind::Http;
        p
    }

    /// An HTTP/2 proxy: every request travels over one h2c connection to `local_addr`.
    pub fn http2(name: &str, local_addr: &str, publish_port: Option<u16>) -> Self {
        let mut p = ProxyConfig::tcp(name, local_addr, publish_port);
        p.kind = ProxyKind::Http2;
        p
    }

    /// Send a PROXY protocol header first on every local connection.
    pub fn with_proxy_protocol(mut self, v: tunnel_proto::proxy_protocol::Version) -> Self {
        self.proxy_protocol = Some(v);
        self
    }

    /// Change the HTTP settings in place.
    pub fn with_http(mut self, f: impl FnOnce(&mut HttpOptions)) -> Self {
        f(&mut self.http);
        self
    }
}

/// Problems with proxy `i`'s type and HTTP settings, appended to `out`.
pub(crate) fn problems(p: &ProxyConfig, i: usize, out: &mut Vec<ConfigProblem>) {
    let at = |f: &str| format!("proxies[{i}].{f}");
    let h = &p.http;
    let is_http = matches!(p.kind, ProxyKind::Http | ProxyKind::Http2);
    if p.proxy_protocol.is_some() && p.kind == ProxyKind::Http2 {
        out.push(ConfigProblem::new(
            at("proxy_protocol"),
            "not available for type = \"http2\" (one local connection carries many users); \
             use X-Forwarded-For, or type = \"http\"",
        ));
    }
    if !is_http {
        let set = [
            ("host_rewrite", h.host_rewrite.is_some()),
            ("request_headers", !h.request_headers.is_empty()),
            ("response_headers", !h.response_headers.is_empty()),
            ("local_tls", h.local_tls),
            ("domains", !h.domains.is_empty()),
            ("subdomain", h.subdomain.is_some()),
            ("locations", !h.locations.is_empty()),
            ("http_user", h.http_user.is_some()),
            ("http_password", h.http_password.is_some()),
        ];
        for (field, _) in set.iter().filter(|(_, on)| *on) {
            out.push(ConfigProblem::new(
                at(field),
                "only applies to type = \"http\" or \"http2\"; set the type or remove it",
            ));
        }
        return;
    }
    if h.local_tls && p.kind != ProxyKind::Http2 {
        out.push(ConfigProblem::new(
            at("local_tls"),
            "only applies to type = \"http2\" (an http proxy's service speaks plain HTTP/1.1)",
        ));
    }
    if !h.local_tls && (h.local_ca_cert.is_some() || h.local_tls_insecure) {
        out.push(ConfigProblem::new(
            at("local_tls"),
            "local_ca_cert / local_tls_insecure need local_tls = true",
        ));
    }
    if h.local_tls && p.kind == ProxyKind::Http2 && h.local_ca_cert.is_some() {
        if let Err(e) = build_local_tls(p) {
            out.push(ConfigProblem::new(at("local_ca_cert"), e.to_string()));
        }
    }
    if h.local_ca_cert.is_some() && h.local_tls_insecure {
        out.push(ConfigProblem::new(
            at("local_tls_insecure"),
            "set either local_ca_cert or local_tls_insecure, not both",
        ));
    }
    if h.max_local_conns == 0 {
        out.push(ConfigProblem::new(
            at("max_local_conns"),
            "must be at least 1",
        ));
    }
    if h.max_header_size < MIN_HEADER_SIZE {
        out.push(ConfigProblem::new(
            at("max_header_size"),
            format!("must be at least {MIN_HEADER_SIZE} bytes"),
        ));
    }
    if h.idle_timeout == 0 || h.response_timeout == 0 {
        let field = if h.idle_timeout == 0 {
            "idle_timeout"
        } else {
            "response_timeout"
        };
        out.push(ConfigProblem::new(
            at(field),
            "must be at least 1 (seconds)",
        ));
    }
    for (field, map) in [
        ("request_headers", &h.request_headers),
        ("response_headers", &h.response_headers),
    ] {
        for (k, v) in map {
            let name_ok = http::HeaderName::from_bytes(k.as_bytes()).is_ok();
            if !name_ok || http::HeaderValue::from_str(v).is_err() {
                out.push(ConfigProblem::new(
                    at(field),
                    format!("{k:?} = {v:?} is not a valid HTTP header (name: token characters; value: visible ASCII)"),
                ));
            }
        }
    }
    if let Some(host) = &h.host_rewrite {
        if http::HeaderValue::from_str(host).is_err() || host.is_empty() {
            out.push(ConfigProblem::new(
                at("host_rewrite"),
                format!(
                    "{host:?} is not a host name (e.g. \"app.internal\" or \"app.internal:8080\")"
                ),
            ));
        }
    }
    if h.http_user.is_some() != h.http_password.is_some() {
        out.push(ConfigProblem::new(
            at("http_password"),
            "set both http_user and http_password, or neither",
        ));
    }
}

/// The TLS client for an `http2` proxy with `local_tls`, or `None` for h2c. A failure (an
/// unreadable CA file) is reported by `problems` first; here it is logged and the proxy
/// answers 502 until the config is fixed.
pub(crate) fn local_tls(p: &ProxyConfig) -> Option<std::sync::Arc<tunnel_transport::LocalTls>> {
    if !p.http.local_tls {
        return None;
    }
    match build_local_tls(p) {
        Ok(t) => Some(std::sync::Arc::new(t)),
        Err(e) => {
            tracing::error!(proxy = %p.name, "local_tls: {e}");
            None
        }
    }
}

fn build_local_tls(
    p: &ProxyConfig,
) -> Result<tunnel_transport::LocalTls, tunnel_transport::TransportError> {
    let trust = match (&p.http.local_ca_cert, p.http.local_tls_insecure) {
        (Some(ca), _) => tunnel_transport::ClientTrust::CaFile(ca.clone()),
        (None, true) => tunnel_transport::ClientTrust::InsecureSkipVerify,
        (None, false) => tunnel_transport::ClientTrust::SystemRoots,
    };
    let host = match p.local_addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => p.local_addr.as_str(),
    };
    tunnel_transport::LocalTls::new(host, &trust, b"h2")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::ClientConfig;

    const BASE: &str = "server_addr = \"example.com:8443\"\nauth_key = \"k\"\n";

    fn parse(proxy: &str) -> ClientConfig {
        ClientConfig::from_toml(&format!(
            "{BASE}[[proxies]]\nname=\"a\"\nlocal_addr=\"127.0.0.1:1\"\n{proxy}"
        ))
        .unwrap()
    }

    #[test]
    fn http_keys_parse_flat_and_unknown_ones_are_named() {
        let c = parse(
            "type=\"http\"\nhost_rewrite=\"in.local\"\nproxy_protocol=\"v2\"\n\
             request_headers={x-a=\"1\"}\nmax_local_conns=4\n",
        );
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        assert_eq!(c.proxies[0].http.max_local_conns, 4);
        assert_eq!(c.proxies[0].http.request_headers["x-a"], "1");
        let e = ClientConfig::from_toml(&format!(
            "{BASE}[[proxies]]\nname=\"a\"\nlocal_addr=\"127.0.0.1:1\"\nhost_rewrit=\"x\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("host_rewrit"), "{e}");
    }

    #[test]
    fn http_keys_on_a_tcp_proxy_are_problems_naming_the_field() {
        let c = parse("host_rewrite=\"x\"\n");
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["proxies[0].host_rewrite"]);
    }

    #[test]
    fn bad_values_are_named() {
        let c = parse(
            "type=\"http2\"\nproxy_protocol=\"v1\"\nmax_local_conns=0\n\
             request_headers={\"bad name\"=\"v\"}\nhttp_user=\"u\"\n",
        );
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(
            fields,
            [
                "proxies[0].proxy_protocol",
                "proxies[0].max_local_conns",
                "proxies[0].request_headers",
                "proxies[0].http_password"
            ]
        );
    }

    #[test]
    fn debug_hides_the_password() {
        let c = parse("type=\"http\"\nhttp_user=\"u\"\nhttp_password=\"pw-secret\"\n");
        assert!(!format!("{c:?}").contains("pw-secret"));
    }
}
