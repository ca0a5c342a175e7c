//! Which settings a reload cannot apply to a running server.

use crate::ServerConfig;

/// The keys of `new` that differ from `old` and only a restart applies: listeners, TLS,
/// the cluster, and the limits sized once at start. The destructuring lists every field
/// without `..`, so a new setting cannot be added without deciding which kind it is.
pub(super) fn needs_restart(old: &ServerConfig, new: &ServerConfig) -> Vec<&'static str> {
    let ServerConfig {
        bind,
        ws_bind,
        ws_path,
        // Live (`rules::apply`): the shared key, the clients file's contents, and the rules.
        auth_key: _,
        auth_key_file: _,
        clients_file,
        log_format,
        tls_cert,
        tls_key,
        tls_names,
        client_ca,
        require_client_cert,
        state_dir,
        stats_bind,
        stats_token,
        allow_ports: _,
        publish_addr,
        vhost_http_bind,
        vhost_https_bind,
        subdomain_host,
        handshake_timeout,
        max_clients,
        max_pending_handshakes,
        max_proxies_per_client: _,
        max_ports_per_client,
        max_streams_per_client: _,
        max_connections_per_client,
        max_frame_size,
        session_threads,
        heartbeat_interval,
        heartbeat_timeout,
        shutdown_grace,
        max_domains_per_proxy,
        max_locations_per_proxy,
        max_routes_per_client,
        max_conns_per_source,
        max_stream_headers_per_client,
        max_stream_headers,
        vhost_max_conns,
        vhost_max_conns_per_source,
        vhost_first_byte_timeout,
        vhost_header_timeout,
        vhost_max_header_size,
        trusted_proxies,
        allow_ips: _,
        deny_ips: _,
        bandwidth_limit: _,
        pending_handshakes_per_source,
        pending_handshakes_drop_from,
        pending_handshakes_drop_percent,
        first_byte_timeout,
        max_auth_failures_per_second,
        cluster,
    } = new;
    let mut out = Vec::new();
    let mut check = |name: &'static str, same: bool| {
        if !same {
            out.push(name);
        }
    };
    check("bind", *bind == old.bind);
    check("ws_bind", *ws_bind == old.ws_bind);
    check("ws_path", *ws_path == old.ws_path);
    check("clients_file", *clients_file == old.clients_file);
    check("log_format", *log_format == old.log_format);
    check("tls_cert", *tls_cert == old.tls_cert);
    check("tls_key", *tls_key == old.tls_key);
    check("tls_names", *tls_names == old.tls_names);
    check("client_ca", *client_ca == old.client_ca);
    check(
        "require_client_cert",
        *require_client_cert == old.require_client_cert,
    );
    check("state_dir", *state_dir == old.state_dir);
    check("stats_bind", *stats_bind == old.stats_bind);
    check("stats_token", *stats_token == old.stats_token);
    check("publish_addr", *publish_addr == old.publish_addr);
    check("vhost_http_bind", *vhost_http_bind == old.vhost_http_bind);
    check(
        "vhost_https_bind",
        *vhost_https_bind == old.vhost_https_bind,
    );
    check("subdomain_host", *subdomain_host == old.subdomain_host);
    check(
        "handshake_timeout",
        *handshake_timeout == old.handshake_timeout,
    );
    check("max_clients", *max_clients == old.max_clients);
    check(
        "max_ports_per_client",
        *max_ports_per_client == old.max_ports_per_client,
    );
    check(
        "max_pending_handshakes",
        *max_pending_handshakes == old.max_pending_handshakes,
    );
    check(
        "max_connections_per_client",
        *max_connections_per_client == old.max_connections_per_client,
    );
    check("max_frame_size", *max_frame_size == old.max_frame_size);
    check("session_threads", *session_threads == old.session_threads);
    check(
        "heartbeat_interval",
        *heartbeat_interval == old.heartbeat_interval,
    );
    check(
        "heartbeat_timeout",
        *heartbeat_timeout == old.heartbeat_timeout,
    );
    check("shutdown_grace", *shutdown_grace == old.shutdown_grace);
    check(
        "max_domains_per_proxy",
        *max_domains_per_proxy == old.max_domains_per_proxy,
    );
    check(
        "max_locations_per_proxy",
        *max_locations_per_proxy == old.max_locations_per_proxy,
    );
    check(
        "max_routes_per_client",
        *max_routes_per_client == old.max_routes_per_client,
    );
    check(
        "max_conns_per_source",
        *max_conns_per_source == old.max_conns_per_source,
    );
    check(
        "max_stream_headers_per_client",
        *max_stream_headers_per_client == old.max_stream_headers_per_client,
    );
    check(
        "max_stream_headers",
        *max_stream_headers == old.max_stream_headers,
    );
    check("vhost_max_conns", *vhost_max_conns == old.vhost_max_conns);
    check(
        "vhost_max_conns_per_source",
        *vhost_max_conns_per_source == old.vhost_max_conns_per_source,
    );
    check(
        "vhost_first_byte_timeout",
        *vhost_first_byte_timeout == old.vhost_first_byte_timeout,
    );
    check(
        "vhost_header_timeout",
        *vhost_header_timeout == old.vhost_header_timeout,
    );
    check(
        "vhost_max_header_size",
        *vhost_max_header_size == old.vhost_max_header_size,
    );
    check("trusted_proxies", *trusted_proxies == old.trusted_proxies);
    check(
        "pending_handshakes_per_source",
        *pending_handshakes_per_source == old.pending_handshakes_per_source,
    );
    check(
        "pending_handshakes_drop_from",
        *pending_handshakes_drop_from == old.pending_handshakes_drop_from,
    );
    check(
        "pending_handshakes_drop_percent",
        *pending_handshakes_drop_percent == old.pending_handshakes_drop_percent,
    );
    check(
        "first_byte_timeout",
        *first_byte_timeout == old.first_byte_timeout,
    );
    check(
        "max_auth_failures_per_second",
        *max_auth_failures_per_second == old.max_auth_failures_per_second,
    );
    check("cluster", *cluster == old.cluster);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_settings_fixed_at_start_are_named() {
        let old = ServerConfig::default();
        let live = ServerConfig::default()
            .with_auth_key("another key entirely")
            .with_deny_ips(&["10.0.0.0/8"])
            .with_max_proxies_per_client(3);
        assert!(needs_restart(&old, &live).is_empty());
        let fixed = ServerConfig::default()
            .with_bind("127.0.0.1:1".parse().unwrap_or(old.bind))
            .with_max_clients(7);
        assert_eq!(needs_restart(&old, &fixed), ["bind", "max_clients"]);
    }
}
