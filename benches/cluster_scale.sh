#!/usr/bin/env bash
# Cluster registry at scale (issue #16): etcd writes per login, etcd load per idle minute with
# 10 and 200 clients, and 1,000 clients re-registering after kill -9 of their server.
#
#   benches/cluster_scale.sh                       # 60 s idle windows, 1,000 clients moved
#   IDLE_SECS=20 SCALE_CLIENTS=300 benches/cluster_scale.sh
#   SERVER_EXTRA=$'pending_handshakes_per_source = 0' benches/cluster_scale.sh
#
# It runs the end-to-end test cluster_scale::scale_bench_registry_load_and_reregistration
# (tests/e2e/cluster_scale.rs) with CLUSTER_SCALE=1: three server processes on 127.0.0.1/.2/.3
# sharing one etcd (lease_ttl LEASE_TTL, default 10 s) behind a round-robin balancer, clients in
# process. Writes are counted twice: by the servers (`cluster.etcd.writes` of /api/stats, the
# same counters as /metrics) and by etcd itself (`etcd_server_proposals_committed_total`:
# every write is one raft proposal, lease renewals are none). For the storm, every new login
# is sent to server a until it holds SCALE_CLIENTS clients; a is killed; a watch on etcd
# timestamps each client's new registration and each client handle its return to Ready.
# SERVER_EXTRA adds top-level lines to the servers' config (all clients come through the
# balancer from one address, so the per-source admission limits apply to all of them).
# SCALE_PUBLISH=1 gives each client's proxy a publish port (all servers listen on all of
# them) instead of a private proxy.
# RELEASE=1 builds and runs everything optimised (the servers' TLS handshakes are most of a
# storm's CPU, and a debug build spends several times more on each).
# Needs etcd and protoc (the `etcd` feature).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_INCREMENTAL=0
command -v etcd >/dev/null || { echo "etcd is not installed (Debian: etcd-server)" >&2; exit 1; }
echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores" >&2
CLUSTER_SCALE=1 IDLE_SECS=${IDLE_SECS:-60} SCALE_CLIENTS=${SCALE_CLIENTS:-1000} \
    LEASE_TTL=${LEASE_TTL:-10} SERVER_EXTRA=${SERVER_EXTRA:-} SCALE_PUBLISH=${SCALE_PUBLISH:-0} \
    cargo test -q ${RELEASE:+--release} --features etcd --test e2e \
    cluster_scale::scale_bench_registry_load_and_reregistration -- --exact --nocapture 2>&1 |
    grep -E "^(logins|idle-|[0-9]+ more clients|clients on|cpu seconds|reregistration|survivor)"
