//! The dashboard in a real browser: headless Chromium driven over WebDriver loads the
//! server's and the client's pages and watches them follow what the engines do. The DOM
//! contract the tests read (ids, `data-*` attributes) is the one the page keeps for them.
//!
//! With `DASHBOARD_SCREENSHOTS=<dir>`, the transfer test and the client's test also save
//! `dashboard-server.png` and `dashboard-client.png` there once the chart has a shape.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tunnel_client::{ClientConfig, ProxyConfig};
use tunnel_server::ServerHandle;
use tunnel_testkit::*;

/// How long the page may take to show a change: it polls every 2 s, and the machine may be
/// busy with the other tests.
const SOON: Duration = Duration::from_secs(15);

/// "Within a few seconds": the page polls every 2 s, so a change shows within one to two
/// polls, plus slack for a busy machine.
const FEW_SECONDS: Duration = Duration::from_secs(8);

fn page(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}

/// Load the dashboard at `addr` and wait until it shows data as `role`.
async fn open(b: &Browser, addr: SocketAddr, role: &str) {
    b.goto(&page(addr)).await;
    b.wait_attr("body", "data-state", SOON, |s| s == "ready")
        .await;
    assert_eq!(b.attr("body", "data-role").await.as_deref(), Some(role));
}

/// Wait until the page has completed one more poll than it had now.
async fn next_poll(b: &Browser) {
    let before = b.num("#updated", "data-t").await.unwrap_or(0);
    b.wait_num("#updated", "data-t", SOON, |t| t > before).await;
}

/// Where to save screenshots, if this run makes them.
fn screenshots() -> Option<PathBuf> {
    std::env::var_os("DASHBOARD_SCREENSHOTS").map(PathBuf::from)
}

/// A client `id` publishing a service as tcp proxy `web` on a fresh port (and, with `f`,
/// whatever else); returns it and the published port. The service answers a quarter of what
/// it gets, so the two directions of the chart differ.
async fn publisher(
    server: &ServerHandle,
    id: &str,
    f: impl FnOnce(ClientConfig) -> ClientConfig,
) -> (tunnel_client::ClientHandle, u16) {
    let echo = quarter_echo_service().await;
    let port = free_port();
    let cfg = client_config(server)
        .with_id(id)
        .with_proxy(ProxyConfig::tcp("web", &echo.to_string(), Some(port)));
    (client(f(cfg)).await, port)
}

fn row(id: &str) -> String {
    format!("table#clients tbody tr[data-id=\"{id}\"]")
}

fn proxy_row(key: &str) -> String {
    format!("table#proxies tbody tr[data-key=\"{key}\"]")
}

/// A proxy's row by name: the client's page keys its rows by kind and name, not by the
/// client's id as the server's does.
fn named_proxy_row(name: &str) -> String {
    format!("table#proxies tbody tr[data-key][data-name=\"{name}\"]")
}

/// Start the browser, or skip (fail under CI) without one; says how long it took.
async fn browser() -> Option<Browser> {
    let started = Instant::now();
    let b = Browser::start().await?;
    eprintln!("browser up in {:?}", started.elapsed());
    Some(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_pages_load_without_console_errors_and_the_csp_is_in_force() {
    let started = Instant::now();
    let Some(b) = browser().await else { return };
    let server = server().await;
    let client_stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let (_c, _) = publisher(&server, "clean", |c| c.with_stats_bind(client_stats)).await;

    for (addr, role) in [
        (server.stats_addr().unwrap(), "server"),
        (client_stats, "client"),
    ] {
        let answer = stats_get(addr, "/", &[]).await;
        assert_eq!(answer.status, 200, "{role}");
        let csp = answer.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("script-src 'self'")
                && csp.contains("frame-ancestors 'none'")
                && !csp.contains("unsafe"),
            "{role}: {csp:?}"
        );
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("x-frame-options"), Some("DENY"));

        open(&b, addr, role).await;
        b.wait_for(&named_proxy_row("web"), SOON).await;
        // Errors of the polling itself would show after a few rounds.
        next_poll(&b).await;
        next_poll(&b).await;
        let errors = b.console_errors().await;
        assert!(errors.is_empty(), "{role} page: console errors {errors:?}");
    }

    // The browser enforces the CSP: an inline script added to the page does not run, and
    // says why in the console.
    let ran = b
        .js(
            "const s = document.createElement('script'); s.textContent = 'window.inlineRan = 1;'; \
             document.body.appendChild(s); return window.inlineRan === 1;",
        )
        .await;
    assert_eq!(ran, serde_json::Value::Bool(false));
    let errors = b.console_errors().await;
    assert!(
        errors.iter().any(|e| e.contains("Content Security Policy")),
        "{errors:?}"
    );
    b.close().await;
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_and_its_proxy_appear_within_seconds_of_connecting() {
    let started = Instant::now();
    let Some(b) = browser().await else { return };
    let server = server().await;
    open(&b, server.stats_addr().unwrap(), "server").await;
    assert_eq!(b.num("#total-clients", "data-value").await, Some(0));
    assert_eq!(b.count("table#clients tbody tr[data-id]").await, 0);
    assert_eq!(b.count("table#proxies tbody tr[data-key]").await, 0);

    let (_c, _) = publisher(&server, "newcomer", |c| c).await;
    let connected = Instant::now();
    b.wait_for(&row("newcomer"), FEW_SECONDS).await;
    let key = proxy_row("newcomer/web");
    b.wait_for(&key, FEW_SECONDS).await;
    eprintln!(
        "rows shown {:?} after the client registered",
        connected.elapsed()
    );
    assert_eq!(b.attr(&key, "data-name").await.as_deref(), Some("web"));
    assert_eq!(b.num("#total-clients", "data-value").await, Some(1));
    assert_eq!(b.num("#total-proxies", "data-value").await, Some(1));
    b.close().await;
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_and_the_chart_move_while_a_transfer_runs() {
    let started = Instant::now();
    let Some(b) = browser().await else { return };
    let server = server().await;
    let stats = server.stats_addr().unwrap();
    // A second proxy and a second client, idle, so the tables look like a real server's.
    let other = echo_service().await;
    let (_c, port) = publisher(&server, "laptop", |c| {
        c.with_proxy(ProxyConfig::tcp(
            "db",
            &other.to_string(),
            Some(free_port()),
        ))
    })
    .await;
    let (_idle, _) = publisher(&server, "build-box", |c| c).await;
    open(&b, stats, "server").await;
    let key = proxy_row("laptop/web");
    b.wait_for(&key, SOON).await;
    assert_eq!(b.num("#bytes-in", "data-value").await, Some(0));
    assert_eq!(b.num("#bytes-out", "data-value").await, Some(0));
    assert_eq!(b.num(&key, "data-bytes-in").await, Some(0));
    let points = b.num("#chart", "data-points").await.unwrap();

    let traffic = Traffic::start(published(port));
    let first_in = b.wait_num("#bytes-in", "data-value", SOON, |v| v > 0).await;
    let first_out = b
        .wait_num("#bytes-out", "data-value", SOON, |v| v > 0)
        .await;
    b.wait_num("#bytes-in", "data-value", SOON, |v| v > first_in)
        .await;
    b.wait_num("#bytes-out", "data-value", SOON, |v| v > first_out)
        .await;
    b.wait_num("#chart", "data-max", SOON, |m| m > 0).await;
    b.wait_num("#chart", "data-points", SOON, |p| p > points)
        .await;
    b.wait_num("#rate-in", "data-value", SOON, |r| r > 0).await;
    b.wait_num(&key, "data-bytes-in", SOON, |v| v > 0).await;
    b.wait_num(&key, "data-bytes-out", SOON, |v| v > 0).await;
    // Only the proxy that moved bytes shows them.
    assert_eq!(
        b.num(&proxy_row("laptop/db"), "data-bytes-in").await,
        Some(0)
    );
    assert!(traffic.moved() > 0);

    if let Some(dir) = screenshots() {
        // Three minutes of the traffic's waves.
        b.wait_num("#chart", "data-points", Duration::from_secs(240), |p| {
            p >= 180
        })
        .await;
        b.screenshot(&dir.join("dashboard-server.png")).await;
    }
    b.close().await;
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_client_disappears() {
    let started = Instant::now();
    let Some(b) = browser().await else { return };
    let server = server().await;
    let (stays, _) = publisher(&server, "stays", |c| c).await;
    let (leaves, _) = publisher(&server, "leaves", |c| c).await;
    open(&b, server.stats_addr().unwrap(), "server").await;
    b.wait_for(&row("leaves"), SOON).await;
    b.wait_for(&proxy_row("leaves/web"), SOON).await;

    leaves.shutdown();
    let stopped = Instant::now();
    b.wait_gone(&row("leaves"), FEW_SECONDS).await;
    b.wait_gone(&proxy_row("leaves/web"), SOON).await;
    eprintln!("rows gone {:?} after the client stopped", stopped.elapsed());
    assert!(b.find(&row("stays")).await.is_some());
    assert!(b.find(&proxy_row("stays/web")).await.is_some());
    assert_eq!(b.num("#total-clients", "data-value").await, Some(1));
    drop(stays);
    b.close().await;
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_prompt_refuses_a_wrong_token_and_keeps_the_right_one_for_the_tab() {
    const TOKEN: &str = "dashboard-token-5d1f";
    let started = Instant::now();
    let Some(b) = browser().await else { return };
    let server = server_with(|c| c.with_stats_token(TOKEN)).await;
    let stats = server.stats_addr().unwrap();
    let (_c, _) = publisher(&server, "guarded", |c| c).await;

    b.goto(&page(stats)).await;
    b.wait_attr("body", "data-state", SOON, |s| s == "login")
        .await;
    assert!(b.is_shown("form#login").await);
    assert!(!b.is_shown("#main").await);
    assert_eq!(b.count("table#clients tbody tr[data-id]").await, 0);

    b.type_into("input#token", "not-the-token").await;
    b.click("button#login-submit").await;
    let deadline = Instant::now() + SOON;
    let error = loop {
        let text = b.text("#login-error").await.unwrap_or_default();
        if !text.is_empty() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "no error shown for a wrong token"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(error.contains("wrong token"), "{error:?}");
    assert_eq!(b.attr("body", "data-state").await.as_deref(), Some("login"));
    assert_eq!(b.count("table#clients tbody tr[data-id]").await, 0);

    b.type_into("input#token", TOKEN).await;
    b.click("button#login-submit").await;
    b.wait_attr("body", "data-state", SOON, |s| s == "ready")
        .await;
    b.wait_for(&row("guarded"), SOON).await;
    assert!(!b.is_shown("form#login").await);

    // A reload keeps the token for the tab: straight to the data, no prompt.
    b.reload().await;
    let state = b
        .wait_attr("body", "data-state", SOON, |s| s == "ready" || s == "login")
        .await;
    assert_eq!(
        state, "ready",
        "the reloaded page asked for the token again"
    );
    b.wait_for(&row("guarded"), SOON).await;

    // The JSON API still takes the bearer header, and nothing else.
    let auth = format!("Bearer {TOKEN}");
    let with = stats_get(stats, "/api/stats", &[("Authorization", &auth)]).await;
    assert_eq!(with.status, 200);
    assert!(with.body.contains("guarded"));
    assert_eq!(stats_get(stats, "/api/stats", &[]).await.status, 401);
    b.close().await;
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicking_a_proxy_row_opens_its_history() {
    let started = Instant::now();
    let Some(b) = browser().await else { return };
    let server = server().await;
    let (_c, _) = publisher(&server, "clicker", |c| c).await;
    open(&b, server.stats_addr().unwrap(), "server").await;
    assert!(!b.is_shown("#history").await);

    b.click(&proxy_row("clicker/web")).await;
    let deadline = Instant::now() + SOON;
    while !b.is_shown("#history").await {
        assert!(
            Instant::now() < deadline,
            "#history not shown after the click"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let title = b.text("#history-title").await.unwrap();
    assert!(title.contains("web"), "{title:?}");
    assert!(b.is_shown("canvas#history-chart").await);
    b.close().await;
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_own_dashboard_shows_its_proxy_and_session() {
    let started = Instant::now();
    let Some(b) = browser().await else { return };
    let server = server().await;
    let stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let other = echo_service().await;
    let (_c, port) = publisher(&server, "desk", |c| {
        c.with_stats_bind(stats)
            .with_proxy(ProxyConfig::tcp("db", &other.to_string(), None))
    })
    .await;
    open(&b, stats, "client").await;
    let key = named_proxy_row("web");
    b.wait_for(&key, SOON).await;
    b.wait_for(&named_proxy_row("db"), SOON).await;
    assert_eq!(b.text("#connected").await.as_deref(), Some("yes"));
    assert_eq!(b.num("#reconnects", "data-value").await, Some(0));

    let _traffic = Traffic::start(published(port));
    b.wait_num(&key, "data-bytes-in", SOON, |v| v > 0).await;
    b.wait_num("#chart", "data-max", SOON, |m| m > 0).await;

    if let Some(dir) = screenshots() {
        b.wait_num("#chart", "data-points", Duration::from_secs(240), |p| {
            p >= 180
        })
        .await;
        b.screenshot(&dir.join("dashboard-client.png")).await;
    }
    b.close().await;
    eprintln!("took {:?}", started.elapsed());
}

/// The ids of the clients table's rows, top to bottom, shown or not.
async fn client_ids(b: &Browser) -> Vec<String> {
    let ids = b
        .js(
            "return Array.from(document.querySelectorAll('table#clients tbody tr[data-id]'), \
             (r) => r.hidden ? '-' + r.dataset.id : r.dataset.id);",
        )
        .await;
    serde_json::from_value(ids).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_box_narrows_the_tables_and_a_header_click_sorts() {
    let started = Instant::now();
    let Some(b) = browser().await else { return };
    let server = server().await;
    let (_a, _) = publisher(&server, "alpha", |c| c).await;
    let (_z, _) = publisher(&server, "zulu", |c| c).await;
    open(&b, server.stats_addr().unwrap(), "server").await;
    b.wait_for(&row("alpha"), SOON).await;
    b.wait_for(&row("zulu"), SOON).await;

    b.type_into("input#filter", "zulu").await;
    let deadline = Instant::now() + SOON;
    while b.is_shown(&row("alpha")).await || b.is_shown(&proxy_row("alpha/web")).await {
        assert!(
            Instant::now() < deadline,
            "the filter did not hide alpha's rows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.is_shown(&row("zulu")).await);
    assert!(b.is_shown(&proxy_row("zulu/web")).await);

    b.type_into("input#filter", "").await;
    b.click("table#clients th[data-sort=\"id\"]").await;
    let deadline = Instant::now() + SOON;
    while client_ids(&b).await != ["alpha", "zulu"] {
        assert!(
            Instant::now() < deadline,
            "not sorted up: {:?}",
            client_ids(&b).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.click("table#clients th[data-sort=\"id\"]").await;
    let deadline = Instant::now() + SOON;
    while client_ids(&b).await != ["zulu", "alpha"] {
        assert!(
            Instant::now() < deadline,
            "not sorted down: {:?}",
            client_ids(&b).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.close().await;
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_shows_in_recent_events() {
    let started = Instant::now();
    let Some(b) = browser().await else { return };
    let server = server().await;
    open(&b, server.stats_addr().unwrap(), "server").await;
    let events = "table#events tbody tr[data-kind]";
    assert_eq!(b.count(events).await, 0);

    let mut guesser = tunnel_client::start(
        client_config(&server)
            .with_id("guesser")
            .with_auth_key("not the key"),
    )
    .await
    .unwrap();
    let refused = tokio::time::timeout(SOON, guesser.ready()).await.unwrap();
    assert!(refused.is_err());
    let failure = "table#events tbody tr[data-kind=\"auth_failure\"]";
    b.wait_for(failure, FEW_SECONDS).await;
    let text = b.text(failure).await.unwrap();
    assert!(text.contains("127.0.0.1"), "{text:?}");
    b.close().await;
    eprintln!("took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_phone_the_page_fits_its_width_and_the_cards_wrap() {
    let started = Instant::now();
    let Some(b) = browser().await else { return };
    let server = server().await;
    let (_c, _) = publisher(&server, "a-client-with-a-rather-long-name", |c| c).await;
    b.set_viewport(390, 844).await;
    open(&b, server.stats_addr().unwrap(), "server").await;
    b.wait_for(&row("a-client-with-a-rather-long-name"), SOON)
        .await;
    let layout = b
        .js(
            "const top = (id) => document.getElementById(id).getBoundingClientRect().top; \
             return [document.documentElement.scrollWidth, window.innerWidth, \
                     top('total-clients'), top('bytes-out')];",
        )
        .await;
    let n = |i: usize| layout[i].as_f64().unwrap();
    assert_eq!(n(1), 390.0, "viewport {layout}");
    // Wide tables scroll inside their own box; the page itself does not scroll sideways.
    assert!(n(0) <= n(1), "the page is wider than the phone: {layout}");
    assert!(n(3) > n(2), "the cards stay on one line: {layout}");
    b.close().await;
    eprintln!("took {:?}", started.elapsed());
}
