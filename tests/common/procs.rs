//! Processes and raw peers: the release binaries run as child processes with a scratch
//! directory and certificate, and hand-written TLS peers that speak the protocol directly.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_proto::Hello;

use super::*;

pub const SERVER: &str = env!("CARGO_BIN_EXE_tunnel-server");
pub const CLIENT: &str = env!("CARGO_BIN_EXE_tunnel-client");
// ---------------------------------------------------------------------------------------------
// Processes.

/// A running binary, killed (and reaped) on drop so a failing test leaks no process. Its
/// stderr (the log) goes to a file the test can read.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(bin: &str, config: &Path, log: PathBuf) -> Proc {
        let err = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .env_remove("TUNNEL_AUTH_KEY")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {} failed", self.pid());
    }

    /// kill -9, then reap.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait for the process to exit, at most `within`.
    pub async fn exit_within(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process {} still running after {within:?}; its log:\n{}",
                self.pid(),
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Open file descriptors (sockets included).
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory with a generated certificate, removed on drop.
pub struct Pki {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub fingerprint: String,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "tls-tunnel-faults-{tag}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_pem, key_pem) =
            tunnel_transport::generate_self_signed_pem(&["localhost".to_string()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let fingerprint =
            tunnel_transport::ServerIdentity::load(&tunnel_transport::ServerIdentitySource::Pem {
                cert: cert.clone(),
                key: key.clone(),
            })
            .unwrap()
            .fingerprint()
            .to_string();
        Pki {
            dir,
            cert,
            key,
            cert_pem,
            fingerprint,
        }
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Start the server binary on 127.0.0.1:`port` with this certificate; `extra` is more
    /// TOML. Returns once the port accepts connections.
    pub async fn server(&self, tag: &str, port: u16, extra: &str) -> Proc {
        let cfg = self.write(
            &format!("server-{tag}.toml"),
            &format!(
                "bind = \"127.0.0.1:{port}\"\nauth_key = \"{KEY}\"\ntls_cert = {:?}\n\
                 tls_key = {:?}\npublish_addr = \"127.0.0.1\"\nstats_bind = \"127.0.0.1:0\"\n{extra}\n",
                self.cert.display().to_string(),
                self.key.display().to_string(),
            ),
        );
        let mut p = Proc::spawn(SERVER, &cfg, self.dir.join(format!("server-{tag}.log")));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_listening(port).await {
            assert!(p.is_running(), "the server exited:\n{}", p.log());
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p
    }

    /// Start the client binary with `body` (top-level keys, then tables) after the
    /// connection settings for `server_addr`.
    pub fn client(&self, tag: &str, server_addr: &str, fingerprint: &str, body: &str) -> Proc {
        let cfg = self.write(
            &format!("client-{tag}.toml"),
            &format!(
                "server_addr = \"{server_addr}\"\nauth_key = \"{KEY}\"\n\
                 server_fingerprint = \"{fingerprint}\"\n{body}\n"
            ),
        );
        Proc::spawn(CLIENT, &cfg, self.dir.join(format!("client-{tag}.log")))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn proxy_toml(name: &str, local: SocketAddr, publish: Option<u16>) -> String {
    let publish = publish.map_or(String::new(), |p| format!("publish_port = {p}\n"));
    format!("\n[[proxies]]\nname = \"{name}\"\ntype = \"tcp\"\nlocal_addr = \"{local}\"\n{publish}")
}

pub fn no_panic(p: &Proc) {
    let log = p.log();
    assert!(!log.contains("panicked"), "the process panicked:\n{log}");
}

// ---------------------------------------------------------------------------------------------
// Traffic.

/// A short echo round trip through 127.0.0.1:`port` that must finish within `within`;
/// false on any failure (refused, closed, wrong bytes, too slow).
pub async fn serves_within(port: u16, within: Duration) -> bool {
    let data = random_bytes(64 * 1024, u64::from(port));
    let attempt = async {
        let s = TcpStream::connect(published(port)).await.ok()?;
        let (mut r, mut w) = s.into_split();
        let payload = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&payload).await.ok()?;
            w.shutdown().await.ok()
        });
        let mut back = Vec::with_capacity(data.len());
        r.read_to_end(&mut back).await.ok()?;
        writer.await.ok()??;
        Some(back == data)
    };
    matches!(tokio::time::timeout(within, attempt).await, Ok(Some(true)))
}

pub async fn serves(port: u16) -> bool {
    serves_within(port, Duration::from_secs(5)).await
}

/// Read and discard until the peer closes (EOF or error); panics if that takes longer
/// than `within`. Returns how long it took.
pub async fn closed_within<S: AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
    what: &str,
) -> Duration {
    let started = Instant::now();
    let drain = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(within, drain)
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after {within:?}"));
    started.elapsed()
}

/// Whether a fresh connection to `port` is refused or closed at once without a byte.
pub async fn refused_or_closed(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(published(port)).await else {
        return true;
    };
    let _ = s.write_all(b"hello?").await;
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A TLS connection to the server from `source` (any 127.x address), trusting `ca_pem`,
/// offering the tunnel's ALPN; returns the stream and its exported keying material.
pub async fn raw_tls(
    server: SocketAddr,
    source: IpAddr,
    ca_pem: &str,
) -> std::io::Result<(
    tokio_rustls::client::TlsStream<TcpStream>,
    [u8; tunnel_proto::EKM_LEN],
)> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![tunnel_transport::ALPN_TUNNEL.to_vec()];
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(source, 0))?;
    let tcp = sock.connect(server).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await?;
    let binding = tls
        .get_ref()
        .1
        .export_keying_material([0u8; 32], tunnel_proto::EKM_LABEL, None)
        .map_err(std::io::Error::other)?;
    Ok((tls, binding))
}

pub fn hello(id: &str) -> Hello {
    Hello {
        version: tunnel_proto::PROTOCOL_VERSION,
        client_id: id.to_string(),
        instance: [7; 16],
    }
}
