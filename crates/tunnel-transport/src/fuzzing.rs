//! Entry points for the fuzz targets in `fuzz/`, not part of the API: the WebSocket acceptor
//! (request head, upgrade check, then WebSocket frames), which a stranger reaches before any
//! authentication, run in memory without sockets or a runtime.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::ws::WsStream;

/// Serve `input` as one connection to the WebSocket acceptor at `path`, delivered at most
/// `chunk` bytes per read: the request head is read and checked (answered 101, 404, 400 or
/// 431), and after an accepted upgrade the WebSocket payload is read to its end. Returns how
/// many payload bytes came through an accepted upgrade, `None` when the request was refused.
pub fn websocket_accept(input: &[u8], chunk: usize, path: &str) -> Option<usize> {
    let conn = Memory {
        input,
        chunk: chunk.max(1),
    };
    let serve = async move {
        let (ws, _forwarded) = crate::upgrade::accept(conn, path).await.ok()?;
        let mut stream = WsStream::new(ws);
        let mut buf = [0u8; 4096];
        let mut payload = 0;
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return Some(payload),
                Ok(n) => payload += n,
            }
        }
    };
    // Every read and write below is ready at once (memory in, nowhere out), so one poll runs
    // the connection to its end.
    match pin!(serve).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(r) => r,
        Poll::Pending => unreachable!("an in-memory connection never waits"),
    }
}

/// A connection whose peer sent `input` and then closed; what we write goes nowhere.
struct Memory<'a> {
    input: &'a [u8],
    chunk: usize,
}

impl AsyncRead for Memory<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.chunk.min(self.input.len()).min(buf.remaining());
        let (now, later) = self.input.split_at(n);
        buf.put_slice(now);
        self.input = later;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Memory<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"GET /tunnel HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn an_upgrade_then_a_frame_delivers_its_payload_in_any_chunking() {
        // One masked binary frame (mask 0) carrying "hi".
        let mut input = HEAD.to_vec();
        input.extend_from_slice(&[0x82, 0x82, 0, 0, 0, 0, b'h', b'i']);
        for chunk in [1, 3, 1024] {
            assert_eq!(
                websocket_accept(&input, chunk, "/tunnel"),
                Some(2),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn other_requests_and_garbage_are_refused() {
        assert_eq!(websocket_accept(HEAD, 7, "/elsewhere"), None);
        assert_eq!(
            websocket_accept(b"GET / HTTP/1.1\r\n\r\n", 7, "/tunnel"),
            None
        );
        assert_eq!(
            websocket_accept(b"\x16\x03\x01garbage\r\n\r\n", 7, "/tunnel"),
            None
        );
        assert_eq!(
            websocket_accept(b"GET /tunnel HTTP/1.1\r\n", 7, "/tunnel"),
            None
        );
    }
}
