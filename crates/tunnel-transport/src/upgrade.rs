//! The server side of the WebSocket upgrade, on the TLS port (ALPN `http/1.1`) and on the
//! plain `ws_bind` port: read one request head, answer 101 for an upgrade at our path, a plain
//! 404 for any other request, 400 for something that is not HTTP.
//!
//! The head is read and checked here rather than by tungstenite so that a plain request or
//! a wrong path gets an HTTP answer before the connection closes (tungstenite's acceptor
//! takes the stream and drops it on such errors without a word).

use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::WebSocketStream;

use crate::TransportError;

/// Largest request head accepted; an upgrade request is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// An acceptable upgrade request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Upgrade {
    key: String,
    /// The client address a proxy reported (`X-Real-IP`, else the last `X-Forwarded-For`).
    forwarded: Option<IpAddr>,
}

/// Why a request is not served: the status to answer and what to log.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    status: &'static str,
    what: String,
}

/// Read one request head and answer it. On success the WebSocket is ready; otherwise the
/// peer got its 404/400 and the error says what it asked for.
pub(crate) async fn accept<S>(
    mut io: S,
    path: &str,
) -> Result<(WebSocketStream<S>, Option<IpAddr>), TransportError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (head_len, buf) = match read_head(&mut io).await {
        Ok(r) => r,
        Err(HeadError::Io(e)) => return Err(TransportError::Io(e)),
        Err(HeadError::Closed) => {
            return Err(TransportError::NotTunnel(
                "closed before sending a complete HTTP request".to_owned(),
            ))
        }
        Err(HeadError::TooLarge) => {
            respond(&mut io, "431 Request Header Fields Too Large").await;
            return Err(TransportError::NotTunnel(format!(
                "an HTTP request head over {MAX_HEAD} bytes (answered 431)"
            )));
        }
    };
    let (head, rest) = buf.split_at(head_len);
    match check(head, path) {
        Ok(up) => {
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(up.key.as_bytes())
            );
            io.write_all(answer.as_bytes()).await?;
            io.flush().await?;
            let ws = crate::ws::server_stream(io, rest.to_vec()).await;
            Ok((ws, up.forwarded))
        }
        Err(refusal) => {
            respond(&mut io, refusal.status).await;
            Err(TransportError::NotTunnel(format!(
                "{} (answered {})",
                refusal.what, refusal.status
            )))
        }
    }
}

enum HeadError {
    Io(std::io::Error),
    Closed,
    TooLarge,
}

/// Read until the blank line that ends the head. Returns the head's length and everything
/// read (a client may send frames right behind its request).
async fn read_head<S: AsyncRead + Unpin>(io: &mut S) -> Result<(usize, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = io.read(&mut chunk).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        // Resume the search a few bytes back: the terminator may straddle two reads.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok((from + i + 4, buf));
        }
        if buf.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Decide on a complete request head.
pub(crate) fn check(head: &[u8], path: &str) -> Result<Upgrade, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let bad = |what: String| Refusal {
        status: "400 Bad Request",
        what,
    };
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("an incomplete HTTP request".into())),
        Err(e) => return Err(bad(format!("not an HTTP request ({e})"))),
    }
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let what = format!("HTTP/1.1 {method} {}", printable(target));
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let req_path = target.split_once('?').map_or(target, |(p, _)| p);
    if method != "GET"
        || req_path != path
        || !has_token("upgrade", "websocket")
        || !has_token("connection", "upgrade")
    {
        return Err(Refusal {
            status: "404 Not Found",
            what,
        });
    }
    if header("sec-websocket-version") != Some("13") {
        return Err(bad(format!(
            "{what} with a WebSocket version other than 13"
        )));
    }
    let Some(key) = header("sec-websocket-key").filter(|k| !k.trim().is_empty()) else {
        return Err(bad(format!("{what} without Sec-WebSocket-Key")));
    };
    let forwarded = header("x-real-ip")
        .and_then(|v| v.trim().parse().ok())
        .or_else(|| {
            header("x-forwarded-for")
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        });
    Ok(Upgrade {
        key: key.trim().to_owned(),
        forwarded,
    })
}

/// A request target as it may appear in a log line: bounded, no control characters.
fn printable(s: &str) -> String {
    s.chars()
        .take(100)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Best effort: answer `status` with a short body and close. The peer may be gone already.
async fn respond<S: AsyncWrite + Unpin>(io: &mut S, status: &str) {
    let body = status.split_once(' ').map_or(status, |(_, text)| text);
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}\n",
        body.len() + 1
    );
    let _ = io.write_all(answer.as_bytes()).await;
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const UPGRADE: &str = "GET /tunnel HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    fn head(extra: &str) -> Vec<u8> {
        format!("{UPGRADE}{extra}\r\n").into_bytes()
    }

    #[test]
    fn an_upgrade_at_our_path_is_accepted_with_the_forwarded_address() {
        let up = check(&head(""), "/tunnel").unwrap();
        assert_eq!(up.key, "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(up.forwarded, None);
        let up = check(&head("X-Forwarded-For: 10.0.0.1, 192.0.2.7\r\n"), "/tunnel").unwrap();
        assert_eq!(up.forwarded, Some("192.0.2.7".parse().unwrap()));
        let up = check(&head("X-Real-IP: 2001:db8::1\r\n"), "/tunnel").unwrap();
        assert_eq!(up.forwarded, Some("2001:db8::1".parse().unwrap()));
        let up = check(&head("X-Real-IP: nonsense\r\n"), "/tunnel").unwrap();
        assert_eq!(up.forwarded, None);
        let q = UPGRADE.replace("/tunnel", "/tunnel?x=1");
        assert!(check(format!("{q}\r\n").as_bytes(), "/tunnel").is_ok());
    }

    #[test]
    fn other_requests_get_404_and_garbage_gets_400() {
        let status = |h: &[u8]| check(h, "/tunnel").unwrap_err().status;
        assert_eq!(
            status(format!("{}\r\n", UPGRADE.replacen("/tunnel", "/other", 1)).as_bytes()),
            "404 Not Found"
        );
        assert_eq!(
            status(b"GET /tunnel HTTP/1.1\r\nHost: x\r\n\r\n"),
            "404 Not Found"
        );
        assert_eq!(
            status(format!("{}\r\n", UPGRADE.replace("GET", "POST")).as_bytes()),
            "404 Not Found"
        );
        assert_eq!(
            status(&format!("{}\r\n", UPGRADE.replace(": 13", ": 8")).into_bytes()),
            "400 Bad Request"
        );
        let keyless = UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        assert_eq!(
            status(format!("{keyless}\r\n").as_bytes()),
            "400 Bad Request"
        );
        assert_eq!(
            status(b"\x16\x03\x01\x02\x00garbage\r\n\r\n"),
            "400 Bad Request"
        );
        let refusal = check(b"GET /a\x01b HTTP/1.1\r\n\r\n", "/tunnel").unwrap_err();
        assert!(!refusal.what.contains('\x01'), "{refusal:?}");
    }
}
