//! What each path answers: `/metrics`, `/api/stats`, `/healthz`, and the bearer token check.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use subtle::ConstantTimeEq;

use crate::StatsSource;

/// The `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The answer to `req`. Only the head is looked at: request bodies are never read.
pub(crate) fn route<B>(
    source: &dyn StatsSource,
    token: Option<&str>,
    req: &Request<B>,
) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/healthz" if source.healthy() => text(StatusCode::OK, "ok\n"),
        "/healthz" => text(StatusCode::SERVICE_UNAVAILABLE, "unavailable\n"),
        "/metrics" | "/api/stats" if !authorized(token, req) => {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "a valid Authorization: Bearer <stats_token> header is required\n",
            );
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        "/metrics" => with_type(source.prometheus(), PROMETHEUS_TEXT),
        "/api/stats" => with_type(source.json(), "application/json"),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /api/stats or /healthz\n",
        ),
    }
}

/// Constant-time comparison: the token must not leak through response timing.
fn authorized<B>(token: Option<&str>, req: &Request<B>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = with_type(body.to_string(), "text/plain; charset=utf-8");
    *r.status_mut() = status;
    r
}

fn with_type(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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

    fn get(path: &str, auth: Option<&str>) -> Request<()> {
        let mut b = Request::get(path);
        if let Some(a) = auth {
            b = b.header(AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_token_guards_metrics_and_stats_but_not_healthz() {
        let s = Fixed(true);
        let token = Some("t0ken");
        for path in ["/metrics", "/api/stats"] {
            let r = route(&s, token, &get(path, None));
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(r.headers()[WWW_AUTHENTICATE], "Bearer");
            let r = route(&s, token, &get(path, Some("Bearer wrong")));
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            let r = route(&s, token, &get(path, Some("Bearer t0ken")));
            assert_eq!(r.status(), StatusCode::OK);
        }
        assert_eq!(
            route(&s, token, &get("/healthz", None)).status(),
            StatusCode::OK
        );
        assert_eq!(
            route(&s, None, &get("/metrics", None)).status(),
            StatusCode::OK
        );
    }

    #[test]
    fn content_types_health_methods_and_unknown_paths() {
        let r = route(&Fixed(true), None, &get("/metrics", None));
        assert_eq!(
            r.headers()[CONTENT_TYPE],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let r = route(&Fixed(true), None, &get("/api/stats", None));
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let r = route(&Fixed(false), None, &get("/healthz", None));
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let r = route(&Fixed(true), None, &get("/nope", None));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let post = Request::post("/metrics").body(()).unwrap();
        assert_eq!(
            route(&Fixed(true), None, &post).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
