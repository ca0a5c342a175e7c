//! What each path answers: the dashboard's files, `/metrics`, `/api/stats`, `/api/history`,
//! `/healthz`; the token and rebinding checks; the security headers on every answer.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    WWW_AUTHENTICATE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use hyper::{Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use serde::Serialize;

use crate::access::{authorized, rebinding_suspect};
use crate::assets::asset;
use crate::history::{History, Point, SERIES_STEP};
use crate::StatsSource;

/// The `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Only our own files, no inline script or style, no framing, no forms posted elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// What every connection of one endpoint serves.
pub(crate) struct Served {
    pub source: Arc<dyn StatsSource>,
    pub token: Option<Arc<str>>,
    pub history: Mutex<History>,
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Served").finish_non_exhaustive()
    }
}

/// The answer to `req`. Only the head is looked at: request bodies are never read.
pub(crate) fn route<B>(s: &Served, req: &Request<B>) -> Response<Full<Bytes>> {
    let mut r = answer(s, req);
    let h = r.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(CACHE_CONTROL) {
        // Data must not linger in caches; the files change with the binary.
        let v = if asset(req.uri().path()).is_some() {
            "no-cache"
        } else {
            "no-store"
        };
        h.insert(CACHE_CONTROL, HeaderValue::from_static(v));
    }
    r
}

fn answer<B>(s: &Served, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    let token = s.token.as_deref();
    if rebinding_suspect(token, req) {
        return text(
            StatusCode::FORBIDDEN,
            "forbidden: without stats_token this endpoint answers browsers only at an IP \
             address or localhost (a guard against DNS rebinding); set stats_token to reach \
             it by name\n",
        );
    }
    let path = req.uri().path();
    if let Some(a) = asset(path) {
        return with_type(a.body, a.content_type);
    }
    match path {
        // The page asks here first: a 401 would show as an error in the browser's console.
        "/api/auth" => with_type(
            format!(
                "{{\"token_required\":{},\"authorized\":{}}}\n",
                token.is_some(),
                authorized(token, req)
            ),
            "application/json",
        ),
        "/healthz" if s.source.healthy() => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(StatusCode::SERVICE_UNAVAILABLE, "unavailable\n"),
        "/metrics" | "/api/stats" | "/api/history" if !authorized(token, req) => {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "a valid Authorization: Bearer <stats_token> header is required\n",
            );
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        "/metrics" => with_type(s.source.prometheus(), PROMETHEUS_TEXT),
        "/api/stats" => with_type(s.source.json(), "application/json"),
        "/api/history" => history(s, req.uri().query().unwrap_or("")),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try / (the dashboard), /metrics, /api/stats, /api/history or /healthz\n",
        ),
    }
}

/// The body of `/api/history`.
#[derive(Serialize)]
struct HistoryAnswer<'a> {
    /// The series asked for, or `None` for the totals.
    series: Option<&'a str>,
    /// Seconds between points.
    step: u64,
    columns: [&'static str; 4],
    points: Vec<Point>,
}

/// `/api/history[?series=<key>][&since=<unix seconds>]`.
fn history(s: &Served, query: &str) -> Response<Full<Bytes>> {
    let mut since = None;
    let mut series = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "since" => match v.parse::<u64>() {
                Ok(t) => since = Some(t),
                Err(_) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "since: expected a unix time in seconds, e.g. since=1700000000\n",
                    )
                }
            },
            "series" => match percent_decode(v) {
                Some(key) => series = Some(key),
                None => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "series: not valid percent-encoded UTF-8; pass a proxy's key from \
                         /api/stats, URL-encoded\n",
                    )
                }
            },
            _ => {}
        }
    }
    let points = {
        let h = s.history.lock();
        match &series {
            Some(key) => h.series(key, since),
            None => h.totals(since),
        }
    };
    let body = HistoryAnswer {
        series: series.as_deref(),
        step: if series.is_some() { SERIES_STEP } else { 1 },
        columns: [
            "t",
            "bytes_in_per_second",
            "bytes_out_per_second",
            "streams",
        ],
        points,
    };
    let mut json = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
    json.push('\n');
    with_type(json, "application/json")
}

/// `%XX` escapes and `+` decoded; `None` for a bad escape or invalid UTF-8.
fn percent_decode(v: &str) -> Option<String> {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = with_type(body.to_string(), "text/plain; charset=utf-8");
    *r.status_mut() = status;
    r
}

fn with_type(body: impl Into<Bytes>, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::history::{Counts, Traffic};
    use hyper::header::{AUTHORIZATION, HOST};

    struct Fixed(bool);

    impl StatsSource for Fixed {
        fn prometheus(&self) -> String {
            "# HELP up Up.\n# TYPE up gauge\nup 1\n".into()
        }
        fn json(&self) -> String {
            "{}\n".into()
        }
        fn healthy(&self) -> bool {
            self.0
        }
    }

    fn served(healthy: bool, token: Option<&str>) -> Served {
        Served {
            source: Arc::new(Fixed(healthy)),
            token: token.map(Into::into),
            history: Mutex::new(History::default()),
        }
    }

    fn get(path: &str, auth: Option<&str>) -> Request<()> {
        let mut b = Request::get(path);
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    fn body(r: Response<Full<Bytes>>) -> String {
        let b = futures_lite_collect(r.into_body());
        String::from_utf8(b).unwrap()
    }

    /// A `Full` body is ready at once: poll it without a runtime.
    fn futures_lite_collect(b: Full<Bytes>) -> Vec<u8> {
        use http_body_util::BodyExt;
        use std::future::Future;
        let fut = b.collect();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut fut = std::pin::pin!(fut);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(c)) => c.to_bytes().to_vec(),
            _ => panic!("a Full body is ready"),
        }
    }

    #[test]
    fn the_token_guards_the_data_but_not_healthz_or_the_page() {
        let s = served(true, Some("t0ken"));
        for path in ["/metrics", "/api/stats", "/api/history"] {
            let r = route(&s, &get(path, None));
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer");
            let r = route(&s, &get(path, Some("Bearer wrong")));
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            let r = route(&s, &get(path, Some("Bearer t0ken")));
            assert_eq!(r.status(), StatusCode::OK);
        }
        for path in ["/healthz", "/", "/app.js", "/app.css", "/favicon.svg"] {
            assert_eq!(
                route(&s, &get(path, None)).status(),
                StatusCode::OK,
                "{path}"
            );
        }
        let open = served(true, None);
        assert_eq!(
            route(&open, &get("/metrics", None)).status(),
            StatusCode::OK
        );
    }

    #[test]
    fn api_auth_tells_the_page_whether_its_token_is_right_without_a_401() {
        let s = served(true, Some("t0ken"));
        let ask = |auth| {
            let r = route(&s, &get("/api/auth", auth));
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
            body(r)
        };
        let no = "{\"token_required\":true,\"authorized\":false}\n";
        assert_eq!(ask(None), no);
        assert_eq!(ask(Some("Bearer nope")), no);
        assert_eq!(
            ask(Some("Bearer t0ken")),
            "{\"token_required\":true,\"authorized\":true}\n"
        );
        let r = route(&served(true, None), &get("/api/auth", None));
        assert_eq!(body(r), "{\"token_required\":false,\"authorized\":true}\n");
    }

    #[test]
    fn every_answer_has_the_security_headers_and_data_is_not_stored() {
        let s = served(true, Some("t"));
        for (path, auth) in [
            ("/", None),
            ("/app.js", None),
            ("/nope", None),
            ("/api/stats", None),
            ("/api/stats", Some("Bearer t")),
            ("/metrics", Some("Bearer t")),
        ] {
            let r = route(&s, &get(path, auth));
            let h = r.headers();
            assert_eq!(h[CONTENT_SECURITY_POLICY], CSP, "{path}");
            assert!(CSP.contains("script-src 'self';") && !CSP.contains("unsafe"));
            assert_eq!(h[X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[X_FRAME_OPTIONS], "DENY");
            assert_eq!(h[REFERRER_POLICY], "no-referrer");
            if path.starts_with("/api") || path == "/metrics" {
                assert_eq!(h[CACHE_CONTROL], "no-store", "{path}");
            }
        }
        let r = route(&s, &get("/", None));
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(body(r).contains("id=\"chart\""));
    }

    #[test]
    fn a_rebinding_suspect_gets_403_naming_stats_token() {
        let req = Request::get("/api/stats")
            .header(HOST, "evil.example:9090")
            .header("sec-fetch-site", "same-origin")
            .body(())
            .unwrap();
        let r = route(&served(true, None), &req);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(body(r).contains("set stats_token"));
        // With a token the request goes on to the token check.
        let r = route(&served(true, Some("t")), &req);
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn content_types_health_methods_and_unknown_paths() {
        let r = route(&served(true, None), &get("/metrics", None));
        assert_eq!(
            r.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let r = route(&served(true, None), &get("/api/stats", None));
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let r = route(&served(false, None), &get("/healthz", None));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = route(&served(true, None), &get("/nope", None));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let post = Request::post("/metrics").body(()).unwrap();
        assert_eq!(
            route(&served(true, None), &post).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn history_answers_totals_a_series_and_newer_points_only() {
        let s = served(true, None);
        let reading = |i: u64| Traffic {
            series: vec![(
                "c1/web".to_owned(),
                Counts {
                    bytes_in: i * 100,
                    bytes_out: i,
                    streams: 1,
                },
            )],
        };
        for t in 0..=10 {
            s.history.lock().record(1000 + t, &reading(t));
        }
        let all = body(route(&s, &get("/api/history", None)));
        let v: serde_json::Value = serde_json::from_str(&all).unwrap();
        assert_eq!(v["step"], 1);
        assert_eq!(v["points"].as_array().unwrap().len(), 10);
        assert_eq!(v["points"][0], serde_json::json!([1001, 100, 1, 1]));
        let newer = body(route(&s, &get("/api/history?since=1008", None)));
        let v: serde_json::Value = serde_json::from_str(&newer).unwrap();
        assert_eq!(v["points"].as_array().unwrap().len(), 2);
        let one = body(route(&s, &get("/api/history?series=c1%2Fweb", None)));
        let v: serde_json::Value = serde_json::from_str(&one).unwrap();
        assert_eq!(
            (v["series"].as_str(), v["step"].as_u64()),
            (Some("c1/web"), Some(5))
        );
        assert_eq!(v["points"].as_array().unwrap().len(), 2);
        let r = route(&s, &get("/api/history?since=yesterday", None));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert!(body(r).contains("since"));
        let r = route(&s, &get("/api/history?series=%zz", None));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb+c").as_deref(), Some("a/b c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
