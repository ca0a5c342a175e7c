//! The dashboard's files, built into the binary: it must work on a host without network,
//! and it holds no data (the page fetches `/api/stats` with the token), so it is served to
//! anyone.

/// An embedded file: its body and `Content-Type`.
pub(crate) struct Asset {
    pub body: &'static str,
    pub content_type: &'static str,
}

/// The file served at `path`, if any.
pub(crate) fn asset(path: &str) -> Option<Asset> {
    let (body, content_type) = match path {
        "/" | "/index.html" => (
            include_str!("../assets/index.html"),
            "text/html; charset=utf-8",
        ),
        "/app.js" => (
            include_str!("../assets/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/app.css" => (include_str!("../assets/app.css"), "text/css; charset=utf-8"),
        "/favicon.svg" => (include_str!("../assets/favicon.svg"), "image/svg+xml"),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_small_and_has_no_inline_script_style_or_remote_url() {
        let files = ["/", "/app.js", "/app.css", "/favicon.svg"].map(|p| asset(p).map(|a| a.body));
        let total: usize = files.iter().flatten().map(|b| b.len()).sum();
        assert!(total < 40 * 1024, "the dashboard is {total} bytes");
        let html = files[0].unwrap_or_default();
        assert!(html.contains("<script src=\"/app.js\"></script>"));
        // The CSP allows only 'self': anything inline would be blocked in the browser.
        assert!(!html.contains("<script>") && !html.contains("style="));
        assert!(!html.contains("<style"));
        for handler in [
            "onclick=",
            "onload=",
            "onerror=",
            "onsubmit=",
            "javascript:",
        ] {
            assert!(!html.contains(handler), "inline {handler}");
        }
        // Offline: nothing fetched from elsewhere (the SVG namespace is a name, not a fetch).
        for body in files.iter().flatten() {
            let body = body.replace("http://www.w3.org/2000/svg", "");
            assert!(!body.contains("http://") && !body.contains("https://"));
        }
    }
}
