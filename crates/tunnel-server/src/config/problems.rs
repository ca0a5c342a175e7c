//! Every problem with a server configuration, found at once: each names its field and the fix.

use super::*;

impl ServerConfig {
    /// Mutual TLS settings that cannot work: see [`ServerConfig::require_client_cert`].
    fn client_cert_problems(&self, out: &mut Vec<ConfigProblem>) {
        if !self.require_client_cert {
            return;
        }
        let Some(ca) = &self.client_ca else {
            return out.push(ConfigProblem::new(
                "require_client_cert",
                "needs client_ca: the PEM file of the CA that issues client certificates",
            ));
        };
        if self.ws_bind.is_some() {
            out.push(ConfigProblem::new(
                "require_client_cert",
                "cannot be combined with ws_bind: TLS ends at the proxy in front of ws_bind, \
                 so no client there can present a certificate; remove ws_bind (clients use \
                 wss on bind instead) or set require_client_cert = false",
            ));
        }
        // Without it the server could serve nobody: refuse to start rather than warn.
        let auth = tunnel_transport::ClientAuth {
            ca: ca.clone(),
            require_at_tls: false,
        };
        if let Err(e) = auth.check() {
            out.push(ConfigProblem::new("client_ca", e.to_string()));
        }
    }

    /// Every problem with this configuration, TLS files included (they are loaded).
    /// An empty list means the server can start.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if let Err(p) = self.shared_key() {
            out.push(p);
        }
        match self.identity_source() {
            Ok(src @ ServerIdentitySource::Pem { .. }) => {
                if let Err(e) = ServerIdentity::load(&src) {
                    out.push(ConfigProblem::new("tls_cert", e.to_string()));
                }
            }
            Ok(_) => {}
            Err(p) => out.push(p),
        }
        if let Err(m) = tunnel_transport::check_ws_path(&self.ws_path) {
            out.push(ConfigProblem::new("ws_path", m));
        }
        self.client_cert_problems(&mut out);
        if self.ws_bind == Some(self.bind) && self.bind.port() != 0 {
            out.push(ConfigProblem::new(
                "ws_bind",
                "must differ from bind: bind already serves wss; ws_bind is the plain-HTTP \
                 port for a TLS-terminating proxy",
            ));
        }
        if let Some(v) = self.vhost_http_bind {
            if v.port() != 0 && (v == self.bind || Some(v) == self.ws_bind) {
                out.push(ConfigProblem::new(
                    "vhost_http_bind",
                    "must differ from bind and ws_bind: it is the public HTTP port",
                ));
            }
        }
        if let Some(v) = self.vhost_https_bind {
            let taken = [Some(self.bind), self.ws_bind, self.vhost_http_bind];
            if v.port() != 0 && taken.contains(&Some(v)) {
                out.push(ConfigProblem::new(
                    "vhost_https_bind",
                    "must differ from bind, ws_bind and vhost_http_bind: it is the public \
                     HTTPS port",
                ));
            }
        }
        if let Some(host) = &self.subdomain_host {
            if crate::routes::normalize_domain(host).map_or(true, |h| h.starts_with('*')) {
                out.push(ConfigProblem::new(
                    "subdomain_host",
                    format!("{host:?} is not a host name: use e.g. \"tunnel.example.com\""),
                ));
            } else if self.vhost_http_bind.is_none() && self.vhost_https_bind.is_none() {
                out.push(ConfigProblem::new(
                    "subdomain_host",
                    "needs vhost_http_bind or vhost_https_bind: subdomains are served on the \
                     virtual hosts",
                ));
            }
        }
        out.extend(self.admin().problems());
        if self.handshake_timeout == 0 {
            out.push(ConfigProblem::new(
                "handshake_timeout",
                "must be at least 1 (seconds)",
            ));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_timeout <= self.heartbeat_interval {
            out.push(ConfigProblem::new(
                "heartbeat_timeout",
                "must be longer than heartbeat_interval (both in seconds, at least 1)",
            ));
        }
        if self
            .session_threads
            .is_some_and(|n| n > MAX_SESSION_THREADS)
        {
            out.push(ConfigProblem::new(
                "session_threads",
                format!(
                    "must be at most {MAX_SESSION_THREADS} (one per core is plenty; leave it \
                     unset for that)"
                ),
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_frame_size) {
            out.push(ConfigProblem::new(
                "max_frame_size",
                "must be between 1024 and 16777216 bytes",
            ));
        }
        for (field, v) in [
            ("max_clients", self.max_clients),
            ("max_pending_handshakes", self.max_pending_handshakes),
            ("max_proxies_per_client", self.max_proxies_per_client),
            ("max_streams_per_client", self.max_streams_per_client),
            (
                "max_connections_per_client",
                self.max_connections_per_client,
            ),
            (
                "max_stream_headers_per_client",
                self.max_stream_headers_per_client,
            ),
            ("max_stream_headers", self.max_stream_headers),
        ] {
            if v == 0 {
                out.push(ConfigProblem::new(field, "must be at least 1"));
            }
        }
        out.extend(self.route_cap_problems());
        self.vhost_problems(&mut out);
        out.extend(self.admission_problems());
        out.extend(self.cluster_problems());
        out
    }

    /// The `[cluster]` table's problems, with the client key it must differ from, and
    /// whether this build can talk to its backend.
    fn cluster_problems(&self) -> Vec<ConfigProblem> {
        let Some(c) = self.cluster.as_ref().filter(|c| c.enabled()) else {
            return Vec::new();
        };
        let mut out = c.problems_with(self.resolve_auth_key().ok().as_deref());
        if c.backend == tunnel_cluster::Backend::Etcd && !cfg!(feature = "etcd") {
            out.push(ConfigProblem::new(
                "cluster.backend",
                "this build has no etcd support: build with `cargo build --release --features etcd`",
            ));
        }
        out
    }

    fn route_cap_problems(&self) -> Vec<ConfigProblem> {
        [
            ("max_domains_per_proxy", self.max_domains_per_proxy),
            ("max_locations_per_proxy", self.max_locations_per_proxy),
            ("max_routes_per_client", self.max_routes_per_client),
        ]
        .into_iter()
        .filter(|(_, v)| *v == 0)
        .map(|(field, _)| {
            ConfigProblem::new(
                field,
                "must be at least 1: it caps what one client may claim on the virtual host",
            )
        })
        .collect()
    }

    /// Problems with the virtual host's limits and `trusted_proxies`.
    fn vhost_problems(&self, out: &mut Vec<ConfigProblem>) {
        for (field, v) in [
            ("vhost_first_byte_timeout", self.vhost_first_byte_timeout),
            ("vhost_header_timeout", self.vhost_header_timeout),
        ] {
            if v == 0 {
                out.push(ConfigProblem::new(field, "must be at least 1 (seconds)"));
            }
        }
        if self.vhost_max_header_size < crate::vhost::MIN_HEADER_SIZE {
            out.push(ConfigProblem::new(
                "vhost_max_header_size",
                format!("must be at least {} bytes", crate::vhost::MIN_HEADER_SIZE),
            ));
        }
        if let Err(e) = crate::vhost::TrustedProxies::parse(&self.trusted_proxies) {
            out.push(ConfigProblem::new("trusted_proxies", e.to_string()));
        }
    }

    /// Problems with the pre-authentication limits.
    fn admission_problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if self.pending_handshakes_drop_percent > 100 {
            out.push(ConfigProblem::new(
                "pending_handshakes_drop_percent",
                "is a percentage: 0 to 100",
            ));
        }
        if self.first_byte_timeout == 0 {
            out.push(ConfigProblem::new(
                "first_byte_timeout",
                "must be at least 1 (seconds)",
            ));
        }
        if let Err(e) = self.ip_filter() {
            out.push(crate::access::ip_problem(e));
        }
        out
    }
}
