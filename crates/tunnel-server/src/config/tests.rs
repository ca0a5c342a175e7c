#![allow(clippy::unwrap_used)]
use super::*;

#[test]
fn duration_builders_keep_milliseconds_and_the_file_reads_seconds() {
    let c = ServerConfig::default()
        .with_auth_key("k")
        .with_heartbeat(Duration::from_millis(1500), Duration::from_millis(4500))
        .with_shutdown_grace(Duration::from_millis(250));
    assert_eq!(c.heartbeat_interval, Duration::from_millis(1500));
    assert_eq!(c.heartbeat().timeout, Duration::from_millis(4500));
    assert_eq!(c.shutdown_grace, Duration::from_millis(250));
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    // 1.5 s against 1.2 s: a truncation to whole seconds would have called these equal.
    let c = c.with_heartbeat(Duration::from_millis(1500), Duration::from_millis(1200));
    let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
    assert_eq!(fields, ["heartbeat_timeout"]);

    let c = ServerConfig::from_toml(
        "auth_key = \"k\"\nheartbeat_interval = 2\nheartbeat_timeout = 7\nshutdown_grace = 0",
    )
    .unwrap();
    let got = (c.heartbeat_interval, c.heartbeat_timeout, c.shutdown_grace);
    assert_eq!(
        got,
        (
            Duration::from_secs(2),
            Duration::from_secs(7),
            Duration::ZERO
        )
    );
    let c = ServerConfig::from_toml("auth_key = \"k\"").unwrap();
    assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    assert!(ServerConfig::from_toml("auth_key = \"k\"\nshutdown_grace = 1.5").is_err());
}

#[test]
fn require_client_cert_needs_a_client_ca_and_no_ws_bind() {
    let fields = |toml: &str| -> Vec<String> {
        ServerConfig::from_toml(toml)
            .unwrap()
            .problems()
            .into_iter()
            .map(|p| p.field.to_string())
            .collect()
    };
    let base = "auth_key = \"k\"\nrequire_client_cert = true\n";
    assert_eq!(fields(base), ["require_client_cert"]);
    let missing = format!("{base}client_ca = \"/nonexistent/ca.pem\"\n");
    assert_eq!(fields(&missing), ["client_ca"]);
    let ws = format!("{missing}ws_bind = \"127.0.0.1:9\"\n");
    assert_eq!(fields(&ws), ["require_client_cert", "client_ca"]);
    // Without require_client_cert an unreadable client_ca is a WARN at start only.
    assert!(fields("auth_key = \"k\"\nclient_ca = \"/nonexistent/ca.pem\"\n").is_empty());
}

#[test]
fn ws_bind_and_ws_path_are_checked() {
    let c = ServerConfig::from_toml("auth_key = \"k\"").unwrap();
    assert_eq!((c.ws_bind, c.ws_path.as_str()), (None, "/tunnel"));
    let c = ServerConfig::from_toml(
        "auth_key = \"k\"\nbind = \"127.0.0.1:8443\"\nws_bind = \"127.0.0.1:8443\"\n\
         ws_path = \"no-slash\"",
    )
    .unwrap();
    let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
    assert_eq!(fields, ["ws_path", "ws_bind"]);
}

#[test]
fn vhost_keys_are_checked() {
    let ok = ServerConfig::from_toml(
        "auth_key = \"k\"\nvhost_http_bind = \"0.0.0.0:80\"\nsubdomain_host = \"t.example.com\"",
    )
    .unwrap();
    assert!(ok.problems().is_empty(), "{:?}", ok.problems());
    assert_eq!(ok.vhost_http_bind, Some("0.0.0.0:80".parse().unwrap()));
    // A subdomain_host served over https only is fine too.
    let https = ServerConfig::from_toml(
        "auth_key = \"k\"\nvhost_https_bind = \"0.0.0.0:443\"\nsubdomain_host = \"t.example.com\"",
    )
    .unwrap();
    assert!(https.problems().is_empty(), "{:?}", https.problems());
    for (extra, field) in [
        ("subdomain_host = \"t.example.com\"", "subdomain_host"),
        (
            "vhost_http_bind = \"0.0.0.0:80\"\nsubdomain_host = \"*.x\"",
            "subdomain_host",
        ),
        ("vhost_http_bind = \"0.0.0.0:8443\"", "vhost_http_bind"),
        ("vhost_https_bind = \"0.0.0.0:8443\"", "vhost_https_bind"),
        (
            "vhost_http_bind = \"0.0.0.0:80\"\nvhost_https_bind = \"0.0.0.0:80\"",
            "vhost_https_bind",
        ),
    ] {
        let c = ServerConfig::from_toml(&format!("auth_key = \"k\"\n{extra}")).unwrap();
        let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
        assert_eq!(fields, [field], "{extra}");
    }
}

#[test]
fn empty_file_gives_defaults() {
    let c = ServerConfig::from_toml("").unwrap();
    assert_eq!(c.bind, default_bind());
    assert_eq!(c.stats_bind, default_stats_bind());
    let off = ServerConfig::from_toml("stats_bind = \"\"").unwrap();
    assert_eq!(off.stats_bind, None);
    let e = ServerConfig::from_toml("stats_bind = \"localhost\"").unwrap_err();
    assert!(e.to_string().contains("stats_bind"), "{e}");
    assert!(c.allow_ports.contains(1024) && !c.allow_ports.contains(1023));
}

#[test]
fn every_problem_of_a_file_is_reported_in_one_run() {
    let text = "bnid = \"0.0.0.0:1\"\nallow_ports = [\"9000-8000\"]\n\
                stats_bind = \"localhost\"\nmax_clients = -1\n[foo]\nx = 1\n";
    let Err(ServerError::ConfigSyntax { problems, .. }) = ServerConfig::from_toml(text) else {
        panic!("parsed");
    };
    let shown: Vec<String> = problems
        .iter()
        .map(|p| format!("{:?} {}", p.at.map(|a| (a.line, a.column)), p.field))
        .collect();
    assert_eq!(
        shown,
        [
            "Some((1, 1)) bnid",
            "Some((2, 15)) allow_ports",
            "Some((3, 14)) stats_bind",
            "Some((4, 15)) max_clients",
            "Some((5, 2)) foo",
        ]
    );
    assert!(
        problems[0].message.contains("did you mean `bind`?"),
        "{problems:?}"
    );
}

#[test]
fn unknown_key_is_named() {
    let e = ServerConfig::from_toml("bnid = \"0.0.0.0:1\"").unwrap_err();
    assert!(e.to_string().contains("bnid"), "{e}");
}

#[test]
fn bad_port_range_is_explained() {
    let e = ServerConfig::from_toml("allow_ports = [\"9000-8000\"]").unwrap_err();
    assert!(e.to_string().contains("9000-8000"), "{e}");
}

#[test]
fn cert_without_key_is_a_problem() {
    let c = ServerConfig::from_toml("auth_key = \"k\"\ntls_cert = \"/x.pem\"").unwrap();
    let p = c.problems();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "tls_key");
}

#[test]
fn missing_key_is_a_problem_and_debug_hides_the_key() {
    let c = ServerConfig::from_toml("").unwrap();
    assert_eq!(c.problems()[0].field, "auth_key");
    let c = c.with_auth_key("hunter2");
    assert!(c.problems().is_empty());
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn route_caps_have_defaults_and_refuse_zero() {
    let c = ServerConfig::from_toml("auth_key = \"k\"").unwrap();
    assert_eq!(
        (
            c.max_domains_per_proxy,
            c.max_locations_per_proxy,
            c.max_routes_per_client
        ),
        (64, 32, 1024)
    );
    let c = ServerConfig::from_toml(
        "auth_key = \"k\"\nmax_domains_per_proxy = 0\nmax_locations_per_proxy = 0\n\
         max_routes_per_client = 0",
    )
    .unwrap();
    let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "max_domains_per_proxy",
            "max_locations_per_proxy",
            "max_routes_per_client"
        ]
    );
    let c = ServerConfig::from_toml("auth_key = \"k\"\nmax_routes_per_client = 5").unwrap();
    assert!(c.problems().is_empty());
    assert_eq!(c.max_routes_per_client, 5);
}

#[test]
fn vhost_limits_have_defaults_and_are_checked() {
    let c = ServerConfig::from_toml("auth_key = \"k\"").unwrap();
    assert_eq!(
        (c.vhost_max_conns, c.vhost_max_conns_per_source),
        (10_000, 256)
    );
    assert_eq!(
        (c.vhost_first_byte_timeout, c.vhost_header_timeout),
        (5, 10)
    );
    assert_eq!(c.vhost_max_header_size, 32 * 1024);
    assert!(c.trusted_proxies.is_empty());
    let c = ServerConfig::from_toml(
        "auth_key = \"k\"\nvhost_header_timeout = 0\nvhost_max_header_size = 100\n\
         trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/99\"]",
    )
    .unwrap();
    let p = c.problems();
    let fields: Vec<_> = p.iter().map(|p| p.field.clone()).collect();
    assert_eq!(
        fields,
        [
            "vhost_header_timeout",
            "vhost_max_header_size",
            "trusted_proxies"
        ]
    );
    assert!(p[2].to_string().contains("10.0.0.0/99"), "{}", p[2]);
}

#[test]
fn admission_keys_have_defaults_and_are_checked() {
    let c = ServerConfig::from_toml("auth_key = \"k\"").unwrap();
    assert_eq!(
        (
            c.pending_handshakes_per_source,
            c.pending_handshakes_drop_from,
            c.pending_handshakes_drop_percent,
            c.first_byte_timeout,
            c.max_auth_failures_per_second
        ),
        (16, 64, 30, 3, 20)
    );
    let c = ServerConfig::from_toml(
        "auth_key = \"k\"\npending_handshakes_drop_percent = 101\nfirst_byte_timeout = 0",
    )
    .unwrap();
    let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        ["pending_handshakes_drop_percent", "first_byte_timeout"]
    );
}

#[test]
fn ip_lists_and_the_bandwidth_cap_are_read_and_checked() {
    let c = ServerConfig::from_toml(
        "auth_key = \"k\"\nallow_ips = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n\
         deny_ips = [\"10.9.0.0/16\"]\nbandwidth_limit = \"50MiB\"",
    )
    .unwrap();
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    assert_eq!(c.bandwidth_limit.unwrap().bytes_per_second(), 50 << 20);
    let f = c.ip_filter().unwrap();
    assert!(f.permits("10.1.1.1".parse().unwrap()));
    assert!(!f.permits("10.9.1.1".parse().unwrap()));

    let c = ServerConfig::from_toml("auth_key = \"k\"\ndeny_ips = [\"2001:db8::/129\"]").unwrap();
    let p = c.problems();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "deny_ips");
    assert!(p[0].message.contains("2001:db8::/129"), "{}", p[0]);

    let Err(ServerError::ConfigSyntax { problems, .. }) =
        ServerConfig::from_toml("auth_key = \"k\"\nbandwidth_limit = \"fast\"")
    else {
        panic!("a rate of \"fast\" was accepted");
    };
    assert!(
        problems[0].to_string().contains("is not a rate"),
        "{problems:?}"
    );
}
