//! Entry points for the fuzz targets in `fuzz/`, not part of the API: the virtual host's
//! parsers of a request head, which a stranger reaches before any authentication.

/// A request as the virtual host routes it: the Host header's key, the path's one spelling,
/// and the key that spelling is matched against locations by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostRequest {
    /// The Host header as the route table keys it (`None`: no host at all, answered 400).
    pub host: Option<String>,
    /// The normalised path (`None`: an ambiguous spelling, answered 400).
    pub path: Option<String>,
    /// What the path is matched against locations by (present when `path` is).
    pub match_key: Option<String>,
}

/// Parse a Host header value and a request path (no query) as the virtual host does.
pub fn vhost_request(host: &str, path: &str) -> VhostRequest {
    let normal = tunnel_http::path::normalize(path).ok();
    VhostRequest {
        host: crate::routes::normalize_host(host),
        match_key: normal
            .as_deref()
            .map(|p| tunnel_http::path::match_key(p).into_owned()),
        path: normal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_keyed_as_the_virtual_host_routes_it() {
        let r = vhost_request("App.Example.com.:8080", "/%61dmin;x//./b/../");
        assert_eq!(r.host.as_deref(), Some("app.example.com"));
        assert_eq!(r.path.as_deref(), Some("/admin;x/"));
        assert_eq!(r.match_key.as_deref(), Some("/admin/"));
        let r = vhost_request("bad host", "/a%2Fb");
        assert_eq!((r.host, r.path, r.match_key), (None, None, None));
    }
}
