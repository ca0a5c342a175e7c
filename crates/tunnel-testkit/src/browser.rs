//! A real browser for the dashboard's tests: headless Chromium driven over WebDriver by a
//! chromedriver of our own, with helpers that poll the page with a deadline.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::net::free_port;
use crate::process::Proc;
use crate::tools::{find, need};

/// How long chromedriver and the browser session may take to come up.
const STARTUP: Duration = Duration::from_secs(30);

/// How many browsers one test process runs at once: each wants a core while it renders, and
/// the other tests of the process share the same two.
const AT_ONCE: usize = 2;

/// The size pages are shown at (and screenshots taken at): a laptop's.
pub const WINDOW: (u32, u32) = (1280, 800);

/// Headless Chromium under a chromedriver of its own, in a fresh profile directory; at most
/// two at a time in a process (a third [`Browser::start`] waits for a turn). On drop
/// chromedriver's whole process group (the browser included) is killed and the profile
/// removed, so a failing test leaks no browser.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    driver: Proc,
    dir: PathBuf,
    /// Every console entry of level SEVERE read so far: chromedriver hands each entry out once.
    errors: Mutex<Vec<String>>,
    /// This browser's place among the [`AT_ONCE`].
    _turn: OwnedSemaphorePermit,
}

/// chromedriver's legacy log command (`POST /session/{id}/se/log`), which returns and clears
/// the browser console's entries; W3C WebDriver has no such command.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

impl Browser {
    /// Start chromedriver and open a headless Chromium session; `None` (the test skips, or
    /// fails under `CI=true`) where chromium or chromedriver is not installed.
    pub async fn start() -> Option<Browser> {
        if !need("chromium") || !need("chromedriver") {
            return None;
        }
        let chromium = find("chromium").unwrap();
        static TURNS: LazyLock<Arc<Semaphore>> =
            LazyLock::new(|| Arc::new(Semaphore::new(AT_ONCE)));
        let turn = TURNS.clone().acquire_owned().await.unwrap();
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("tls-tunnel-browser-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("chromedriver.log");
        let out = std::fs::File::create(&log).unwrap();
        // Its own process group, so drop can kill the browser chromedriver starts with it.
        let child = Command::new(find("chromedriver").unwrap())
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0)
            .spawn()
            .unwrap();
        let driver = Proc { child, log };
        let url = format!("http://127.0.0.1:{port}/");
        wait_driver_ready(port, &driver).await;

        let (w, h) = WINDOW;
        let profile = dir.join("profile");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                // Without the background-networking flags Chromium keeps calling home, which
                // this machine's closed network answers with nothing but delays.
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--window-size={w},{h}"),
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let caps = match caps {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let client = tokio::time::timeout(
            STARTUP,
            ClientBuilder::new(HttpConnector::new())
                .capabilities(caps)
                .connect(&url),
        )
        .await
        .unwrap_or_else(|_| panic!("no browser session within {STARTUP:?}"))
        .unwrap_or_else(|e| panic!("no browser session: {e}; chromedriver:\n{}", driver.log()));
        let b = Browser {
            client,
            driver,
            dir,
            errors: Mutex::new(Vec::new()),
            _turn: turn,
        };
        let (w, h) = WINDOW;
        b.set_viewport(w, h).await;
        Some(b)
    }

    /// Size the window so that the page itself (the viewport) is `w` x `h` CSS pixels (a
    /// phone's, say): a window's size includes the browser's own frame, which screenshots
    /// leave out. A new browser starts at [`WINDOW`].
    pub async fn set_viewport(&self, w: u32, h: u32) {
        let frame = self
            .js("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];")
            .await;
        let extra = |i: usize| u32::try_from(frame[i].as_u64().unwrap_or(0)).unwrap_or(0);
        self.client
            .set_window_size(w + extra(0), h + extra(1))
            .await
            .unwrap();
    }

    /// The WebDriver client, for what the helpers here do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Load `url` and wait until the document has loaded.
    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Reload the page.
    pub async fn reload(&self) {
        self.client.refresh().await.unwrap();
    }

    /// The element matching `css` now, if any.
    pub async fn find(&self, css: &str) -> Option<Element> {
        self.client.find(Locator::Css(css)).await.ok()
    }

    /// How many elements match `css` now.
    pub async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |all| all.len())
    }

    /// Wait until an element matches `css`, at most `within`, and return it.
    pub async fn wait_for(&self, css: &str, within: Duration) -> Element {
        let deadline = Instant::now() + within;
        loop {
            if let Some(e) = self.find(css).await {
                return e;
            }
            self.check_deadline(deadline, &format!("an element matching {css}"))
                .await;
        }
    }

    /// Wait until no element matches `css`, at most `within`.
    pub async fn wait_gone(&self, css: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count(css).await > 0 {
            self.check_deadline(deadline, &format!("no element matching {css}"))
                .await;
        }
    }

    /// Attribute `name` of the element matching `css`; `None` if there is no such element or
    /// it has no such attribute.
    pub async fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.find(css).await?.attr(name).await.ok()?
    }

    /// Attribute `name` of the element matching `css`, as an integer (the dashboard's raw
    /// `data-value`s).
    pub async fn num(&self, css: &str, name: &str) -> Option<u64> {
        let v = self.attr(css, name).await?;
        v.parse()
            .ok()
            .or_else(|| v.parse::<f64>().ok().map(|f| f as u64))
    }

    /// The visible text of the element matching `css`.
    pub async fn text(&self, css: &str) -> Option<String> {
        self.find(css).await?.text().await.ok()
    }

    /// Wait until attribute `name` of the element matching `css` satisfies `ok`, at most
    /// `within`; returns its value.
    pub async fn wait_attr(
        &self,
        css: &str,
        name: &str,
        within: Duration,
        ok: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + within;
        loop {
            let v = self.attr(css, name).await;
            if let Some(v) = v.as_deref().filter(|v| ok(v)) {
                return v.to_string();
            }
            self.check_deadline(deadline, &format!("{css}[{name}] to change, now {v:?}"))
                .await;
        }
    }

    /// Wait until the integer attribute `name` of `css` satisfies `ok`; returns it.
    pub async fn wait_num(
        &self,
        css: &str,
        name: &str,
        within: Duration,
        ok: impl Fn(u64) -> bool,
    ) -> u64 {
        let v = self
            .wait_attr(css, name, within, |v| {
                v.parse::<f64>().is_ok_and(|f| f >= 0.0 && ok(f as u64))
            })
            .await;
        v.parse::<f64>().unwrap() as u64
    }

    /// Click the element matching `css` (waiting for it, at most 10 s).
    pub async fn click(&self, css: &str) {
        let e = self.wait_for(css, Duration::from_secs(10)).await;
        e.click().await.unwrap();
    }

    /// Empty the input matching `css` and type `text` into it, as a person would: select all
    /// and delete, then the keystrokes, so the page sees `input` events even when `text` is
    /// empty (WebDriver's own "clear" fires none).
    pub async fn type_into(&self, css: &str, text: &str) {
        // Control down, "a", every modifier up (the null key), Delete.
        const SELECT_ALL_DELETE: &str = "\u{E009}a\u{E000}\u{E017}";
        let e = self.wait_for(css, Duration::from_secs(10)).await;
        e.send_keys(SELECT_ALL_DELETE).await.unwrap();
        if !text.is_empty() {
            e.send_keys(text).await.unwrap();
        }
    }

    /// Whether the element matching `css` is shown (exists and is displayed).
    pub async fn is_shown(&self, css: &str) -> bool {
        match self.find(css).await {
            Some(e) => e.is_displayed().await.unwrap_or(false),
            None => false,
        }
    }

    /// Run `script` in the page (its `return` value comes back as JSON).
    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, Vec::new()).await.unwrap()
    }

    /// Save a PNG of the window to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.client.screenshot().await.unwrap();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }

    /// Every console error (level SEVERE: script errors, CSP violations, failed loads) the
    /// browser reported in this session so far.
    pub async fn console_errors(&self) -> Vec<String> {
        let entries = self.client.issue_cmd(BrowserLog).await.unwrap();
        let fresh = entries.as_array().cloned().unwrap_or_default();
        let mut errors = self.errors.lock().unwrap();
        for e in fresh {
            if e["level"] == "SEVERE" {
                errors.push(e["message"].as_str().unwrap_or_default().to_string());
            }
        }
        errors.clone()
    }

    /// End the session (closes the browser). Dropping without it kills both processes.
    pub async fn close(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.client.clone().close()).await;
    }

    /// Panic naming `what` (with chromedriver's log) once `deadline` passed; else pause a
    /// little before the next poll.
    async fn check_deadline(&self, deadline: Instant, what: &str) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; page state {:?}",
            self.attr("body", "data-state").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group chromedriver leads: it and the browser it started. Reaping happens in
        // Proc's drop.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.pid())])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Poll chromedriver's `/status` until it says ready, at most [`STARTUP`].
async fn wait_driver_ready(port: u16, driver: &Proc) {
    let deadline = Instant::now() + STARTUP;
    loop {
        if driver_says_ready(port).await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver not ready within {STARTUP:?}; its log:\n{}",
            driver.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One look at chromedriver's `/status`. It keeps the connection open whatever the request
/// says, so read until the answer says ready, for at most a second.
async fn driver_says_ready(port: u16) -> bool {
    let ask = async {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut text = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            text.extend_from_slice(&buf[..n]);
            let seen = String::from_utf8_lossy(&text).replace(' ', "");
            if seen.contains("\"ready\":true") {
                return Some(());
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(1), ask)
        .await
        .is_ok_and(|r| r.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture itself: a page's console error reaches `console_errors`, and the helpers
    /// read the DOM.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_the_dom_and_the_console() {
        let Some(b) = Browser::start().await else {
            return;
        };
        b.goto("data:text/html,<body data-state=ready><p id=x data-value=42>hi</p></body>")
            .await;
        assert_eq!(b.num("#x", "data-value").await, Some(42));
        assert_eq!(b.text("#x").await.as_deref(), Some("hi"));
        assert!(b.console_errors().await.is_empty());
        b.js("console.error('boom-from-the-page'); return null;")
            .await;
        let errors = b.console_errors().await;
        assert!(
            errors.iter().any(|e| e.contains("boom-from-the-page")),
            "{errors:?}"
        );
        // Read once by chromedriver, still reported by the fixture.
        assert_eq!(b.console_errors().await, errors);
        b.close().await;
    }
}
