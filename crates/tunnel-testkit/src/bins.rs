//! Where the release binaries are. `env!("CARGO_BIN_EXE_...")` only works inside the root
//! package's own tests, so the kit finds them beside the test binary: cargo puts a test at
//! `target/<profile>/deps/<name>-<hash>` and the binaries at `target/<profile>/<bin>`. The
//! end-to-end binary checks that this agrees with what cargo says.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn beside_the_test(name: &str) -> String {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .expect("the test binary lives in target/<profile>/deps");
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is not built: run the tests with cargo test, which builds the binaries",
        bin.display()
    );
    bin.display().to_string()
}

/// The `tunnel-server` binary.
pub fn server() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| beside_the_test("tunnel-server"))
}

/// The `tunnel-client` binary.
pub fn client() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| beside_the_test("tunnel-client"))
}

/// What `--check` said of a config file: its exit code and its standard error.
#[derive(Debug)]
pub struct Checked {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Everything written to standard error.
    pub stderr: String,
}

impl Checked {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Run `bin --check --config <config>` (without `TUNNEL_AUTH_KEY` from the test's
/// environment, so the file alone is checked).
pub fn check(bin: &str, config: &Path) -> Checked {
    let out = Command::new(bin)
        .args(["--check", "--config"])
        .arg(config)
        .env_remove("TUNNEL_AUTH_KEY")
        .output()
        .unwrap();
    Checked {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
