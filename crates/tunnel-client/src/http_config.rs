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
pub(crate) const DEFAULT_MAX_LOCAL_CONNS: usize = 16;
/// Default for `max_header_size`, in bytes.
pub(crate) const DEFAULT_MAX_HEADER_SIZE: usize = 32 * 1024;
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
    /// Every proxy type: seconds a public connection may move no byte in either direction
    /// before the server closes it, so that idle users cannot hold the client's streams
    /// (`max_streams_per_client` on the server) forever. A transfer in one direction alone
    /// is not idle. Default 300 for `tcp`, 60 for `http`/`http2` (where it is also how long
    /// an idle keep-alive connection, user side or local side, is kept); 0 turns the
    /// server's idle close off, for long-lived quiet protocols (an `http` proxy then keeps
    /// idle keep-alive connections 60 s).
    #[serde(default)]
    pub idle_timeout: Option<u64>,
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
/// Seconds an `http`/`http2` connection may idle when `idle_timeout` is not set.
const DEFAULT_HTTP_IDLE: u64 = 60;
/// Seconds a `tcp` public connection may idle when `idle_timeout` is not set: longer than
/// any keep-alive a browser or HTTP client holds, short enough that idle connections do not
/// pile up.
const DEFAULT_TCP_IDLE: u64 = 300;
/// Largest `idle_timeout` accepted (a week); 0 is the way to say "never".
const MAX_IDLE: u64 = 7 * 86_400;
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
            idle_timeout: None,
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
        (!matches!(kind, ProxyKind::Tcp | ProxyKind::Udp)).then(|| tunnel_proto::HttpRoute {
            domains: self.domains.clone(),
            subdomain: self.subdomain.clone(),
            locations: self.locations.clone(),
            http_user: self.http_user.clone(),
            http_password: self.http_password.clone(),
        })
    }

    /// How long an idle keep-alive connection is kept by the client's HTTP proxies.
    pub(crate) fn idle(&self) -> Duration {
        Duration::from_secs(match self.idle_timeout {
            Some(s) if s > 0 => s,
            _ => DEFAULT_HTTP_IDLE,
        })
    }

    /// The `idle_timeout` the server applies to this proxy's public connections (0 = never).
    pub(crate) fn public_idle(&self, kind: ProxyKind) -> u64 {
        self.idle_timeout.unwrap_or(match kind {
            // An https proxy's connections are spliced like a tcp proxy's.
            ProxyKind::Tcp | ProxyKind::Https => DEFAULT_TCP_IDLE,
            _ => DEFAULT_HTTP_IDLE,
        })
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

/// Problems of a `type = "https"` proxy: routed by the TLS server name and passed through
/// undecrypted, it takes `domains` or `subdomain` and none of the settings that need to read
/// or change HTTP.
fn https_problems(p: &ProxyConfig, at: &dyn Fn(&str) -> String, out: &mut Vec<ConfigProblem>) {
    let h = &p.http;
    if h.domains.is_empty() && h.subdomain.is_none() {
        out.push(ConfigProblem::new(
            at("domains"),
            "type = \"https\" needs domains or subdomain: the server routes it by the TLS \
             server name (SNI)",
        ));
    }
    if p.publish_port.is_some() {
        out.push(ConfigProblem::new(
            at("publish_port"),
            "type = \"https\" is reached on the server's vhost_https_bind by its domains; for \
             a TLS service on a port of its own use type = \"tcp\"",
        ));
    }
    for field in http_only_keys_set(h) {
        out.push(ConfigProblem::new(
            at(field),
            "not available for type = \"https\": the TLS passes through undecrypted to \
             local_addr (your TLS service), so nothing can read or change the HTTP inside; \
             remove it, or use type = \"http\"",
        ));
    }
}

/// The keys set in `h` that only an HTTP proxy can honour (it reads and rewrites the HTTP),
/// as neither a `tcp` nor an undecrypted `https` proxy can.
fn http_only_keys_set(h: &HttpOptions) -> impl Iterator<Item = &'static str> {
    [
        ("host_rewrite", h.host_rewrite.is_some()),
        ("request_headers", !h.request_headers.is_empty()),
        ("response_headers", !h.response_headers.is_empty()),
        ("local_tls", h.local_tls),
        ("locations", !h.locations.is_empty()),
        ("http_user", h.http_user.is_some()),
        ("http_password", h.http_password.is_some()),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(field, _)| field)
}

/// Problems with proxy `i`'s type and HTTP settings, appended to `out`.
pub(crate) fn problems(p: &ProxyConfig, i: usize, out: &mut Vec<ConfigProblem>) {
    let at = |f: &str| format!("proxies[{i}].{f}");
    let h = &p.http;
    let is_http = matches!(p.kind, ProxyKind::Http | ProxyKind::Http2);
    if h.idle_timeout.is_some_and(|s| s > MAX_IDLE) {
        out.push(ConfigProblem::new(
            at("idle_timeout"),
            format!("must be at most {MAX_IDLE} seconds (a week); 0 turns the idle close off"),
        ));
    }
    if p.proxy_protocol.is_some() && p.kind == ProxyKind::Http2 {
        out.push(ConfigProblem::new(
            at("proxy_protocol"),
            "not available for type = \"http2\" (one local connection carries many users); \
             use X-Forwarded-For, or type = \"http\"",
        ));
    }
    if p.kind == ProxyKind::Https {
        return https_problems(p, &at, out);
    }
    if !is_http {
        let hosts = [
            ("domains", !h.domains.is_empty()),
            ("subdomain", h.subdomain.is_some()),
        ];
        let hosts = hosts.into_iter().filter(|(_, on)| *on).map(|(f, _)| f);
        for field in http_only_keys_set(h).chain(hosts) {
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
    if h.response_timeout == 0 {
        out.push(ConfigProblem::new(
            at("response_timeout"),
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
    fn idle_timeout_applies_to_every_type_with_a_default_per_type() {
        use tunnel_proto::ProxyKind;
        let tcp = parse("");
        assert_eq!(tcp.proxies[0].spec().idle_timeout, Some(300));
        let http = parse("type=\"http\"\n");
        assert_eq!(http.proxies[0].spec().idle_timeout, Some(60));
        assert_eq!(http.proxies[0].http.idle().as_secs(), 60);
        let off = parse("idle_timeout=0\n");
        assert!(off.problems().is_empty(), "{:?}", off.problems());
        assert_eq!(off.proxies[0].spec().idle_timeout, Some(0));
        let http_off = parse("type=\"http\"\nidle_timeout=0\n");
        assert!(http_off.problems().is_empty());
        assert_eq!(http_off.proxies[0].http.idle().as_secs(), 60);
        assert_eq!(http_off.proxies[0].http.public_idle(ProxyKind::Http), 0);
        let set = parse("type=\"http2\"\nidle_timeout=5\n");
        assert_eq!(set.proxies[0].spec().idle_timeout, Some(5));
        let huge = parse("idle_timeout=99999999\n");
        let fields: Vec<_> = huge.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, ["proxies[0].idle_timeout"]);
    }

    #[test]
    fn debug_hides_the_password() {
        let c = parse("type=\"http\"\nhttp_user=\"u\"\nhttp_password=\"pw-secret\"\n");
        assert!(!format!("{c:?}").contains("pw-secret"));
    }
}
