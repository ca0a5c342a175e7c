#![allow(clippy::unwrap_used)]
use super::*;

fn parse(text: &str) -> ClusterConfig {
    toml::from_str(text).unwrap()
}

fn fields(c: &ClusterConfig, auth: Option<&str>) -> Vec<String> {
    c.problems_with(auth).into_iter().map(|p| p.field).collect()
}

const GOOD: &str = r#"
backend = "etcd"
endpoints = ["http://127.0.0.1:2379", "https://etcd-2.internal:2379"]
server_id = "a-1"
peer_bind = "127.0.0.1:7001"
cluster_key = "0123456789abcdef0123"
"#;

#[test]
fn absent_table_is_single_server_with_defaults() {
    let c = parse("");
    assert_eq!(c, ClusterConfig::default());
    assert!(!c.enabled());
    assert_eq!(c.prefix, "/tls-tunnel/");
    assert_eq!(c.lease_ttl, Duration::from_secs(10));
    assert_eq!(c.publish_mode, PublishMode::All);
    assert!(c.problems().is_empty());
    assert_eq!(parse(r#"backend = "none""#).backend, Backend::None);
}

#[test]
fn a_complete_etcd_table_has_no_problems() {
    let c = parse(GOOD);
    assert!(c.enabled());
    assert!(c.problems().is_empty(), "{:?}", c.problems());
    assert_eq!(c.peer_advertise().as_deref(), Some("127.0.0.1:7001"));
    let full = parse(
        r#"
backend = "etcd"
endpoints = ["http://127.0.0.1:2379"]
prefix = "/tt/prod/"
server_id = "a"
lease_ttl = 5
peer_bind = "0.0.0.0:7001"
peer_advertise = "10.0.0.5:7001"
cluster_key = "0123456789abcdef"
publish_mode = "owner"
etcd_user = "tunnel"
etcd_password = "pw"
"#,
    );
    assert!(full.problems().is_empty(), "{:?}", full.problems());
    assert_eq!(full.lease_ttl, Duration::from_secs(5));
    assert_eq!(full.publish_mode, PublishMode::Owner);
}

#[test]
fn unknown_keys_and_values_are_refused() {
    assert!(toml::from_str::<ClusterConfig>("backnd = \"etcd\"").is_err());
    assert!(toml::from_str::<ClusterConfig>("backend = \"redis\"").is_err());
    assert!(toml::from_str::<ClusterConfig>("publish_mode = \"some\"").is_err());
    assert!(toml::from_str::<ClusterConfig>("lease_ttl = \"10s\"").is_err());
}

/// GOOD with one `key = value` line in place of GOOD's own line for that key (a TOML table
/// may not repeat a key).
fn good_with(line: &str) -> ClusterConfig {
    let key = line.split(' ').next().unwrap();
    let base: String = GOOD
        .lines()
        .filter(|l| !l.starts_with(&format!("{key} ")))
        .collect::<Vec<_>>()
        .join("\n");
    parse(&format!("{base}\n{line}\n"))
}

#[test]
fn each_problem_names_its_field() {
    let c = parse(r#"backend = "etcd""#);
    let f = fields(&c, None);
    for want in [
        "cluster.endpoints",
        "cluster.peer_bind",
        "cluster.cluster_key",
    ] {
        assert!(f.contains(&want.to_string()), "{want} missing from {f:?}");
    }
    let cases: &[(&str, &str)] = &[
        ("lease_ttl = 1", "cluster.lease_ttl"),
        ("lease_ttl = 301", "cluster.lease_ttl"),
        ("prefix = \"tls-tunnel/\"", "cluster.prefix"),
        ("prefix = \"/tls-tunnel\"", "cluster.prefix"),
        ("prefix = \"/a//b/\"", "cluster.prefix"),
        ("server_id = \"a/b\"", "cluster.server_id"),
        ("endpoints = [\"127.0.0.1:2379\"]", "cluster.endpoints[0]"),
        ("endpoints = [\"http://\"]", "cluster.endpoints[0]"),
        ("peer_bind = \"0.0.0.0:7001\"", "cluster.peer_advertise"),
        ("peer_advertise = \"nope\"", "cluster.peer_advertise"),
        ("cluster_key = \"short\"", "cluster.cluster_key"),
        ("cluster_key_file = \"/k\"", "cluster.cluster_key_file"),
        ("etcd_user = \"u\"", "cluster.etcd_password"),
        ("etcd_password = \"p\"", "cluster.etcd_user"),
        (
            "etcd_ca_cert = \"/nonexistent/ca.pem\"",
            "cluster.etcd_ca_cert",
        ),
    ];
    for (line, field) in cases {
        let c = good_with(line);
        let f = fields(&c, None);
        assert_eq!(f, vec![field.to_string()], "{line}");
    }
}

#[test]
fn cluster_key_must_not_be_the_auth_key() {
    let c = parse(GOOD);
    assert!(fields(&c, Some("another-key-entirely")).is_empty());
    let f = fields(&c, Some("0123456789abcdef0123"));
    assert_eq!(f, vec!["cluster.cluster_key".to_string()]);
    let msg = &c.problems_with(Some("0123456789abcdef0123"))[0].message;
    assert!(msg.contains("auth_key"), "{msg}");
}

#[test]
fn cluster_key_file_is_read_and_trimmed() {
    let path = std::env::temp_dir().join(format!("tt-cluster-key-{}", std::process::id()));
    std::fs::write(&path, "0123456789abcdef-from-file\n").unwrap();
    let mut c = parse(GOOD);
    c.cluster_key = None;
    c.cluster_key_file = Some(path.clone());
    assert_eq!(c.cluster_key().unwrap(), "0123456789abcdef-from-file");
    assert!(c.problems().is_empty());
    let _ = std::fs::remove_file(&path);
    let err = c.cluster_key().unwrap_err();
    assert_eq!(err.field, "cluster.cluster_key_file");
    assert!(err.message.contains(&path.display().to_string()));
}

#[test]
fn debug_hides_secrets() {
    let mut c = parse(GOOD);
    c.etcd_password = Some("hunter2-password".into());
    c.etcd_user = Some("u".into());
    let shown = format!("{c:?}");
    assert!(!shown.contains("0123456789abcdef0123"), "{shown}");
    assert!(!shown.contains("hunter2-password"), "{shown}");
    assert!(shown.contains("<hidden>"), "{shown}");
}

#[test]
fn server_id_defaults_to_the_host_name() {
    let mut c = parse(GOOD);
    c.server_id = None;
    let id = c.server_id().unwrap();
    assert!(!id.is_empty());
}

#[test]
fn endpoint_and_server_id_problems_say_the_fix() {
    let message = |line: &str, field: &str| {
        let problems = good_with(line).problems_with(None);
        let p = problems.iter().find(|p| p.field == field).unwrap();
        p.message.clone()
    };
    assert_eq!(
        message("endpoints = [\"127.0.0.1:2379\"]", "cluster.endpoints[0]"),
        "\"127.0.0.1:2379\": use an http:// or https:// URL, e.g. \"http://127.0.0.1:2379\""
    );
    assert_eq!(
        message("endpoints = [\"http://\"]", "cluster.endpoints[0]"),
        "\"http://\": give host:port after the scheme, e.g. \"http://127.0.0.1:2379\""
    );
    assert_eq!(
        message("server_id = \"a/b\"", "cluster.server_id"),
        "\"a/b\": use 1 to 64 of A-Z a-z 0-9 _ . -, unique in the cluster"
    );
}
