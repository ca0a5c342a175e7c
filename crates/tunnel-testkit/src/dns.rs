//! A dnsmasq of our own answering a test zone, and `dig` batches against it.

use std::process::{Child, Command, Stdio};

use crate::tools::find;
use crate::udp::free_udp_port;

/// The name dnsmasq answers, and its address.
pub const TEST_ZONE: (&str, &str) = ("test.example", "10.1.2.3");

/// A dnsmasq process answering [`TEST_ZONE`] on 127.0.0.1; killed on drop. Check
/// `need("dnsmasq")` first.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    /// Its UDP port on 127.0.0.1.
    pub port: u16,
}

impl Dnsmasq {
    /// Start it on a free port (it may take a moment to answer: poll it with [`dig_batch`]).
    pub fn start() -> Dnsmasq {
        let bin = find("dnsmasq").expect("dnsmasq is installed (check need(\"dnsmasq\"))");
        let port = free_udp_port();
        let (name, addr) = TEST_ZONE;
        let child = Command::new(bin)
            .args([
                &format!("--port={port}"),
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--keep-in-foreground",
                "--pid-file=",
                &format!("--address=/{name}/{addr}"),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Dnsmasq { child, port }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `n` A queries for `name` in one `dig -f` run against 127.0.0.1:`port` (one process, so
/// one source port), each with `+short`: the answers, one line each, in order.
pub async fn dig_batch(port: u16, name: &str, n: usize) -> Vec<String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let batch = std::env::temp_dir().join(format!(
        "dig-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&batch, format!("{name} A\n").repeat(n)).unwrap();
    let out = tokio::process::Command::new("dig")
        .args(["@127.0.0.1", "-p", &port.to_string()])
        .args(["+short", "+tries=3", "+time=2", "-f"])
        .arg(&batch)
        .output()
        .await
        .unwrap();
    let _ = std::fs::remove_file(&batch);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
