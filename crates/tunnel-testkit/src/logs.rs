//! Log capture: every engine log line of this test binary, so tests can check what was
//! reported (and what never was).

use std::time::{Duration, Instant};

/// Every formatted log line of this test binary since [`capture_logs`]. Global because the
/// tracing subscriber is: tests running in parallel share it, so give them distinct names.
static LOG_LINES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if std::env::var_os("RUST_LOG").is_some() {
            eprint!("{text}");
        }
        let mut lines = LOG_LINES.lock().unwrap_or_else(|e| e.into_inner());
        lines.extend(text.lines().map(str::to_string));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Collect engine logs (info and up, or `RUST_LOG`) so tests can check what was reported.
pub fn capture_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(|| LogWriter)
        .try_init();
}

/// Whether some captured line contains every one of `parts`.
pub fn logged(parts: &[&str]) -> bool {
    let lines = LOG_LINES.lock().unwrap_or_else(|e| e.into_inner());
    lines.iter().any(|l| parts.iter().all(|p| l.contains(p)))
}

/// How many captured lines contain every one of `parts` (e.g. to check rate-limited logs).
pub fn logged_count(parts: &[&str]) -> usize {
    let lines = LOG_LINES.lock().unwrap_or_else(|e| e.into_inner());
    lines
        .iter()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// How many lines were captured so far: a mark for [`logged_count_since`].
pub fn log_mark() -> usize {
    LOG_LINES.lock().unwrap_or_else(|e| e.into_inner()).len()
}

/// Like [`logged_count`], counting only lines captured after `mark` (from [`log_mark`]):
/// every test of the binary logs into the same list.
pub fn logged_count_since(mark: usize, parts: &[&str]) -> usize {
    let lines = LOG_LINES.lock().unwrap_or_else(|e| e.into_inner());
    lines
        .get(mark..)
        .unwrap_or_default()
        .iter()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .count()
}

/// Whether any captured line contains `needle` (e.g. a secret that must never be logged).
pub fn logged_anywhere(needle: &str) -> bool {
    logged(&[needle])
}

/// Wait (briefly) until a line containing every one of `parts` was logged.
pub async fn expect_logged(parts: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while !logged(parts) {
        if Instant::now() >= deadline {
            let lines = LOG_LINES.lock().unwrap_or_else(|e| e.into_inner());
            let recent = lines[lines.len().saturating_sub(40)..].join("\n");
            panic!("no log line contains {parts:?}; the last lines:\n{recent}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
