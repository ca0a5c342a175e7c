//! Where the release binaries are. `env!("CARGO_BIN_EXE_...")` only works inside the root
//! package's own tests, so the kit finds them beside the test binary: cargo puts a test at
//! `target/<profile>/deps/<name>-<hash>` and the binaries at `target/<profile>/<bin>`. The
//! end-to-end binary checks that this agrees with what cargo says.

use std::path::PathBuf;
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
