//! A throw-away single-member etcd, for the cluster registry's tests against the real store.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::net::free_port;
use crate::process::Proc;
use crate::tools::{find, need};

/// How long etcd may take to elect itself and answer `/health`; a cold start on a busy
/// 2-core machine takes about a second.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// A single-member etcd on free loopback client and peer ports, its data in a fresh temp dir
/// (`--unsafe-no-fsync`: tests do not need durability); killed and its directory removed on
/// drop.
#[derive(Debug)]
pub struct Etcd {
    proc: Proc,
    dir: PathBuf,
    scheme: &'static str,
    /// The client port on 127.0.0.1 (gRPC).
    pub client_port: u16,
    /// The peer port on 127.0.0.1.
    pub peer_port: u16,
    /// The port of `/health` and `/metrics` on 127.0.0.1, plain HTTP.
    pub health_port: u16,
}

impl Etcd {
    /// Start one when etcd is installed; `None` after [`need`] said it is not (the test then
    /// returns; under `CI=true` it has failed instead).
    pub async fn start_if_installed() -> Option<Etcd> {
        if !need("etcd") {
            return None;
        }
        Some(Etcd::start().await)
    }

    /// Start one and wait until it answers `/health`. Panics if etcd is missing or does not
    /// come up (its log is in the message).
    pub async fn start() -> Etcd {
        Etcd::start_with(&[]).await
    }

    /// [`Etcd::start`] with more command-line flags (e.g. `--max-txn-ops=4`).
    pub async fn start_with(extra: &[&str]) -> Etcd {
        Etcd::launch("http", &[], extra).await
    }

    /// One serving its clients over TLS with the certificate `cert` and its key `key` (PEM
    /// files; the certificate must name 127.0.0.1): [`Etcd::endpoint`] is then `https://`.
    pub async fn start_tls(cert: &Path, key: &Path) -> Etcd {
        let tls = [
            "--cert-file".to_owned(),
            cert.display().to_string(),
            "--key-file".to_owned(),
            key.display().to_string(),
        ];
        Etcd::launch("https", &tls, &[]).await
    }

    async fn launch(scheme: &'static str, tls: &[String], extra: &[&str]) -> Etcd {
        let bin = find("etcd").expect("etcd is installed (check with need(\"etcd\") first)");
        let dir = std::env::temp_dir().join(format!(
            "tls-tunnel-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // A port free when picked may be taken before etcd binds it: etcd then exits, and we
        // try again with new ports.
        let mut last_log = String::new();
        for attempt in 0..3 {
            let (client_port, peer_port, health_port) = (free_port(), free_port(), free_port());
            let client = format!("{scheme}://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            let log = dir.join(format!("etcd-{attempt}.log"));
            let child = Command::new(&bin)
                .args(["--name", "default", "--data-dir"])
                .arg(dir.join(format!("data-{attempt}")))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer])
                .args(["--initial-advertise-peer-urls", &peer])
                .args(["--initial-cluster", &format!("default={peer}")])
                // /health in plain HTTP on a port of its own, whatever the clients speak.
                .args([
                    "--listen-metrics-urls",
                    &format!("http://127.0.0.1:{health_port}"),
                ])
                .args([
                    "--unsafe-no-fsync",
                    "--logger",
                    "zap",
                    "--log-outputs",
                    "stderr",
                ])
                .args(tls)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap();
            let mut proc = Proc { child, log };
            let deadline = Instant::now() + START_DEADLINE;
            while proc.is_running() && Instant::now() < deadline {
                if healthy(health_port, Duration::from_secs(1)).await {
                    return Etcd {
                        proc,
                        dir,
                        scheme,
                        client_port,
                        peer_port,
                        health_port,
                    };
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            last_log = proc.log();
            if proc.is_running() {
                // Running but not healthy in time: no point in another try.
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("etcd did not become healthy within {START_DEADLINE:?}; its log:\n{last_log}");
    }

    /// The client URL, `http://127.0.0.1:<client_port>` (`https://` for
    /// [`Etcd::start_tls`]), as a cluster config lists it.
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    /// The client port's address, for a relay in front of it.
    pub fn client_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// Whether `/health` answers `"health":"true"` within `within`.
    pub async fn healthy(&self, within: Duration) -> bool {
        healthy(self.health_port, within).await
    }

    /// Freeze it (SIGSTOP): its sockets stay open but nothing answers, as with a hung or
    /// partitioned store. Returns once every thread has stopped: a signal is delivered
    /// asynchronously, and a request sent meanwhile could still be answered.
    pub async fn pause(&self) {
        self.proc.signal("STOP");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.stopped() {
            assert!(Instant::now() < deadline, "etcd did not stop on SIGSTOP");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether every thread of the process is stopped (state `T` in /proc).
    fn stopped(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return false;
        };
        tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                // The state follows the command name, which is in parentheses.
                stat.rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().next())
                    .is_some_and(|state| state == "T")
            })
        })
    }

    /// Thaw it after [`Etcd::pause`] (SIGCONT).
    pub fn resume(&self) {
        self.proc.signal("CONT");
    }

    /// The sum of the samples of `name` on its `/metrics` (0 if absent), e.g.
    /// `etcd_server_proposals_committed_total`: every write goes through one proposal, lease
    /// renewals do not.
    pub async fn metric(&self, name: &str) -> f64 {
        let mut s = TcpStream::connect(("127.0.0.1", self.health_port))
            .await
            .unwrap();
        // HTTP/1.0: the answer is the page as is, never in chunks that could cut a line.
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut page = Vec::new();
        // A few hundred KiB; the cap keeps a confused server from filling memory.
        (&mut s)
            .take(16 << 20)
            .read_to_end(&mut page)
            .await
            .unwrap();
        String::from_utf8_lossy(&page)
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.proc.log()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too; reap it before removing its data.
        self.proc.kill9();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the etcd on 127.0.0.1:`port` answers `/health` with `"health":"true"` within
/// `within`.
async fn healthy(port: u16, within: Duration) -> bool {
    let probe = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut answer = Vec::new();
        // The answer is a few hundred bytes; the cap keeps a confused server from filling
        // memory.
        (&mut s)
            .take(64 << 10)
            .read_to_end(&mut answer)
            .await
            .ok()?;
        Some(String::from_utf8_lossy(&answer).contains("\"health\":\"true\""))
    };
    matches!(tokio::time::timeout(within, probe).await, Ok(Some(true)))
}
