//! iperf3: a server on loopback behind a proxy, and timed runs through the tunnel.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::free_port;
use crate::poll::eventually;
use crate::process::Proc;

/// An `iperf3 -s` on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct Iperf3 {
    _proc: Proc,
    log: std::path::PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Iperf3 {
    /// Start one and wait until it listens. Call [`crate::need`]`("iperf3")` first.
    pub async fn start() -> Iperf3 {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("iperf3-{}-{port}.log", std::process::id()));
        let child = Command::new("iperf3")
            .args([
                "-s",
                "-B",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--forceflush",
            ])
            .arg("--logfile")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proc = Proc::adopt(child);
        // Not by connecting: iperf3 serves one test at a time, and a probe would be one,
        // keeping the server busy when the real test arrives.
        eventually(Duration::from_secs(10), "iperf3 -s listening", || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move { text.contains("Server listening") }
        })
        .await;
        Iperf3 {
            _proc: proc,
            log,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

impl Drop for Iperf3 {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Run `iperf3 -c` against `to` for `secs` seconds (`reverse`: the server sends) and return
/// what the receiving end measured, in bytes per second. An iperf3 server still closing its
/// last test answers "busy" for a moment: asked again until it takes this one (10 s at most).
pub async fn iperf3_rate(to: SocketAddr, secs: u32, reverse: bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = iperf3_run(to, secs, reverse).await;
        if let Some(bits) = report["end"]["sum_received"]["bits_per_second"].as_f64() {
            return bits / 8.0;
        }
        let error = report["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("busy") && Instant::now() < deadline,
            "iperf3 -c {to} measured nothing: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn iperf3_run(to: SocketAddr, secs: u32, reverse: bool) -> serde_json::Value {
    let mut cmd = tokio::process::Command::new("iperf3");
    cmd.args([
        "-c",
        &to.ip().to_string(),
        "-p",
        &to.port().to_string(),
        "-t",
        &secs.to_string(),
        "-J",
    ]);
    if reverse {
        cmd.arg("-R");
    }
    let out = cmd.kill_on_drop(true).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("iperf3 -c {to}: {e}: {text}"))
}
