//! End to end: failover of a cluster under an ordinary L4 load balancer (issue #16). Three
//! server processes on 127.0.0.1, .2 and .3 share one etcd and one certificate; a round-robin
//! [`Balancer`] is the only address the clients know. A server dies (kill -9) or freezes
//! (SIGSTOP): its clients come back through the others, and its registrations go with its
//! lease.
//!
//! `FAILOVER_CLIENTS=100` sizes the kill test for the measurement (benches/failover.sh).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tunnel_client::{ClientConfig, ClientHandle, ProxyConfig};
use tunnel_cluster::etcd::{EtcdOptions, EtcdStore};
use tunnel_cluster::store::KeyValue;
use tunnel_cluster::ClusterStore;
use tunnel_testkit::*;

const CLUSTER_KEY: &str = "a cluster key only the servers know";
/// Seconds: short, so that a dead server's keys go quickly.
const LEASE_TTL: u64 = 2;
const WAIT: Duration = Duration::from_secs(15);

/// One server process of the cluster.
struct Member {
    id: String,
    ip: u8,
    proc: Proc,
    /// Where it takes clients.
    at: SocketAddr,
    stats: SocketAddr,
    cfg: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Member {
    fn on(&self, port: u16) -> SocketAddr {
        SocketAddr::new(loopback(self.ip), port)
    }

    /// Start it again, same config (a restart after a stop); returns once it takes clients.
    async fn restart(&mut self) {
        assert!(!self.proc.is_running(), "server {} still runs", self.id);
        // The stopped run's log stays beside the new one.
        let _ = std::fs::rename(&self.log, self.log.with_extension("stopped.log"));
        self.proc = Proc::spawn(bins::server(), &self.cfg, self.log.clone());
        self.wait_up().await;
    }

    async fn wait_up(&mut self) {
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(self.at).await.is_err() {
            assert!(
                self.proc.is_running(),
                "server {} exited:\n{}",
                self.id,
                self.proc.log()
            );
            assert!(
                Instant::now() < deadline,
                "server {} did not start",
                self.id
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Server `id` as a process bound to 127.0.0.`ip` (clients, peers, published ports), in the
/// cluster under `prefix`, with `pki`'s certificate; returns once it takes connections.
async fn member(pki: &Pki, etcd: &Etcd, prefix: &str, id: &str, ip: u8) -> (Member, SocketAddr) {
    let at = SocketAddr::new(loopback(ip), free_port());
    let stats = SocketAddr::new(loopback(ip), free_port());
    let cfg = pki.write(
        &format!("server-{id}.toml"),
        &format!(
            "bind = \"{at}\"\nauth_key = \"{KEY}\"\ntls_cert = {:?}\ntls_key = {:?}\n\
             publish_addr = \"{ip4}\"\nstats_bind = \"{stats}\"\n\
             [cluster]\nbackend = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"{prefix}\"\n\
             server_id = \"{id}\"\nlease_ttl = {LEASE_TTL}\npeer_bind = \"{ip4}:{}\"\n\
             cluster_key = \"{CLUSTER_KEY}\"\npublish_mode = \"all\"\n",
            pki.cert.display().to_string(),
            pki.key.display().to_string(),
            etcd.endpoint(),
            free_port(),
            ip4 = loopback(ip),
        ),
    );
    let log = pki.dir.join(format!("server-{id}.log"));
    let mut m = Member {
        id: id.to_string(),
        ip,
        proc: Proc::spawn(bins::server(), &cfg, log.clone()),
        at,
        stats,
        cfg,
        log,
    };
    m.wait_up().await;
    (m, at)
}

async fn kvs(store: &EtcdStore, prefix: &str) -> Vec<KeyValue> {
    store.get_prefix(prefix).await.unwrap().0
}

/// Which server holds each client id, from the `client/<id>` records.
async fn owners(store: &EtcdStore, prefix: &str) -> BTreeMap<String, String> {
    let client = format!("{prefix}client/");
    kvs(store, prefix)
        .await
        .into_iter()
        .filter_map(|kv| {
            let id = kv.key.strip_prefix(&client)?.to_string();
            let rec: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
            Some((id, rec["server_id"].as_str().unwrap().to_string()))
        })
        .collect()
}

/// A cluster of three behind a balancer, and `n` clients each publishing an echo service on
/// its own port; returns once every client is registered.
struct Setup {
    _etcd: Etcd,
    store: EtcdStore,
    _pki: Pki,
    members: Vec<Member>,
    lb: Balancer,
    clients: Vec<(ClientHandle, u16)>,
    prefix: String,
}

async fn setup(
    prefix: &str,
    n: usize,
    pile_on: Option<usize>,
    client: impl Fn(ClientConfig) -> ClientConfig,
) -> Option<Setup> {
    let etcd = Etcd::start_if_installed().await?;
    logs();
    let store = EtcdStore::connect(&EtcdOptions::new([etcd.endpoint()]))
        .await
        .unwrap();
    let pki = Pki::new(&format!("failover{}", prefix.replace('/', "")));
    let mut members = Vec::new();
    let mut addrs = Vec::new();
    for (id, ip) in [("a", 1), ("b", 2), ("c", 3)] {
        let (m, at) = member(&pki, &etcd, prefix, id, ip).await;
        members.push(m);
        addrs.push(at);
    }
    let servers = format!("{prefix}server/");
    eventually(WAIT, "all three servers joined", || {
        let (store, servers) = (&store, &servers);
        async move {
            kvs(store, prefix)
                .await
                .iter()
                .filter(|kv| kv.key.starts_with(servers.as_str()))
                .count()
                == 3
        }
    })
    .await;
    let lb = Balancer::start(addrs).await;
    // Every client on one server: the others are out of the balancer while they log in.
    let others = |down: bool| {
        for i in (0..3).filter(|i| Some(*i) != pile_on && pile_on.is_some()) {
            lb.set_down(i, down);
        }
    };
    others(true);
    let echo = echo_service().await.to_string();
    let mut clients = Vec::new();
    for i in 0..n {
        let port = free_port();
        let cfg = ClientConfig::new(lb.addr.to_string())
            .with_auth_key(KEY)
            .with_fingerprint(pki.fingerprint.parse().unwrap())
            .with_id(format!("c{i}"))
            .with_proxy(ProxyConfig::tcp(&format!("p{i}"), &echo, Some(port)));
        clients.push((tunnel_testkit::client(client(cfg)).await, port));
    }
    others(false);
    Some(Setup {
        _etcd: etcd,
        store,
        _pki: pki,
        members,
        lb,
        clients,
        prefix: prefix.to_string(),
    })
}

impl Setup {
    /// Every published port answers on every member in `on`.
    async fn all_serve(&self, on: &[&Member], what: &str) {
        for (_, port) in &self.clients {
            for m in on {
                let at = m.on(*port);
                let deadline = Instant::now() + WAIT;
                while !serves_at(at, Duration::from_secs(2)).await {
                    if Instant::now() > deadline {
                        let p = port.to_string();
                        let log = m.proc.log();
                        let about: Vec<&str> = log
                            .lines()
                            .filter(|l| l.contains(&p) || l.contains("WARN") || l.contains("ERROR"))
                            .collect();
                        panic!(
                            "{what}: port {port} does not answer on {}; its log of the port:\n{}",
                            m.id,
                            about.join("\n")
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// The member holding the most clients, and its lease.
    async fn busiest(&self) -> (usize, i64) {
        let owners = owners(&self.store, &self.prefix).await;
        assert_eq!(owners.len(), self.clients.len(), "{owners:?}");
        let count = |m: &Member| owners.values().filter(|s| **s == m.id).count();
        let i = (0..self.members.len())
            .max_by_key(|&i| count(&self.members[i]))
            .unwrap();
        let counts: Vec<usize> = self.members.iter().map(count).collect();
        eprintln!("clients per server (a, b, c): {counts:?}");
        let key = format!("{}server/{}", self.prefix, self.members[i].id);
        let lease = self.store.get(&key).await.unwrap().unwrap().lease;
        (i, lease)
    }

    /// Whether no key is left under `lease`.
    async fn lease_empty(&self, lease: i64) -> bool {
        !kvs(&self.store, &self.prefix)
            .await
            .iter()
            .any(|kv| kv.lease == lease)
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_of_the_busiest_server_every_client_serves_again_through_the_others() {
    let n = std::env::var("FAILOVER_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    // All of them on b: the one killed holds them all.
    let Some(mut s) = setup("/failover/", n, Some(1), |c| c).await else {
        return;
    };
    let all: Vec<&Member> = s.members.iter().collect();
    s.all_serve(&all, "publish_mode all").await;

    let (victim, lease) = s.busiest().await;
    let owners_before = owners(&s.store, &s.prefix).await;
    let moving: Vec<u16> = s
        .clients
        .iter()
        .enumerate()
        .filter(|(i, _)| owners_before[&format!("c{i}")] == s.members[victim].id)
        .map(|(_, (_, port))| *port)
        .collect();
    s.members[victim].proc.kill9();
    let killed = Instant::now();
    let survivors: Vec<&Member> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| &s.members[i])
        .collect();
    let through = survivors[0];

    // Each moved client's port, polled through a survivor until it answers: the failover
    // time of that client.
    let times = futures::future::join_all(moving.iter().map(|&port| {
        let at = through.on(port);
        async move {
            while !serves_at(at, Duration::from_millis(500)).await {
                if killed.elapsed() > WAIT {
                    return Err(port);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(killed.elapsed())
        }
    }))
    .await;
    let lost: Vec<u16> = times.iter().filter_map(|t| t.err()).collect();
    if !lost.is_empty() {
        for m in &survivors {
            let log = m.proc.log();
            let about: Vec<&str> = log
                .lines()
                .filter(|l| lost.iter().any(|p| l.contains(&p.to_string())) || l.contains("WARN"))
                .collect();
            eprintln!(
                "server {} on the ports that did not come back:\n{}",
                m.id,
                about.join("\n")
            );
        }
        panic!("ports {lost:?} did not come back within {WAIT:?}");
    }
    let mut sorted: Vec<Duration> = times.into_iter().flatten().collect();
    sorted.sort();
    // One line per run for benches/failover.sh, which pools the runs.
    let ms: Vec<String> = sorted.iter().map(|t| t.as_millis().to_string()).collect();
    eprintln!("failover-ms: {}", ms.join(" "));
    eprintln!(
        "failover of {} clients after kill -9: p50 {:?}, p99 {:?}, max {:?}",
        sorted.len(),
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.99),
        sorted.last().unwrap()
    );

    // The target (p99 under 2 s) is a benchmark's verdict (benches/failover.sh), not
    // this test's: here every client must come back within WAIT, whatever else the machine
    // runs meanwhile.
    eventually(WAIT, "the killed server's keys are gone", || {
        s.lease_empty(lease)
    })
    .await;
    let gone_in = killed.elapsed();
    eprintln!("the killed server's keys gone {gone_in:?} after kill -9 (lease_ttl {LEASE_TTL} s)");
    assert!(
        gone_in <= Duration::from_secs(LEASE_TTL + 1),
        "{gone_in:?} > lease_ttl + 1 s"
    );

    // Every client serves on both survivors and is registered there, none on the dead one.
    s.all_serve(&survivors, "after the failover").await;
    let owners = owners(&s.store, &s.prefix).await;
    assert_eq!(owners.len(), n, "{owners:?}");
    assert!(
        owners.values().all(|o| *o != s.members[victim].id),
        "{owners:?}"
    );
    assert!(s.clients.iter().all(|(c, _)| is_ready(c)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_then_continued_brings_back_nothing_stale() {
    // A short heartbeat timeout: clients of a frozen server notice it is silent and move.
    let Some(mut s) = setup("/frozen-member/", 9, None, |c| {
        c.with_heartbeat_timeout(Duration::from_secs(2))
    })
    .await
    else {
        return;
    };
    let (victim, lease) = s.busiest().await;
    let vid = s.members[victim].id.clone();
    s.members[victim].proc.signal("STOP");
    // The balancer's health check finds it silent and stops sending it new connections (the
    // kernel still accepts them for a frozen process: without this, a client landing there
    // waits out its 15 s connect timeout).
    s.lb.set_down(victim, true);
    eventually(WAIT, "the frozen server's clients moved", || {
        let s = &s;
        let vid = &vid;
        async move {
            let o = owners(&s.store, &s.prefix).await;
            o.len() == s.clients.len() && o.values().all(|o| o != vid)
        }
    })
    .await;
    eventually(WAIT, "the frozen server's lease expired", || {
        s.lease_empty(lease)
    })
    .await;

    s.members[victim].proc.signal("CONT");
    s.lb.set_down(victim, false);
    // It comes back: a new lease, its server key again.
    let key = format!("{}server/{vid}", s.prefix);
    eventually(WAIT, "the continued server joined again", || {
        let (s, key) = (&s, &key);
        async move { matches!(s.store.get(key).await.unwrap(), Some(kv) if kv.lease != lease) }
    })
    .await;
    // Give it the time it needs to re-assert whatever it still believed it held: two lease
    // renewals, polled by watching that nothing of it reappears meanwhile.
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(LEASE_TTL) {
        let o = owners(&s.store, &s.prefix).await;
        assert!(
            o.len() == s.clients.len() && o.values().all(|o| *o != vid),
            "the continued server brought back a stale registration: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every port is registered once, to a client on a live server, and answers everywhere.
    let ports = kvs(&s.store, &s.prefix)
        .await
        .into_iter()
        .filter(|kv| kv.key.starts_with(&format!("{}port/", s.prefix)))
        .count();
    assert_eq!(ports, s.clients.len());
    let all: Vec<&Member> = s.members.iter().collect();
    s.all_serve(&all, "after SIGCONT").await;
    assert!(s.members[victim].proc.is_running());
    assert!(s.clients.iter().all(|(c, _)| is_ready(c)));
}

/// `/healthz` of a stats endpoint, as a balancer's health check sees it: `None` when it does
/// not answer (stopped, or not started yet).
async fn health_at(stats: SocketAddr) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let check = async {
        let mut s = TcpStream::connect(stats).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).await.ok()?;
        text.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(1), check)
        .await
        .ok()
        .flatten()
}

/// A health-checking L4 balancer's checker: every 100 ms, a backend whose `/healthz` does not
/// answer 200 is out of every balancer in `fronts` (index = member), and back in once it does.
fn health_checks(
    stats: Vec<SocketAddr>,
    fronts: Vec<std::sync::Arc<Balancer>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            for (i, at) in stats.iter().enumerate() {
                let up = health_at(*at).await == Some(200);
                for f in &fronts {
                    f.set_down(i, !up);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The wall-clock time of day, as the servers' logs print it, to find a failure there.
fn chrono_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let s = d.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

/// One user connection through `front`: 64 bytes out, the same 64 back.
async fn one_echo(front: SocketAddr, seed: u64) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let data = random_bytes(64, seed);
    let exchange = async {
        let mut s = TcpStream::connect(front)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        s.write_all(&data)
            .await
            .map_err(|e| format!("write: {e}"))?;
        s.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
        let mut back = Vec::new();
        s.read_to_end(&mut back)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if back == data {
            Ok(())
        } else {
            Err(format!("{} of 64 bytes came back", back.len()))
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_steady_new_connections_loses_none() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    let Some(mut s) = setup("/rolling/", 6, None, |c| c).await else {
        return;
    };
    let all: Vec<&Member> = s.members.iter().collect();
    s.all_serve(&all, "before the restart").await;
    // Users reach each published port through a balancer over the three servers (publish
    // mode all), health-checked like the clients' balancer.
    let mut fronts = Vec::new();
    for (_, port) in &s.clients {
        let backends = s.members.iter().map(|m| m.on(*port)).collect();
        fronts.push(Arc::new(Balancer::start(backends).await));
    }
    let lb = Arc::new(std::mem::replace(
        &mut s.lb,
        Balancer::start(vec![s.members[0].at]).await,
    ));
    let mut checked = fronts.clone();
    checked.push(lb.clone());
    let stats = s.members.iter().map(|m| m.stats).collect();
    let checker = health_checks(stats, checked);

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let addrs: Vec<SocketAddr> = fronts.iter().map(|f| f.addr).collect();
    let mut load = Vec::new();
    for w in 0..4u64 {
        let (stop, done, failed, addrs) =
            (stop.clone(), done.clone(), failed.clone(), addrs.clone());
        load.push(tokio::spawn(async move {
            let mut k = w;
            while !stop.load(Ordering::Relaxed) {
                let i = usize::try_from(k).unwrap() % addrs.len();
                match one_echo(addrs[i], k).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        let at = chrono_now();
                        failed.lock().unwrap().push(format!("{at} port #{i}: {e}"));
                        0
                    }
                };
                k += 4;
            }
        }));
    }

    for i in 0..s.members.len() {
        let before = done.load(Ordering::Relaxed);
        let m = &mut s.members[i];
        eprintln!("stopping server {}", m.id);
        m.proc.signal("TERM");
        let status = m.proc.exit_within(Duration::from_secs(30)).await;
        assert!(status.success(), "server {} exited with {status}", m.id);
        m.restart().await;
        let m = &s.members[i];
        let key = format!("{}server/{}", s.prefix, m.id);
        eventually(WAIT, "the restarted server joined", || {
            let (store, key) = (&s.store, &key);
            async move { store.get(key).await.unwrap().is_some() }
        })
        .await;
        s.all_serve(&[m], "after its restart").await;
        eventually(WAIT, "users served meanwhile", || {
            let done = done.clone();
            async move { done.load(Ordering::Relaxed) > before + 20 }
        })
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    checker.abort();
    let failed = failed.lock().unwrap().clone();
    let done = done.load(Ordering::Relaxed);
    eprintln!(
        "rolling restart of 3 servers: {done} user connections served, {} failed",
        failed.len()
    );
    if let Ok(dir) = std::env::var("FAILOVER_LOGS") {
        for m in &s.members {
            std::fs::write(format!("{dir}/server-{}.log", m.id), m.proc.log()).unwrap();
            let stopped = m.log.with_extension("stopped.log");
            let old = std::fs::read_to_string(stopped).unwrap_or_default();
            std::fs::write(format!("{dir}/server-{}.stopped.log", m.id), old).unwrap();
        }
    }
    if !failed.is_empty() {
        let unrouted: Vec<usize> = fronts.iter().map(|f| f.unrouted()).collect();
        eprintln!("connections no server took, per port: {unrouted:?}");
        for m in &s.members {
            let log = m.proc.log();
            let warns: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
            eprintln!("server {}:\n{}", m.id, warns.join("\n"));
        }
    }
    assert!(failed.is_empty(), "{} failed: {failed:#?}", failed.len());
    let all: Vec<&Member> = s.members.iter().collect();
    s.all_serve(&all, "after the rolling restart").await;
    assert!(s.clients.iter().all(|(c, _)| is_ready(c)));
    assert_eq!(owners(&s.store, &s.prefix).await.len(), s.clients.len());
}
