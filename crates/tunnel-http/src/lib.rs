//! The HTTP rules a tls-tunnel hop applies to a request on its way to a service.
//!
//! Both engines forward HTTP: the server's virtual host and the client's HTTP proxy. What
//! they promise a service — no hop-by-hop headers, forwarding headers it can believe, one
//! spelling of each path — must hold whichever way a request came in, so the rules live
//! here once and each engine only decides which of them apply (who it trusts, whether it is
//! the first hop). Pure: no sockets, no runtime, only [`http`] types.
//!
//! - [`hop_by_hop`]: headers that belong to one connection, and the ones a user's
//!   `Connection` listing may not remove.
//! - [`forwarded`]: `X-Forwarded-*`, `X-Real-IP` and `Forwarded`, written for what this hop
//!   saw, and the front proxies whose headers are believed.
//! - [`path`]: the one spelling of a request path, as matched and forwarded.
//!
//! # Example
//!
//! A user reaches the first hop claiming to be someone else and asking a later hop to drop
//! `X-Forwarded-For`:
//!
//! ```
//! use http::{HeaderMap, HeaderValue};
//! use tunnel_http::forwarded::{self, Claims, Hop, Scheme};
//! use tunnel_http::hop_by_hop;
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("host", HeaderValue::from_static("app.example"));
//! headers.insert("x-real-ip", HeaderValue::from_static("6.6.6.6"));
//! headers.insert("connection", HeaderValue::from_static("x-forwarded-for, x-hop"));
//! headers.insert("x-hop", HeaderValue::from_static("1"));
//!
//! let host = headers.get("host").cloned();
//! let user = Some([203, 0, 113, 9].into());
//! forwarded::write(&mut headers, &Hop::first(user, host.as_ref(), Scheme::Http), Claims::Replace);
//! hop_by_hop::strip_hop_by_hop(&mut headers, false);
//!
//! assert_eq!(headers["x-forwarded-for"], "203.0.113.9");
//! assert_eq!(headers["x-real-ip"], "203.0.113.9");
//! assert_eq!(headers["forwarded"], "for=203.0.113.9;host=\"app.example\";proto=http");
//! assert!(!headers.contains_key("x-hop") && !headers.contains_key("connection"));
//!
//! assert_eq!(tunnel_http::path::normalize("/x/../%61dmin//").as_deref(), Ok("/admin/"));
//! ```

pub mod forwarded;
pub mod hop_by_hop;
pub mod path;

/// Why an input is refused. The text is fit to show the user who sent it (a path comes back
/// with a 400) or the operator who configured it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A trusted-proxy entry that is neither an address nor a CIDR block.
    #[error("{0:?} is not an address or CIDR block (e.g. \"10.0.0.0/8\")")]
    BadCidr(String),
    /// A path not `/...` (nor `*`).
    #[error("the path must start with /")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("the path has a % not followed by two hex digits")]
    BadEscape,
    /// `%2F`: one service splits on it, another does not.
    #[error("the path has an encoded slash (%2F)")]
    EncodedSlash,
    /// `\` or `%5C`: a path separator on some services.
    #[error("the path has a backslash")]
    Backslash,
    /// `%00`.
    #[error("the path has an encoded NUL (%00)")]
    Nul,
    /// A `.` or `..` segment written with `%2E`.
    #[error("the path has an encoded dot segment (%2E)")]
    EncodedDotSegment,
    /// `..` above the root.
    #[error("the path climbs above the root with ..")]
    AboveRoot,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use http::header::{HeaderMap, HeaderName, HeaderValue};

    /// A header map with every pair appended, repeats kept.
    pub(crate) fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }
}
