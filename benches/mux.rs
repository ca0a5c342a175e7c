//! Data-path throughput: yamux sessions (tunnel-mux) over an in-memory pipe and over loopback
//! TLS (tunnel-transport), against raw TLS and raw TCP baselines, plus the full product path
//! TCP -> pipe -> mux/TLS -> pipe -> TCP, and one stream over each transport (tls, h2, wss,
//! ws) with and without the mux.
//!
//! `cargo bench --bench mux` (about a minute). Each iteration moves `TOTAL` bytes one way,
//! split evenly over the streams. Compare cases within one run: this 2-core box is noisy.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tunnel_mux::{
    pipe, pipe_counted, start, ByteCounters, Incoming, Mode, MuxConfig, MuxHandle, PipeConfig,
};
use tunnel_transport::{
    client_transport, BoxedStream, ClientTrust, ServerIdentity, ServerTransport, TlsTransport,
    Transport, TransportKind, WsTransport, DEFAULT_WS_PATH,
};

const TOTAL: usize = 32 << 20;
/// The size the forwarder reads and writes per chunk.
const CHUNK: usize = 64 << 10;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let (c, s) = (c.expect("connect"), s.expect("accept").0);
    c.set_nodelay(true).expect("nodelay");
    s.set_nodelay(true).expect("nodelay");
    (c, s)
}

/// A TLS connection over loopback, both ends as the engines get them.
async fn tls_pair() -> (BoxedStream, BoxedStream) {
    // One certificate for the whole run: key generation is not what we measure.
    static IDENTITY: OnceLock<ServerIdentity> = OnceLock::new();
    let identity = IDENTITY.get_or_init(|| ServerIdentity::self_signed(&[]).expect("identity"));
    let server = TlsTransport::server(identity).expect("server");
    let client = TlsTransport::client(
        "localhost",
        &ClientTrust::Fingerprint(identity.fingerprint()),
    )
    .expect("client");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let accept = async {
        let (tcp, peer) = listener.accept().await.expect("accept");
        server.accept(tcp, peer).await.expect("server handshake")
    };
    let (s, c) = tokio::join!(accept, client.connect(&addr));
    (c.expect("client handshake").stream, s.stream)
}

/// A connection over `kind` on loopback, both ends as the engines get them: tls, h2 and wss
/// through the server's one TLS port, ws through the plain listener.
async fn transport_pair(kind: TransportKind) -> (BoxedStream, BoxedStream) {
    static IDENTITY: OnceLock<ServerIdentity> = OnceLock::new();
    let identity = IDENTITY.get_or_init(|| ServerIdentity::self_signed(&[]).expect("identity"));
    let server: Box<dyn Transport> = match kind {
        TransportKind::Ws => Box::new(WsTransport::plain_server(DEFAULT_WS_PATH)),
        _ => Box::new(ServerTransport::new(identity, DEFAULT_WS_PATH).expect("server")),
    };
    let trust = ClientTrust::Fingerprint(identity.fingerprint());
    let client = client_transport(kind, "localhost", &trust, DEFAULT_WS_PATH).expect("client");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let accept = async {
        let (tcp, peer) = listener.accept().await.expect("accept");
        server.accept(tcp, peer).await.expect("server handshake")
    };
    let (s, c) = tokio::join!(accept, client.connect(&addr));
    (c.expect("client handshake").stream, s.stream)
}

async fn write_n<W: AsyncWrite + Unpin>(w: &mut W, n: usize) {
    let buf = vec![0x5a_u8; CHUNK];
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK);
        w.write_all(&buf[..k]).await.expect("write");
        left -= k;
    }
    w.shutdown().await.expect("shutdown");
}

async fn read_all<R: AsyncRead + Unpin>(r: &mut R) -> usize {
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0;
    loop {
        match r.read(&mut buf).await.expect("read") {
            0 => return n,
            k => n += k,
        }
    }
}

/// One iteration over a session: `streams` writers on the client, readers on the server.
async fn mux_round(client: &MuxHandle, server_in: &mut Incoming, streams: usize) {
    let per = TOTAL / streams;
    let mut tasks = Vec::with_capacity(streams * 2);
    for _ in 0..streams {
        let mut s = client.open().await.expect("open");
        tasks.push(tokio::spawn(async move {
            write_n(&mut s, per).await;
            per
        }));
    }
    for _ in 0..streams {
        let mut s = server_in.accept().await.expect("accept");
        tasks.push(tokio::spawn(async move { read_all(&mut s).await }));
    }
    let mut moved = 0;
    for t in tasks {
        moved += t.await.expect("task");
    }
    assert_eq!(moved, 2 * per * streams, "bytes lost");
}

fn bench_mux(c: &mut Criterion, rt: &Runtime, name: &str, tls: bool, cfg: &MuxConfig) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(TOTAL as u64));
    for streams in [1usize, 16] {
        let (client, _client_in, _server, mut server_in) = rt.block_on(async {
            let (a, b): (BoxedStream, BoxedStream) = if tls {
                tls_pair().await
            } else {
                let (a, b) = tokio::io::duplex(1 << 20);
                (Box::new(a), Box::new(b))
            };
            let (client, client_in) = start(a, Mode::Client, cfg);
            let (server, server_in) = start(b, Mode::Server, cfg);
            (client, client_in, server, server_in)
        });
        group.bench_with_input(BenchmarkId::from_parameter(streams), &streams, |bch, &n| {
            bch.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        mux_round(&client, &mut server_in, n).await;
                    }
                    t.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// Baseline without yamux: one stream straight over the connection.
fn bench_raw(c: &mut Criterion, rt: &Runtime, name: &str, tls: bool) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.bench_function("1", |bch| {
        bch.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // A fresh connection per iteration (shutdown ends it); setup is not timed.
                    let (mut a, mut b): (BoxedStream, BoxedStream) = if tls {
                        tls_pair().await
                    } else {
                        let (a, b) = tcp_pair().await;
                        (Box::new(a), Box::new(b))
                    };
                    let t = Instant::now();
                    let reader = tokio::spawn(async move { read_all(&mut b).await });
                    write_n(&mut a, TOTAL).await;
                    assert_eq!(reader.await.expect("reader"), TOTAL);
                    total += t.elapsed();
                }
                total
            })
        })
    });
    group.finish();
}

/// The product path: user TCP -> pipe -> mux over TLS -> pipe -> service TCP.
fn bench_tunnel(c: &mut Criterion, rt: &Runtime, cfg: &MuxConfig) {
    let mut group = c.benchmark_group("tunnel_tcp_pipe_tls_mux");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    let (client, _client_in, _server, server_in) = rt.block_on(async {
        let (a, b) = tls_pair().await;
        let (client, client_in) = start(a, Mode::Client, cfg);
        let (server, server_in) = start(b, Mode::Server, cfg);
        (client, client_in, server, server_in)
    });
    let server_in = Arc::new(tokio::sync::Mutex::new(server_in));
    group.bench_function("1", |bch| {
        bch.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (mut user, mut entry) = tcp_pair().await;
                    let (mut exit, mut service) = tcp_pair().await;
                    let t = Instant::now();
                    let mut out = client.open().await.expect("open");
                    let entry_pipe = tokio::spawn(async move {
                        pipe(&mut entry, &mut out, &PipeConfig::default()).await
                    });
                    let server_in = server_in.clone();
                    let exit_pipe = tokio::spawn(async move {
                        let mut inb = server_in.lock().await.accept().await.expect("accept");
                        pipe(&mut inb, &mut exit, &PipeConfig::default()).await
                    });
                    let sink = tokio::spawn(async move {
                        let n = read_all(&mut service).await;
                        service.shutdown().await.expect("shutdown");
                        n
                    });
                    write_n(&mut user, TOTAL).await;
                    assert_eq!(read_all(&mut user).await, 0);
                    assert_eq!(sink.await.expect("sink"), TOTAL);
                    total += t.elapsed();
                    entry_pipe.await.expect("entry");
                    exit_pipe.await.expect("exit");
                }
                total
            })
        })
    });
    group.finish();
}

/// rathole's shape for comparison: one TLS connection per user connection, no multiplexing:
/// user TCP -> pipe -> TLS -> pipe -> service TCP.
fn bench_tunnel_without_mux(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("tunnel_tcp_pipe_tls_nomux");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.bench_function("1", |bch| {
        bch.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (mut user, mut entry) = tcp_pair().await;
                    let (mut exit, mut service) = tcp_pair().await;
                    let (mut near, mut far) = tls_pair().await;
                    let t = Instant::now();
                    let entry_pipe = tokio::spawn(async move {
                        pipe(&mut entry, &mut near, &PipeConfig::default()).await
                    });
                    let exit_pipe = tokio::spawn(async move {
                        pipe(&mut far, &mut exit, &PipeConfig::default()).await
                    });
                    let sink = tokio::spawn(async move {
                        let n = read_all(&mut service).await;
                        service.shutdown().await.expect("shutdown");
                        n
                    });
                    write_n(&mut user, TOTAL).await;
                    assert_eq!(read_all(&mut user).await, 0);
                    assert_eq!(sink.await.expect("sink"), TOTAL);
                    total += t.elapsed();
                    entry_pipe.await.expect("entry");
                    exit_pipe.await.expect("exit");
                }
                total
            })
        })
    });
    group.finish();
}

/// One stream per transport, without the mux (what the transport itself costs) and with it
/// (what a tunnelled connection gets), in one run so they compare.
fn bench_transports(c: &mut Criterion, rt: &Runtime, cfg: &MuxConfig) {
    let mut group = c.benchmark_group("raw_transport");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    for kind in TransportKind::ALL {
        group.bench_function(kind.as_str(), |bch| {
            bch.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let (mut a, mut b) = transport_pair(kind).await;
                        let t = Instant::now();
                        let reader = tokio::spawn(async move { read_all(&mut b).await });
                        write_n(&mut a, TOTAL).await;
                        assert_eq!(reader.await.expect("reader"), TOTAL);
                        total += t.elapsed();
                    }
                    total
                })
            })
        });
    }
    group.finish();
    let mut group = c.benchmark_group("mux_over_transport");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    for kind in TransportKind::ALL {
        let (client, _client_in, _server, mut server_in) = rt.block_on(async {
            let (a, b) = transport_pair(kind).await;
            let (client, client_in) = start(a, Mode::Client, cfg);
            let (server, server_in) = start(b, Mode::Server, cfg);
            (client, client_in, server, server_in)
        });
        group.bench_function(kind.as_str(), |bch| {
            bch.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        mux_round(&client, &mut server_in, 1).await;
                    }
                    t.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// The forwarder alone, TCP -> pipe -> TCP, with and without live byte counters: the cost of
/// the statistics on the data path, measured in one run.
fn bench_pipe_counting(c: &mut Criterion, rt: &Runtime) {
    let mut group = c.benchmark_group("pipe_tcp");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    let counters = Arc::new(ByteCounters::default());
    for counted in [false, true] {
        let name = if counted { "counted" } else { "plain" };
        let counters = counters.clone();
        group.bench_function(name, |bch| {
            bch.iter_custom(|iters| {
                let counters = counters.clone();
                rt.block_on(async move {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let (mut src, mut a) = tcp_pair().await;
                        let (mut b, mut dst) = tcp_pair().await;
                        let counters = counters.clone();
                        let fwd = tokio::spawn(async move {
                            let cfg = PipeConfig::default();
                            let c = counted.then_some(&*counters);
                            pipe_counted(&mut a, &mut b, &cfg, c).await
                        });
                        let start = Instant::now();
                        let writer = async {
                            write_n(&mut src, TOTAL).await;
                            src.shutdown().await.expect("shutdown");
                        };
                        let (_, got) = tokio::join!(writer, read_all(&mut dst));
                        spent += start.elapsed();
                        assert_eq!(got, TOTAL);
                        drop(dst);
                        let _ = fwd.await;
                    }
                    spent
                })
            });
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let cfg = MuxConfig::default();
    bench_pipe_counting(c, &rt);
    bench_raw(c, &rt, "raw_tcp", false);
    bench_raw(c, &rt, "raw_tls", true);
    bench_mux(c, &rt, "mux_duplex", false, &cfg);
    bench_mux(c, &rt, "mux_tls", true, &cfg);
    bench_tunnel(c, &rt, &cfg);
    bench_tunnel_without_mux(c, &rt);
    bench_transports(c, &rt, &cfg);
}

criterion_group! {
    name = mux;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(mux);
