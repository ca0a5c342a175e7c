//! The release binaries as a user drives them: config files, flags, signals, real processes.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tunnel_testkit::*;

#[test]
fn help_explains_both_binaries() {
    for bin in [bins::server(), bins::client()] {
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
    let pki = Pki::new("cli-check");
    let cfg = pki.write(
        "server.toml",
        "auth_key = \"k\"\ntls_cert = \"/nonexistent.pem\"\n",
    );
    let out = bins::check(bins::server(), &cfg);
    assert_eq!(out.code, Some(1));
    let err = &out.stderr;
    assert!(err.contains("tls_key"), "{err}");

    let cfg = pki.write("bad.toml", "bind = \"0.0.0.0:8443\"\nfoo = 1\n");
    let out = Command::new(bins::server())
        .args(["--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("foo"));

    let cfg = pki.write(
        "client.toml",
        "server_addr = \"x:1\"\nauth_key = \"k\"\n[[proxies]]\nname = \"a\"\nlocal_addr = \"nope\"\n\
         [[proxies]]\nname = \"a\"\nlocal_addr = \"127.0.0.1:1\"\n",
    );
    let out = bins::check(bins::client(), &cfg);
    assert_eq!(out.code, Some(1));
    let err = &out.stderr;
    // The checks after parsing are placed at their keys too.
    let file = cfg.display();
    assert!(
        err.contains(&format!("{file}:5:1: proxies[0].local_addr: "))
            && err.contains(&format!("{file}:7:1: proxies[1].name: ")),
        "{err}"
    );

    let cfg = pki.write("ok.toml", "server_addr = \"x:1\"\nauth_key = \"k\"\n");
    let out = bins::check(bins::client(), &cfg);
    assert!(out.success());
}

/// A file with six mistakes of six kinds: one `--check` names them all, each at its line and
/// column, one per line (it took four rounds when loading stopped at the first).
#[test]
fn check_reports_every_problem_of_a_file_at_its_line_in_one_run() {
    let pki = Pki::new("cli-check-all");
    let cfg = pki.write(
        "client.toml",
        "\
server_addr = \"tunnel.example.com:8443\"
auth_key = \"k\"
reconect_max_delay = 5
heartbeat_timeout = \"30s\"

[[proxies]]
name = \"web\"
local_adr = \"127.0.0.1:3000\"
publish_port = 70000

[[proxies]]
name = \"api\"
type = \"htp\"
local_addr = \"127.0.0.1:4000\"

[[visitors]]
name = \"db\"
bind = \"127.0.0.1:5432\"
",
    );
    let out = bins::check(bins::client(), &cfg);
    assert_eq!(out.code, Some(1));
    let err = &out.stderr;
    let lines: Vec<&str> = err.lines().collect();
    let file = cfg.display().to_string();
    let expected = [
        // An unknown top-level key, with the one meant.
        (
            "3:1: reconect_max_delay:",
            "did you mean `reconnect_max_delay`?",
        ),
        // A wrong type.
        ("4:21: heartbeat_timeout:", "invalid type: string \"30s\""),
        // A typo inside [[proxies]]: at the key's own line, with the valid keys.
        (
            "8:1: proxies[0].local_adr:",
            "did you mean `local_addr`? valid keys here: name,",
        ),
        // A port out of range.
        ("9:16: proxies[0].publish_port:", "70000"),
        // A bad enum value.
        ("13:8: proxies[1].type:", "did you mean `http`?"),
        // A missing required key: at the header of its table.
        ("16:1: visitors[0].proxy:", "required, but missing"),
    ];
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, (place, words)) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("{file}:{place}")) && line.contains(words),
            "{line:?} should start {place:?} and say {words:?}; all:\n{err}"
        );
    }
}

/// `tunnel-server` runs on its defaults alone (it makes a key up), so `--check` accepts them.
#[test]
fn server_check_with_no_arguments_accepts_the_defaults() {
    let out = Command::new(bins::server())
        .arg("--check")
        .env_remove("TUNNEL_AUTH_KEY")
        .env_remove("TUNNEL_STATS_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "config OK");
}

/// The server on defaults (but a free port) prints a client config that works as pasted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn printed_client_config_works_end_to_end_with_pem_files_and_signals() {
    if !need("curl") {
        return;
    }
    let pki = Pki::new("cli-e2e");
    let port = free_port();
    let mut server = Proc::adopt(
        Command::new(bins::server())
            .args([
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--publish-addr",
                "127.0.0.1",
                // Not the default 9090: other tests run at the same time, and a stats port
                // that cannot be bound stops the server.
                "--stats-bind",
                "127.0.0.1:0",
            ])
            .env_remove("TUNNEL_AUTH_KEY")
            // It keeps its generated key and certificate: here, not in the user's home.
            .env("XDG_STATE_HOME", &pki.dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Read the printed config up to its first proxy table.
    let stdout = server.child.stdout.take().unwrap();
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
    let client_cfg = pki.write(
        "client.toml",
        &format!(
            "{printed}id = \"cli-test\"\n\n[[proxies]]\nname = \"web\"\ntype = \"tcp\"\nlocal_addr = \"{web}\"\npublish_port = {publish}\n"
        ),
    );
    let mut client = Proc::adopt(
        Command::new(bins::client())
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
        client.sigterm().await.success(),
        "client must exit 0 on SIGTERM"
    );
    eventually(
        Duration::from_secs(2),
        "port closed after the client left",
        || async { !is_listening(publish).await },
    )
    .await;
    assert!(
        server.sigterm().await.success(),
        "server must exit 0 on SIGTERM"
    );
}

#[test]
fn wrong_key_makes_the_client_exit_non_zero_with_the_reason() {
    let pki = Pki::new("cli-wrongkey");
    let port = free_port();
    let (cert_path, key_path) = (&pki.cert, &pki.key);
    let server_cfg = pki.write(
        "server.toml",
        &format!(
            "bind = \"127.0.0.1:{port}\"\nauth_key = \"right\"\nstats_bind = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n",
            cert_path.display().to_string(),
            key_path.display().to_string()
        ),
    );
    let _server = Proc::adopt(
        Command::new(bins::server())
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
    let client_cfg = pki.write(
        "client.toml",
        &format!(
            "server_addr = \"localhost:{port}\"\nauth_key = \"wrong\"\nca_cert = {:?}\n",
            cert_path.display().to_string()
        ),
    );
    let out = Command::new(bins::client())
        .arg("--config")
        .arg(&client_cfg)
        .env_remove("TUNNEL_AUTH_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth_key does not match"), "{err}");
}

/// `--version` names the binary it came from, not the package.
#[test]
fn version_names_the_binary() {
    for (bin, name) in [
        (bins::server(), "tunnel-server"),
        (bins::client(), "tunnel-client"),
    ] {
        let out = Command::new(bin).arg("--version").output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with(&format!("{name} ")), "{text}");
    }
}

/// `tunnel-pow` defines `pow` in the binaries so that glibc's libm (0.5 MiB of an idle
/// process's RSS) is never loaded; a new caller of another libm function, or the crate no
/// longer linked, would bring it back. The library's name is in the binary only if the
/// dynamic section lists it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn the_binaries_do_not_load_libm() {
    for bin in [bins::server(), bins::client()] {
        let bytes = std::fs::read(bin).unwrap();
        let needle = b"libm.so.6";
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "{bin} needs libm.so.6 again: see which libm function it now calls with \
             `nm -D --undefined-only` and give it a definition in crates/tunnel-pow"
        );
    }
}
