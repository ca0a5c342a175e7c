//! Load generator: many idle client sessions against one `tunnel-server` (issue #8: 10,000
//! idle sessions under 1 GiB of server RSS, each still able to serve a stream).
//!
//! It embeds the client engine and starts `--clients` engines, each with its own id and one
//! `http` proxy `c<i>` for the unique domain `c<i>.<domain>`, all pointing at one tiny HTTP/1.1
//! service inside this process that answers with the `Host` it was asked for and closes the
//! connection. Handshakes ramp up with at most `--concurrency` clients connecting at once
//! (below the server's `max_pending_handshakes`). Once every client is ready, one request per
//! client goes to the server's virtual-host port with that client's domain: a `200` whose
//! body names the domain proves the session carried a stream end to end. No published port
//! per client is needed, so the server holds one socket per session and nothing else.
//!
//! Then the sessions sit idle (heartbeats only) until `--hold` seconds pass, SIGINT/SIGTERM
//! arrives, or (with `--stdin`) a line or EOF on stdin. Before shutting down the requests are
//! sent again (`--recheck`, on by default), proving the sessions survived the idle period.
//!
//! With `--storm SECS` (see `benches/storm.sh`) the hold is a login storm instead: after
//! `storm-armed`, the caller restarts the server; every session notices, reconnects with its
//! own backoff and registers again, and `recovered ...` says when each was back (from the
//! first loss), within SECS; the requests then prove every session serves again.
//!
//! Progress goes to stdout as one `key=value` line per phase, for scripts (see
//! `benches/sessions.sh`): `connected ...`, `checked ...`, `holding ...` (or `storm-armed`
//! and `recovered ...`), `rechecked ...`, `stopped ...`.
//!
//! ```text
//! cargo run --release -p tunnel-client --example loadgen -- \
//!     --clients 10000 --server 127.0.0.1:8443 --vhost 127.0.0.1:8080 \
//!     --fingerprint sha256:... --auth-key KEY [--hold 30]
//! ```
//!
//! File descriptors: one per client session, plus at most `--check-concurrency` user
//! connections and twice as many local ones while checking (the service closes every
//! connection after its answer, and each proxy's pooled local connections idle out after
//! 2 s). Raise `ulimit -n` above `--clients` + a few hundred.

use std::error::Error;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tunnel_client::{ClientConfig, ClientHandle, ProxyConfig, Status};
use tunnel_transport::Fingerprint;

type BoxError = Box<dyn Error + Send + Sync>;

const USAGE: &str = "\
usage: loadgen --server HOST:PORT --vhost HOST:PORT --fingerprint sha256:HEX --auth-key KEY
               [--clients N] [--concurrency N] [--check-concurrency N] [--server-name NAME]
               [--domain SUFFIX] [--id-prefix P] [--ready-timeout SECS] [--hold SECS]
               [--stdin] [--no-recheck] [--storm SECS]

  --clients N             client engines to start (default 1000)
  --server HOST:PORT      the tunnel server (TLS)
  --vhost HOST:PORT       the server's vhost_http_bind
  --fingerprint FP        the server certificate's sha256 fingerprint
  --auth-key KEY          the shared key
  --server-name NAME      name verified against the certificate (default localhost)
  --concurrency N         clients connecting at once (default 200)
  --check-concurrency N   requests in flight while checking (default 64)
  --domain SUFFIX         client i serves c<i>.SUFFIX (default loadgen.test)
  --id-prefix P           client i has id P<i> (default lg)
  --ready-timeout SECS    per-client limit for connecting and registering (default 60)
  --hold SECS             stay idle this long (default: until SIGINT/SIGTERM)
  --stdin                 also stop holding on a line (or EOF) on stdin
  --no-recheck            skip the second round of requests after the hold
  --storm SECS            instead of holding: wait (at most SECS) for every session to be
                          lost and back, as when the caller restarts the server
";

#[derive(Debug, Clone)]
struct Args {
    clients: usize,
    server: String,
    vhost: SocketAddr,
    fingerprint: Fingerprint,
    auth_key: String,
    server_name: String,
    concurrency: usize,
    check_concurrency: usize,
    domain: String,
    id_prefix: String,
    ready_timeout: Duration,
    hold: Option<Duration>,
    stdin: bool,
    recheck: bool,
    storm: Option<Duration>,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut clients = 1000;
    let mut server = None;
    let mut vhost = None;
    let mut fingerprint = None;
    let mut auth_key = None;
    let mut server_name = "localhost".to_string();
    let mut concurrency = 200;
    let mut check_concurrency = 64;
    let mut domain = "loadgen.test".to_string();
    let mut id_prefix = "lg".to_string();
    let mut ready_timeout = Duration::from_secs(60);
    let mut hold = None;
    let mut stdin = false;
    let mut recheck = true;
    let mut storm = None;

    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--clients" => clients = value()?.parse()?,
            "--server" => server = Some(value()?),
            "--vhost" => vhost = Some(value()?.parse()?),
            "--fingerprint" => fingerprint = Some(value()?.parse::<Fingerprint>()?),
            "--auth-key" => auth_key = Some(value()?),
            "--server-name" => server_name = value()?,
            "--concurrency" => concurrency = value()?.parse()?,
            "--check-concurrency" => check_concurrency = value()?.parse()?,
            "--domain" => domain = value()?,
            "--id-prefix" => id_prefix = value()?,
            "--ready-timeout" => ready_timeout = Duration::from_secs(value()?.parse()?),
            "--hold" => hold = Some(Duration::from_secs(value()?.parse()?)),
            "--stdin" => stdin = true,
            "--no-recheck" => recheck = false,
            "--storm" => storm = Some(Duration::from_secs(value()?.parse()?)),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}").into()),
        }
    }
    let missing = |what: &str| format!("{what} is required\n\n{USAGE}");
    Ok(Args {
        clients,
        server: server.ok_or_else(|| missing("--server"))?,
        vhost: vhost.ok_or_else(|| missing("--vhost"))?,
        fingerprint: fingerprint.ok_or_else(|| missing("--fingerprint"))?,
        auth_key: auth_key.ok_or_else(|| missing("--auth-key"))?,
        server_name,
        concurrency: concurrency.max(1),
        check_concurrency: check_concurrency.max(1),
        domain,
        id_prefix,
        ready_timeout,
        hold,
        stdin,
        recheck,
        storm,
    })
}

fn domain_of(args: &Args, i: usize) -> String {
    format!("c{i}.{}", args.domain)
}

/// This process's resident set, in KiB (0 where /proc is missing).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of this process (0 where /proc is missing).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// The local service: reads one request head, answers `200` with its `Host` as the body and
/// closes the connection (so neither side keeps a pooled connection open).
async fn serve_local(listener: TcpListener, served: Arc<AtomicU64>) {
    loop {
        let Ok((mut tcp, _)) = listener.accept().await else {
            // Typically EMFILE: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let served = served.clone();
        tokio::spawn(async move {
            let mut head = Vec::with_capacity(1024);
            let mut buf = [0u8; 1024];
            let read_head = async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    let n = tcp.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                Ok::<_, std::io::Error>(())
            };
            if !matches!(
                tokio::time::timeout(Duration::from_secs(30), read_head).await,
                Ok(Ok(()))
            ) {
                return;
            }
            let text = String::from_utf8_lossy(&head);
            let host = text
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("host"))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_default();
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{host}",
                host.len()
            );
            if tcp.write_all(answer.as_bytes()).await.is_ok() {
                served.fetch_add(1, Ordering::Relaxed);
            }
            let _ = tcp.shutdown().await;
        });
    }
}

fn client_config(args: &Args, i: usize, service: SocketAddr) -> ClientConfig {
    let domain = domain_of(args, i);
    // Proxy names are unique server-wide, like the domains.
    let name = format!("c{i}");
    let proxy = ProxyConfig::http(&name, &service.to_string(), None).with_http(|h| {
        h.domains = vec![domain];
        // The service closes after each answer anyway; this bounds any pooled leftovers.
        h.idle_timeout = Some(2);
    });
    ClientConfig::new(args.server.clone())
        .with_server_name(args.server_name.clone())
        .with_auth_key(args.auth_key.clone())
        .with_fingerprint(args.fingerprint)
        .with_id(format!("{}{i}", args.id_prefix))
        .with_proxy(proxy)
}

/// Start every client, at most `concurrency` connecting at once; returns the handles of those
/// that became ready (by index) and prints the `connected` line.
async fn connect_all(
    args: &Arc<Args>,
    service: SocketAddr,
) -> Result<Vec<Option<ClientHandle>>, BoxError> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let mut set = JoinSet::new();
    for i in 0..args.clients {
        let (args, gate) = (args.clone(), gate.clone());
        set.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let t0 = Instant::now();
            let cfg = client_config(&args, i, service);
            let mut client = match tunnel_client::start(cfg).await {
                Ok(c) => c,
                Err(e) => return (i, None, Err(format!("start: {e}").into()), t0.elapsed()),
            };
            let ready = tokio::time::timeout(args.ready_timeout, client.ready()).await;
            let verdict: Result<(), BoxError> = match ready {
                Err(_) => Err(format!(
                    "not ready after {}s: {:?}",
                    args.ready_timeout.as_secs(),
                    client.status()
                )
                .into()),
                Ok(Err(e)) => Err(format!("stopped: {e}").into()),
                Ok(Ok(reply)) => match reply.results.iter().find_map(|r| r.error.as_ref()) {
                    Some(e) => Err(format!("proxy refused: {e:?}").into()),
                    None => Ok(()),
                },
            };
            (i, Some(client), verdict, t0.elapsed())
        });
    }
    let mut clients: Vec<Option<ClientHandle>> = (0..args.clients).map(|_| None).collect();
    let mut latencies = Vec::with_capacity(args.clients);
    let mut failures = 0usize;
    while let Some(done) = set.join_next().await {
        let (i, client, verdict, took) = done?;
        match verdict {
            Ok(()) => {
                latencies.push(took);
                clients[i] = client;
            }
            Err(e) => {
                failures += 1;
                if failures <= 5 {
                    eprintln!("client {i}: {e}");
                }
                if let Some(c) = client {
                    c.shutdown();
                }
            }
        }
        let n = latencies.len() + failures;
        if n % 1000 == 0 {
            eprintln!(
                "{n}/{} clients done ({} ready) after {:.1}s",
                args.clients,
                latencies.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let idx = ((latencies.len() - 1) as f64 * p).round() as usize;
        latencies[idx.min(latencies.len() - 1)].as_secs_f64() * 1000.0
    };
    println!(
        "connected clients={} ready={} failed={failures} secs={secs:.2} rate={:.0} \
         p50_ms={:.1} p99_ms={:.1} max_ms={:.1} rss_kib={} fds={}",
        args.clients,
        latencies.len(),
        latencies.len() as f64 / secs.max(1e-9),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        rss_kib(),
        open_fds()
    );
    Ok(clients)
}

/// One request for client `i`'s domain to the virtual host; `Ok` when the answer is a `200`
/// whose body names that domain (it reached the service through that client's session).
async fn check_one(vhost: SocketAddr, domain: String) -> Result<(), BoxError> {
    let exchange = async {
        let mut tcp = TcpStream::connect(vhost)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!(
            "GET /loadgen HTTP/1.1\r\nhost: {domain}\r\nuser-agent: loadgen\r\n\
             connection: close\r\n\r\n"
        );
        tcp.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = Vec::with_capacity(512);
        tcp.read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {e}"))?;
        Ok::<_, BoxError>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "no answer within 30s")??;
    let text = String::from_utf8_lossy(&answer);
    let status_ok = text.starts_with("HTTP/1.1 200");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    if status_ok && body.contains(domain.as_str()) {
        Ok(())
    } else {
        let first = text.lines().next().unwrap_or("").to_string();
        Err(format!("unexpected answer {first:?} body {body:?}").into())
    }
}

/// Send one request per ready client; print `<label> ok=.. failed=.. secs=..`.
async fn check_all(
    args: &Arc<Args>,
    clients: &[Option<ClientHandle>],
    label: &str,
) -> Result<(usize, usize), BoxError> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(args.check_concurrency));
    let mut set = JoinSet::new();
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut tally = |r: (usize, Result<(), BoxError>)| match r {
        (_, Ok(())) => ok += 1,
        (i, Err(e)) => {
            failed += 1;
            if failed <= 5 {
                eprintln!("{label}: client {i} ({}): {e}", domain_of(args, i));
            }
        }
    };
    for (i, c) in clients.iter().enumerate() {
        if c.is_none() {
            continue;
        }
        let permit = gate.clone().acquire_owned().await?;
        let vhost = args.vhost;
        let domain = domain_of(args, i);
        set.spawn(async move {
            let r = check_one(vhost, domain).await;
            drop(permit);
            (i, r)
        });
        // Reap finished checks as we go, so the set stays small.
        while let Some(done) = set.try_join_next() {
            tally(done?);
        }
    }
    while let Some(done) = set.join_next().await {
        tally(done?);
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{label} ok={ok} failed={failed} secs={secs:.2} rate={:.0} rss_kib={} fds={}",
        (ok + failed) as f64 / secs.max(1e-9),
        rss_kib(),
        open_fds()
    );
    Ok((ok, failed))
}

/// The login storm: every ready session is lost (the server restarts) and comes back. Polls
/// the statuses every 20 ms; prints `recovered ...` with each session's time back, counted
/// from the first loss seen, and returns how many came back within `limit`.
async fn storm(clients: &[Option<ClientHandle>], limit: Duration) -> usize {
    let tick = Duration::from_millis(20);
    let ready = |c: &ClientHandle| matches!(c.status(), Status::Ready(_));
    let live: Vec<&ClientHandle> = clients.iter().flatten().collect();
    let mut lost: Vec<Option<Instant>> = vec![None; live.len()];
    let mut back: Vec<Option<Instant>> = vec![None; live.len()];
    println!("storm-armed clients={}", live.len());
    let armed = Instant::now();
    while armed.elapsed() < limit && back.iter().any(Option::is_none) {
        tokio::time::sleep(tick).await;
        let now = Instant::now();
        for (i, c) in live.iter().enumerate() {
            match (lost[i], back[i], ready(c)) {
                (None, _, false) => lost[i] = Some(now),
                (Some(_), None, true) => back[i] = Some(now),
                _ => {}
            }
        }
    }
    let first_loss = lost.iter().flatten().min().copied().unwrap_or(armed);
    let mut took: Vec<f64> = back
        .iter()
        .flatten()
        .map(|t| t.duration_since(first_loss).as_secs_f64() * 1000.0)
        .collect();
    took.sort_by(f64::total_cmp);
    let pct = |p: f64| -> f64 {
        if took.is_empty() {
            return 0.0;
        }
        took[((took.len() - 1) as f64 * p).round() as usize]
    };
    let all_back_s = pct(1.0) / 1000.0;
    println!(
        "recovered clients={} lost={} back={} all_back_s={all_back_s:.2} rate={:.0} \
         p50_ms={:.0} p99_ms={:.0} max_ms={:.0}",
        live.len(),
        lost.iter().flatten().count(),
        took.len(),
        took.len() as f64 / all_back_s.max(1e-9),
        pct(0.5),
        pct(0.99),
        pct(1.0),
    );
    took.len()
}

/// Resolves when the hold is over: `--hold` elapsed, SIGINT/SIGTERM, or a line on stdin.
async fn hold(args: &Args) -> Result<&'static str, BoxError> {
    let timer = async {
        match args.hold {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let stdin_line = async {
        if !args.stdin {
            return std::future::pending().await;
        }
        // A plain thread: a blocking read on a runtime thread would hold up shutdown.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            let _ = tx.send(());
        });
        let _ = rx.await;
    };
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    #[cfg(unix)]
    let terminated = term.recv();
    #[cfg(not(unix))]
    let terminated = std::future::pending::<Option<()>>();
    Ok(tokio::select! {
        () = timer => "hold elapsed",
        () = stdin_line => "stdin",
        r = tokio::signal::ctrl_c() => { r?; "SIGINT" }
        _ = terminated => "SIGTERM",
    })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args = Arc::new(parse_args()?);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let service = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(serve_local(listener, served.clone()));
    eprintln!(
        "loadgen: {} clients -> {} (vhost {}), {} connecting at once; service on {service}",
        args.clients, args.server, args.vhost, args.concurrency
    );

    let mut clients = connect_all(&args, service).await?;
    let ready = clients.iter().filter(|c| c.is_some()).count();
    let (ok, failed) = check_all(&args, &clients, "checked").await?;

    let held = Instant::now();
    let mut stormed = None;
    let why = if let Some(limit) = args.storm {
        stormed = Some(storm(&clients, limit).await);
        "storm over"
    } else {
        println!(
            "holding pid={} clients={ready} rss_kib={} fds={}",
            std::process::id(),
            rss_kib(),
            open_fds()
        );
        hold(&args).await?
    };
    let still_ready = clients
        .iter()
        .flatten()
        .filter(|c| matches!(c.status(), Status::Ready(_)))
        .count();
    eprintln!(
        "loadgen: hold over after {:.1}s ({why}); {still_ready}/{ready} sessions still ready",
        held.elapsed().as_secs_f64()
    );
    let (re_ok, re_failed) = if args.recheck {
        check_all(&args, &clients, "rechecked").await?
    } else {
        (0, 0)
    };

    let stopping = Instant::now();
    for c in clients.iter().flatten() {
        c.shutdown();
    }
    let mut joins = JoinSet::new();
    for mut c in clients.drain(..).flatten() {
        joins.spawn(async move { c.join().await });
    }
    let mut join_errors = 0usize;
    while let Some(r) = joins.join_next().await {
        if !matches!(r, Ok(Ok(()))) {
            join_errors += 1;
        }
    }
    println!(
        "stopped secs={:.2} still_ready_after_hold={still_ready} join_errors={join_errors} \
         served={}",
        stopping.elapsed().as_secs_f64(),
        served.load(Ordering::Relaxed)
    );

    let all_good = stormed.is_none_or(|back| back == ready)
        && ready == args.clients
        && ok == ready
        && failed == 0
        && still_ready == ready
        && (!args.recheck || (re_ok == ready && re_failed == 0));
    if all_good {
        Ok(())
    } else {
        Err("not every client connected, stayed connected and served its stream".into())
    }
}
