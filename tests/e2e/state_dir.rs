//! The zero-config server keeps the auth key and certificate it generates in a state
//! directory, so the client config it printed still works after a restart.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tunnel_testkit::*;

/// Start the server with no key and no certificate on `port`, keeping its state in `dir`;
/// returns it, the sentence before the printed config, and the config's `key = value` lines.
fn zero_config_server(dir: &Path, port: u16) -> (Proc, String, String) {
    let mut server = Proc::adopt(
        Command::new(bins::server())
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--publish-addr", "127.0.0.1", "--stats-bind", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(dir)
            .env_remove("TUNNEL_AUTH_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = server.child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let header = lines.next().unwrap().unwrap();
    let mut printed = String::new();
    for line in lines.map_while(Result::ok) {
        if line.starts_with("[[proxies]]") {
            break;
        }
        if line.contains(" = ") {
            printed.push_str(&line);
            printed.push('\n');
        }
    }
    (server, header, printed)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_zero_config_server_keeps_its_key_and_certificate() {
    let scratch = Pki::new("state-dir");
    // Not there yet: the server makes it, and its parent.
    let dir = scratch.dir.join("state").join("tls-tunnel");
    let port = free_port();

    let (mut first, header, printed) = zero_config_server(&dir, port);
    let shown = dir.display().to_string();
    assert!(
        header.contains(&shown) && header.contains("reused at the next start"),
        "{header}"
    );
    assert!(
        printed.contains("server_fingerprint = \"sha256:"),
        "{printed}"
    );
    assert!(printed.contains("auth_key = \""), "{printed}");
    // Secrets: the directory and every file in it are the owner's only.
    assert_eq!(mode(&dir), 0o700);
    for file in ["auth_key", "cert.pem", "key.pem"] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    // Stopped right after it printed: it must already stop gracefully.
    let status = first.sigterm().await;
    assert!(status.success(), "{status:?}");

    let (_second, header, again) = zero_config_server(&dir, port);
    assert!(
        header.contains(&shown) && header.contains("were reused"),
        "{header}"
    );
    assert_eq!(
        again, printed,
        "a restart must print the same client config"
    );

    // The config the first run printed works against the second.
    let echo = echo_service().await;
    let publish = free_port();
    let client_cfg = scratch.write(
        "client.toml",
        &format!(
            "{printed}id = \"state-dir-test\"\n\n[[proxies]]\nname = \"echo\"\ntype = \"tcp\"\nlocal_addr = \"{echo}\"\npublish_port = {publish}\n"
        ),
    );
    let _client = Proc::adopt(
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
    let data = random_bytes(100_000, 5);
    assert!(roundtrip(published(publish), &data).await == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_state_dir_falls_back_to_a_key_for_this_run_only() {
    let scratch = Pki::new("state-dir-bad");
    // A regular file where the directory should be: nothing can be created under it.
    let blocker = scratch.write("not-a-dir", "");
    let (_server, header, printed) = zero_config_server(&blocker.join("state"), free_port());
    assert!(
        header.contains("for this run only") && header.contains("a restart makes a new key"),
        "{header}"
    );
    assert!(printed.contains("auth_key = \""), "{printed}");
}

/// The fingerprint in `log` (the `listening ... fingerprint=sha256:...` line), if logged yet.
fn logged_fingerprint(log: &str) -> Option<String> {
    let at = log.find("fingerprint=sha256:")? + "fingerprint=".len();
    Some(log[at..].split_whitespace().next()?.to_owned())
}

/// A server with its own `auth_key` but no certificate keeps the self-signed one it makes in
/// the state directory too: a restart must not change the fingerprint every client pins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_its_own_key_keeps_its_certificate_across_a_restart() {
    let scratch = Pki::new("state-dir-keyed");
    let dir = scratch.dir.join("state");
    let port = free_port();
    let cfg = scratch.write(
        "server.toml",
        &format!(
            "bind = \"127.0.0.1:{port}\"\nauth_key = \"a key of our own, long enough\"\n\
             publish_addr = \"127.0.0.1\"\nstats_bind = \"\"\nstate_dir = {:?}\n",
            dir.display().to_string()
        ),
    );
    let mut prints = Vec::new();
    for run in 0..2 {
        let log = scratch.dir.join(format!("server-{run}.log"));
        let mut server = Proc::spawn(bins::server(), &cfg, log);
        let mut seen = None;
        eventually(Duration::from_secs(10), "the fingerprint is logged", || {
            seen = logged_fingerprint(&server.log());
            let found = seen.is_some();
            async move { found }
        })
        .await;
        prints.push(seen.unwrap());
        server.sigterm().await;
    }
    assert_eq!(prints[0], prints[1], "the restart changed the certificate");
    assert!(dir.join("cert.pem").exists() && dir.join("key.pem").exists());
    // The key is the configured one: nothing made one up.
    assert!(!dir.join("auth_key").exists());
}
