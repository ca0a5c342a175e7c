//! `publish_mode = "all"`: every published port of the cluster answers on every server; a
//! server that does not own the port forwards each user connection to the owner's server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use tokio::net::{TcpListener, TcpStream};
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

/// One forwarding listener: the proxy it leads to, what stops it, and what says it is gone.
#[derive(Debug)]
struct Open {
    name: String,
    stop: CancellationToken,
    ended: CancellationToken,
}

/// The forwarding listeners by port. Shared with the registration path: a client taking a
/// port over on this server (it moved here) needs the port this server forwarded until then.
#[derive(Debug, Default)]
pub(crate) struct Forwarding(Mutex<HashMap<u16, Open>>);

impl Forwarding {
    /// Close the forwarding listener on `port`, if any, and wait (bounded) until its socket
    /// is closed, so that a local listener can bind the port.
    pub(crate) async fn release(&self, port: u16) {
        let Some(open) = self.0.lock().remove(&port) else {
            return;
        };
        open.stop.cancel();
        let _ = tokio::time::timeout(RELEASE_WAIT, open.ended.cancelled_owned()).await;
        debug!(port, proxy = %open.name, "forwarding listener released for a local proxy");
    }
}

/// Follow the registry's port feed until shutdown: bind a forwarding listener for each port
/// another server owns, and close it when the port goes away or becomes ours.
pub(crate) async fn run(shared: Arc<Shared>, peer: Arc<Peer>) {
    let mut changes = peer.locator.port_changes();
    loop {
        let want: HashMap<u16, String> = peer
            .locator
            .published_ports()
            .into_iter()
            .filter(|l| !l.local && l.publish_port != 0)
            .map(|l| (l.publish_port, l.name))
            .collect();
        peer.forwarding.0.lock().retain(|port, open| {
            let keep = want.get(port) == Some(&open.name);
            if !keep {
                open.stop.cancel();
            }
            keep
        });
        for (port, name) in want {
            if peer.forwarding.0.lock().contains_key(&port) {
                continue;
            }
            if let Some(open) = bind(&shared, &peer, port, &name).await {
                peer.forwarding.0.lock().insert(port, open);
            }
        }
        tokio::select! {
            () = shared.shutdown.cancelled() => break,
            changed = changes.changed() => if changed.is_err() { break },
        }
    }
    for (_, open) in peer.forwarding.0.lock().drain() {
        open.stop.cancel();
    }
}

async fn bind(shared: &Arc<Shared>, peer: &Arc<Peer>, port: u16, name: &str) -> Option<Open> {
    if !shared.cfg.allow_ports.contains(port) {
        warn!(port, proxy = name, "not forwarding port {port} of another server: it is outside this server's allow_ports ({})", shared.cfg.allow_ports);
        return None;
    }
    let addr = SocketAddr::new(shared.cfg.publish_addr, port);
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%addr, proxy = name, "cannot forward port {port} of another server here: {e}");
            return None;
        }
    };
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
    Some(Open {
        name: name.to_owned(),
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
            () = stop.cancelled() => break,
            () = shared.shutdown.cancelled() => break,
            (tcp, user) = listener.accept() => {
                let Some(permit) = admit(&shared, user) else {
                    reset_tcp(tcp);
                    continue;
                };
                let task = serve_user(shared.clone(), peer.clone(), tcp, user, name.clone(), port, permit);
                shared.streams.spawn(task.in_current_span());
            }
        }
    }
    debug!("forwarding port closed");
}

async fn serve_user(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    tcp: TcpStream,
    user: SocketAddr,
    name: String,
    port: u16,
    _permit: SourcePermit,
) {
    tunnel_transport::tune_tcp(&tcp);
    let Some(at) = peer.remote_owner(&name, port) else {
        return reset_tcp(tcp);
    };
    let fwd = Forward {
        kind: ForwardKind::Public,
        name,
        publish_port: port,
        epoch: at.epoch,
        src_addr: Some(user),
        dest_addr: tcp.local_addr().ok(),
        visitor_client_id: String::new(),
        secret: String::new(),
    };
    let stream = match peer.pool.forward(&peer, at, fwd).await {
        Ok(s) => s,
        Err(reason) => {
            debug!(%user, "user connection closed: {reason}");
            return reset_tcp(tcp);
        }
    };
    // The owner's server applies the proxy's idle timeout; closing the stream is the abort.
    let never = CancellationToken::new();
    let end = relay_tcp(tcp, stream, &shared.pipe, &never, None, || {}).await;
    debug!(%user, ?end, "forwarded user connection finished");
}
