//! A test process whose tools are missing: outside CI its tests skip, each saying so, and it
//! ends with one line counting the skips by tool, all shown without --nocapture; under
//! `CI=true` they fail. This file runs itself as that process, with PATH emptied (so the
//! skipping happens in the child, and this process's own output stays clean).
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

/// Runs this file's `child_` tests with no PATH, `CI` as given.
fn child(ci: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.arg("child_").env(CHILD, "1").env("PATH", "");
    match ci {
        Some(v) => cmd.env("CI", v),
        None => cmd.env_remove("CI"),
    };
    cmd.output().unwrap()
}

#[test]
fn missing_tools_are_counted_in_one_line_at_exit() {
    let out = child(None);
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

#[test]
fn under_ci_a_missing_tool_fails_the_test() {
    let out = child(Some("true"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("3 failed"), "{stdout}");
    assert!(
        stdout.contains("CI=true and this test cannot run: curl is not installed"),
        "{stdout}"
    );
}
