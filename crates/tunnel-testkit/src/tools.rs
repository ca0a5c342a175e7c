//! External tools the tests drive (curl, nginx, PostgreSQL): find them, or skip a test that
//! needs a missing one. Under `CI=true` a missing tool fails the test instead, so CI cannot
//! pass by skipping what it was meant to check.

use std::path::PathBuf;
use std::process::Command;

/// Where `cmd` is: on PATH, or in /usr/sbin (Debian keeps nginx there, off many PATHs).
pub fn find(cmd: &str) -> Option<PathBuf> {
    let on_path = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    on_path.or_else(|| {
        let sbin = PathBuf::from("/usr/sbin").join(cmd);
        sbin.exists().then_some(sbin)
    })
}

/// Whether a command exists on this machine.
pub fn have(cmd: &str) -> bool {
    find(cmd).is_some()
}

/// Whether this run is CI's (`CI=true`), where nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The test cannot run here, for `reason`: outside CI say so on stderr (`SKIPPED: reason`);
/// under `CI=true` fail the test.
pub fn skip(reason: &str) {
    assert!(!under_ci(), "CI=true and this test cannot run: {reason}");
    eprintln!("SKIPPED: {reason}");
}

/// Whether `tool` is here; if not, [`skip`] with the reason. Use as
/// `if !need("curl") { return; }`.
pub fn need(tool: &str) -> bool {
    if have(tool) {
        return true;
    }
    skip(&format!("{tool} is not installed (.ci/run installs it)"));
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_skips_outside_ci_and_fails_under_ci() {
        let outcome = std::panic::catch_unwind(|| need("no-such-tool-for-tunnel-testkit"));
        if under_ci() {
            assert!(
                outcome.is_err(),
                "CI=true must fail a test whose tool is missing"
            );
        } else {
            assert_eq!(outcome.ok(), Some(false));
        }
        assert!(have("sh"));
    }
}
