//! A scratch directory with a certificate, and the binaries started from config files in it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::bins;
use crate::engines::KEY;
use crate::net::{free_port, is_listening};
use crate::process::Proc;

/// A scratch directory with a generated certificate, removed on drop.
#[derive(Debug)]
pub struct Pki {
    /// The scratch directory.
    pub dir: PathBuf,
    /// The certificate (for `localhost`), PEM.
    pub cert: PathBuf,
    /// Its private key, PEM.
    pub key: PathBuf,
    /// The certificate's PEM text.
    pub cert_pem: String,
    /// The certificate's fingerprint, as clients pin it.
    pub fingerprint: String,
}

impl Pki {
    /// A fresh directory under the system temp dir, named for `tag`, with a certificate.
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

    /// Write `text` to the file `name` in the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Start the server binary on 127.0.0.1:`port` with this certificate; `extra` is more
    /// TOML. Returns once the port accepts connections.
    pub async fn server(&self, tag: &str, port: u16, extra: &str) -> Proc {
        self.server_with_key(tag, port, &format!("auth_key = \"{KEY}\""), extra)
            .await
    }

    /// [`Pki::server`] with `key_line` in place of the shared `auth_key` line (say, `""` for
    /// a server of a `clients_file` only, or a `stats_bind` of the test's choosing).
    pub async fn server_with_key(&self, tag: &str, port: u16, key_line: &str, extra: &str) -> Proc {
        // Before `extra`, which may open tables; unless the test picks its own.
        let sets_stats = extra
            .lines()
            .chain(key_line.lines())
            .any(|l| l.trim_start().starts_with("stats_bind"));
        let stats = if sets_stats {
            ""
        } else {
            "stats_bind = \"127.0.0.1:0\"\n"
        };
        let cfg = self.write(
            &format!("server-{tag}.toml"),
            &format!(
                "bind = \"127.0.0.1:{port}\"\n{key_line}\ntls_cert = {:?}\n\
                 tls_key = {:?}\npublish_addr = \"127.0.0.1\"\n{stats}{extra}\n",
                self.cert.display().to_string(),
                self.key.display().to_string(),
            ),
        );
        let mut p = Proc::spawn(
            bins::server(),
            &cfg,
            self.dir.join(format!("server-{tag}.log")),
        );
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
        Proc::spawn(
            bins::client(),
            &cfg,
            self.dir.join(format!("client-{tag}.log")),
        )
    }
}

impl Pki {
    /// Start the client binary as client `id` proving itself with `key` (its own key from
    /// the server's clients file, say), with `body` after the connection settings.
    pub fn client_as(
        &self,
        tag: &str,
        server_addr: &str,
        fingerprint: &str,
        id: &str,
        key: &str,
        body: &str,
    ) -> Proc {
        let cfg = self.write(
            &format!("client-{tag}.toml"),
            &format!(
                "server_addr = \"{server_addr}\"\nauth_key = \"{key}\"\nid = \"{id}\"\n\
                 server_fingerprint = \"{fingerprint}\"\n{body}\n"
            ),
        );
        Proc::spawn(
            bins::client(),
            &cfg,
            self.dir.join(format!("client-{tag}.log")),
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `[[proxies]]` table for a tcp proxy, for a client config file.
pub fn proxy_toml(name: &str, local: SocketAddr, publish: Option<u16>) -> String {
    let publish = publish.map_or(String::new(), |p| format!("publish_port = {p}\n"));
    format!("\n[[proxies]]\nname = \"{name}\"\ntype = \"tcp\"\nlocal_addr = \"{local}\"\n{publish}")
}

/// Fail if the process's log shows a panic.
pub fn no_panic(p: &Proc) {
    let log = p.log();
    assert!(!log.contains("panicked"), "the process panicked:\n{log}");
}
