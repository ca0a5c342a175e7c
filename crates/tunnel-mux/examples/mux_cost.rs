//! CPU cost per MiB of the tunnel data path, for instruction counting under callgrind.
//!
//! Moves a fixed amount of data one way through real loopback TLS and a yamux session, split
//! evenly over N streams, then exits. Wall-clock time on a shared 2-core box is noise;
//! instruction counts (Ir) are repeatable to a fraction of a percent, so compare those:
//!
//! ```text
//! CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release -p tunnel-mux --example mux_cost
//! valgrind --tool=callgrind --callgrind-out-file=cg.out \
//!     target/release/examples/mux_cost --streams 1 --mib 256
//! callgrind_annotate --inclusive=yes cg.out | head -60
//! ```
//!
//! Setup (aws-lc seeding its entropy pool, key generation, the handshake) is a fixed ~430 M Ir
//! here, so the cost per MiB is `(Ir(--mib M) - Ir(--mib 1)) / (M - 1)`. Options:
//!
//! * `--streams N` (default 1): streams, each carrying `mib / N`.
//! * `--mib M` (default 256): MiB moved in total.
//! * `--path tunnel|mux` (default tunnel): `tunnel` is the product path, user TCP ->
//!   `relay_tcp` -> stream -> TLS -> stream -> `relay_tcp` -> service TCP; `mux` writes and reads the streams
//!   directly (no TCP ends, no pipes).
//! * `--workers W` (default 0): 0 runs everything on one current-thread runtime (the most
//!   repeatable); 2 uses a two-worker runtime like the binaries on this box.
//! * `--frame KIB`: `split_send_size` (default: the crate default).
//!
//! The binaries use mimalloc, and so does this program, so allocation costs match.

use std::sync::Arc;

use mimalloc::MiMalloc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tunnel_mux::{
    relay_tcp, start, ByteCounters, Incoming, Mode, MuxConfig, MuxHandle, PipeConfig, RelayEnd,
};
use tunnel_transport::{BoxedStream, ClientTrust, ServerIdentity, TlsTransport, Transport};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// What the writers hand over per call (the pipe's largest read).
const CHUNK: usize = 64 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Tunnel,
    Mux,
}

#[derive(Debug)]
struct Args {
    streams: usize,
    bytes: usize,
    path: Path,
    workers: usize,
    frame: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        streams: 1,
        bytes: 256 << 20,
        path: Path::Tunnel,
        workers: 0,
        frame: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--streams" => args.streams = number()?.max(1),
            "--mib" => args.bytes = number()? << 20,
            "--workers" => args.workers = number()?,
            "--frame" => args.frame = Some(number()? << 10),
            "--path" => {
                args.path = match value.as_str() {
                    "tunnel" => Path::Tunnel,
                    "mux" => Path::Mux,
                    other => return Err(format!("--path {other}: use tunnel or mux")),
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(args)
}

fn main() -> Result<(), String> {
    let args = parse_args()?;
    let rt = if args.workers == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers)
            .enable_all()
            .build()
    }
    .map_err(|e| format!("runtime: {e}"))?;
    let moved = rt.block_on(run(&args))?;
    eprintln!(
        "moved {moved} bytes over {} stream(s), path {:?}, workers {}",
        args.streams, args.path, args.workers
    );
    Ok(())
}

async fn run(args: &Args) -> Result<usize, String> {
    let mut cfg = MuxConfig::default();
    if let Some(frame) = args.frame {
        cfg = cfg.with_split_send_size(frame);
    }
    let (a, b) = tls_pair().await?;
    let (client, _client_in) = start(a, Mode::Client, &cfg);
    let (server, mut server_in) = start(b, Mode::Server, &cfg);
    let per = args.bytes / args.streams;
    let moved = match args.path {
        Path::Mux => mux_round(&client, &mut server_in, args.streams, per).await?,
        Path::Tunnel => tunnel_round(&client, &mut server_in, args.streams, per).await?,
    };
    client.close();
    client.closed().await;
    server.closed().await;
    Ok(moved)
}

async fn tls_pair() -> Result<(BoxedStream, BoxedStream), String> {
    let identity = ServerIdentity::self_signed(&[]).map_err(|e| e.to_string())?;
    let server = TlsTransport::server(&identity).map_err(|e| e.to_string())?;
    let trust = ClientTrust::Fingerprint(identity.fingerprint());
    let client = TlsTransport::client("localhost", &trust).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    let accept = async {
        let (tcp, peer) = listener.accept().await.map_err(|e| e.to_string())?;
        server.accept(tcp, peer).await.map_err(|e| e.to_string())
    };
    let (s, c) = tokio::join!(accept, client.connect(&addr));
    let c = c.map_err(|e| e.to_string())?;
    Ok((c.stream, s?.stream))
}

async fn tcp_pair() -> Result<(TcpStream, TcpStream), String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (c, s) = tokio::join!(TcpStream::connect(addr), listener.accept());
    let c = c.map_err(|e| e.to_string())?;
    let s = s.map_err(|e| e.to_string())?.0;
    for t in [&c, &s] {
        t.set_nodelay(true).map_err(|e| e.to_string())?;
    }
    Ok((c, s))
}

async fn write_n<W: AsyncWrite + Unpin>(w: &mut W, n: usize) -> std::io::Result<()> {
    let buf = vec![0x5a_u8; CHUNK];
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK);
        w.write_all(&buf[..k]).await?;
        left -= k;
    }
    w.shutdown().await
}

async fn read_all<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<usize> {
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0;
    loop {
        match r.read(&mut buf).await? {
            0 => return Ok(n),
            k => n += k,
        }
    }
}

/// Writers straight into client streams, readers straight out of the server's.
async fn mux_round(
    client: &MuxHandle,
    server_in: &mut Incoming,
    streams: usize,
    per: usize,
) -> Result<usize, String> {
    let mut writers = Vec::with_capacity(streams);
    let mut readers = Vec::with_capacity(streams);
    for _ in 0..streams {
        let mut s = client.open().await.map_err(|e| e.to_string())?;
        writers.push(tokio::spawn(async move { write_n(&mut s, per).await }));
    }
    for _ in 0..streams {
        let mut s = server_in.accept().await.ok_or("session ended")?;
        readers.push(tokio::spawn(async move { read_all(&mut s).await }));
    }
    for w in writers {
        w.await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    let mut moved = 0;
    for r in readers {
        moved += r
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
    }
    check(moved, per * streams)
}

/// The product path per stream, as the engines run it: user -> entry relay -> stream ~ TLS ~
/// stream -> exit relay -> service.
async fn tunnel_round(
    client: &MuxHandle,
    server_in: &mut Incoming,
    streams: usize,
    per: usize,
) -> Result<usize, String> {
    let counters = Arc::new(ByteCounters::default());
    let mut tasks = Vec::with_capacity(streams);
    for _ in 0..streams {
        let (mut user, entry) = tcp_pair().await?;
        let (exit, mut service) = tcp_pair().await?;
        let out = client.open().await.map_err(|e| e.to_string())?;
        let c = counters.clone();
        let entry_pipe = tokio::spawn(async move {
            let abort = CancellationToken::new();
            relay_tcp(entry, out, &PipeConfig::default(), &abort, Some(&c), || {}).await
        });
        // yamux announces a stream with its first frame: write before accepting.
        let user_side = tokio::spawn(async move {
            write_n(&mut user, per).await?;
            read_all(&mut user).await
        });
        let inbound = server_in.accept().await.ok_or("session ended")?;
        let c = counters.clone();
        let exit_pipe = tokio::spawn(async move {
            let abort = CancellationToken::new();
            relay_tcp(
                exit,
                inbound,
                &PipeConfig::default(),
                &abort,
                Some(&c),
                || {},
            )
            .await
        });
        let sink = tokio::spawn(async move {
            let n = read_all(&mut service).await?;
            service.shutdown().await?;
            Ok::<_, std::io::Error>(n)
        });
        tasks.push((entry_pipe, user_side, exit_pipe, sink));
    }
    let mut moved = 0;
    for (entry_pipe, user_side, exit_pipe, sink) in tasks {
        moved += sink
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let back = user_side
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if back != 0 {
            return Err(format!("{back} unexpected bytes came back"));
        }
        for p in [entry_pipe, exit_pipe] {
            match p.await.map_err(|e| e.to_string())? {
                RelayEnd::Finished(_) => {}
                other => return Err(format!("relay ended with {other:?}")),
            }
        }
    }
    check(moved, per * streams)
}

fn check(moved: usize, expected: usize) -> Result<usize, String> {
    if moved == expected {
        Ok(moved)
    } else {
        Err(format!("moved {moved} bytes, expected {expected}"))
    }
}
