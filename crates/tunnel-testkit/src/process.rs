//! The release binaries as child processes, their logs in files, killed and reaped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running binary, killed (and reaped) on drop so a failing test leaks no process. Its
/// stderr (the log) goes to a file the test can read.
#[derive(Debug)]
pub struct Proc {
    /// The child process.
    pub child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    /// Run `bin --config config` with stderr (the log) going to the file `log`.
    pub fn spawn(bin: &str, config: &Path, log: PathBuf) -> Proc {
        let err = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(config)
            .env_remove("TUNNEL_AUTH_KEY")
            .env_remove("RUST_LOG");
        // The test's own RUST_LOG is for the test; `TEST_PROC_LOG` sets the children's, to
        // look into a failure (e.g. `TEST_PROC_LOG=tunnel_server=debug`).
        if let Ok(filter) = std::env::var("TEST_PROC_LOG") {
            cmd.env("RUST_LOG", filter);
        }
        let child = cmd.stdout(Stdio::null()).stderr(err).spawn().unwrap();
        Proc { child, log }
    }

    /// A child the test spawned itself (its own arguments and pipes), killed on drop like
    /// the others. It has no log file: [`Proc::log`] is empty.
    pub fn adopt(child: Child) -> Proc {
        Proc {
            child,
            log: PathBuf::new(),
        }
    }

    /// Send SIGTERM and wait (at most 15 s) for the exit.
    pub async fn sigterm(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.exit_within(Duration::from_secs(15)).await
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send signal `sig` (`"TERM"`, `"HUP"`, ...) with kill(1).
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

    /// Whether it has not exited yet.
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

    /// Its log so far.
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

    /// Peak resident memory in KiB, from /proc.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// CPU seconds (user + system) used so far, from /proc.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(self.pid())
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

/// CPU seconds (user + system) process `pid` used so far, from /proc (`std::process::id()`
/// for the test itself).
pub fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; the fields after it are fixed: utime and stime
    // are the 12th and 13th from the state on.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0);
    ticks as f64 / hz
}
