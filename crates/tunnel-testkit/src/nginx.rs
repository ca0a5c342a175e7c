//! An nginx of our own in a scratch directory, for the checks against a real-world proxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::is_listening;
use crate::pki::Pki;
use crate::tools::{find, skip};

/// An nginx process in its own directory; killed and its directory removed on drop.
#[derive(Debug)]
pub struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Whether nginx is installed; if not, [`skip`] the test (or fail it under CI).
    pub fn available() -> bool {
        if find("nginx").is_some() {
            return true;
        }
        skip("nginx is not installed (.ci/run installs it)");
        false
    }

    /// Start nginx in a fresh directory under `parent` with one `server { }` block whose body
    /// is `server` (`listen 127.0.0.1:{port} ...;` included), and wait until it listens on
    /// `port`.
    pub async fn start(parent: &Path, port: u16, server: &str) -> Nginx {
        Nginx::start_servers(parent, port, &[server.to_owned()]).await
    }

    /// [`Nginx::start`] with one `server { }` block per entry of `servers`.
    pub async fn start_servers(parent: &Path, port: u16, servers: &[String]) -> Nginx {
        let server = servers.join("\n    }\n    server {\n");
        let bin = find("nginx").expect("nginx is installed (check Nginx::available first)");
        let dir = parent.join(format!("nginx-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        // master_process off: one process, so killing it leaves no worker holding the test's
        // output pipe open.
        let conf = format!(
            r#"
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
{server}
    }}
}}
"#
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut nginx = Nginx { child, dir };
        nginx.wait_ready(port).await;
        nginx
    }

    /// nginx terminating TLS on 127.0.0.1:`port` with `pki`'s certificate, speaking
    /// `ssl_protocols` (e.g. `"TLSv1.2 TLSv1.3"`), and proxying `/tunnel` to a server's plain
    /// WebSocket listener `ws_bind`, upgrade headers and the real address included: the
    /// set-up the docs give for a server behind nginx.
    pub async fn tls_front(
        pki: &Pki,
        port: u16,
        ssl_protocols: &str,
        ws_bind: SocketAddr,
    ) -> Nginx {
        let server = format!(
            r#"
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols {ssl_protocols};
        location /tunnel {{
            proxy_pass http://{ws_bind};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header X-Real-IP $remote_addr;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}"#,
            cert = pki.cert.display(),
            key = pki.key.display(),
        );
        Nginx::start(&pki.dir, port, &server).await
    }

    /// nginx as a local HTTPS service on 127.0.0.1:`port`: one TLS site per entry of `sites`
    /// (a host name and its certificate), chosen by SNI, each answering every request with
    /// `site <name> pp=<address>`, the address being what a PROXY protocol header named
    /// (empty without one). `proxy_protocol`: the port expects that header first.
    pub async fn https_sites(
        dir: &Path,
        port: u16,
        sites: &[(&str, &crate::ClientCertFiles)],
        proxy_protocol: bool,
    ) -> Nginx {
        let pp = if proxy_protocol {
            " proxy_protocol"
        } else {
            ""
        };
        let servers: Vec<String> = sites
            .iter()
            .map(|(name, files)| {
                format!(
                    r#"
        listen 127.0.0.1:{port} ssl{pp};
        server_name {name};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{
            default_type text/plain;
            return 200 "site {name} pp=$proxy_protocol_addr
";
        }}"#,
                    cert = files.cert.display(),
                    key = files.key.display(),
                )
            })
            .collect();
        Nginx::start_servers(dir, port, &servers).await
    }

    /// nginx's error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Wait until nginx accepts connections on `port`, or fail with its error log.
    async fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_listening(port).await {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited ({status}):\n{}", self.error_log());
            }
            assert!(
                Instant::now() < deadline,
                "nginx did not listen within 10 s:\n{}",
                self.error_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
