//! The real-world check: nginx in front of the server terminates TLS and forwards the
//! WebSocket upgrade to the server's plain `ws_bind`; a client with `transport = "wss"`
//! dials nginx, and `curl` reaches its proxy. Skipped (with the reason) only where nginx is
//! not installed; `.ci/run` installs it.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tunnel_client::{ClientConfig, ProxyConfig};

/// The nginx binary: on PATH, or where Debian puts it (`/usr/sbin` is not on every PATH).
fn nginx_binary() -> Option<PathBuf> {
    if have("nginx") {
        return Some(PathBuf::from("nginx"));
    }
    let debian = PathBuf::from("/usr/sbin/nginx");
    debian.exists().then_some(debian)
}

/// An nginx process of our own in a scratch directory; killed and cleaned up on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// TLS on 127.0.0.1:`port` with `cert`/`key`; `/tunnel` is proxied, upgrade headers and
    /// all, to the plain WebSocket listener at `upstream`.
    fn start(bin: &Path, dir: PathBuf, port: u16, upstream: std::net::SocketAddr) -> Nginx {
        let d = dir.display();
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
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/cert.pem;
        ssl_certificate_key {d}/key.pem;
        # tls-tunnel speaks TLS 1.3 only; nginx before 1.23.4 leaves it off by default.
        ssl_protocols TLSv1.2 TLSv1.3;
        location /tunnel {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header X-Real-IP $remote_addr;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }}
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
        Nginx { child, dir }
    }

    fn error_log(&self) -> String {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_client_through_nginx_serves_a_proxy_that_curl_reaches() {
    let Some(bin) = nginx_binary() else {
        eprintln!("SKIPPED: nginx is not installed (.ci/run installs it)");
        return;
    };
    if !have("curl") {
        eprintln!("SKIPPED: curl is not installed (.ci/run installs it)");
        return;
    }
    capture_logs();
    let server = server_for(TransportKind::Ws).await;
    let ws_bind = server.ws_addr().unwrap();

    let dir = std::env::temp_dir().join(format!("tls-tunnel-nginx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) =
        tunnel_transport::generate_self_signed_pem(&["localhost".to_string()]).unwrap();
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    std::fs::write(dir.join("key.pem"), key).unwrap();
    let nginx_port = free_port();
    let mut nginx = Nginx::start(&bin, dir.clone(), nginx_port, ws_bind);
    nginx.wait_ready(nginx_port).await;

    let web = http_service("hello through nginx").await;
    let port = free_port();
    let cfg = ClientConfig::new(format!("localhost:{nginx_port}"))
        .with_auth_key(KEY)
        .with_transport(TransportKind::Wss)
        .with_ca_cert(dir.join("cert.pem"))
        .with_id("behind-nginx")
        .with_proxy(ProxyConfig::tcp("web", &web.to_string(), Some(port)));
    let _client = client(cfg).await;
    // The server saw a plain ws client (TLS ended at nginx), with nginx's X-Real-IP, and the
    // client knew to leave channel binding out.
    expect_logged(&["client connected", "behind-nginx", "transport=ws"]).await;
    expect_logged(&["channel binding off", "behind-nginx"]).await;

    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{port}/"),
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "curl failed: {}\nnginx: {}",
        String::from_utf8_lossy(&out.stderr),
        nginx.error_log()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello through nginx");

    // Bulk data both ways through nginx stays byte-exact.
    let echo = echo_service().await;
    let echo_port = free_port();
    let _echo_client = client(
        ClientConfig::new(format!("localhost:{nginx_port}"))
            .with_auth_key(KEY)
            .with_transport(TransportKind::Wss)
            .with_ca_cert(dir.join("cert.pem"))
            .with_id("echo-behind-nginx")
            .with_proxy(ProxyConfig::tcp("echo", &echo.to_string(), Some(echo_port))),
    )
    .await;
    let data = random_bytes(4 << 20, 11);
    assert!(roundtrip(published(echo_port), &data).await == data);
}
