//! A test process whose tools are missing ends with one line counting its skips by tool, shown
//! without --nocapture: this file runs itself as that process, with PATH emptied.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use tunnel_testkit::need;

/// Set in the child process only: there the `child_` tests skip for real.
const CHILD: &str = "TUNNEL_TESTKIT_SKIP_CHILD";

fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

#[test]
fn child_needs_curl() {
    if in_child() {
        assert!(!need("curl"));
    }
}

#[test]
fn child_needs_curl_too() {
    if in_child() {
        assert!(!need("curl"));
    }
}

#[test]
fn child_needs_psql() {
    if in_child() {
        assert!(!need("psql"));
    }
}

#[test]
fn missing_tools_are_counted_in_one_line_at_exit() {
    let out = Command::new(std::env::current_exe().unwrap())
        .arg("child_")
        .env(CHILD, "1")
        .env("PATH", "")
        .env_remove("CI")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("3 passed"), "{stdout}");
    assert_eq!(
        stderr.matches("SKIPPED: curl is not installed").count(),
        2,
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().last(),
        Some("SKIPPED 3 tests: curl (2), psql (1) — set CI=true to make missing tools fail"),
        "{stderr}"
    );
}
