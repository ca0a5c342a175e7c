//! `publish_mode = "all"`: every published port of the cluster answers on every server; a
//! server that does not own the port forwards each user connection to the owner's server.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use parking_lot::Mutex;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};
use tunnel_mux::{relay_tcp, reset_tcp};
use tunnel_proto::peer::{Forward, ForwardKind};

use crate::listener::admit;
use crate::peer::Peer;
use crate::source_limit::SourcePermit;
use crate::Shared;

/// How long a local registration waits for a forwarding listener on its port to close.
const RELEASE_WAIT: Duration = Duration::from_secs(2);
/// How long a port released for a local registration is not forwarded again, unless the
/// registry shows it ours first; past it, the registration failed and forwarding resumes.
const TAKING_WAIT: Duration = Duration::from_secs(5);

/// One forwarding listener: the proxy it leads to, what stops it, and what says it is gone.
#[derive(Debug)]
struct Open {
    name: String,
    udp: bool,
    stop: CancellationToken,
    ended: CancellationToken,
}

/// The forwarding listeners by port. Shared with the registration path: a client taking a
/// port over on this server (it moved here) needs the port this server forwarded until then.
///
/// One lock for all of it: a port's listener is bound, closed and released under it, so that
/// the registration path and the feed never race for the same port.
#[derive(Debug, Default)]
pub(crate) struct Forwarding(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    open: HashMap<u16, Open>,
    /// Listeners told to stop whose socket may still be open: what says each has ended.
    closing: HashMap<u16, CancellationToken>,
    /// Ports released for a local registration, until when. Until the registry's feed shows
    /// the port ours, it still shows the old owner: a forwarding listener bound again then
    /// would take the port from under the local one (seen with 100 clients moving at once).
    taking: HashMap<u16, Instant>,
}

impl State {
    /// Stop the listener on `port`, if any; it stays in `closing` until it has ended.
    fn close(&mut self, port: u16) {
        if let Some(open) = self.open.remove(&port) {
            open.stop.cancel();
            self.closing.insert(port, open.ended);
        }
    }
}

impl Forwarding {
    /// Whether a local registration is taking `port` over now (its listener comes next).
    fn taking(&self, port: u16) -> bool {
        self.0
            .lock()
            .taking
            .get(&port)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Close the forwarding listener on `port`, if any, and wait (bounded) until its socket
    /// is closed, so that a local listener can bind the port; the port is not forwarded
    /// again until the registry shows it ours, or for [`TAKING_WAIT`].
    pub(crate) async fn release(&self, port: u16) {
        let ended = {
            let mut st = self.0.lock();
            st.taking.insert(port, Instant::now() + TAKING_WAIT);
            st.close(port);
            st.closing.get(&port).cloned()
        };
        let Some(ended) = ended else {
            return;
        };
        let _ = tokio::time::timeout(RELEASE_WAIT, ended.cancelled_owned()).await;
        debug!(port, "forwarding listener released for a local proxy");
    }
}

/// Follow the registry's port feed until shutdown: bind a forwarding listener for each port
/// another server owns, and close it when the port goes away or becomes ours.
pub(crate) async fn run(shared: Arc<Shared>, peer: Arc<Peer>) {
    let mut changes = peer.locator.port_changes();
    // Ports whose forwarding listener could not be bound (a stale local proxy of a session
    // that has not noticed yet that its client left, say): tried again every BIND_RETRY,
    // warned about once.
    let mut failing: HashMap<u16, Failing> = HashMap::new();
    // Ports outside allow_ports, warned about once.
    let mut outside: HashSet<u16> = HashSet::new();
    // Ports another server owns that a local proxy still holds, since when.
    let mut held_since: HashMap<u16, Instant> = HashMap::new();
    loop {
        let ports = peer.locator.published_ports();
        let now = Instant::now();
        // Ports being taken locally: done once the feed shows them ours, given up past their
        // deadline. The earliest deadline left wakes this loop up.
        let taking_until = {
            let mut st = peer.forwarding.0.lock();
            st.taking.retain(|port, until| {
                *until > now && !ports.iter().any(|l| l.publish_port == *port && l.local)
            });
            st.closing.retain(|_, ended| !ended.is_cancelled());
            st.taking.values().min().copied()
        };
        // A port still held by a local proxy (a draining server's client that moved keeps
        // its old session until its new one serves) is not forwarded yet: its own listener
        // has the port.
        let mut remote: Vec<_> = ports
            .into_iter()
            .filter(|l| !l.local && l.publish_port != 0)
            .collect();
        let mut held_now = HashSet::new();
        remote.retain(|l| {
            let held = held_here(&shared, &l.name, l.publish_port);
            if held {
                held_now.insert(l.publish_port);
                held_since.entry(l.publish_port).or_insert(now);
            }
            !held
        });
        held_since.retain(|p, _| held_now.contains(p));
        let want: HashMap<u16, (String, bool)> = remote
            .into_iter()
            .map(|l| (l.publish_port, (l.name, l.udp)))
            .collect();
        let want_ports: HashSet<u16> = want.keys().copied().collect();
        for (port, (name, udp)) in want {
            let mut st = peer.forwarding.0.lock();
            if st.taking.contains_key(&port) || st.closing.contains_key(&port) {
                continue;
            }
            if st
                .open
                .get(&port)
                .is_some_and(|open| open.name == name && open.udp == udp)
            {
                continue;
            }
            st.close(port);
            if st.closing.contains_key(&port) {
                continue; // bound once the old listener has ended: the next change, or below
            }
            let allow_ports = &shared.rules.get().allow_ports;
            if !allow_ports.contains(port) {
                if outside.insert(port) {
                    warn!(port, proxy = name, "not forwarding port {port} of another server: it is outside this server's allow_ports ({allow_ports})");
                }
                continue;
            }
            match bind(&shared, &peer, port, &name, udp) {
                Ok(open) => {
                    st.open.insert(port, open);
                    failing.remove(&port);
                }
                Err(e) => {
                    let f = failing.entry(port).or_insert(Failing {
                        since: now,
                        warned: false,
                    });
                    if !f.warned && now.duration_since(f.since) >= QUIET_RETRIES {
                        f.warned = true;
                        warn!(port, proxy = name, "cannot forward port {port} of another server here: {e}; trying again every {}s", BIND_RETRY.as_secs());
                    } else {
                        debug!(
                            port,
                            proxy = name,
                            "cannot forward port {port} here yet: {e}"
                        );
                    }
                }
            }
        }
        failing.retain(|p, _| want_ports.contains(p));
        outside.retain(|p| want_ports.contains(p));
        // Soon after a local proxy let the port go its socket may still be closing: retried
        // quickly at first, then every BIND_RETRY.
        // Ports a local proxy still holds are looked at again the same way: nothing else
        // says when that proxy lets go.
        let retry_in = failing
            .values()
            .map(|f| f.since)
            .chain(held_since.values().copied())
            .map(|since| {
                if now.duration_since(since) < QUIET_RETRIES {
                    FAST_RETRY
                } else {
                    BIND_RETRY
                }
            })
            .min();
        {
            let mut st = peer.forwarding.0.lock();
            let gone: Vec<u16> = st
                .open
                .keys()
                .copied()
                .filter(|p| !want_ports.contains(p))
                .collect();
            for port in gone {
                st.close(port);
            }
        }
        // Wake up when a port being taken locally gives up, or a listener that was closing
        // has ended (its port may be wanted again).
        let retake = async {
            match taking_until {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let closing: Vec<CancellationToken> =
            peer.forwarding.0.lock().closing.values().cloned().collect();
        let ended = async {
            if closing.is_empty() {
                std::future::pending::<()>().await;
            }
            futures::future::select_all(closing.iter().map(|c| Box::pin(c.cancelled()))).await;
        };
        let retry = async {
            match retry_in {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            changed = changes.changed() => if changed.is_err() { break },
            () = retake => {}
            () = ended => {}
            () = retry => {}
        }
    }
    for (_, open) in peer.forwarding.0.lock().open.drain() {
        open.stop.cancel();
    }
}

/// How often a forwarding listener that could not be bound is tried again.
const BIND_RETRY: Duration = Duration::from_secs(1);
/// How often in the first [`QUIET_RETRIES`] after a failed bind, and without a warning: a
/// local proxy's socket closes a moment after the proxy is released.
const FAST_RETRY: Duration = Duration::from_millis(25);
const QUIET_RETRIES: Duration = Duration::from_secs(1);

/// A port whose forwarding listener could not be bound: since when, and whether said so.
#[derive(Debug, Clone, Copy)]
struct Failing {
    since: Instant,
    warned: bool,
}

/// Bind and start a forwarding listener; synchronous, so that it happens under the
/// [`Forwarding`] lock (a local bind is a system call, not a wait).
fn bind(
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
    port: u16,
    name: &str,
    udp: bool,
) -> std::io::Result<Open> {
    if udp {
        let stop = CancellationToken::new();
        let ended = CancellationToken::new();
        let task = super::udp::bind(shared, peer, port, name, stop.clone())?;
        let done = ended.clone();
        let span = tracing::info_span!("forwarding", proxy = name, port, udp = true);
        shared.tasks.spawn(
            async move {
                task.await;
                done.cancel();
            }
            .instrument(span),
        );
        return Ok(Open {
            name: name.to_owned(),
            udp,
            stop,
            ended,
        });
    }
    let addr = SocketAddr::new(shared.cfg.publish_addr, port);
    // As TcpListener::bind does (SO_REUSEADDR, so that connections in TIME_WAIT on the port
    // do not keep it), without its await.
    let listener = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .and_then(|s| {
        s.set_reuseaddr(true)?;
        s.bind(addr)?;
        s.listen(1024)
    })?;
    let stop = CancellationToken::new();
    let ended = CancellationToken::new();
    let span = tracing::info_span!("forwarding", proxy = name, port);
    let task = accept(
        shared.clone(),
        peer.clone(),
        listener,
        name.to_owned(),
        port,
        stop.clone(),
    );
    let done = ended.clone();
    shared.tasks.spawn(
        async move {
            task.await;
            done.cancel();
        }
        .instrument(span),
    );
    Ok(Open {
        name: name.to_owned(),
        udp,
        stop,
        ended,
    })
}

async fn accept(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    listener: TcpListener,
    name: String,
    port: u16,
    stop: CancellationToken,
) {
    info!("forwarding port to the owner's server");
    let mut listener = tunnel_transport::Acceptor::new(listener);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => {
                // Released for a local proxy (or the owner left): what the kernel accepted
                // already is served, not reset with the socket.
                for (tcp, user) in listener.close() {
                    match admit(&shared, user) {
                        Some(permit) => route_user(&shared, &peer, tcp, user, &name, port, permit),
                        None => reset_tcp(tcp),
                    }
                }
                break;
            }
            () = shared.shutdown.cancelled() => break,
            (tcp, user) = listener.accept() => {
                let Some(permit) = admit(&shared, user) else {
                    reset_tcp(tcp);
                    continue;
                };
                route_user(&shared, &peer, tcp, user, &name, port, permit);
            }
        }
    }
    debug!("forwarding port closed");
}

/// Serve a user connection of published `port` (proxy `name`) wherever the proxy is now:
/// on this server (its client just moved here) or on its owner's server.
pub(crate) fn route_user(
    shared: &Arc<Shared>,
    peer: &Arc<Peer>,
    tcp: TcpStream,
    user: SocketAddr,
    name: &str,
    port: u16,
    permit: SourcePermit,
) {
    let task = serve_user(
        shared.clone(),
        peer.clone(),
        tcp,
        user,
        name.to_owned(),
        port,
        permit,
    );
    shared.streams.spawn(task.in_current_span());
}

fn held_here(shared: &Shared, name: &str, port: u16) -> bool {
    let key = crate::registry::ProxyKey {
        name: name.to_owned(),
        port,
    };
    shared.registry.get(&key).is_some()
}

/// Serve `tcp` here if proxy `(name, port)` is registered here now; else hand it back.
fn try_here(
    shared: &Arc<Shared>,
    name: &str,
    port: u16,
    tcp: TcpStream,
    user: SocketAddr,
    permit: SourcePermit,
) -> Option<(TcpStream, SourcePermit)> {
    let key = crate::registry::ProxyKey {
        name: name.to_owned(),
        port,
    };
    let Some((entry, _)) = shared.registry.get(&key) else {
        return Some((tcp, permit));
    };
    match crate::listener::serve_here(shared, &entry, tcp, user, permit) {
        crate::listener::Here::Served => None,
        crate::listener::Here::NotHere(tcp, permit) => Some((tcp, permit)),
    }
}

/// How long a user connection waits for a registration taking its port over here to
/// finish (the registry said so; the local claim follows within milliseconds).
const CLAIM_WAIT: Duration = Duration::from_secs(2);
const CLAIM_POLL: Duration = Duration::from_millis(5);

/// Serve `tcp` here once the proxy's local registration, under way, has claimed it; hand
/// it back if there is none or it does not come in time.
async fn here_once_claimed(
    shared: &Arc<Shared>,
    peer: &Peer,
    name: &str,
    port: u16,
    tcp: TcpStream,
    user: SocketAddr,
    permit: SourcePermit,
) -> Option<TcpStream> {
    let deadline = Instant::now() + CLAIM_WAIT;
    let (mut tcp, mut permit) = (tcp, permit);
    loop {
        (tcp, permit) = try_here(shared, name, port, tcp, user, permit)?;
        let coming = peer.forwarding.taking(port)
            || peer.locator.locate(name, port).is_some_and(|l| l.local);
        if !coming || Instant::now() >= deadline {
            return Some(tcp);
        }
        tokio::time::sleep(CLAIM_POLL).await;
    }
}

async fn serve_user(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    tcp: TcpStream,
    user: SocketAddr,
    name: String,
    port: u16,
    permit: SourcePermit,
) {
    tunnel_transport::tune_tcp(&tcp);
    // The port may have become ours since this listener was bound (the client moved here).
    let Some((tcp, permit)) = try_here(&shared, &name, port, tcp, user, permit) else {
        return;
    };
    let Some(at) = peer.remote_owner(&name, port) else {
        // Ours in the registry already, not claimed here yet (a client moving here).
        if let Some(tcp) = here_once_claimed(&shared, &peer, &name, port, tcp, user, permit).await {
            debug!(%user, "user connection closed: the proxy is not registered here");
            reset_tcp(tcp);
        }
        return;
    };
    let fwd = Forward {
        kind: ForwardKind::Public,
        name: name.clone(),
        publish_port: port,
        epoch: at.epoch,
        src_addr: Some(user),
        dest_addr: tcp.local_addr().ok(),
        visitor_client_id: String::new(),
        secret: String::new(),
    };
    let owner = at.server_id.clone();
    let opened = match peer.pool.forward(&peer, at, fwd).await {
        Ok(o) => o,
        Err(reason) => {
            // Nothing was read from the user yet: a proxy moving here meanwhile takes it.
            if let Some(tcp) =
                here_once_claimed(&shared, &peer, &name, port, tcp, user, permit).await
            {
                debug!(%user, %owner, "user connection forwarded to server {owner} failed: {reason}");
                reset_tcp(tcp);
            }
            return;
        }
    };
    let owner = opened.server_id;
    debug!(%user, %owner, "user connection forwarded to server {owner}");
    // The owner's server applies the proxy's idle timeout; closing the stream is the abort.
    // Here the bytes count for the peer (tcp → stream is toward it).
    let never = CancellationToken::new();
    let bytes = Some(&opened.counters.bytes);
    let end = relay_tcp(tcp, opened.stream, &shared.pipe, &never, bytes, || {}).await;
    debug!(%user, %owner, ?end, "forwarded user connection finished");
}
