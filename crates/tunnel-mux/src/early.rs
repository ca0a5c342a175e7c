//! A stream whose opener sends before the far side has answered its open.
//!
//! The opener writes its `StreamOpen` and then its payload at once; the acceptor's
//! `StreamStatus` arrives at the head of what it sends back. [`EarlyStream`] reads that
//! status out of the stream's first bytes (with [`tunnel_proto::StatusReader`]) and then
//! steps aside: reads, buffered reads and writes pass straight through, so a relay borrows
//! the stream's own frames as it would without it.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tunnel_proto::{StatusRead, StatusReader, StreamStatus};

use crate::MuxError;

/// A stream (a [`crate::MuxStream`], say) read through the status frame at its head.
///
/// Writes pass through from the start. The first read waits for the status: after `Ok`,
/// every read passes through; after `Error`, a status that does not come within the
/// timeout (counted only until it comes), or a bad one, every read and write fails with an
/// `io::Error` whose message is the [`MuxError`], which [`EarlyStream::failure`] keeps for
/// the caller's logs.
#[derive(Debug)]
pub struct EarlyStream<S> {
    inner: S,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    Waiting {
        reader: StatusReader,
        deadline: Pin<Box<tokio::time::Sleep>>,
        timeout: Duration,
    },
    Open,
    Failed(MuxError),
}

impl<S> EarlyStream<S> {
    /// Read `inner`'s status frame (at most `max_status` bytes of kind and body) ahead of
    /// its payload, failing if it is not in within `timeout` from now. Must be called
    /// within a tokio runtime (it starts the timer).
    pub fn new(inner: S, max_status: usize, timeout: Duration) -> Self {
        Self {
            inner,
            phase: Phase::Waiting {
                reader: StatusReader::new(max_status),
                deadline: Box::pin(tokio::time::sleep(timeout)),
                timeout,
            },
        }
    }

    /// Why the stream failed before its payload, if it did.
    pub fn failure(&self) -> Option<&MuxError> {
        match &self.phase {
            Phase::Failed(e) => Some(e),
            Phase::Waiting { .. } | Phase::Open => None,
        }
    }

    fn failed(&self) -> Option<io::Error> {
        self.failure().map(io_error)
    }

    /// The stream inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream inside; any bytes of its status frame already read are gone with this.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncBufRead + Unpin> EarlyStream<S> {
    /// Wait for the status (the caller sends nothing early): `Ok(())` once it is `Ok`.
    ///
    /// # Errors
    ///
    /// As the first read would fail: the status was `Error`, late, or bad.
    pub async fn status(&mut self) -> Result<(), MuxError> {
        poll_fn(|cx| self.poll_status(cx)).await.map_err(|_| {
            self.failure()
                .cloned()
                .unwrap_or_else(|| MuxError::BadStatus {
                    reason: "the stream failed".into(),
                })
        })
    }

    /// Read until the status is in: `Ready(Ok)` once it was `Ok`.
    fn poll_status(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let (reader, deadline, timeout) = match &mut self.phase {
                Phase::Open => return Poll::Ready(Ok(())),
                Phase::Failed(e) => return Poll::Ready(Err(io_error(e))),
                Phase::Waiting {
                    reader,
                    deadline,
                    timeout,
                } => (reader, deadline, *timeout),
            };
            let failure = match Pin::new(&mut self.inner).poll_fill_buf(cx) {
                Poll::Pending => {
                    ready!(deadline.as_mut().poll(cx));
                    MuxError::NoStatus { after: timeout }
                }
                Poll::Ready(Err(e)) => MuxError::BadStatus {
                    reason: e.to_string(),
                },
                Poll::Ready(Ok([])) => MuxError::BadStatus {
                    reason: if reader.started() {
                        "the stream ended in the middle of its status frame".into()
                    } else {
                        "the stream ended before its status".into()
                    },
                },
                Poll::Ready(Ok(bytes)) => match reader.feed(bytes) {
                    Ok((read, used)) => {
                        Pin::new(&mut self.inner).consume(used);
                        match read {
                            StatusRead::NeedMore => continue,
                            StatusRead::Status(StreamStatus::Ok) => {
                                self.phase = Phase::Open;
                                continue;
                            }
                            StatusRead::Status(StreamStatus::Error(reason)) => {
                                MuxError::Refused { reason }
                            }
                        }
                    }
                    Err(e) => MuxError::BadStatus {
                        reason: e.to_string(),
                    },
                },
            };
            self.phase = Phase::Failed(failure);
        }
    }
}

/// The failure as the I/O traits report it: a kind a caller can match on, the words of the
/// [`MuxError`].
fn io_error(e: &MuxError) -> io::Error {
    let kind = match e {
        MuxError::Refused { .. } => io::ErrorKind::ConnectionRefused,
        MuxError::NoStatus { .. } => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e.clone())
}

impl<S: AsyncRead + AsyncBufRead + Unpin> AsyncRead for EarlyStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_status(cx))?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncBufRead + Unpin> AsyncBufRead for EarlyStream<S> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        ready!(this.poll_status(cx))?;
        Pin::new(&mut this.inner).poll_fill_buf(cx)
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.get_mut().inner).consume(amt);
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EarlyStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.failed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.failed() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tunnel_proto::{encode_to_vec, Message, DEFAULT_MAX_FRAME};

    const MAX: usize = 4096;
    const LONG: Duration = Duration::from_secs(30);

    fn frame(status: StreamStatus) -> Vec<u8> {
        encode_to_vec(&Message::StreamStatus(status), DEFAULT_MAX_FRAME).unwrap()
    }

    /// An early stream over one end of a pipe, and the far end.
    fn pair(
        timeout: Duration,
    ) -> (
        EarlyStream<BufReader<tokio::io::DuplexStream>>,
        tokio::io::DuplexStream,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        (EarlyStream::new(BufReader::new(a), MAX, timeout), b)
    }

    #[tokio::test]
    async fn writes_flow_before_the_status_and_reads_start_after_it() {
        let (mut early, mut far) = pair(LONG);
        early.write_all(b"hello early").await.unwrap();
        let mut got = [0u8; 11];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello early", "sent before any status");
        // The status split in two, the payload in the same write as its second half.
        let status = frame(StreamStatus::Ok);
        far.write_all(&status[..3]).await.unwrap();
        far.flush().await.unwrap();
        let mut rest = status[3..].to_vec();
        rest.extend_from_slice(b"reply");
        far.write_all(&rest).await.unwrap();
        drop(far);
        let mut reply = Vec::new();
        early.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply");
        assert!(early.failure().is_none());
    }

    /// Over a real session: the status and the payload in one yamux frame, then more
    /// frames; buffered reads get the rest of the first frame, then whole frames.
    #[tokio::test]
    async fn over_a_mux_stream_the_payload_after_the_status_passes_through() {
        let (a, b) = tokio::io::duplex(256 * 1024);
        let cfg = crate::MuxConfig::default();
        let (opener, _in_a) = crate::start(a, crate::Mode::Server, &cfg);
        let (_acceptor, mut in_b) = crate::start(b, crate::Mode::Client, &cfg);
        let stream = opener.open().await.unwrap();
        let mut early = EarlyStream::new(stream, MAX, LONG);
        early.write_all(b"first flight").await.unwrap();
        early.flush().await.unwrap();
        let mut far = in_b.accept().await.unwrap();
        let mut got = [0u8; 12];
        far.read_exact(&mut got).await.unwrap();
        let mut wire = frame(StreamStatus::Ok);
        wire.extend_from_slice(b"head");
        far.write_all(&wire).await.unwrap();
        far.flush().await.unwrap();
        far.write_all(b"tail").await.unwrap();
        far.shutdown().await.unwrap();
        let mut seen = Vec::new();
        loop {
            let chunk = early.fill_buf().await.unwrap();
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            seen.extend_from_slice(chunk);
            early.consume(n);
        }
        assert_eq!(seen, b"headtail");
    }

    #[tokio::test]
    async fn buffered_reads_see_only_the_payload() {
        let (mut early, mut far) = pair(LONG);
        let mut wire = frame(StreamStatus::Ok);
        wire.extend_from_slice(b"abc");
        far.write_all(&wire).await.unwrap();
        assert_eq!(early.fill_buf().await.unwrap(), b"abc");
        early.consume(3);
    }

    #[tokio::test]
    async fn an_error_status_fails_reads_and_writes_and_is_kept() {
        let (mut early, mut far) = pair(LONG);
        early.write_all(b"early bytes").await.unwrap();
        far.write_all(&frame(StreamStatus::Error(
            "dial \u{1b}[31m refused".into(),
        )))
        .await
        .unwrap();
        let err = early.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        // The peer's words are escaped, once.
        assert!(
            err.to_string().contains("dial \\u{1b}[31m refused"),
            "{err}"
        );
        assert!(
            matches!(early.failure(), Some(MuxError::Refused { reason }) if reason.contains("refused"))
        );
        assert!(early.write_all(b"more").await.is_err());
        assert!(early.read(&mut [0u8; 16]).await.is_err(), "sticky");
    }

    #[tokio::test(start_paused = true)]
    async fn no_status_within_the_timeout_fails_the_read() {
        let (mut early, _far) = pair(Duration::from_secs(15));
        let err = early.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(early.failure(), Some(MuxError::NoStatus { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_ends_with_the_status() {
        let (mut early, mut far) = pair(Duration::from_secs(15));
        far.write_all(&frame(StreamStatus::Ok)).await.unwrap();
        early.status().await.unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
        far.write_all(b"late but fine").await.unwrap();
        let mut got = [0u8; 13];
        early.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"late but fine");
    }

    #[tokio::test]
    async fn eof_or_garbage_instead_of_a_status_fails() {
        let (mut early, far) = pair(LONG);
        drop(far);
        assert!(early.status().await.is_err());
        assert!(early
            .failure()
            .unwrap()
            .to_string()
            .contains("before its status"));

        let (mut early, mut far) = pair(LONG);
        far.write_all(&frame(StreamStatus::Ok)[..5]).await.unwrap();
        drop(far);
        assert!(early.status().await.is_err());
        assert!(early.failure().unwrap().to_string().contains("middle"));

        let (mut early, mut far) = pair(LONG);
        far.write_all(&[0, 1, 0, 0, 0x31]).await.unwrap();
        let err = early.read(&mut [0u8; 4]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("over the limit"), "{err}");
    }
}
