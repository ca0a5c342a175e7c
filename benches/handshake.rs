//! TLS handshakes as a returning client makes them: full (a client with no ticket) against
//! resumed (a client holding the server's tickets), over loopback TCP, the server's own TLS
//! settings. Each iteration is one handshake and one byte each way (the client reads the
//! server's tickets with it, as a tunnel client does with its first frame).
//!
//! `cargo bench --bench handshake` (about 20 s). Compare the two within one run.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tunnel_transport::{ClientTrust, ServerIdentity, TlsTransport, Transport};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `n` handshakes of `client` (made anew each time when `fresh`) with a server on loopback.
async fn handshakes(n: u64, fresh: bool) -> Duration {
    let identity = ServerIdentity::self_signed(&["localhost".to_owned()]).expect("identity");
    let trust = ClientTrust::Fingerprint(identity.fingerprint());
    let server = TlsTransport::server(&identity).expect("server");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let mut client = TlsTransport::client("localhost", &trust).expect("client");
    // One handshake first, so that a reused client holds tickets when timing starts.
    let mut elapsed = Duration::ZERO;
    for i in 0..=n {
        if fresh {
            client = TlsTransport::client("localhost", &trust).expect("client");
        }
        let started = Instant::now();
        let accept = async {
            let (tcp, peer) = listener.accept().await.expect("accept");
            let mut est = server.accept(tcp, peer).await.expect("server handshake");
            est.stream.write_all(&[1]).await.expect("server write");
            est.stream.flush().await.expect("server flush");
            let mut b = [0u8; 1];
            est.stream.read_exact(&mut b).await.expect("server read");
        };
        let connect = async {
            let mut est = client.connect(&addr).await.expect("client handshake");
            let mut b = [0u8; 1];
            est.stream.read_exact(&mut b).await.expect("client read");
            est.stream.write_all(&[2]).await.expect("client write");
            est.stream.flush().await.expect("client flush");
            assert_eq!(est.resumed, !fresh && i > 0, "handshake {i}");
        };
        tokio::join!(accept, connect);
        if i > 0 {
            elapsed += started.elapsed();
        }
    }
    elapsed
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("tls_handshake");
    g.sample_size(20);
    g.bench_function("full", |b| {
        b.iter_custom(|n| rt.block_on(handshakes(n, true)))
    });
    g.bench_function("resumed", |b| {
        b.iter_custom(|n| rt.block_on(handshakes(n, false)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
