//! A group's user connection whose first bytes go out before the member answers, and go
//! again to the next member if it refuses.
//!
//! A member whose service is down answers the stream's open with an error; the next member
//! is then tried. To keep that while sending the user's bytes early (a tunnel round trip
//! sooner), the bytes sent before a member's answer are kept, up to [`REPLAY_MAX`], and
//! written again to the next member. Past that bound, the user's connection is not read
//! until the member has answered, so the copy stays bounded; once a member took the
//! connection, the copy is dropped and the relay carries the rest.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tunnel_mux::{EarlyStream, MuxStream};

use super::{Candidates, Failure, GroupHandle, Opened};
use crate::forward;
use crate::{ServerError, Shared};

/// How many of the user's first bytes are kept to be sent to the next member: a request or
/// a TLS ClientHello fits, and it stays well within one stream's window, so writing it
/// never waits for the member.
const REPLAY_MAX: usize = 64 * 1024;

/// Open a stream for the user connection `tcp` from `peer` to a member of `group`, as
/// [`super::open`] does, but without waiting for each member's answer before sending:
/// `first` (bytes of the user read already, such as a ClientHello) and what the user sends
/// meanwhile go to the member at once, and again to the next one if it refuses. The stream
/// returned has its `Ok` in, and the bytes sent on it counted as the member's.
pub(crate) async fn open_with_first_flight(
    shared: &Shared,
    group: &GroupHandle,
    tcp: &mut TcpStream,
    peer: SocketAddr,
    dest: Option<SocketAddr>,
    first: Vec<u8>,
) -> Result<Opened<EarlyStream<MuxStream>>, NotOpened> {
    let mut flight = Flight {
        sent: first,
        user_done: false,
    };
    let mut members = Candidates::new(shared, group, peer);
    while let Some((entry, slot)) = members.next() {
        let opened = forward::open_early(&entry, slot.lane(), Some(peer), dest).await;
        let (mut stream, guard) = match opened {
            Ok(o) => o,
            Err(reason) => {
                members.failed(&entry, reason);
                continue;
            }
        };
        match flight.send(tcp, &mut stream).await {
            Ok(()) => {
                let len = u64::try_from(flight.sent.len()).unwrap_or(u64::MAX);
                let bytes = &entry.counters.bytes;
                bytes.a_to_b.fetch_add(len, Ordering::Relaxed);
                return Ok(Opened {
                    entry,
                    slot,
                    stream,
                    guard,
                });
            }
            Err(Sent::Refused(reason)) => members.failed(&entry, reason),
            Err(Sent::UserGone(e)) => return Err(NotOpened::UserGone(e)),
        }
    }
    Err(NotOpened::NoMember(members.into_failure()))
}

/// Why a user connection of a group got no stream.
#[derive(Debug)]
pub(crate) enum NotOpened {
    /// No member took it.
    NoMember(Failure),
    /// The user's connection failed while its first bytes were read.
    UserGone(std::io::Error),
}

impl std::fmt::Display for NotOpened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotOpened::NoMember(failure) => write!(f, "no member took it: {failure}"),
            NotOpened::UserGone(e) => write!(f, "the user's connection failed: {e}"),
        }
    }
}

/// The user's bytes sent so far, for the next member should this one refuse.
struct Flight {
    sent: Vec<u8>,
    /// The user half-closed: nothing more to read before the relay.
    user_done: bool,
}

/// Why a member did not get the connection.
enum Sent {
    /// The member refused, did not answer in time, or its stream failed: try the next.
    Refused(ServerError),
    /// The user's connection failed: no member can take it.
    UserGone(std::io::Error),
}

impl Flight {
    /// Send what the user sent so far, then relay what it sends until the member answers
    /// (reading no more than [`REPLAY_MAX`] in all); `Ok` once the member took the stream.
    async fn send(
        &mut self,
        tcp: &mut TcpStream,
        stream: &mut EarlyStream<MuxStream>,
    ) -> Result<(), Sent> {
        if !self.sent.is_empty() {
            let written = write(stream, &self.sent).await;
            written.map_err(|e| refusal(stream, e))?;
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let room = REPLAY_MAX.saturating_sub(self.sent.len()).min(buf.len());
            let reading = !self.user_done && room > 0;
            tokio::select! {
                status = stream.status() => {
                    return status.map_err(|e| Sent::Refused(forward::reason_of(&e)));
                }
                read = tcp.read(&mut buf[..room]), if reading => match read {
                    // The relay reads the end again and passes it on.
                    Ok(0) => self.user_done = true,
                    Ok(n) => {
                        self.sent.extend_from_slice(&buf[..n]);
                        let written = write(stream, &buf[..n]).await;
                        written.map_err(|e| refusal(stream, e))?;
                    }
                    Err(e) => return Err(Sent::UserGone(e)),
                },
            }
        }
    }
}

async fn write(stream: &mut EarlyStream<MuxStream>, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

/// A write to the member's stream failed: because the member refused (its words, then), or
/// because the stream is gone. Either way the next member is tried.
fn refusal(stream: &EarlyStream<MuxStream>, e: std::io::Error) -> Sent {
    Sent::Refused(match stream.failure() {
        Some(failure) => forward::reason_of(failure),
        None => ServerError::OwnerStreamIo(e),
    })
}
