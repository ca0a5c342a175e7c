//! A cluster server's graceful stop, make-before-break: its clients open their new sessions
//! on other servers while the old ones still carry their streams, so a rolling restart loses
//! no connection.
//!
//! Order matters. Logins stop first (a client sent away must not land here again), the
//! registry record says draining (peers and balancers stop choosing this server; `/healthz`
//! answers 503), then every client hears `Reconnect` with a spread, so thousands of them do
//! not log in elsewhere in the same millisecond. Users and peers are still served meanwhile:
//! a client's new session takes its registrations over in the registry, and this server
//! retires the old session once its streams finish ([`crate::session::retire`]). Only when
//! no client is left (or `shutdown_grace` is over) does the ordinary shutdown begin.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, Instrument};
use tunnel_proto::Message;

use crate::cluster::{self, Node};
use crate::Shared;

/// The longest spread of the clients' reconnects: long enough to keep a thousand logins a
/// second off the other servers, short enough that a restart is not a wait.
const MAX_SPREAD: Duration = Duration::from_secs(5);

/// How often the drain looks whether its clients are gone.
const POLL: Duration = Duration::from_millis(50);

/// Begin the drain in the background, once; the shutdown token is cancelled when it is over.
pub(crate) fn begin(shared: &Arc<Shared>, node: &Arc<Node>) {
    if shared.draining.swap(true, Ordering::AcqRel) {
        return;
    }
    shared.logins.cancel();
    let (shared2, node) = (shared.clone(), node.clone());
    let task = async move {
        move_clients(&shared2, &node).await;
        shared2.shutdown.cancel();
    };
    shared
        .tasks
        .spawn(task.instrument(tracing::info_span!("drain")));
}

/// Ask every client of this server to reconnect to another one at a random moment within
/// `spread`; returns how many were told. A full control queue is a session too busy or too
/// stuck to hear it: it is left alone (a drain ends it with the shutdown).
pub(crate) fn ask_to_move(shared: &Shared, spread: Duration) -> usize {
    let within = u32::try_from(spread.as_millis()).unwrap_or(u32::MAX);
    shared
        .registry
        .sessions()
        .iter()
        .filter(|(session, _)| {
            let told = session.lanes.first().try_send(Message::Reconnect(within));
            if told {
                session
                    .asked_to_move
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            told
        })
        .count()
}

/// How long clients get to spread their reconnects over.
pub(crate) fn spread(grace: Duration) -> Duration {
    (grace / 2).min(MAX_SPREAD)
}

async fn move_clients(shared: &Shared, node: &Node) {
    cluster::drain(node).await;
    let others = node.other_live_servers();
    let sessions = shared.registry.sessions();
    if sessions.is_empty() {
        return;
    }
    if others == 0 {
        info!(
            clients = sessions.len(),
            "no other server in the cluster takes clients: they stay until the shutdown"
        );
        return;
    }
    let grace = shared.cfg.shutdown_grace;
    let spread = spread(grace);
    let told = ask_to_move(shared, spread);
    info!(
        clients = told,
        servers = others,
        "asked the clients to reconnect to another server within {} ms",
        spread.as_millis()
    );
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        let (left, _) = shared.registry.counts();
        if left == 0 {
            info!("every client moved to another server");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            info!(
                clients = left,
                "shutdown_grace is over with clients still here; shutting down"
            );
            return;
        }
        tokio::select! {
            () = shared.hard_stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_is_half_the_grace_and_at_most_five_seconds() {
        assert_eq!(spread(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(spread(Duration::from_secs(10)), Duration::from_secs(5));
        assert_eq!(spread(Duration::from_secs(60)), MAX_SPREAD);
        assert_eq!(spread(Duration::ZERO), Duration::ZERO);
    }
}
