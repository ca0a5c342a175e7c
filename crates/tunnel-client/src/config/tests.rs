#![allow(clippy::unwrap_used)]
use super::*;

const BASE: &str = "server_addr = \"example.com:8443\"\nauth_key = \"k\"\n";

#[test]
fn a_group_member_needs_a_fixed_port_not_auto_nor_a_block() {
    for publish in ["\"auto\"", "\"6000-6003\""] {
        let c = ClientConfig::from_toml(&format!(
            "{BASE}[[proxies]]\nname = \"a\"\nlocal_addr = \"127.0.0.1:7000\"\n\
             publish_port = {publish}\ngroup = \"g\"\ngroup_key = \"k\"\n"
        ))
        .unwrap();
        let problems = c.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.field == "proxies[0].publish_port" && p.message.contains("fixed")),
            "{publish}: {problems:?}"
        );
    }
}

#[test]
fn an_empty_stats_token_is_refused_like_on_the_server() {
    let c = ClientConfig::from_toml(&format!("{BASE}stats_token = \"\"\n")).unwrap();
    let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
    assert_eq!(fields, ["stats_token"]);
}

#[test]
fn duration_builders_keep_milliseconds_and_the_file_reads_seconds() {
    let c = ClientConfig::from_toml(BASE)
        .unwrap()
        .with_heartbeat_timeout(Duration::from_millis(1500))
        .with_shutdown_grace(Duration::from_millis(250))
        .with_reconnect_max_delay(Duration::from_millis(2500));
    assert_eq!(c.heartbeat_timeout, Duration::from_millis(1500));
    assert_eq!(c.shutdown_grace, Duration::from_millis(250));
    assert_eq!(c.reconnect_max_delay, Duration::from_millis(2500));
    // Sub-second but not zero is a valid setting in code.
    let c = c.with_heartbeat_timeout(Duration::from_millis(500));
    assert!(c.problems().is_empty(), "{:?}", c.problems());

    let toml =
        format!("{BASE}heartbeat_timeout = 4\nshutdown_grace = 0\nreconnect_max_delay = 9\n");
    let c = ClientConfig::from_toml(&toml).unwrap();
    let got = (c.heartbeat_timeout, c.shutdown_grace, c.reconnect_max_delay);
    assert_eq!(
        got,
        (
            Duration::from_secs(4),
            Duration::ZERO,
            Duration::from_secs(9)
        )
    );
    let c = ClientConfig::from_toml(BASE).unwrap();
    assert_eq!(c.shutdown_grace, Duration::from_secs(10));
    let c = ClientConfig::from_toml(&format!("{BASE}heartbeat_timeout = 0\n")).unwrap();
    let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
    assert_eq!(fields, ["heartbeat_timeout"]);
}

#[test]
fn minimal_config_is_valid() {
    let c = ClientConfig::from_toml(BASE).unwrap();
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    assert_eq!(c.effective_server_name(), "example.com");
}

#[test]
fn transport_and_ws_path_parse_and_are_checked() {
    let c = ClientConfig::from_toml(BASE).unwrap();
    assert_eq!(
        (c.transport, c.ws_path.as_str()),
        (TransportKind::Tls, "/tunnel")
    );
    for kind in TransportKind::ALL {
        let c = ClientConfig::from_toml(&format!("{BASE}transport = \"{kind}\"\n")).unwrap();
        assert_eq!(c.transport, kind);
    }
    let e = ClientConfig::from_toml(&format!("{BASE}transport = \"quic\"\n")).unwrap_err();
    assert!(
        e.to_string().contains("transport") && e.to_string().contains("wss"),
        "{e}"
    );
    let e = ClientConfig::from_toml(&format!("{BASE}transport = \"tsl\"\n")).unwrap_err();
    assert!(e.to_string().contains("did you mean `tls`?"), "{e}");
    let listed: Vec<String> = TransportKind::ALL.iter().map(|k| k.to_string()).collect();
    assert_eq!(listed, TRANSPORTS);
    let c = ClientConfig::from_toml(&format!("{BASE}ws_path = \"tunnel\"\n")).unwrap();
    let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
    assert_eq!(fields, ["ws_path"]);
    let c = ClientConfig::from_toml(&format!("{BASE}ws_path = \"/a b\"\n")).unwrap();
    assert_eq!(c.problems().len(), 1);
}

#[test]
fn connections_defaults_to_one_and_is_bounded() {
    assert_eq!(ClientConfig::from_toml(BASE).unwrap().connections, 1);
    for ok in [1, 4, MAX_CONNECTIONS] {
        let c = ClientConfig::from_toml(&format!("{BASE}connections = {ok}\n")).unwrap();
        assert_eq!((c.connections, c.problems().len()), (ok, 0));
    }
    for bad in [0, MAX_CONNECTIONS + 1] {
        let c = ClientConfig::from_toml(&format!("{BASE}connections = {bad}\n")).unwrap();
        let p = c.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].field, "connections");
        assert!(p[0].to_string().contains("between 1 and 16"), "{}", p[0]);
    }
    let e = ClientConfig::from_toml(&format!("{BASE}connections = -1\n")).unwrap_err();
    assert!(e.to_string().contains("connections"), "{e}");
}

/// `LINE:COLUMN field` of every problem `from_toml` finds.
fn places(text: &str) -> Vec<String> {
    let Err(ClientError::ConfigSyntax { problems, .. }) = ClientConfig::from_toml(text) else {
        panic!("{text} parsed");
    };
    line_column_field(&problems)
}

#[test]
fn every_problem_of_a_file_is_reported_in_one_run() {
    let text = "\
server_addr = \"example.com:8443\"
reconect_max_delay = 5
transport = \"quic\"

[[proxies]]
name = \"web\"
local_adr = \"127.0.0.1:3000\"
publish_port = 70000

[[proxies]]
name = \"api\"
type = \"htp\"
max_local_conns = \"many\"

[[visitors]]
name = \"db\"
bind = \"127.0.0.1:5432\"
";
    assert_eq!(
        places(text),
        [
            "2:1 reconect_max_delay",
            "3:13 transport",
            "7:1 proxies[0].local_adr",
            "8:16 proxies[0].publish_port",
            "12:8 proxies[1].type",
            "13:19 proxies[1].max_local_conns",
            "15:1 visitors[0].proxy",
        ]
    );
    let e = ClientConfig::from_toml(text).unwrap_err().to_string();
    // The typo in the flattened [[proxies]] table: named at its own line, with the
    // closest key and the valid ones, the HTTP keys included.
    assert!(
        e.contains(
            "7:1: proxies[0].local_adr: unknown key `local_adr`: did you mean \
                    `local_addr`? valid keys here: name, type, local_addr"
        ) && e.contains("max_local_conns"),
        "{e}"
    );
}

#[test]
fn the_proxy_key_list_holds_only_keys_serde_accepts() {
    for key in proxy::PROXY_KEYS {
        // A wrong type, so every listed key gets an error: never an unknown-key one.
        let text = format!("{BASE}[[proxies]]\nname = \"a\"\n{key} = {{}}\n");
        let e = ClientConfig::from_toml(&text).unwrap_err().to_string();
        assert!(!e.contains("unknown key"), "{key}: {e}");
    }
    let e = ClientConfig::from_toml(&format!("{BASE}[[proxies]]\nname = \"a\"\nx = 1\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("idle_timeout") && e.contains("proxy_protocol"),
        "{e}"
    );
}

#[test]
fn unknown_keys_are_named() {
    let e = ClientConfig::from_toml(&format!(
        "{BASE}[[proxies]]\nname=\"a\"\nlocal_adr=\"x:1\"\n"
    ))
    .unwrap_err();
    assert!(e.to_string().contains("local_adr"), "{e}");
}

#[test]
fn duplicate_names_and_bad_addresses_are_reported_together() {
    let c = ClientConfig::from_toml(&format!(
        "{BASE}[[proxies]]\nname=\"a\"\nlocal_addr=\"127.0.0.1:1\"\n\
         [[proxies]]\nname=\"a\"\nlocal_addr=\"nope\"\n"
    ))
    .unwrap();
    let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
    assert_eq!(fields, ["proxies[1].name", "proxies[1].local_addr"]);
}

#[test]
fn a_proxy_without_local_addr_is_told_to_add_it() {
    let c = ClientConfig::from_toml(&format!("{BASE}[[proxies]]\nname=\"a\"\n")).unwrap();
    let p = c.problems();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "proxies[0].local_addr");
    assert!(
        p[0].message.starts_with("missing: the local service"),
        "{}",
        p[0]
    );
}

#[test]
fn client_cert_and_client_key_come_together_and_not_over_ws() {
    let fields = |extra: &str| -> Vec<String> {
        ClientConfig::from_toml(&format!("{BASE}{extra}"))
            .unwrap()
            .problems()
            .into_iter()
            .map(|p| p.field)
            .collect()
    };
    assert_eq!(fields("client_cert = \"/c.pem\"\n"), ["client_key"]);
    assert_eq!(fields("client_key = \"/k.pem\"\n"), ["client_cert"]);
    let both = "client_cert = \"/nonexistent/c.pem\"\nclient_key = \"/k.pem\"\n";
    assert_eq!(fields(both), ["client_cert"]);
    assert_eq!(
        fields(&format!("{both}transport = \"ws\"\n")),
        ["client_cert"]
    );
    // A certificate stands in for a missing key.
    let c = ClientConfig::from_toml("server_addr = \"a:1\"\nclient_cert = \"/c.pem\"\n").unwrap();
    assert_eq!(c.resolve_auth_key().unwrap(), "");
}

#[test]
fn trust_options_are_exclusive() {
    let c = ClientConfig::from_toml(&format!(
        "{BASE}insecure_skip_verify = true\nserver_fingerprint = \"sha256:00\"\n"
    ))
    .unwrap();
    assert!(c.trust().is_err());
}

#[test]
fn server_addr_is_a_string_or_a_list_and_each_entry_names_its_certificate() {
    let c =
        ClientConfig::from_toml("server_addr = [\"a.example:1\", \"[::1]:2\"]\nauth_key = \"k\"\n")
            .unwrap();
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    assert_eq!(c.server_addr.addrs(), ["a.example:1", "[::1]:2"]);
    assert_eq!(c.server_name_for("[::1]:2"), "::1");
    assert_eq!(c.effective_server_name(), "a.example");
    let c = c.with_server_name("tunnel.example");
    assert_eq!(c.server_name_for("[::1]:2"), "tunnel.example");
    let c = ClientConfig::new("h:1").with_server_addrs(["a:1", "b:2"]);
    assert_eq!(c.server_addr.to_string(), "a:1, b:2");
    let e = ClientConfig::from_toml("server_addr = 5\nauth_key = \"k\"\n").unwrap_err();
    assert!(
        e.to_string().contains("\"host:port\" or a list of them"),
        "{e}"
    );
}

/// `LINE:COLUMN field` of every problem `problems` finds, placed as `--check` does.
fn placed(text: &str) -> Vec<String> {
    let mut problems = ClientConfig::from_toml(text).unwrap().problems();
    config_file::locate(text, &mut problems);
    line_column_field(&problems)
}

#[test]
fn a_server_list_problem_is_placed_at_its_entry() {
    let text = "auth_key = \"k\"\nserver_addr = [\n  \"a:1\",\n  \"nope\",\n  \"a:1\",\n]\n";
    assert_eq!(placed(text), ["4:3 server_addr[1]", "5:3 server_addr[2]"]);
    let text = "auth_key = \"k\"\nserver_addr = []\n";
    assert_eq!(placed(text), ["2:1 server_addr"]);
    // A wrong type inside the list is a parse error at the element (named by its key).
    let text = "auth_key = \"k\"\nserver_addr = [\"a:1\", 5]\n";
    assert_eq!(places(text), ["2:23 server_addr"]);
}

#[test]
fn ipv6_server_name() {
    let c = ClientConfig::new("[::1]:8443");
    assert_eq!(c.effective_server_name(), "::1");
}

#[test]
fn https_proxies_parse_and_their_keys_are_checked() {
    let c = ClientConfig::from_toml(&format!(
        "{BASE}[[proxies]]\nname=\"site\"\ntype=\"https\"\nlocal_addr=\"127.0.0.1:443\"\n\
         domains=[\"a.example\", \"*.b.example\"]\nproxy_protocol=\"v2\"\n\
         [[proxies]]\nname=\"sub\"\ntype=\"https\"\nlocal_addr=\"h:1\"\nsubdomain=\"app\"\n"
    ))
    .unwrap();
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    let spec = c.proxies[0].spec();
    assert_eq!(spec.kind.to_string(), "https");
    let route = spec.http.unwrap();
    assert_eq!(route.domains, ["a.example", "*.b.example"]);
    // Spliced like tcp: a tcp proxy's idle default.
    assert_eq!(spec.idle_timeout, Some(300));
    let c = ClientConfig::from_toml(&format!(
        "{BASE}[[proxies]]\nname=\"a\"\ntype=\"https\"\nlocal_addr=\"h:1\"\n\
         publish_port=443\nlocations=[\"/api\"]\nhttp_user=\"u\"\nhttp_password=\"p\"\n\
         host_rewrite=\"x\"\n"
    ))
    .unwrap();
    let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "proxies[0].domains",
            "proxies[0].publish_port",
            "proxies[0].host_rewrite",
            "proxies[0].locations",
            "proxies[0].http_user",
            "proxies[0].http_password",
        ]
    );
}

#[test]
fn udp_proxies_and_visitors_parse_and_their_keys_are_checked() {
    let c = ClientConfig::from_toml(&format!(
        "{BASE}[[proxies]]\nname=\"dns\"\ntype=\"udp\"\nlocal_addr=\"127.0.0.1:53\"\n\
         publish_port=5353\nudp_idle_timeout=5\n\
         [[visitors]]\nname=\"v\"\ntype=\"udp\"\nproxy=\"dns\"\nbind=\"127.0.0.1:53\"\n"
    ))
    .unwrap();
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    assert_eq!(
        (c.proxies[0].kind, c.visitors[0].kind),
        (ProxyKind::Udp, ProxyKind::Udp)
    );
    // The server learns the flow timeout as the spec's idle_timeout, and no HTTP route.
    let spec = c.proxies[0].spec();
    assert_eq!((spec.idle_timeout, spec.http), (Some(5), None));
    assert_eq!(
        ProxyConfig::udp("d", "h:1", None).spec().idle_timeout,
        Some(60)
    );
    let c = ClientConfig::from_toml(&format!(
        "{BASE}[[proxies]]\nname=\"a\"\ntype=\"udp\"\nlocal_addr=\"h:1\"\n\
         udp_idle_timeout=0\nproxy_protocol=\"v2\"\nidle_timeout=3\n\
         [[proxies]]\nname=\"b\"\nlocal_addr=\"h:1\"\nudp_idle_timeout=3\n\
         [[visitors]]\nname=\"v\"\ntype=\"http\"\nproxy=\"a\"\nbind=\"h:2\"\n"
    ))
    .unwrap();
    let fields: Vec<_> = c.problems().into_iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "proxies[0].udp_idle_timeout",
            "proxies[0].idle_timeout",
            "proxies[0].proxy_protocol",
            "proxies[1].udp_idle_timeout",
            "visitors[0].type",
        ]
    );
}

#[test]
fn debug_hides_secrets() {
    let c = ClientConfig::new("h:1")
        .with_auth_key("topsecret")
        .with_proxy(ProxyConfig::tcp("a", "h:2", None).with_secret("alsosecret"));
    let s = format!("{c:?}");
    assert!(!s.contains("topsecret") && !s.contains("alsosecret"), "{s}");
}

#[test]
fn ip_lists_and_bandwidth_limit_reach_the_spec_and_bad_ones_are_placed() {
    let text = "auth_key = \"k\"\nserver_addr = \"a:1\"\n[[proxies]]\nname = \"db\"\n\
                local_addr = \"127.0.0.1:5432\"\npublish_port = 5432\n\
                allow_ips = [\"10.0.0.0/8\", \"2001:db8::/32\"]\ndeny_ips = [\"10.9.9.9\"]\n\
                bandwidth_limit = \"10MiB\"\n";
    let c = ClientConfig::from_toml(text).unwrap();
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    let spec = c.proxies[0].spec();
    assert_eq!(spec.allow_ips, ["10.0.0.0/8", "2001:db8::/32"]);
    assert_eq!(spec.deny_ips, ["10.9.9.9"]);
    assert_eq!(spec.bandwidth_limit, Some(10 << 20));

    let bad = text
        .replace("\"10.9.9.9\"", "\"10.9.9.9/33\"")
        .replace("\"10MiB\"", "\"10Mbit\"");
    assert_eq!(
        placed(&bad),
        ["8:1 proxies[0].deny_ips", "9:1 proxies[0].bandwidth_limit"]
    );
}

/// Each problem as `line:column field`.
fn line_column_field(problems: &[ConfigProblem]) -> Vec<String> {
    problems
        .iter()
        .map(|p| {
            let at = p.at.unwrap();
            format!("{}:{} {}", at.line, at.column, p.field)
        })
        .collect()
}
