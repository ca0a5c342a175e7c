//! The server's `[cluster]` table (issue #16, "Server config"). Parsed and checked here; the
//! server embeds it as `ServerConfig::cluster`.
//!
//! `cluster_key` is the secret servers use with each other on the peer link. It must never be
//! the client auth key: a client key must never be able to open a forwarding stream (design
//! note, "Peer link"), hence [`ClusterConfig::problems_with`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tunnel_transport::ConfigProblem;

use crate::ClusterError;

/// The shortest accepted `lease_ttl`: etcd's minimum TTL at default election settings
/// (ceil(1.5 × 1 s election timeout)); below it etcd silently raises the TTL.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// The longest accepted `lease_ttl`: a dead server's names stay taken this long.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(300);
/// The shortest accepted cluster key, in bytes.
pub const MIN_CLUSTER_KEY: usize = 16;
/// The longest accepted `server_id` (it is a key segment and shows in every log line).
pub const MAX_SERVER_ID: usize = 64;
/// The longest accepted `prefix`.
pub const MAX_PREFIX: usize = 128;

/// Which registry the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One server, the registry in its memory (the default).
    #[default]
    None,
    /// Several servers sharing a registry in etcd.
    Etcd,
}

/// Which servers listen on a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Every server listens on every published port and forwards over the peer link, so a
    /// plain L4 balancer over all servers works for any port (NodePort style).
    #[default]
    All,
    /// Only the server holding the client listens (no hop; the balancer health-checks per
    /// port).
    Owner,
}

/// The `[cluster]` table of the server configuration.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `"etcd"` or `"none"` (absent: none).
    #[serde(default)]
    pub backend: Backend,
    /// etcd client URLs, e.g. `http://127.0.0.1:2379`.
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Where the registry's keys live in etcd; starts and ends with `/`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// This server's name in the cluster; default: the host name ([`Self::server_id`]).
    #[serde(default)]
    pub server_id: Option<String>,
    /// The TTL of the server's lease, in whole seconds: how long a dead server's names stay
    /// taken.
    #[serde(
        default = "default_lease_ttl",
        deserialize_with = "tunnel_proto::seconds::deserialize"
    )]
    pub lease_ttl: Duration,
    /// Where the peer link listens for other servers.
    #[serde(default)]
    pub peer_bind: Option<SocketAddr>,
    /// The `host:port` other servers dial for the peer link; default `peer_bind` (required
    /// when that is a wildcard address).
    #[serde(default)]
    pub peer_advertise: Option<String>,
    /// The secret servers authenticate each other with; never the client auth key.
    #[serde(default)]
    pub cluster_key: Option<String>,
    /// A file holding `cluster_key` (container and systemd secrets).
    #[serde(default)]
    pub cluster_key_file: Option<PathBuf>,
    /// `"all"` (default) or `"owner"`.
    #[serde(default)]
    pub publish_mode: PublishMode,
    /// The CA that signed etcd's certificate, for `https://` endpoints (default: system
    /// roots).
    #[serde(default)]
    pub etcd_ca_cert: Option<PathBuf>,
    /// The etcd user, with `etcd_password`.
    #[serde(default)]
    pub etcd_user: Option<String>,
    /// The etcd password, with `etcd_user`.
    #[serde(default)]
    pub etcd_password: Option<String>,
}

fn default_prefix() -> String {
    "/tls-tunnel/".to_string()
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(10)
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            backend: Backend::None,
            endpoints: Vec::new(),
            prefix: default_prefix(),
            server_id: None,
            lease_ttl: default_lease_ttl(),
            peer_bind: None,
            peer_advertise: None,
            cluster_key: None,
            cluster_key_file: None,
            publish_mode: PublishMode::All,
            etcd_ca_cert: None,
            etcd_user: None,
            etcd_password: None,
        }
    }
}

/// Secrets shown as `<hidden>`: a Debug print ends up in logs and bug reports.
impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |s: &Option<String>| s.as_ref().map(|_| "<hidden>");
        f.debug_struct("ClusterConfig")
            .field("backend", &self.backend)
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("server_id", &self.server_id)
            .field("lease_ttl", &self.lease_ttl)
            .field("peer_bind", &self.peer_bind)
            .field("peer_advertise", &self.peer_advertise)
            .field("cluster_key", &hidden(&self.cluster_key))
            .field("cluster_key_file", &self.cluster_key_file)
            .field("publish_mode", &self.publish_mode)
            .field("etcd_ca_cert", &self.etcd_ca_cert)
            .field("etcd_user", &self.etcd_user)
            .field("etcd_password", &hidden(&self.etcd_password))
            .finish()
    }
}

impl ClusterConfig {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        self.backend != Backend::None
    }

    /// `server_id`, or the host name when unset.
    pub fn server_id(&self) -> Result<String, ConfigProblem> {
        if let Some(id) = &self.server_id {
            return Ok(id.clone());
        }
        hostname().ok_or_else(|| {
            ConfigProblem::new(
                "cluster.server_id",
                "not set, and the host name cannot be read: set server_id to a name unique in the cluster",
            )
        })
    }

    /// Where other servers reach this one's peer link.
    pub fn peer_advertise(&self) -> Option<String> {
        self.peer_advertise.clone().or_else(|| {
            self.peer_bind
                .filter(|a| !a.ip().is_unspecified())
                .map(|a| a.to_string())
        })
    }

    /// The cluster key, from `cluster_key` or `cluster_key_file` (trailing newlines dropped,
    /// as editors and `echo` add them).
    pub fn cluster_key(&self) -> Result<String, ConfigProblem> {
        let key = match (&self.cluster_key, &self.cluster_key_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigProblem::new(
                    "cluster.cluster_key_file",
                    "set either cluster_key or cluster_key_file, not both",
                ))
            }
            (Some(k), None) => k.clone(),
            (None, Some(path)) => read_key(path)?,
            (None, None) => {
                return Err(ConfigProblem::new(
                    "cluster.cluster_key",
                    "required with backend = \"etcd\": set cluster_key or cluster_key_file to a secret shared by the servers only (not the client auth_key)",
                ))
            }
        };
        if key.len() < MIN_CLUSTER_KEY {
            return Err(ConfigProblem::new(
                "cluster.cluster_key",
                format!(
                    "{} bytes; use at least {MIN_CLUSTER_KEY} random characters",
                    key.len()
                ),
            ));
        }
        Ok(key)
    }

    /// Everything wrong with the table, each naming the field and the fix. Nothing is
    /// checked when the backend is `none`. The server should call
    /// [`Self::problems_with`] instead, which also knows the client auth key.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        self.problems_with(None)
    }

    /// [`Self::problems`], plus: `cluster_key` must differ from the client `auth_key`.
    pub fn problems_with(&self, auth_key: Option<&str>) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        if !self.enabled() {
            return out;
        }
        let mut bad = |field: &str, msg: String| {
            out.push(ConfigProblem::new(format!("cluster.{field}"), msg));
        };
        if self.endpoints.is_empty() {
            bad(
                "endpoints",
                "empty with backend = \"etcd\": list the etcd client URLs, e.g. endpoints = [\"http://127.0.0.1:2379\"]".into(),
            );
        }
        for (i, e) in self.endpoints.iter().enumerate() {
            if let Err(why) = check_endpoint(e) {
                bad(&format!("endpoints[{i}]"), why.to_string());
            }
        }
        if self.lease_ttl < MIN_LEASE_TTL || self.lease_ttl > MAX_LEASE_TTL {
            bad(
                "lease_ttl",
                format!(
                    "{} s; use {} to {} seconds (etcd's minimum is 2; 10 is a good start)",
                    self.lease_ttl.as_secs(),
                    MIN_LEASE_TTL.as_secs(),
                    MAX_LEASE_TTL.as_secs()
                ),
            );
        }
        let p = &self.prefix;
        if !p.starts_with('/') || !p.ends_with('/') || p.len() < 2 {
            bad(
                "prefix",
                format!("{p:?}: must start and end with '/', e.g. \"/tls-tunnel/\""),
            );
        } else if p.len() > MAX_PREFIX || p.contains("//") || p.chars().any(char::is_control) {
            bad(
                "prefix",
                format!("{p:?}: use at most {MAX_PREFIX} characters, no control characters and no empty segment (\"//\")"),
            );
        }
        match self.server_id() {
            Ok(id) => {
                if let Err(why) = check_server_id(&id) {
                    bad("server_id", why.to_string());
                }
            }
            Err(p) => out.push(p),
        }
        let mut bad = |field: &str, msg: String| {
            out.push(ConfigProblem::new(format!("cluster.{field}"), msg));
        };
        match self.peer_bind {
            None => bad(
                "peer_bind",
                "required with backend = \"etcd\": the address the peer link listens on, e.g. \"0.0.0.0:7001\"".into(),
            ),
            Some(a) if a.ip().is_unspecified() && self.peer_advertise.is_none() => bad(
                "peer_advertise",
                format!("required because peer_bind ({a}) is a wildcard address: set the host:port other servers dial, e.g. \"10.0.0.5:{}\"", a.port()),
            ),
            Some(_) => {}
        }
        if let Some(adv) = &self.peer_advertise {
            if !looks_like_host_port(adv) {
                bad(
                    "peer_advertise",
                    format!("{adv:?} is not host:port, e.g. \"10.0.0.5:7001\""),
                );
            }
        }
        match self.cluster_key() {
            Ok(key) => {
                if auth_key.is_some_and(|a| a == key) {
                    bad(
                        "cluster_key",
                        "equals the client auth_key: a client could then open peer forwarding streams; use a separate secret".into(),
                    );
                }
            }
            Err(p) => out.push(p),
        }
        let mut bad = |field: &str, msg: String| {
            out.push(ConfigProblem::new(format!("cluster.{field}"), msg));
        };
        match (&self.etcd_user, &self.etcd_password) {
            (Some(_), None) => bad(
                "etcd_password",
                "etcd_user is set without etcd_password: set both or neither".into(),
            ),
            (None, Some(_)) => bad(
                "etcd_user",
                "etcd_password is set without etcd_user: set both or neither".into(),
            ),
            _ => {}
        }
        if let Some(ca) = &self.etcd_ca_cert {
            if !ca.is_file() {
                bad(
                    "etcd_ca_cert",
                    format!("{} is not a readable file: give the PEM file of the CA that signed etcd's certificate", ca.display()),
                );
            }
            if self.endpoints.iter().all(|e| e.starts_with("http://")) && !self.endpoints.is_empty()
            {
                bad(
                    "etcd_ca_cert",
                    "set, but every endpoint is http://: use https:// endpoints for TLS to etcd"
                        .into(),
                );
            }
        }
        out
    }
}

fn read_key(path: &Path) -> Result<String, ConfigProblem> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|e| {
            ConfigProblem::new(
                "cluster.cluster_key_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })
}

/// `http://host:port` or `https://host:port` (etcd endpoints have no path).
fn check_endpoint(e: &str) -> Result<(), ClusterError> {
    let rest = e
        .strip_prefix("http://")
        .or_else(|| e.strip_prefix("https://"))
        .ok_or_else(|| ClusterError::EndpointScheme {
            endpoint: e.to_owned(),
        })?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if !looks_like_host_port(rest) {
        return Err(ClusterError::EndpointHostPort {
            endpoint: e.to_owned(),
        });
    }
    Ok(())
}

fn looks_like_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && !host.contains('/')
        && !host.chars().any(|c| c.is_whitespace() || c.is_control())
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

fn check_server_id(id: &str) -> Result<(), ClusterError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_SERVER_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(ClusterError::ServerId { id: id.to_owned() })
    }
}

/// The host name, from the kernel (no libc call: the crates forbid `unsafe`).
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests;
