//! The release binaries as a user drives them: config files, flags, signals, real processes.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SERVER: &str = env!("CARGO_BIN_EXE_tunnel-server");
const CLIENT: &str = env!("CARGO_BIN_EXE_tunnel-client");

/// Kills the process if a test fails half-way.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigterm(p: &mut Proc) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tls-tunnel-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn help_explains_both_binaries() {
    for bin in [SERVER, CLIENT] {
        let out = Command::new(bin).arg("--help").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("--config") && text.contains("--check"),
            "{text}"
        );
        assert!(text.contains("TUNNEL_AUTH_KEY"), "{text}");
    }
}

#[test]
fn check_reports_every_problem_and_fails() {
    let dir = tempdir("check");
    let cfg = write(
        &dir,
        "server.toml",
        "auth_key = \"k\"\ntls_cert = \"/nonexistent.pem\"\n",
    );
    let out = Command::new(SERVER)
        .args(["--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls_key"), "{err}");

    let cfg = write(&dir, "bad.toml", "bind = \"0.0.0.0:8443\"\nfoo = 1\n");
    let out = Command::new(SERVER)
        .args(["--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("foo"));

    let cfg = write(
        &dir,
        "client.toml",
        "server_addr = \"x:1\"\nauth_key = \"k\"\n[[proxies]]\nname = \"a\"\nlocal_addr = \"nope\"\n\
         [[proxies]]\nname = \"a\"\nlocal_addr = \"127.0.0.1:1\"\n",
    );
    let out = Command::new(CLIENT)
        .args(["--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("proxies[0].local_addr") && err.contains("proxies[1].name"),
        "{err}"
    );

    let cfg = write(&dir, "ok.toml", "server_addr = \"x:1\"\nauth_key = \"k\"\n");
    let out = Command::new(CLIENT)
        .args(["--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let _ = std::fs::remove_dir_all(dir);
}

/// The server on defaults (but a free port) prints a client config that works as pasted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_client_config_works_end_to_end_with_pem_files_and_signals() {
    if !have("curl") {
        eprintln!("SKIPPED: curl is not installed (.ci/run installs it)");
        return;
    }
    let dir = tempdir("e2e");
    let port = free_port();
    let mut server = Proc(
        Command::new(SERVER)
            .args([
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--publish-addr",
                "127.0.0.1",
            ])
            .env_remove("TUNNEL_AUTH_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Read the printed config up to its first proxy table.
    let stdout = server.0.stdout.take().unwrap();
    let mut printed = String::new();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("[[proxies]]") {
            break;
        }
        if line.contains(" = ") {
            printed.push_str(&line);
            printed.push('\n');
        }
    }
    assert!(
        printed.contains("server_fingerprint = \"sha256:"),
        "{printed}"
    );
    let web = http_service("served via the binaries").await;
    let publish = free_port();
    let client_cfg = write(
        &dir,
        "client.toml",
        &format!(
            "{printed}id = \"cli-test\"\n\n[[proxies]]\nname = \"web\"\ntype = \"tcp\"\nlocal_addr = \"{web}\"\npublish_port = {publish}\n"
        ),
    );
    let mut client = Proc(
        Command::new(CLIENT)
            .arg("--config")
            .arg(&client_cfg)
            .env_remove("TUNNEL_AUTH_KEY")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    eventually(Duration::from_secs(10), "published port open", || async {
        is_listening(publish).await
    })
    .await;
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("http://127.0.0.1:{publish}/"),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "served via the binaries"
    );

    assert!(
        sigterm(&mut client).success(),
        "client must exit 0 on SIGTERM"
    );
    eventually(
        Duration::from_secs(2),
        "port closed after the client left",
        || async { !is_listening(publish).await },
    )
    .await;
    assert!(
        sigterm(&mut server).success(),
        "server must exit 0 on SIGTERM"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn wrong_key_makes_the_client_exit_non_zero_with_the_reason() {
    let dir = tempdir("wrongkey");
    let port = free_port();
    let (cert, key) =
        tunnel_transport::generate_self_signed_pem(&["localhost".to_string()]).unwrap();
    let cert_path = write(&dir, "cert.pem", &cert);
    let key_path = write(&dir, "key.pem", &key);
    let server_cfg = write(
        &dir,
        "server.toml",
        &format!(
            "bind = \"127.0.0.1:{port}\"\nauth_key = \"right\"\ntls_cert = {:?}\ntls_key = {:?}\n",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
    );
    let _server = Proc(
        Command::new(SERVER)
            .arg("--config")
            .arg(&server_cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let client_cfg = write(
        &dir,
        "client.toml",
        &format!(
            "server_addr = \"localhost:{port}\"\nauth_key = \"wrong\"\nca_cert = {:?}\n",
            cert_path.display().to_string()
        ),
    );
    let out = Command::new(CLIENT)
        .arg("--config")
        .arg(&client_cfg)
        .env_remove("TUNNEL_AUTH_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth_key does not match"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
