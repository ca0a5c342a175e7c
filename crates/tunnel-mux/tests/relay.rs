//! Relays with abort signalling, on real sockets.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{tcp_pair, tcp_sessions, within, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tunnel_mux::{relay_tcp, reset_tcp, AbortTable, MuxConfig, PipeConfig, RelayEnd};

#[test]
fn abort_table_tracks_guards_and_cancels_by_id() {
    let table = AbortTable::default();
    let a = table.register(1);
    let b = table.register(3);
    assert_eq!(table.len(), 2);
    assert!(table.abort(3));
    assert!(b.token().is_cancelled() && !a.token().is_cancelled());
    assert!(!table.abort(5), "unknown id");
    drop(b);
    assert_eq!(table.len(), 1);
    table.abort_all();
    assert!(a.token().is_cancelled());
    assert!(table.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_abort_resets_the_local_tcp_connection() {
    let mut p = tcp_sessions(&MuxConfig::default()).await;
    let (mut app, local) = tcp_pair().await;
    let mut out = p.client.open().await.unwrap();
    out.write_all(b"O").await.unwrap();
    let _inb = within(DEADLINE, "accept", p.server_in.accept())
        .await
        .unwrap();

    let table = AbortTable::default();
    let guard = table.register(out.id());
    let id = out.id();
    let relay = tokio::spawn(async move {
        relay_tcp(
            local,
            out,
            &PipeConfig::default(),
            guard.token(),
            None,
            || {},
        )
        .await
    });
    app.write_all(b"data").await.unwrap();
    assert!(table.abort(id)); // what the engine does on an Abort(id) control message
    let end = within(DEADLINE, "relay", relay).await.unwrap();
    assert!(matches!(end, RelayEnd::Aborted), "{end:?}");
    let r = within(DEADLINE, "app read", app.read(&mut [0u8; 8])).await;
    assert!(r.is_err(), "the application must see a reset, got {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_failure_resets_tcp_and_signals_the_peer() {
    let mut p = tcp_sessions(&MuxConfig::default()).await;
    let (app, local) = tcp_pair().await;
    let mut out = p.client.open().await.unwrap();
    out.write_all(b"O").await.unwrap();
    let inb = within(DEADLINE, "accept", p.server_in.accept())
        .await
        .unwrap();

    let table = AbortTable::default();
    let guard = table.register(out.id());
    let signalled = Arc::new(AtomicBool::new(false));
    let flag = signalled.clone();
    let relay = tokio::spawn(async move {
        relay_tcp(
            local,
            out,
            &PipeConfig::default(),
            guard.token(),
            None,
            move || flag.store(true, Ordering::SeqCst),
        )
        .await
    });
    reset_tcp(app); // the local application aborts
                    // The peer lets go of its end, as it would after receiving the abort.
    drop(inb);
    let end = within(DEADLINE, "relay", relay).await.unwrap();
    assert!(matches!(end, RelayEnd::Failed { .. }), "{end:?}");
    assert!(signalled.load(Ordering::SeqCst), "the peer must be told");
}
