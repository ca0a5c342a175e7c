//! External tools the tests drive (curl, nginx, PostgreSQL): find them, or skip a test that
//! needs a missing one. Under `CI=true` a missing tool fails the test instead, so CI cannot
//! pass by skipping what it was meant to check. Outside CI each skip is said on stderr, and
//! when the test process exits one line sums them up by tool: a skipped test still reads `ok`
//! in libtest's list.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, Once, PoisonError};

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
/// under `CI=true` fail the test. The skip is counted under the reason's first word, which
/// names the missing tool by convention ("nginx is not installed ...").
pub fn skip(reason: &str) {
    assert!(!under_ci(), "CI=true and this test cannot run: {reason}");
    count(reason.split_whitespace().next().unwrap_or("(no reason)"));
    // Past libtest's capture (which only takes the print macros), so the skip shows without
    // --nocapture.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {reason}");
}

/// Skips so far in this process, by tool.
static SKIPPED: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn count(tool: &str) {
    static AT_EXIT: Once = Once::new();
    AT_EXIT.call_once(|| {
        // libtest returns from main, or calls process::exit on failure: both run atexit hooks.
        shutdown_hooks::add_shutdown_hook(print_summary);
    });
    let mut skipped = SKIPPED.lock().unwrap_or_else(PoisonError::into_inner);
    *skipped.entry(tool.to_owned()).or_default() += 1;
}

extern "C" fn print_summary() {
    // try_lock: a test thread still running at exit may hold it; better no line than a hang.
    let Ok(skipped) = SKIPPED.try_lock() else {
        return;
    };
    if let Some(line) = summary(&skipped) {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

/// The line for these skip counts: "SKIPPED 3 tests: curl (2), psql (1) — ...", most
/// skipped tool first; `None` when nothing was skipped.
fn summary(skipped: &BTreeMap<String, usize>) -> Option<String> {
    let total: usize = skipped.values().sum();
    if total == 0 {
        return None;
    }
    let mut tools: Vec<(&String, &usize)> = skipped.iter().collect();
    tools.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let tools: Vec<String> = tools.iter().map(|(t, n)| format!("{t} ({n})")).collect();
    let s = if total == 1 { "" } else { "s" };
    Some(format!(
        "SKIPPED {total} test{s}: {} — set CI=true to make missing tools fail",
        tools.join(", ")
    ))
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
    fn tools_are_found_on_path() {
        assert!(have("sh") && !have("no-such-tool-for-tunnel-testkit"));
    }

    #[test]
    fn the_summary_counts_skips_by_tool_most_first() {
        assert_eq!(summary(&BTreeMap::new()), None);
        let counts = BTreeMap::from([("psql".to_owned(), 1), ("curl".to_owned(), 2)]);
        assert_eq!(
            summary(&counts).as_deref(),
            Some("SKIPPED 3 tests: curl (2), psql (1) — set CI=true to make missing tools fail")
        );
    }
}
