//! The clients file: its TOML form, and every check of it reported at once, each at its
//! line and column.
//!
//! ```toml
//! [[clients]]
//! id = "team-a-edge"
//! keys = ["old key", "new key"]     # or key = "...", or key_file = "team-a.key"
//! allow_ports = ["6000-6010", 7000]
//! allow_names = ["app-*"]
//!
//! [[clients]]
//! id = "edge-7"                      # no key: logs in by its certificate (client_ca) alone
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use tunnel_transport::config_file::{self, Schema};

use super::{Bandwidth, Client, Clients, Patterns, Scope};
use crate::{ConfigProblem, PortRange, PortRanges, ServerError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    #[serde(default)]
    clients: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    id: String,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    #[serde(default)]
    keys: Option<Vec<String>>,
    #[serde(default)]
    allow_ports: Option<Vec<PortItem>>,
    #[serde(default)]
    allow_names: Option<Vec<String>>,
    #[serde(default)]
    allow_domains: Option<Vec<String>>,
    #[serde(default)]
    allow_subdomains: Option<Vec<String>>,
    #[serde(default)]
    allow_visit: Option<Vec<String>>,
    #[serde(default)]
    max_proxies: Option<usize>,
    #[serde(default)]
    max_streams: Option<usize>,
    #[serde(default)]
    bandwidth_limit: Option<String>,
}

/// One `allow_ports` item: `"6000-6010"`, `"7000"` or `7000`.
struct PortItem(String);

impl<'de> Deserialize<'de> for PortItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (7000) or a range as a string (\"6000-6010\")")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortItem, E> {
                Ok(PortItem(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortItem, E> {
                Ok(PortItem(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortItem, E> {
                Ok(PortItem(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Shortest own key not warned about, as for the shared key.
const MIN_KEY_LEN: usize = 16;

/// Most keys one entry holds: the one in use and the next.
const MAX_KEYS: usize = 2;

/// Read and check the clients file at `path`. `shared_key` is the server's shared key, which
/// no client's own key may equal (the shared key could then log in as that client).
pub(crate) fn load(path: &Path, shared_key: Option<&[u8]>) -> Result<Clients, ServerError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ServerError::Config(vec![ConfigProblem::new(
            "clients_file",
            format!("cannot read {}: {e}", path.display()),
        )])
    })?;
    let dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, dir, shared_key).map_err(|problems| ServerError::ConfigSyntax {
        path: Some(path.to_path_buf()),
        problems,
    })
}

/// Parse and check a clients file's text; `key_file`s are read relative to `dir`.
pub(crate) fn parse(
    text: &str,
    dir: &Path,
    shared_key: Option<&[u8]>,
) -> Result<Clients, Vec<ConfigProblem>> {
    let doc: Document = config_file::parse(text, &Schema::new())?;
    let mut problems = Vec::new();
    let mut clients = Vec::with_capacity(doc.clients.len());
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut keys: HashMap<Vec<u8>, usize> = HashMap::new();
    for (i, entry) in doc.clients.into_iter().enumerate() {
        let mut problem = |field: &str, message: String| {
            problems.push(ConfigProblem::new(format!("clients[{i}].{field}"), message));
        };
        if let Err(m) = tunnel_proto::validate_name(&entry.id) {
            problem("id", format!("client id {:?}: {m}", entry.id));
        } else if let Some(first) = ids.insert(entry.id.clone(), i) {
            problem(
                "id",
                format!(
                    "duplicate id {:?} (also clients[{first}]): each client needs its own id",
                    entry.id
                ),
            );
        }
        let own = entry_keys(&entry, dir, &mut problem);
        for key in &own {
            if shared_key == Some(key.as_slice()) {
                problem(
                    "key",
                    "equals the server's shared auth_key, which could then log in as this \
                     client: give the client a key of its own"
                        .into(),
                );
            } else if let Some(first) = keys.insert(key.clone(), i) {
                let whose = if first == i {
                    "listed twice in this entry".to_owned()
                } else {
                    format!("also the key of clients[{first}]")
                };
                problem(
                    "key",
                    format!("{whose}: every key must prove one client only; make a new one"),
                );
            } else if key.len() < MIN_KEY_LEN {
                tracing::warn!(
                    client = %entry.id,
                    "the key of client {} is only {} bytes: use at least {MIN_KEY_LEN} random \
                     bytes (e.g. `openssl rand -base64 24`)",
                    entry.id,
                    key.len()
                );
            }
        }
        let scope = entry_scope(&entry, &mut problem);
        clients.push(Client {
            id: entry.id,
            keys: own,
            scope: std::sync::Arc::new(scope),
        });
    }
    if !problems.is_empty() {
        config_file::locate(text, &mut problems);
        problems.sort_by_key(|p| p.at);
        return Err(problems);
    }
    Ok(Clients::new(clients))
}

fn entry_keys(entry: &Entry, dir: &Path, problem: &mut impl FnMut(&str, String)) -> Vec<Vec<u8>> {
    let set = [
        entry.key.is_some(),
        entry.key_file.is_some(),
        entry.keys.is_some(),
    ];
    match set.iter().filter(|s| **s).count() {
        // No key: the client logs in by its certificate (client_ca) alone.
        0 => return Vec::new(),
        1 => {}
        _ => {
            problem(
                "key",
                "set one of key, key_file, or keys = [old, new] (while rotating); or none \
                 for a client that logs in by its certificate (client_ca) alone"
                    .into(),
            );
            return Vec::new();
        }
    }
    let keys = if let Some(k) = &entry.key {
        vec![k.clone()]
    } else if let Some(file) = &entry.key_file {
        let path = dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(k) => vec![k.trim_end_matches(['\r', '\n']).to_owned()],
            Err(e) => {
                problem("key_file", format!("cannot read {}: {e}", path.display()));
                return Vec::new();
            }
        }
    } else {
        let keys = entry.keys.clone().unwrap_or_default();
        if keys.is_empty() || keys.len() > MAX_KEYS {
            problem(
                "keys",
                format!(
                    "{} keys: list one or two, the old and the new one while the client moves",
                    keys.len()
                ),
            );
            return Vec::new();
        }
        keys
    };
    let field = if entry.key_file.is_some() {
        "key_file"
    } else if entry.keys.is_some() {
        "keys"
    } else {
        "key"
    };
    if keys.iter().any(String::is_empty) {
        problem(field, "a key is empty".into());
        return Vec::new();
    }
    keys.into_iter().map(String::into_bytes).collect()
}

fn entry_scope(entry: &Entry, problem: &mut impl FnMut(&str, String)) -> Scope {
    let allow_ports = entry.allow_ports.as_ref().map(|items| {
        let mut ranges = Vec::new();
        for item in items {
            match item.0.parse::<PortRange>() {
                Ok(r) => ranges.push(r),
                Err(m) => problem("allow_ports", m.to_string()),
            }
        }
        ranges.into_iter().collect::<PortRanges>()
    });
    let mut patterns = |field: &str, list: &Option<Vec<String>>| {
        let list = list.as_ref()?;
        if let Some(bad) = list
            .iter()
            .find(|p| p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            problem(
                field,
                format!(
                    "pattern {bad:?} is empty or holds spaces: write names with * and ?, e.g. \
                     \"app-*\" or \"*.team-a.example.com\""
                ),
            );
        }
        Some(Patterns::new(list.iter().cloned()))
    };
    let allow_names = patterns("allow_names", &entry.allow_names);
    let allow_domains = patterns("allow_domains", &entry.allow_domains);
    let allow_subdomains = patterns("allow_subdomains", &entry.allow_subdomains);
    let allow_visit = patterns("allow_visit", &entry.allow_visit);
    for (field, v) in [
        ("max_proxies", entry.max_proxies),
        ("max_streams", entry.max_streams),
    ] {
        if v == Some(0) {
            problem(
                field,
                "must be at least 1; to refuse the client, remove its entry".into(),
            );
        }
    }
    let bandwidth_limit = entry.bandwidth_limit.as_deref().and_then(|b| {
        b.parse::<Bandwidth>()
            .map_err(|m| problem("bandwidth_limit", m.to_string()))
            .ok()
    });
    Scope {
        allow_ports,
        allow_names,
        allow_domains,
        allow_subdomains,
        allow_visit,
        max_proxies: entry.max_proxies,
        max_streams: entry.max_streams,
        bandwidth_limit,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        parse(text, Path::new("/nonexistent"), Some(b"the shared key"))
            .err()
            .unwrap_or_default()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_full_entry_parses() {
        let text = r#"
[[clients]]
id = "team-a"
keys = ["team-a old key 0123", "team-a new key 0123"]
allow_ports = ["6000-6010", 7000]
allow_names = ["app-*"]
allow_domains = ["*.team-a.example.com"]
allow_subdomains = ["team-a-*"]
allow_visit = ["shared-*"]
max_proxies = 4
max_streams = 100
bandwidth_limit = "10MiB"

[[clients]]
id = "team-b"
key = "team-b key 0123456789"
"#;
        let c = parse(text, Path::new("."), None).unwrap();
        let a = c.get("team-a").unwrap();
        assert_eq!(a.keys.len(), 2);
        assert!(a.scope.allow_ports.as_ref().unwrap().contains(7000));
        assert!(!a.scope.allow_ports.as_ref().unwrap().contains(6011));
        assert_eq!(a.scope.bandwidth_limit.unwrap().to_string(), "10MiB");
        assert_eq!(*c.get("team-b").unwrap().scope, Scope::default());
        assert!(c.get("team-c").is_none());
    }

    #[test]
    fn every_problem_is_reported_at_once_at_its_line() {
        let text = r#"[[clients]]
id = "a"
key = "same key 0123456789"
allow_ports = ["9000-8000", 70000]

[[clients]]
id = "a"
key = "same key 0123456789"
bandwith_limit = "1MiB"

[[clients]]
id = "c"
key = "k3 0123456789abcdef"
keys = ["x", "y"]
bandwidth_limit = "lots"
max_proxies = 0

[[clients]]
id = "d"
key = "the shared key"
"#;
        // What does not fit the form (syntax, types, unknown keys) comes first, all of it,
        // as for the server's own config; the values are checked once the form is right.
        let shown = problems(text);
        assert_eq!(shown.len(), 1, "{shown:#?}");
        assert!(
            shown[0].starts_with("9:1: clients[1].bandwith_limit: unknown key"),
            "{shown:#?}"
        );
        assert!(
            shown[0].contains("did you mean `bandwidth_limit`"),
            "{shown:#?}"
        );
        let shown = problems(&text.replace("bandwith_limit", "bandwidth_limit"));
        let expect = [
            "4:1: clients[0].allow_ports: \"9000-8000\" is an empty range",
            "4:1: clients[0].allow_ports: \"70000\" is not a port range",
            "7:1: clients[1].id: duplicate id \"a\" (also clients[0])",
            "8:1: clients[1].key: also the key of clients[0]",
            "13:1: clients[2].key: set one of key, key_file, or keys",
            "15:1: clients[2].bandwidth_limit: \"lots\" is not a rate",
            "16:1: clients[2].max_proxies: must be at least 1",
            "20:1: clients[3].key: equals the server's shared auth_key",
        ];
        for e in expect {
            assert!(
                shown.iter().any(|s| s.starts_with(e)),
                "{e} not in {shown:#?}"
            );
        }
        assert_eq!(shown.len(), expect.len(), "{shown:#?}");
    }

    #[test]
    fn a_key_file_is_read_beside_the_clients_file() {
        let dir = std::env::temp_dir().join(format!("tt-clients-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.key"), "a key from a file 0123\n").unwrap();
        let c = parse(
            "[[clients]]\nid = \"a\"\nkey_file = \"a.key\"\n",
            &dir,
            None,
        )
        .unwrap();
        assert_eq!(
            c.get("a").unwrap().keys,
            vec![b"a key from a file 0123".to_vec()]
        );
        let e = parse(
            "[[clients]]\nid = \"a\"\nkey_file = \"nope.key\"\n",
            &dir,
            None,
        );
        assert!(e.unwrap_err()[0].to_string().contains("nope.key"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
