//! A fault relay: a TCP relay in front of the server that can fake the ways a network path
//! fails, one fault at a time.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// How the connections relayed so far fail (see [`Relay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The client's side is closed, the server's side stays open and silent: a path that died
    /// without a FIN reaching the server.
    Cut,
    /// Both sides stay open, nothing is forwarded: a NAT that forgot the mapping.
    Freeze,
}

#[derive(Debug, Default)]
struct Connections {
    /// One per connection accepted, in order: ends that connection's forwarding.
    tasks: Vec<AbortHandle>,
    /// Server-side sockets of cut connections, kept open.
    cut: Vec<TcpStream>,
    /// Both sockets (client side, server side) of every frozen connection, kept open.
    frozen: Vec<(TcpStream, TcpStream)>,
}

/// A TCP relay in front of `upstream` with three faults:
/// - [`Relay::cut`] makes every connection relayed so far look dead to the client (its side is
///   closed) while the server's side stays open and silent;
/// - [`Relay::freeze`] stops forwarding on every connection relayed so far while keeping both
///   of its sockets open, so neither end sees an end or an error, only silence;
/// - [`Relay::kill`] closes both sockets of one connection, as when that one path fails.
///
/// Connections accepted after a fault are relayed normally.
#[derive(Debug)]
pub struct Relay {
    /// Where clients connect instead of the server.
    pub addr: SocketAddr,
    fault: watch::Sender<(u64, Fault)>,
    conns: Arc<Mutex<Connections>>,
}

impl Relay {
    /// Relay 127.0.0.1:(an OS-picked port) to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (fault, _) = watch::channel((0u64, Fault::Cut));
        let relay = Relay {
            addr,
            fault,
            conns: Default::default(),
        };
        let (faults, conns) = (relay.fault.clone(), relay.conns.clone());
        tokio::spawn(async move {
            while let Ok((mut down, _)) = l.accept().await {
                // Subscribed before the connection is relayed: only later faults hit it.
                let mut fault = faults.subscribe();
                let list = conns.clone();
                let mut conns = conns.lock().unwrap();
                let task = tokio::spawn(async move {
                    let Ok(mut up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let hit = tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => None,
                        _ = fault.changed() => Some(fault.borrow().1),
                    };
                    let mut list = list.lock().unwrap();
                    match hit {
                        Some(Fault::Cut) => list.cut.push(up),
                        Some(Fault::Freeze) => list.frozen.push((down, up)),
                        None => {}
                    }
                });
                conns.tasks.push(task.abort_handle());
            }
        });
        relay
    }

    fn apply(&self, fault: Fault) {
        self.fault.send_modify(|(generation, f)| {
            *generation += 1;
            *f = fault;
        });
    }

    /// Cut every connection relayed so far (see the type's docs).
    pub fn cut(&self) {
        self.apply(Fault::Cut);
    }

    /// Freeze every connection relayed so far (see the type's docs).
    pub fn freeze(&self) {
        self.apply(Fault::Freeze);
    }

    /// End the `i`-th connection relayed (0 = the first accepted).
    pub fn kill(&self, i: usize) {
        self.conns.lock().unwrap().tasks[i].abort();
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.conns.lock().unwrap().tasks.len()
    }

    /// Connections cut so far whose server-side socket is still held.
    pub fn cut_count(&self) -> usize {
        self.conns.lock().unwrap().cut.len()
    }

    /// The server-side socket of the last cut connection, for the test to read or close.
    pub fn take_cut(&self) -> Option<TcpStream> {
        self.conns.lock().unwrap().cut.pop()
    }

    /// Connections frozen so far (held open, silent both ways).
    pub fn frozen(&self) -> usize {
        self.conns.lock().unwrap().frozen.len()
    }
}
