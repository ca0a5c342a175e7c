//! A throw-away PostgreSQL cluster and its client programs, for the check that a real
//! database protocol works through a visitor.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::net::free_port;
use crate::tools::have;

/// The longest any one psql or pgbench run may take before the test fails.
const CLIENT_DEADLINE: Duration = Duration::from_secs(120);

/// Where initdb, pg_ctl and postgres live: `pg_config --bindir`, else the newest
/// /usr/lib/postgresql/*/bin (Debian installs them off PATH).
pub fn server_bindir() -> Option<PathBuf> {
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut candidates: Vec<PathBuf> = from_pg_config.into_iter().collect();
    if let Ok(dirs) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = dirs
            .flatten()
            .filter_map(|d| Some((d.file_name().to_str()?.parse().ok()?, d.path().join("bin"))))
            .collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev().map(|(_, p)| p));
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
}

/// A client program: from the server's bindir when it is there, else from PATH.
pub fn client_program(bindir: &Path, name: &str) -> Option<PathBuf> {
    let local = bindir.join(name);
    if local.exists() {
        Some(local)
    } else {
        have(name).then(|| PathBuf::from(name))
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A throw-away PostgreSQL cluster in a fresh temp dir, on 127.0.0.1 only, trust auth, stopped
/// and deleted on drop. PostgreSQL refuses to run as root, so as root it runs as `postgres`.
#[derive(Debug)]
pub struct Postgres {
    root: PathBuf,
    bindir: PathBuf,
    as_postgres: bool,
    /// Where it listens, on 127.0.0.1.
    pub port: u16,
}

impl Postgres {
    /// `Err` says why this machine cannot run one (the test then skips).
    pub fn start(bindir: PathBuf) -> io::Result<Postgres> {
        let as_postgres = running_as_root();
        if as_postgres
            && !Command::new("id")
                .arg("postgres")
                .output()
                .is_ok_and(|o| o.status.success())
        {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "running as root and there is no postgres user to run the server",
            ));
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let root =
            std::env::temp_dir().join(format!("tls-tunnel-pg-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&root).unwrap();
        let mut pg = Postgres {
            root,
            bindir,
            as_postgres,
            port: 0,
        };
        if as_postgres {
            let out = Command::new("chown")
                .arg("postgres:")
                .arg(&pg.root)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", describe("chown", &out));
        }
        let out = pg
            .tool("initdb")
            .arg("-D")
            .arg(pg.data())
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", describe("initdb", &out));
        // The port is free when picked but may be taken before postgres binds it: retry.
        let mut last = String::new();
        for _ in 0..3 {
            pg.port = free_port();
            let options = format!(
                "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={} -c fsync=off",
                pg.port,
                pg.root.display()
            );
            // -w: pg_ctl polls until the server accepts connections, up to -t seconds.
            let out = pg
                .tool("pg_ctl")
                .arg("-D")
                .arg(pg.data())
                .arg("-l")
                .arg(pg.root.join("server.log"))
                .args(["-w", "-t", "60", "-o", &options, "start"])
                .output()
                .unwrap();
            if out.status.success() {
                return Ok(pg);
            }
            last = describe("pg_ctl start", &out)
                + &std::fs::read_to_string(pg.root.join("server.log")).unwrap_or_default();
        }
        panic!("PostgreSQL did not start: {last}");
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    /// A server tool, run as the postgres user when we are root, in the cluster's directory
    /// (postgres may not enter the test's working directory).
    fn tool(&self, name: &str) -> Command {
        let program = self.bindir.join(name);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        cmd.current_dir(&self.root);
        cmd
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Run a libpq client against 127.0.0.1:`port` as user postgres; panics unless it succeeds.
pub async fn run_client(program: &Path, port: u16, args: &[&str]) -> String {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .kill_on_drop(true);
    let out = tokio::time::timeout(CLIENT_DEADLINE, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} hung", program.display()))
        .unwrap();
    let what = format!("{} {args:?}", program.display());
    assert!(out.status.success(), "{}", describe(&what, &out));
    String::from_utf8(out.stdout).unwrap()
}
