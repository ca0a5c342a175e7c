//! Polling: wait for a condition instead of sleeping a guessed time.

use std::future::Future;
use std::time::{Duration, Instant};

/// Poll `cond` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until `p`'s log contains `what`; panics with the log after `within`.
pub async fn log_shows(p: &crate::Proc, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !p.log().contains(what) {
        assert!(
            Instant::now() < deadline,
            "{what:?} not logged within {within:?}:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait until published `port` listens, then check it serves an echo round trip; panics
/// with `p`'s log (the process that publishes it) if it does not come up within `within`.
pub async fn published_by(p: &crate::Proc, port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while !crate::is_listening(port).await {
        assert!(
            Instant::now() < deadline,
            "port {port} did not come up within {within:?}:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        crate::serves(port).await,
        "port {port} does not serve:\n{}",
        p.log()
    );
}
