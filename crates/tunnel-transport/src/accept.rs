//! One accept loop for every listener: at the open-file limit (EMFILE, ENFILE) or out of
//! buffers, `accept` fails at once and the listener stays readable, so a loop that retries
//! right away spins a core without serving anyone. [`Acceptor`] backs off exponentially
//! instead, and says so in one WARN per period rather than one per failure.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::warn;

use crate::warn_limit::WarnLimit;

/// First pause after a failed accept; doubled on each failure in a row, up to [`MAX_BACKOFF`].
pub(crate) const MIN_BACKOFF: Duration = Duration::from_millis(10);
/// Longest pause between accept attempts while they keep failing.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// At most one accept-failure WARN per listener this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A listener whose [`Acceptor::accept`] only returns connections, pausing on errors.
#[derive(Debug)]
pub struct Acceptor {
    listener: TcpListener,
    backoff: Backoff,
    warn: WarnLimit,
}

impl Acceptor {
    /// Accept on `listener`, backing off while accepts fail.
    pub fn new(listener: TcpListener) -> Self {
        Acceptor {
            listener,
            backoff: Backoff::default(),
            warn: WarnLimit::new(WARN_EVERY),
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection. Errors are logged and retried: a connection that died in the
    /// backlog at once, anything else (out of descriptors, buffers) after a growing pause.
    /// Cancel-safe: dropping the future loses no accepted connection.
    pub async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok(conn) => {
                    self.backoff.reset();
                    return conn;
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    let pause = self.backoff.next();
                    if let Some(more) = self.warn.check() {
                        warn!(
                            "accept failed: {e}; pausing accepts for up to {}ms{more}",
                            MAX_BACKOFF.as_millis()
                        );
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

/// Most connections [`Acceptor::close`] takes from the backlog: the backlog's own size.
const MAX_DRAINED: usize = 1024;

impl Acceptor {
    /// Close the listener, first taking every connection the kernel already accepted for it:
    /// closing a listening socket resets those, and a balancer that relayed one to us would
    /// see its user's connection fail. For a port handed over to someone else, who serves
    /// the returned connections. (Asks the socket itself, not the runtime's readiness, which
    /// may not have heard of the latest ones yet.)
    pub fn close(self) -> Vec<(TcpStream, SocketAddr)> {
        let mut taken = Vec::new();
        let Ok(listener) = self.listener.into_std() else {
            return taken;
        };
        while taken.len() < MAX_DRAINED {
            match listener.accept() {
                Ok((conn, at)) => {
                    let conn = conn
                        .set_nonblocking(true)
                        .and_then(|()| TcpStream::from_std(conn));
                    if let Ok(conn) = conn {
                        taken.push((conn, at));
                    }
                }
                Err(e) if is_connection_error(&e) => continue,
                // WouldBlock: the backlog is empty. Anything else: nothing more to take.
                Err(_) => break,
            }
        }
        taken
    }
}

/// Errors that concern one connection (gone before we took it), not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Exponential back-off from [`MIN_BACKOFF`] to [`MAX_BACKOFF`].
#[derive(Debug, Default)]
struct Backoff {
    current: Option<Duration>,
}

impl Backoff {
    fn next(&mut self) -> Duration {
        let d = self
            .current
            .map_or(MIN_BACKOFF, |d| (d * 2).min(MAX_BACKOFF));
        self.current = Some(d);
        d
    }

    fn reset(&mut self) {
        self.current = None;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let seq: Vec<_> = (0..10).map(|_| b.next().as_millis()).collect();
        assert_eq!(seq, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next(), MIN_BACKOFF);
    }

    #[tokio::test]
    async fn accepts_connections() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut a = Acceptor::new(l);
        let addr = a.local_addr().unwrap();
        let (c, accepted) = tokio::join!(TcpStream::connect(addr), a.accept());
        assert_eq!(accepted.1, c.unwrap().local_addr().unwrap());
    }
}
