//! Who may read what: the bearer token, and the DNS-rebinding guard for an endpoint
//! without one.

use std::net::IpAddr;

use hyper::header::{AUTHORIZATION, HOST, ORIGIN};
use hyper::Request;
use subtle::ConstantTimeEq;

/// Whether `req` carries the token (always, when there is none). Constant-time: the token
/// must not leak through response timing.
pub(crate) fn authorized<B>(token: Option<&str>, req: &Request<B>) -> bool {
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

/// Whether to refuse `req` as a possible DNS-rebinding attack: without a token, a page on
/// some other site could point its own host name at 127.0.0.1 and read the endpoint as
/// "same origin". Such a request comes from a browser (it has `Sec-Fetch-Site` or
/// `Origin`) and names the endpoint by a host name; scrapers and curl send neither header,
/// and a browser that asks by IP literal or `localhost` cannot be rebound.
pub(crate) fn rebinding_suspect<B>(token: Option<&str>, req: &Request<B>) -> bool {
    if token.is_some() {
        return false;
    }
    let h = req.headers();
    if !h.contains_key("sec-fetch-site") && !h.contains_key(ORIGIN) {
        return false;
    }
    let host = h
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    !host.is_some_and(is_local_name)
}

/// An IP literal or `localhost`, with or without a port.
fn is_local_name(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || is_port(port.strip_prefix(':')) => ip,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(Some(port)) => name,
            _ => host,
        }
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

fn is_port(p: Option<&str>) -> bool {
    p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn browser(host: &str) -> Request<()> {
        Request::get("/api/stats")
            .header(HOST, host)
            .header("sec-fetch-site", "same-origin")
            .body(())
            .unwrap()
    }

    #[test]
    fn a_browser_naming_the_endpoint_by_a_host_name_is_refused_without_a_token() {
        for host in [
            "evil.example:9090",
            "evil.example",
            "localhost.evil.example",
            "[::1",
        ] {
            assert!(rebinding_suspect(None, &browser(host)), "{host}");
            // With a token the page has to know it: nothing to rebind to.
            assert!(!rebinding_suspect(Some("t"), &browser(host)), "{host}");
        }
        let origin_only = Request::get("/")
            .header(HOST, "evil.example")
            .header(ORIGIN, "http://evil.example")
            .body(())
            .unwrap();
        assert!(rebinding_suspect(None, &origin_only));
        let no_host = Request::get("/")
            .header("sec-fetch-site", "none")
            .body(())
            .unwrap();
        assert!(rebinding_suspect(None, &no_host));
    }

    #[test]
    fn ip_literals_localhost_and_non_browsers_pass() {
        for host in [
            "127.0.0.1:9090",
            "127.0.0.1",
            "10.1.2.3:80",
            "[::1]:9090",
            "[::1]",
            "localhost:9090",
            "LOCALHOST",
        ] {
            assert!(!rebinding_suspect(None, &browser(host)), "{host}");
        }
        let curl = Request::get("/api/stats")
            .header(HOST, "stats.example:9090")
            .body(())
            .unwrap();
        assert!(!rebinding_suspect(None, &curl));
    }
}
