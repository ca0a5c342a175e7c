//! End to end: the cluster registry's load on etcd and its health, as the servers count them
//! (`/api/stats` `cluster.etcd`, `/metrics`), against a real etcd (issue #16, "Visibility"
//! and "Measure").
//!
//! `scale_bench_registry_load_and_reregistration` is the measurement of benches/cluster_scale.sh:
//! it runs only with `CLUSTER_SCALE=1`.
#![cfg(feature = "etcd")]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tunnel_client::{ClientConfig, ClientHandle, ProxyConfig};
use tunnel_cluster::etcd::{EtcdOptions, EtcdStore};
use tunnel_cluster::store::{events, WatchEvent};
use tunnel_cluster::ClusterStore;
use tunnel_server::ServerHandle;
use tunnel_testkit::*;

const WAIT: Duration = Duration::from_secs(20);

/// A server in process on 127.0.0.1 in the cluster under `prefix`, with a lease of
/// `lease_ttl` seconds (renewed every third of it).
async fn member(etcd: &Etcd, prefix: &str, lease_ttl: u64) -> ServerHandle {
    etcd_member(etcd, prefix, "a", 1, |mut c| {
        if let Some(cluster) = c.cluster.as_mut() {
            cluster.lease_ttl = Duration::from_secs(lease_ttl);
        }
        c
    })
    .await
}

/// The server's `cluster.etcd` counters: (requests, writes, keepalives, failures).
async fn counters(s: &ServerHandle) -> (u64, u64, u64, u64) {
    let e = etcd_of(s).await;
    let n = |k: &str| e[k].as_u64().unwrap_or_else(|| panic!("{k} in {e}"));
    (n("requests"), n("writes"), n("keepalives"), n("failures"))
}

async fn etcd_of(s: &ServerHandle) -> serde_json::Value {
    stats_json(s.stats_addr().unwrap()).await["cluster"]["etcd"].clone()
}

fn echo_client(s: &ServerHandle, id: &str, echo: &str, publish: Option<u16>) -> ClientConfig {
    client_config(s)
        .with_id(id)
        .with_proxy(ProxyConfig::tcp(&format!("{id}-tcp"), echo, publish))
        .with_proxy(ProxyConfig::tcp(&format!("{id}-private"), echo, None).with_secret("s3cret"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_is_one_write_transaction_and_idle_clients_write_nothing() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let server = member(&etcd, "/writes/", 3).await;
    let echo = echo_service().await.to_string();
    let (r0, w0, k0, _) = counters(&server).await;

    // A login with two proxies, one of them on a publish port: client, proxy and port keys,
    // read in one request and written in one transaction.
    let first = client(echo_client(&server, "one", &echo, Some(free_port()))).await;
    let (r1, w1, k1, _) = counters(&server).await;
    assert_eq!(w1 - w0, 1, "writes for one login");
    assert_eq!(
        (r1 - k1) - (r0 - k0),
        2,
        "requests other than renewals for one login"
    );

    let mut more = Vec::new();
    for i in 0..4 {
        more.push(client(echo_client(&server, &format!("c{i}"), &echo, None)).await);
    }
    let (r2, w2, k2, f2) = counters(&server).await;
    assert_eq!(w2 - w1, 4, "writes for four logins");

    // Idle: lease renewals (every second at lease_ttl 3), no write, whatever the number of
    // clients.
    eventually(WAIT, "three lease renewals", || {
        let server = &server;
        async move { counters(server).await.2 >= k2 + 3 }
    })
    .await;
    let (r3, w3, k3, f3) = counters(&server).await;
    assert_eq!(w3, w2, "idle clients wrote to etcd");
    assert_eq!(f3, f2, "failures while etcd is up");
    assert_eq!(r3 - r2, k3 - k2, "idle requests other than renewals");
    let e = etcd_of(&server).await;
    assert_eq!(e["healthy"], true, "{e}");
    assert!(e["last_error"].is_null(), "{e}");
    assert!(is_ready(&first) && more.iter().all(is_ready));

    let metrics = stats_get(server.stats_addr().unwrap(), "/metrics", &[])
        .await
        .body;
    for line in [
        "tunnel_cluster_etcd_up 1".to_string(),
        format!("tunnel_cluster_etcd_writes_total {w3}"),
        "tunnel_cluster_etcd_failures_total 0".to_string(),
    ] {
        assert!(metrics.contains(&line), "{line} not in:\n{metrics}");
    }
    assert!(metrics.contains("tunnel_cluster_etcd_requests_total "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_health_turns_false_while_etcd_is_stopped_and_true_after_it_continues() {
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    let server = member(&etcd, "/health/", 3).await;
    let stats = server.stats_addr().unwrap();
    assert_eq!(etcd_of(&server).await["healthy"], true);

    let mark = log_mark();
    etcd.pause().await;
    let stopped = Instant::now();
    eventually(
        WAIT,
        "cluster.etcd.healthy false while etcd is stopped",
        || async { etcd_of(&server).await["healthy"] == false },
    )
    .await;
    eprintln!("etcd stopped: unhealthy after {:?}", stopped.elapsed());
    let e = etcd_of(&server).await;
    assert!(e["failures"].as_u64().unwrap() > 0, "{e}");
    let last = e["last_error"].as_str().unwrap_or_else(|| panic!("{e}"));
    assert!(
        last.contains(&etcd.endpoint()) && last.contains("ago)"),
        "{last}"
    );
    let metrics = stats_get(stats, "/metrics", &[]).await.body;
    assert!(metrics.contains("tunnel_cluster_etcd_up 0"), "{metrics}");

    etcd.resume();
    let resumed = Instant::now();
    eventually(
        WAIT,
        "cluster.etcd.healthy true after etcd continues",
        || async { etcd_of(&server).await["healthy"] == true },
    )
    .await;
    eprintln!("etcd continued: healthy after {:?}", resumed.elapsed());
    let metrics = stats_get(stats, "/metrics", &[]).await.body;
    assert!(metrics.contains("tunnel_cluster_etcd_up 1"), "{metrics}");
    // A WARN naming etcd when it starts failing, an INFO when it answers again: once each,
    // not once per failed call.
    expect_logged(&["WARN", "cluster store failing", &etcd.endpoint()]).await;
    expect_logged(&["INFO", "cluster store answering again"]).await;
    let warned = logged_count_since(mark, &["cluster store failing", &etcd.endpoint()]);
    assert_eq!(warned, 1, "WARNs for one outage");
}

/// Percentile `p` (0..1) of sorted `v`.
fn pct(v: &[Duration], p: f64) -> Duration {
    let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// The members' counters summed: (writes, keepalives, requests).
async fn totals(members: &[&ClusterMember]) -> (u64, u64, u64) {
    let mut t = (0, 0, 0);
    for m in members {
        let e = m.etcd_stats().await;
        t.0 += e["writes"].as_u64().unwrap();
        t.1 += e["keepalives"].as_u64().unwrap();
        t.2 += e["requests"].as_u64().unwrap();
    }
    t
}

/// What etcd itself counts: every write is one raft proposal; renewals are not.
async fn proposals(etcd: &Etcd) -> f64 {
    etcd.metric("etcd_server_proposals_committed_total").await
}

/// The measurement of benches/cluster_scale.sh (`CLUSTER_SCALE=1`): three server processes
/// behind a balancer; etcd writes per login and per idle minute at 10 and 200 clients
/// (counted by the servers and by etcd); then kill -9 of the busiest server with
/// `SCALE_CLIENTS` (default 1,000) clients and the time until each is registered on a
/// survivor and ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_bench_registry_load_and_reregistration() {
    if std::env::var("CLUSTER_SCALE").is_err() {
        eprintln!("CLUSTER_SCALE is not set: the measurement is skipped");
        return;
    }
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let idle = Duration::from_secs(env("IDLE_SECS", 60));
    let total = env("SCALE_CLIENTS", 1000) as usize;
    let lease_ttl = env("LEASE_TTL", 10);
    // More server settings, e.g. `pending_handshakes_per_source = 0`: every client comes
    // through the balancer from one address.
    let extra = std::env::var("SERVER_EXTRA").unwrap_or_default();
    let Some(etcd) = Etcd::start_if_installed().await else {
        return;
    };
    logs();
    let pki = Pki::new("cluster-scale");
    let prefix = "/scale/";
    let mut members = Vec::new();
    for (id, ip) in [("a", 1), ("b", 2), ("c", 3)] {
        members
            .push(ClusterMember::spawn_with(&pki, &etcd, prefix, id, ip, lease_ttl, &extra).await);
    }
    let lb = Balancer::start(members.iter().map(|m| m.addr).collect()).await;
    let echo = echo_service().await.to_string();
    // SCALE_PUBLISH=1: each client's proxy on a publish port of its own (every server
    // listens on every one), instead of a private proxy.
    let publish = std::env::var("SCALE_PUBLISH").is_ok_and(|v| v == "1");
    let config = |i: usize| {
        let proxy = if publish {
            ProxyConfig::tcp(&format!("p{i}"), &echo, Some(free_port()))
        } else {
            ProxyConfig::tcp(&format!("p{i}"), &echo, None).with_secret("s3cret")
        };
        ClientConfig::new(lb.addr.to_string())
            .with_auth_key(KEY)
            .with_fingerprint(pki.fingerprint.parse().unwrap())
            .with_id(format!("c{i}"))
            .with_proxy(proxy)
    };
    let mut clients: Vec<ClientHandle> = Vec::new();
    let all: Vec<&ClusterMember> = members.iter().collect();

    for n in [10usize, 200] {
        let (w0, _, _) = totals(&all).await;
        let p0 = proposals(&etcd).await;
        let added = n - clients.len();
        let started = Instant::now();
        while clients.len() < n {
            clients.push(client(config(clients.len())).await);
        }
        let (w1, k1, r1) = totals(&all).await;
        let p1 = proposals(&etcd).await;
        eprintln!(
            "logins: {added} in {:?}; writes per login {:.2} (servers), etcd proposals per login {:.2}",
            started.elapsed(),
            (w1 - w0) as f64 / added as f64,
            (p1 - p0) / added as f64
        );
        tokio::time::sleep(idle).await;
        let (w2, k2, r2) = totals(&all).await;
        let p2 = proposals(&etcd).await;
        let per_min = |d: f64| d * 60.0 / idle.as_secs_f64();
        eprintln!(
            "idle-{n}: per minute, 3 servers, {n} clients: writes {:.1}, keepalives {:.1}, \
             requests {:.1}, etcd proposals {:.1}",
            per_min((w2 - w1) as f64),
            per_min((k2 - k1) as f64),
            per_min((r2 - r1) as f64),
            per_min(p2 - p1)
        );
    }

    // The re-registration storm: server a is made to hold `total` clients (the balancer
    // sends every new login there), then it is killed.
    let store = EtcdStore::connect(&EtcdOptions::new([etcd.endpoint()]))
        .await
        .unwrap();
    let owner_of = |v: &[u8]| -> String {
        let rec: serde_json::Value = serde_json::from_slice(v).unwrap();
        rec["server_id"].as_str().unwrap().to_string()
    };
    let client_key = format!("{prefix}client/");
    let owners = |kvs: Vec<tunnel_cluster::KeyValue>| -> HashMap<String, String> {
        kvs.iter()
            .filter_map(|kv| {
                Some((
                    kv.key.strip_prefix(&client_key)?.to_string(),
                    owner_of(&kv.value),
                ))
            })
            .collect()
    };
    let on_a = owners(store.get_prefix(prefix).await.unwrap().0)
        .values()
        .filter(|o| *o == "a")
        .count();
    lb.set_down(1, true);
    lb.set_down(2, true);
    let started = Instant::now();
    let add = total.saturating_sub(on_a);
    for _ in 0..add {
        clients.push(client(config(clients.len())).await);
    }
    lb.set_down(1, false);
    lb.set_down(2, false);
    eprintln!("{add} more clients up on a in {:?}", started.elapsed());
    let (kvs, rev) = store.get_prefix(prefix).await.unwrap();
    let owners = owners(kvs);
    assert_eq!(owners.len(), clients.len());
    let victim = 0;
    let vid = members[victim].id.clone();
    let moving: Vec<usize> = (0..clients.len())
        .filter(|i| owners[&format!("c{i}")] == vid)
        .collect();
    eprintln!("clients on the killed server {vid}: {}", moving.len());
    let survivors: Vec<&ClusterMember> = (0..3)
        .filter(|&i| i != victim)
        .map(|i| &members[i])
        .collect();
    let (w0, _, _) = totals(&survivors).await;
    let p0 = proposals(&etcd).await;
    let mut watch = events(store.watch(&client_key, rev + 1).await.unwrap());
    // Where the CPU goes: the survivors, etcd, and this process (clients and balancer).
    let cpu = |members: &[&ClusterMember]| {
        let mut v: Vec<f64> = members.iter().map(|m| m.proc.cpu_seconds()).collect();
        v.push(cpu_seconds_of(etcd.pid()));
        v.push(cpu_seconds_of(std::process::id()));
        v
    };
    let cpu0 = cpu(&survivors);

    members[victim].proc.signal("KILL");
    let killed = Instant::now();
    // Registered again: the client's key put by a survivor, as a watch on etcd sees it.
    let mut registered: HashMap<String, Duration> = HashMap::new();
    // Ready again: its session on a survivor (it went down first, then up).
    let mut down = vec![false; clients.len()];
    let mut ready: HashMap<usize, Duration> = HashMap::new();
    while (registered.len() < moving.len() || ready.len() < moving.len())
        && killed.elapsed() < Duration::from_secs(60)
    {
        while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(5), watch.next()).await
        {
            if let WatchEvent::Put(kv) = ev.unwrap() {
                let id = kv.key.strip_prefix(&client_key).unwrap().to_string();
                if owner_of(&kv.value) != vid && owners.get(&id) == Some(&vid) {
                    registered.entry(id).or_insert_with(|| killed.elapsed());
                }
            }
        }
        for &i in &moving {
            if ready.contains_key(&i) {
                continue;
            }
            if !is_ready(&clients[i]) {
                down[i] = true;
            } else if down[i] {
                ready.insert(i, killed.elapsed());
            }
        }
    }
    let (w1, _, _) = totals(&survivors).await;
    let p1 = proposals(&etcd).await;
    let cpu1 = cpu(&survivors);
    let spent: Vec<String> = cpu0
        .iter()
        .zip(&cpu1)
        .map(|(a, b)| format!("{:.2}", b - a))
        .collect();
    eprintln!(
        "cpu seconds during the storm (survivor, survivor, etcd, clients+balancer): {}",
        spent.join(", ")
    );
    // What slowed the storm down, as the survivors logged it.
    for m in &survivors {
        let mut kinds: HashMap<String, usize> = HashMap::new();
        for line in m.proc.log().lines().filter(|l| l.contains(" WARN ")) {
            let text = line.split(" WARN ").nth(1).unwrap_or(line);
            let text: String = text.chars().take(90).collect();
            *kinds.entry(text).or_default() += 1;
        }
        let mut kinds: Vec<(String, usize)> = kinds.into_iter().collect();
        kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
        for (text, n) in kinds.iter().take(5) {
            eprintln!("survivor {} warned {n}x: {text}", m.id);
        }
    }
    let mut reg: Vec<Duration> = registered.values().copied().collect();
    reg.sort();
    let mut up: Vec<Duration> = ready.values().copied().collect();
    up.sort();
    assert_eq!(
        reg.len(),
        moving.len(),
        "clients not registered again within 60 s"
    );
    assert_eq!(
        up.len(),
        moving.len(),
        "clients not ready again within 60 s"
    );
    eprintln!(
        "reregistration of {} clients after kill -9: registered first {:?} p10 {:?} p50 {:?} p99 {:?} all {:?}; \
         ready p50 {:?} p99 {:?} all {:?}; writes {} (servers), etcd proposals {}",
        moving.len(),
        reg[0],
        pct(&reg, 0.1),
        pct(&reg, 0.5),
        pct(&reg, 0.99),
        reg.last().unwrap(),
        pct(&up, 0.5),
        pct(&up, 0.99),
        up.last().unwrap(),
        w1 - w0,
        p1 - p0
    );
}
