//! Every field of the config, changed alone, is either applied or named in the refusal.
#![allow(clippy::unwrap_used)]

use tunnel_proto::proxy_protocol::Version;
use tunnel_proto::ProxyKind;
use tunnel_transport::TransportKind;

use super::plan::{plan, Changed, Changes, Plan, Refusal};
use crate::config::{ClientConfig, ProxyConfig, VisitorConfig};
use crate::http_config::HttpOptions;
use crate::ClientError;
use crate::{HealthCheck, HealthKind};

fn base() -> ClientConfig {
    ClientConfig::new("a.example:1")
        .with_auth_key("k")
        .with_proxy(ProxyConfig::http("web", "127.0.0.1:1", Some(8080)))
        .with_proxy(ProxyConfig::tcp("db", "127.0.0.1:2", None))
        .with_visitor(VisitorConfig::new("v", "db", 0, "127.0.0.1:3"))
}

type Edit<T> = (&'static str, fn(&mut T));
/// An edit of one item, and whether the server must hear of it.
type ItemEdit<T> = (&'static str, fn(&mut T), bool);

/// One edit per field of the connection; each needs a restart.
fn client_edits() -> Vec<Edit<ClientConfig>> {
    // No `..`: a new field does not compile here until it has an edit below.
    let ClientConfig {
        server_addr: _,
        transport: _,
        ws_path: _,
        server_name: _,
        auth_key: _,
        auth_key_file: _,
        ca_cert: _,
        server_fingerprint: _,
        insecure_skip_verify: _,
        client_cert: _,
        client_key: _,
        id: _,
        proxies: _,  // see proxy_edits
        visitors: _, // see visitor_edits
        connections: _,
        reconnect_max_delay: _,
        stats_bind: _,
        stats_token: _,
        heartbeat_timeout: _,
        shutdown_grace: _,
        log_format: _,
    } = base();
    vec![
        ("server_addr", |c| c.server_addr = "b.example:1".into()),
        ("transport", |c| c.transport = TransportKind::Wss),
        ("ws_path", |c| c.ws_path = "/other".into()),
        ("server_name", |c| c.server_name = Some("b.example".into())),
        ("auth_key", |c| c.auth_key = Some("other".into())),
        ("auth_key_file", |c| c.auth_key_file = Some("/k".into())),
        ("ca_cert", |c| c.ca_cert = Some("/ca.pem".into())),
        ("server_fingerprint", |c| {
            c.server_fingerprint = Some("sha256:00".into())
        }),
        ("insecure_skip_verify", |c| c.insecure_skip_verify = true),
        ("client_cert", |c| c.client_cert = Some("/c.pem".into())),
        ("client_key", |c| c.client_key = Some("/k.pem".into())),
        ("id", |c| c.id = Some("other".into())),
        ("connections", |c| c.connections = 4),
        ("reconnect_max_delay", |c| {
            c.reconnect_max_delay = std::time::Duration::from_secs(5)
        }),
        ("stats_bind", |c| {
            c.stats_bind = Some("127.0.0.1:9".parse().unwrap())
        }),
        ("stats_token", |c| c.stats_token = Some("t".into())),
        ("heartbeat_timeout", |c| {
            c.heartbeat_timeout = std::time::Duration::from_secs(5)
        }),
        ("shutdown_grace", |c| {
            c.shutdown_grace = std::time::Duration::from_secs(1)
        }),
        ("log_format", |c| {
            c.log_format = tunnel_transport::LogFormat::Json
        }),
    ]
}

/// One edit per field of an `http` proxy, with whether the server must hear of it.
fn proxy_edits() -> Vec<ItemEdit<ProxyConfig>> {
    let ProxyConfig {
        name: _, // the key: a new name is a removal and an addition
        kind: _,
        local_addr: _,
        publish_port: _,
        secret: _,
        allow_visitors: _,
        proxy_protocol: _,
        allow_ips: _,
        deny_ips: _,
        bandwidth_limit: _,
        http,
        udp_idle_timeout: _,
        group: _,
        group_key: _,
        health_check: _,
    } = ProxyConfig::http("x", "h:1", None);
    let HttpOptions {
        host_rewrite: _,
        request_headers: _,
        response_headers: _,
        forwarded_headers: _,
        local_tls: _,
        local_ca_cert: _,
        local_tls_insecure: _,
        max_local_conns: _,
        max_header_size: _,
        idle_timeout: _,
        response_timeout: _,
        domains: _,
        subdomain: _,
        locations: _,
        http_user: _,
        http_password: _,
    } = http;
    vec![
        ("type", |p| p.kind = ProxyKind::Http2, true),
        ("local_addr", |p| p.local_addr = "127.0.0.1:9".into(), false),
        ("publish_port", |p| p.publish_port = Some(8081.into()), true),
        ("secret", |p| p.secret = Some("s".into()), true),
        (
            "allow_visitors",
            |p| p.allow_visitors = vec!["*".into()],
            true,
        ),
        (
            "proxy_protocol",
            |p| p.proxy_protocol = Some(Version::V2),
            false,
        ),
        (
            "allow_ips",
            |p| p.allow_ips = vec!["10.0.0.0/8".into()],
            true,
        ),
        ("deny_ips", |p| p.deny_ips = vec!["::1".into()], true),
        ("group", |p| p.group = Some("g".into()), true),
        ("group_key", |p| p.group_key = Some("k".into()), true),
        (
            "health_check",
            |p| p.health_check = Some(HealthCheck::new(HealthKind::Tcp, 5, 2)),
            false,
        ),
        (
            "bandwidth_limit",
            |p| p.bandwidth_limit = Some("1MiB".into()),
            true,
        ),
        (
            "host_rewrite",
            |p| p.http.host_rewrite = Some("in".into()),
            false,
        ),
        // Sent as the spec's idle_timeout of a udp proxy only: an http proxy's spec is the same.
        ("udp_idle_timeout", |p| p.udp_idle_timeout = Some(5), false),
        (
            "request_headers",
            |p| {
                p.http.request_headers.insert("x-a".into(), "1".into());
            },
            false,
        ),
        (
            "response_headers",
            |p| {
                p.http.response_headers.insert("x-b".into(), "2".into());
            },
            false,
        ),
        (
            "forwarded_headers",
            |p| p.http.forwarded_headers = false,
            false,
        ),
        ("local_tls", |p| p.http.local_tls = true, false),
        (
            "local_ca_cert",
            |p| p.http.local_ca_cert = Some("/ca".into()),
            false,
        ),
        (
            "local_tls_insecure",
            |p| p.http.local_tls_insecure = true,
            false,
        ),
        ("max_local_conns", |p| p.http.max_local_conns = 2, false),
        ("max_header_size", |p| p.http.max_header_size = 9000, false),
        ("idle_timeout", |p| p.http.idle_timeout = Some(5), true),
        ("response_timeout", |p| p.http.response_timeout = 5, false),
        (
            "domains",
            |p| p.http.domains = vec!["a.example".into()],
            true,
        ),
        ("subdomain", |p| p.http.subdomain = Some("a".into()), true),
        ("locations", |p| p.http.locations = vec!["/a".into()], true),
        ("http_user", |p| p.http.http_user = Some("u".into()), true),
        (
            "http_password",
            |p| p.http.http_password = Some("p".into()),
            true,
        ),
    ]
}

/// One edit per field of a visitor, with whether the server must hear of it.
fn visitor_edits() -> Vec<ItemEdit<VisitorConfig>> {
    let VisitorConfig {
        name: _,
        proxy: _,
        publish_port: _,
        bind: _,
        secret: _,
        kind: _,
    } = VisitorConfig::new("x", "y", 0, "h:1");
    vec![
        ("proxy", |v| v.proxy = "web".into(), true),
        ("publish_port", |v| v.publish_port = 8080, true),
        ("bind", |v| v.bind = "127.0.0.1:4".into(), false),
        ("secret", |v| v.secret = Some("s".into()), false),
        ("type", |v| v.kind = ProxyKind::Udp, false),
    ]
}

fn changed(name: &str, field: &'static str, server: bool) -> Changes {
    Changes {
        changed: vec![Changed {
            name: name.into(),
            fields: vec![field],
            server,
        }],
        ..Changes::default()
    }
}

#[test]
fn the_same_config_changes_nothing() {
    let p = plan(&base(), &base()).unwrap();
    assert!(p.is_empty() && !p.registers());
    assert_eq!(p.to_string(), "nothing changed");
}

#[test]
fn every_connection_setting_is_refused_by_name() {
    for (field, edit) in client_edits() {
        let mut new = base();
        edit(&mut new);
        assert_eq!(
            plan(&base(), &new),
            Err(Refusal {
                fields: vec![field]
            }),
            "{field}"
        );
    }
}

#[test]
fn a_refusal_names_every_field_and_says_restart() {
    let mut new = base();
    for (_, edit) in client_edits() {
        edit(&mut new);
    }
    let refusal = plan(&base(), &new).unwrap_err();
    let names: Vec<_> = client_edits().into_iter().map(|(f, _)| f).collect();
    assert_eq!(refusal.fields, names);
    let text = ClientError::from(refusal).to_string();
    assert!(
        text.contains("stats_token") && text.contains("shutdown_grace"),
        "{text}"
    );
    assert!(text.contains("restart the client"), "{text}");
}

#[test]
fn every_proxy_setting_is_a_change_of_that_proxy() {
    for (field, edit, server) in proxy_edits() {
        let mut new = base();
        edit(&mut new.proxies[0]);
        let p = plan(&base(), &new).unwrap();
        let want = Plan {
            proxies: changed("web", field, server),
            visitors: Changes::default(),
        };
        assert_eq!(p, want, "{field}");
        assert_eq!(p.registers(), server, "{field}");
        assert_eq!(p.to_string(), format!("proxy web changed ({field})"));
    }
}

#[test]
fn every_visitor_setting_is_a_change_of_that_visitor() {
    for (field, edit, server) in visitor_edits() {
        let mut new = base();
        edit(&mut new.visitors[0]);
        let p = plan(&base(), &new).unwrap();
        let want = Plan {
            proxies: Changes::default(),
            visitors: changed("v", field, server),
        };
        assert_eq!(p, want, "{field}");
        assert_eq!(p.registers(), server, "{field}");
    }
}

#[test]
fn keys_the_server_never_sees_for_a_type_change_only_the_client() {
    let mut new = base();
    new.proxies[1].http.domains = vec!["a.example".into()]; // "db" is tcp
    let p = plan(&base(), &new).unwrap();
    assert_eq!(p.proxies, changed("db", "domains", false));
    assert!(!p.registers());
}

#[test]
fn additions_removals_and_several_fields_are_listed_in_one_line() {
    let mut new = base();
    new.proxies.remove(1);
    new.proxies[0].proxy_protocol = Some(Version::V1);
    new.proxies[0].http.host_rewrite = Some("in".into());
    new.proxies
        .push(ProxyConfig::tcp("ssh", "127.0.0.1:22", Some(2222)));
    new.visitors = vec![VisitorConfig::new("w", "web", 8080, "127.0.0.1:5")];
    let p = plan(&base(), &new).unwrap();
    assert_eq!(p.proxies.added, ["ssh"]);
    assert_eq!(p.proxies.removed, ["db"]);
    assert_eq!(p.visitors.added, ["w"]);
    assert_eq!(p.visitors.removed, ["v"]);
    assert!(p.registers());
    assert_eq!(
        p.to_string(),
        "proxy ssh added; proxy web changed (proxy_protocol, host_rewrite); proxy db removed; \
         visitor w added; visitor v removed"
    );
    // Only what the server hears of gets its verdict logged.
    assert_eq!(p.proxies.announced().collect::<Vec<_>>(), ["ssh"]);
    assert_eq!(p.proxies.arriving().collect::<Vec<_>>(), ["ssh", "web"]);
    assert_eq!(p.proxies.departing().collect::<Vec<_>>(), ["db", "web"]);
}

#[test]
fn order_alone_is_no_change() {
    let mut new = base();
    new.proxies.reverse();
    assert!(plan(&base(), &new).unwrap().is_empty());
}

#[test]
fn one_server_as_a_string_or_a_list_of_one_is_no_change_and_another_list_is() {
    let old = base();
    let one = old.server_addr.addrs()[0].clone();
    let new = base().with_server_addrs([one.clone()]);
    assert!(plan(&old, &new).unwrap().is_empty());
    let new = base().with_server_addrs([one, "b.example:1".to_owned()]);
    assert_eq!(plan(&old, &new).unwrap_err().fields, ["server_addr"]);
}
