//! Health checks of local services (`health_check = { type = "tcp" | "http", ... }` on a
//! proxy): after `max_failed` failed probes in a row the proxy withdraws (the client registers
//! again without it, so the server sends its users to the other members of its group), and
//! after one good probe it rejoins.
//!
//! [`Tracker`] is the decision alone, without I/O; [`watch`] probes and acts on it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn, Instrument};
use tunnel_proto::{ProxyKind, RegisterRequest};

use crate::config::ProxyConfig;
use crate::error::ConfigProblem;
use crate::{ClientError, Shared};

/// How a proxy's local service is probed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HealthCheck {
    /// `"tcp"`: the service accepts a connection; `"http"`: `GET path` answers 2xx or 3xx.
    #[serde(rename = "type")]
    pub kind: HealthKind,
    /// The path an `http` check asks for; default `/`.
    #[serde(default)]
    pub path: Option<String>,
    /// Seconds between probes; default 10.
    #[serde(default = "default_interval")]
    pub interval: u64,
    /// Seconds a probe may take; default 3 (at most `interval`).
    #[serde(default)]
    pub timeout: Option<u64>,
    /// Failed probes in a row that withdraw the proxy; default 3.
    #[serde(default = "default_max_failed")]
    pub max_failed: u32,
}

/// The kind of probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum HealthKind {
    /// Connect to `local_addr`.
    Tcp,
    /// `GET path` on `local_addr`.
    Http,
}

fn default_interval() -> u64 {
    10
}

fn default_max_failed() -> u32 {
    3
}

/// The longest status line (and headers before it) an `http` probe reads: the service is
/// local, but a broken one must not make the client buffer without bound.
const MAX_ANSWER: usize = 1024;

impl HealthCheck {
    /// A check of `kind` every `interval` seconds, withdrawing after `max_failed` failures.
    pub fn new(kind: HealthKind, interval: u64, max_failed: u32) -> Self {
        HealthCheck {
            kind,
            path: None,
            interval,
            timeout: None,
            max_failed,
        }
    }

    /// Ask for `path` (an `http` check).
    pub fn with_path(mut self, path: &str) -> Self {
        self.path = Some(path.to_owned());
        self
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.unwrap_or(3).min(self.interval).max(1))
    }

    fn path(&self) -> &str {
        self.path.as_deref().unwrap_or("/")
    }
}

/// The problems of proxy `i`'s `health_check`, each naming its key.
pub(crate) fn problems(p: &ProxyConfig, i: usize, out: &mut Vec<ConfigProblem>) {
    let Some(hc) = &p.health_check else {
        return;
    };
    let at = |f: &str| format!("proxies[{i}].health_check.{f}");
    if hc.interval == 0 {
        out.push(ConfigProblem::new(
            at("interval"),
            "must be at least 1 (seconds)",
        ));
    }
    match hc.timeout {
        Some(0) => out.push(ConfigProblem::new(
            at("timeout"),
            "must be at least 1 (seconds)",
        )),
        Some(t) if hc.interval > 0 && t > hc.interval => out.push(ConfigProblem::new(
            at("timeout"),
            format!(
                "is {t}, longer than interval ({}): a probe must end before the next; lower \
                 timeout or raise interval",
                hc.interval
            ),
        )),
        _ => {}
    }
    if hc.max_failed == 0 {
        out.push(ConfigProblem::new(
            at("max_failed"),
            "must be at least 1 (failed probes in a row before the proxy withdraws)",
        ));
    }
    if let Some(path) = &hc.path {
        if hc.kind != HealthKind::Http {
            out.push(ConfigProblem::new(
                at("path"),
                "applies to type = \"http\" only",
            ));
        } else if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ')
        {
            out.push(ConfigProblem::new(
                at("path"),
                format!("{path:?} is not a path: start it with '/' and use no spaces (e.g. \"/healthz\")"),
            ));
        }
    }
    match (hc.kind, p.kind) {
        (HealthKind::Http, ProxyKind::Udp) => out.push(ConfigProblem::new(
            at("type"),
            "an http check probes an HTTP service; for a udp proxy use type = \"tcp\" (if the \
             service also listens on TCP) or no health_check",
        )),
        // Its service may speak HTTP/2 only, or TLS: a plain HTTP/1.1 probe would fail.
        (HealthKind::Http, ProxyKind::Http2) => out.push(ConfigProblem::new(
            at("type"),
            "an http check speaks plain HTTP/1.1, which an http2 proxy's service may not: use \
             type = \"tcp\"",
        )),
        _ => {}
    }
}

/// What a probe's result means for the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing changes.
    Stay,
    /// `max_failed` failures in a row: withdraw.
    Withdraw,
    /// A success after a withdrawal: rejoin.
    Rejoin,
}

/// Counts failures in a row and decides: no I/O, so every transition is testable.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    max_failed: u32,
    failed: u32,
    withdrawn: bool,
    /// Whether any probe ended yet.
    probed: bool,
}

impl Tracker {
    pub(crate) fn new(max_failed: u32) -> Self {
        Tracker {
            max_failed: max_failed.max(1),
            failed: 0,
            withdrawn: false,
            probed: false,
        }
    }

    /// Record one probe.
    pub(crate) fn record(&mut self, healthy: bool) -> Verdict {
        self.probed = true;
        if healthy {
            self.failed = 0;
            if self.withdrawn {
                self.withdrawn = false;
                return Verdict::Rejoin;
            }
            return Verdict::Stay;
        }
        self.failed = self.failed.saturating_add(1);
        if !self.withdrawn && self.failed >= self.max_failed {
            self.withdrawn = true;
            return Verdict::Withdraw;
        }
        Verdict::Stay
    }

    /// For the stats: `unknown` before the first probe, then `healthy`, `failing` (some
    /// failures, still in) or `withdrawn`.
    pub(crate) fn state(&self) -> &'static str {
        match (self.probed, self.withdrawn, self.failed) {
            (false, _, _) => "unknown",
            (_, true, _) => "withdrawn",
            (_, false, 0) => "healthy",
            _ => "failing",
        }
    }
}

/// The client's health checks: which proxies are withdrawn, and the state of each checked one.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Proxies whose checks run, with their state for the stats.
    states: Mutex<HashMap<String, &'static str>>,
    /// Proxies left out of the registration until a probe succeeds.
    withdrawn: Mutex<HashSet<String>>,
}

impl Health {
    /// `req` without the withdrawn proxies.
    pub(crate) fn filter(&self, mut req: RegisterRequest) -> RegisterRequest {
        let withdrawn = self.withdrawn.lock();
        if !withdrawn.is_empty() {
            req.proxies.retain(|p| !withdrawn.contains(&p.name));
        }
        req
    }

    /// The health state of proxy `name`, if it is checked.
    pub(crate) fn state(&self, name: &str) -> Option<&'static str> {
        self.states.lock().get(name).copied()
    }
}

/// Start a watcher for each proxy with a health check that has none running (at start, and
/// after a reload added some).
pub(crate) fn sync(shared: &Arc<Shared>) {
    let checked: Vec<String> = shared
        .live
        .read()
        .proxies
        .values()
        .filter(|p| p.health_check.is_some())
        .map(|p| p.name.clone())
        .collect();
    for name in checked {
        let fresh = {
            let mut states = shared.health.states.lock();
            !states.contains_key(&name) && states.insert(name.clone(), "unknown").is_none()
        };
        if fresh {
            let span = tracing::info_span!("health", proxy = %name);
            shared
                .tasks
                .spawn(watch(shared.clone(), name).instrument(span));
        }
    }
}

/// Probe proxy `name` until it is removed (by a reload), loses its check, or the client
/// stops; withdraw and rejoin it as [`Tracker`] decides.
async fn watch(shared: Arc<Shared>, name: String) {
    let mut tracker: Option<Tracker> = None;
    loop {
        let check = shared.proxy_config(&name).and_then(|p| {
            let hc = p.health_check.clone()?;
            Some((p, hc))
        });
        let Some((cfg, hc)) = check else {
            break;
        };
        let t = tracker.get_or_insert_with(|| Tracker::new(hc.max_failed));
        // A reload may have changed it; the failures counted so far still count.
        t.max_failed = hc.max_failed.max(1);
        let outcome = probe(&hc, &cfg.local_addr).await;
        if let Err(why) = &outcome {
            debug!(local_addr = %cfg.local_addr, "health probe failed: {why}");
        }
        let verdict = t.record(outcome.is_ok());
        // Before acting: the stats say what the server is about to hear.
        shared.health.states.lock().insert(name.clone(), t.state());
        match verdict {
            Verdict::Stay => {}
            Verdict::Withdraw => {
                warn!(
                    local_addr = %cfg.local_addr,
                    "proxy withdrawn: {} health checks failed in a row (last: {}); it rejoins \
                     after one succeeds",
                    hc.max_failed,
                    outcome.as_ref().err().map(ToString::to_string).unwrap_or_default()
                );
                shared.health.withdrawn.lock().insert(name.clone());
                crate::reload::announce(&shared).await;
            }
            Verdict::Rejoin => {
                info!(local_addr = %cfg.local_addr, "proxy rejoins: its health check succeeded");
                shared.health.withdrawn.lock().remove(&name);
                crate::reload::announce(&shared).await;
            }
        }
        let pause = Duration::from_secs(hc.interval.max(1));
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    // Unchecked now: never kept out of the registration by a check that no longer runs.
    shared.health.states.lock().remove(&name);
    if shared.health.withdrawn.lock().remove(&name) && !shared.shutdown.is_cancelled() {
        crate::reload::announce(&shared).await;
    }
}

/// One probe of `local_addr`, within the check's timeout.
async fn probe(hc: &HealthCheck, local_addr: &str) -> Result<(), ClientError> {
    let run = async {
        let mut tcp =
            TcpStream::connect(local_addr)
                .await
                .map_err(|source| ClientError::HealthConnect {
                    addr: local_addr.to_owned(),
                    source,
                })?;
        if hc.kind == HealthKind::Tcp {
            return Ok(());
        }
        let host = local_addr.rsplit_once(':').map_or(local_addr, |(h, _)| h);
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tls-tunnel-health\r\nConnection: close\r\n\r\n",
            hc.path()
        );
        tcp.write_all(req.as_bytes())
            .await
            .map_err(ClientError::HealthSend)?;
        let status = read_status(&mut tcp).await?;
        if (200..400).contains(&status) {
            Ok(())
        } else {
            Err(ClientError::HealthStatus {
                path: hc.path().to_owned(),
                status,
            })
        }
    };
    match tokio::time::timeout(hc.timeout(), run).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::HealthTimeout {
            after: hc.timeout(),
        }),
    }
}

/// The status code of an HTTP/1.x answer, from its first line.
async fn read_status(tcp: &mut TcpStream) -> Result<u16, ClientError> {
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') {
        if buf.len() >= MAX_ANSWER {
            return Err(ClientError::HealthLineTooLong);
        }
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(ClientError::HealthRead)?;
        if n == 0 {
            return Err(ClientError::HealthClosed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    parse_status(&buf).ok_or(ClientError::HealthNotHttp)
}

/// `HTTP/1.1 204 No Content\r\n...` → 204.
fn parse_status(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn withdraws_after_max_failed_in_a_row_and_rejoins_after_one_success() {
        let mut t = Tracker::new(3);
        assert_eq!(t.state(), "unknown");
        assert_eq!(t.record(false), Verdict::Stay);
        assert_eq!(t.record(false), Verdict::Stay);
        assert_eq!(t.state(), "failing");
        // A success in between starts the count again.
        assert_eq!(t.record(true), Verdict::Stay);
        assert_eq!(t.state(), "healthy");
        assert_eq!(t.record(false), Verdict::Stay);
        assert_eq!(t.record(false), Verdict::Stay);
        assert_eq!(t.record(false), Verdict::Withdraw);
        assert_eq!(t.state(), "withdrawn");
        // Withdrawn once: more failures change nothing.
        assert_eq!(t.record(false), Verdict::Stay);
        assert_eq!(t.record(true), Verdict::Rejoin);
        assert_eq!(t.state(), "healthy");
        assert_eq!(t.record(true), Verdict::Stay);
    }

    #[test]
    fn max_failed_one_withdraws_at_the_first_failure() {
        let mut t = Tracker::new(1);
        assert_eq!(t.record(false), Verdict::Withdraw);
        assert_eq!(t.record(true), Verdict::Rejoin);
        // Zero is refused by the config; here it counts as one.
        assert_eq!(Tracker::new(0).record(false), Verdict::Withdraw);
    }

    use crate::ClientConfig;

    const BASE: &str = "server_addr = \"example.com:8443\"\nauth_key = \"k\"\n";

    fn fields(proxies: &str) -> Vec<String> {
        let c = ClientConfig::from_toml(&format!("{BASE}{proxies}")).unwrap();
        c.problems().into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn a_group_member_with_a_check_reaches_the_spec_and_its_defaults() {
        let c = ClientConfig::from_toml(&format!(
            "{BASE}[[proxies]]\nname=\"a\"\nlocal_addr=\"h:1\"\npublish_port=7000\n\
             group=\"web\"\ngroup_key=\"s3cret\"\n\
             health_check={{ type=\"http\", path=\"/healthz\" }}\n"
        ))
        .unwrap();
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let hc = c.proxies[0].health_check.clone().unwrap();
        assert_eq!(
            (hc.interval, hc.max_failed, hc.timeout()),
            (10, 3, Duration::from_secs(3))
        );
        let spec = c.proxies[0].spec();
        assert_eq!(spec.group.as_deref(), Some("web"));
        assert!(
            !format!("{spec:?}{c:?}").contains("s3cret"),
            "Debug hides the key"
        );
    }

    #[test]
    fn bad_checks_and_groups_are_refused_by_field() {
        let got = fields(
            "[[proxies]]\nname=\"a\"\nlocal_addr=\"h:1\"\npublish_port=7000\n\
             health_check={ type=\"http\", interval=0, max_failed=0, path=\"healthz\" }\n\
             [[proxies]]\nname=\"b\"\ntype=\"udp\"\nlocal_addr=\"h:1\"\npublish_port=7001\n\
             health_check={ type=\"http\", interval=2, timeout=5 }\n\
             [[proxies]]\nname=\"c\"\nlocal_addr=\"h:1\"\ngroup=\"web\"\n\
             [[proxies]]\nname=\"d\"\nlocal_addr=\"h:1\"\npublish_port=7002\ngroup_key=\"k\"\n\
             health_check={ type=\"tcp\", path=\"/\" }\n\
             [[proxies]]\nname=\"e\"\ntype=\"http2\"\nlocal_addr=\"h:1\"\n\
             health_check={ type=\"http\" }\n",
        );
        assert_eq!(
            got,
            [
                "proxies[0].health_check.interval",
                "proxies[0].health_check.max_failed",
                "proxies[0].health_check.path",
                "proxies[1].health_check.timeout",
                "proxies[1].health_check.type",
                "proxies[2].group_key",
                "proxies[3].health_check.path",
                "proxies[3].group_key",
                "proxies[4].health_check.type",
            ]
        );
        let unknown = ClientConfig::from_toml(&format!(
            "{BASE}[[proxies]]\nname=\"a\"\nlocal_addr=\"h:1\"\nhealth_check={{ type=\"tcp\", every=3 }}\n"
        ));
        assert!(unknown.unwrap_err().to_string().contains("every"));
    }

    #[test]
    fn a_withdrawn_proxy_is_left_out_of_the_registration_only() {
        let c = ClientConfig::new("h:1")
            .with_proxy(ProxyConfig::tcp("a", "h:2", Some(7000)))
            .with_proxy(ProxyConfig::tcp("b", "h:3", Some(7001)));
        let health = Health::default();
        let names = |h: &Health| -> Vec<String> {
            h.filter(c.register_request())
                .proxies
                .into_iter()
                .map(|p| p.name)
                .collect()
        };
        assert_eq!(names(&health), ["a", "b"]);
        health.withdrawn.lock().insert("a".into());
        assert_eq!(names(&health), ["b"]);
        health.withdrawn.lock().remove("a");
        assert_eq!(names(&health), ["a", "b"]);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(
            parse_status(b"HTTP/1.0 302 Found\r\nLocation: /\r\n"),
            Some(302)
        );
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 20 x\r\n"), None);
    }

    /// A one-connection service on loopback: it reads the request head, then sends `answer`
    /// and closes, or (`None`) holds the connection without answering.
    async fn serve_once(answer: Option<&'static [u8]>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut chunk = [0u8; 256];
            while !head.ends_with(b"\r\n\r\n") {
                let n = tcp.read(&mut chunk).await.unwrap();
                if n == 0 {
                    return;
                }
                head.extend_from_slice(&chunk[..n]);
            }
            match answer {
                Some(a) => tcp.write_all(a).await.unwrap(),
                // Held until the probe gives up and closes its end.
                None => while tcp.read(&mut chunk).await.is_ok_and(|n| n > 0) {},
            }
        });
        addr
    }

    /// The failure texts reach the logs and the WARN that withdraws a proxy.
    #[tokio::test]
    async fn probe_failures_say_what_the_service_did() {
        let hc = HealthCheck::new(HealthKind::Http, 1, 3).with_path("/health");
        let cases: [(&[u8], &str); 3] = [
            (
                b"HTTP/1.1 503 Unavailable\r\n\r\n",
                "GET /health answered 503",
            ),
            (b"", "the service closed without answering"),
            (b"SSH-2.0-OpenSSH\r\n", "the answer is not HTTP/1.x"),
        ];
        for (answer, text) in cases {
            let addr = serve_once(Some(answer)).await;
            let e = probe(&hc, &addr).await.unwrap_err();
            assert_eq!(e.to_string(), text);
            assert!(!e.is_permanent());
        }
        let long: &'static [u8] = Box::leak(vec![b'x'; 2 * MAX_ANSWER].into_boxed_slice());
        let addr = serve_once(Some(long)).await;
        let e = probe(&hc, &addr).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the answer's first line is too long for HTTP"
        );
        let addr = serve_once(Some(b"HTTP/1.1 204 No Content\r\n\r\n")).await;
        probe(&hc, &addr).await.unwrap();

        let silent = serve_once(None).await;
        let e = probe(&hc, &silent).await.unwrap_err();
        assert_eq!(e.to_string(), "no answer within 1s (timeout)");

        // A port nobody listens on: bound, then closed.
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone_addr = gone.local_addr().unwrap().to_string();
        drop(gone);
        let e = probe(&hc, &gone_addr).await.unwrap_err();
        let want = format!("cannot connect to {gone_addr}: ");
        assert!(e.to_string().starts_with(&want), "{e}");
    }
}
