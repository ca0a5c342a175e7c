//! How to reach etcd: endpoints, TLS, credentials, timeouts; checked before any connection.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, TlsOptions};

use crate::{ClusterConfig, ClusterError};

/// How [`EtcdStore::connect`](super::EtcdStore::connect) reaches etcd. Field names follow the
/// server's `[cluster]` settings, so errors name the setting to fix.
#[derive(Clone)]
pub struct EtcdOptions {
    /// `endpoints`: client URLs, `http://host:port` or `https://host:port` (all of one kind).
    pub endpoints: Vec<String>,
    /// `etcd_ca_cert`: a PEM file with the CA that signed etcd's certificate, for https
    /// endpoints signed by a private CA. Without it, https endpoints are checked against the
    /// system's roots.
    pub ca_cert: Option<PathBuf>,
    /// `etcd_user`, when etcd has authentication enabled.
    pub user: Option<String>,
    /// `etcd_password`, with `etcd_user`.
    pub password: Option<String>,
    /// How long one TCP (and TLS) connection attempt to an endpoint may take.
    pub connect_timeout: Duration,
    /// How long any one request may take, connecting included: a frozen or partitioned etcd
    /// fails a caller after this, never hangs it.
    pub request_timeout: Duration,
    /// How often an idle connection is pinged (HTTP/2), so that a watch on a connection to a
    /// frozen etcd ends with an error instead of staying silent. etcd refuses pings more often
    /// than every 5 s (`--grpc-keepalive-min-time`).
    pub keepalive_interval: Duration,
    /// etcd's `--max-txn-ops` (128 unless the operator changed it).
    pub max_txn_ops: usize,
}

impl EtcdOptions {
    /// Options for `endpoints` with the defaults: no TLS CA, no user, 5 s timeouts, a ping
    /// every 10 s, 128 operations per transaction.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> EtcdOptions {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ca_cert: None,
            user: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            keepalive_interval: Duration::from_secs(10),
            max_txn_ops: 128,
        }
    }

    /// The options of a server's `[cluster]` section. Requests time out after a third of
    /// `lease_ttl` (between 1 s and 5 s), so a hung renewal is over before the next one is
    /// due.
    pub fn from_config(cfg: &ClusterConfig) -> EtcdOptions {
        let mut o = EtcdOptions::new(cfg.endpoints.iter().cloned());
        o.ca_cert = cfg.etcd_ca_cert.clone();
        o.user = cfg.etcd_user.clone();
        o.password = cfg.etcd_password.clone();
        o.request_timeout =
            (cfg.lease_ttl / 3).clamp(Duration::from_secs(1), Duration::from_secs(5));
        o
    }

    /// The endpoints as errors show them.
    pub(super) fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }

    /// etcd-client's options, or the setting that is wrong.
    pub(super) fn connect_options(&self) -> Result<ConnectOptions, ClusterError> {
        if self.endpoints.is_empty() {
            return Err(config(
                "endpoints",
                "is empty: list etcd's client URLs, e.g. [\"http://127.0.0.1:2379\"]",
            ));
        }
        let mut https = 0;
        for e in &self.endpoints {
            if e.starts_with("https://") {
                https += 1;
            } else if !e.starts_with("http://") {
                return Err(config(
                    "endpoints",
                    format!("{e:?} has no scheme: write http://{e} or https://{e}"),
                ));
            }
        }
        if https != 0 && https != self.endpoints.len() {
            return Err(config(
                "endpoints",
                "mixes http:// and https:// URLs: an etcd cluster serves its clients one way",
            ));
        }
        if self.max_txn_ops == 0 {
            return Err(config(
                "max_txn_ops",
                "is 0: set etcd's --max-txn-ops (128 by default)",
            ));
        }
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_keep_alive(self.keepalive_interval, self.request_timeout)
            .with_keep_alive_while_idle(true)
            // A token expires (5 min by default in etcd): log in again rather than fail.
            .with_auto_token_refresh(true);
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => opts = opts.with_user(user, password),
            (None, None) => {}
            (Some(_), None) => {
                return Err(config("etcd_password", "is missing: etcd_user needs it"));
            }
            (None, Some(_)) => {
                return Err(config("etcd_user", "is missing: etcd_password needs it"));
            }
        }
        if let Some(path) = &self.ca_cert {
            if https == 0 {
                return Err(config(
                    "etcd_ca_cert",
                    "is set but the endpoints are http://: use https:// URLs, or remove it",
                ));
            }
            let pem = std::fs::read(path).map_err(|e| {
                config(
                    "etcd_ca_cert",
                    format!(
                        "cannot read {}: {e}; set it to the PEM file of the CA that signed \
                         etcd's certificate",
                        path.display()
                    ),
                )
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(config(
                    "etcd_ca_cert",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
            opts = opts.with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(pem)));
        } else if https != 0 {
            opts = opts.with_tls(TlsOptions::new().with_native_roots());
        }
        Ok(opts)
    }
}

fn config(field: &'static str, reason: impl Into<String>) -> ClusterError {
    ClusterError::EtcdConfig {
        field,
        reason: reason.into(),
    }
}

impl fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password: options end up in logs.
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("ca_cert", &self.ca_cert)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .field("max_txn_ops", &self.max_txn_ops)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(o: &EtcdOptions) -> &'static str {
        match o.connect_options() {
            Err(ClusterError::EtcdConfig { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn bad_settings_name_their_field() {
        assert_eq!(
            field_of(&EtcdOptions::new(Vec::<String>::new())),
            "endpoints"
        );
        assert_eq!(field_of(&EtcdOptions::new(["127.0.0.1:2379"])), "endpoints");
        assert_eq!(
            field_of(&EtcdOptions::new(["http://a:1", "https://b:1"])),
            "endpoints"
        );
        let mut o = EtcdOptions::new(["http://a:1"]);
        o.user = Some("root".into());
        assert_eq!(field_of(&o), "etcd_password");
        let mut o = EtcdOptions::new(["http://a:1"]);
        o.ca_cert = Some("/nonexistent".into());
        assert_eq!(field_of(&o), "etcd_ca_cert");
        let mut o = EtcdOptions::new(["https://a:1"]);
        o.ca_cert = Some("/nonexistent/ca.pem".into());
        let err = o.connect_options().expect_err("unreadable CA").to_string();
        assert!(
            err.starts_with("etcd_ca_cert: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn a_cluster_section_becomes_options_with_a_timeout_below_the_renewal_period() {
        let mut cfg = ClusterConfig {
            endpoints: vec!["https://e1:2379".into(), "https://e2:2379".into()],
            etcd_ca_cert: Some("/etc/etcd/ca.pem".into()),
            etcd_user: Some("tunnel".into()),
            etcd_password: Some("pw".into()),
            lease_ttl: Duration::from_secs(10),
            ..ClusterConfig::default()
        };
        let o = EtcdOptions::from_config(&cfg);
        assert_eq!(o.endpoints, cfg.endpoints);
        assert_eq!(
            (o.user.as_deref(), o.password.as_deref()),
            (Some("tunnel"), Some("pw"))
        );
        assert_eq!(o.ca_cert, cfg.etcd_ca_cert);
        assert_eq!(o.request_timeout, Duration::from_secs(10) / 3);
        cfg.lease_ttl = Duration::from_secs(2);
        assert_eq!(
            EtcdOptions::from_config(&cfg).request_timeout,
            Duration::from_secs(1)
        );
        cfg.lease_ttl = Duration::from_secs(300);
        assert_eq!(
            EtcdOptions::from_config(&cfg).request_timeout,
            Duration::from_secs(5)
        );
    }

    #[test]
    fn the_password_stays_out_of_debug_output() {
        let mut o = EtcdOptions::new(["http://a:1"]);
        o.user = Some("root".into());
        o.password = Some("hunter2".into());
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<hidden>"),
            "{shown}"
        );
    }
}
