#!/usr/bin/env bash
# Cluster failover time (issue #16): how long after kill -9 of a server each of its clients
# serves again through a surviving server, behind a round-robin L4 balancer.
# Then the drain: new connections failed during a rolling restart of all three (target 0).
#
#   benches/failover.sh            # 3 runs of 100 clients, all on the server killed
#   RUNS=5 CLIENTS=200 benches/failover.sh
#
# Each run is the end-to-end test failover::after_kill_9_... (tests/e2e/failover.rs) at
# FAILOVER_CLIENTS=$CLIENTS: three server processes on 127.0.0.1/.2/.3 sharing one etcd
# (lease_ttl 2 s), in-process clients whose only server_addr is the balancer. A client's
# failover time runs from the kill until its published port answers an echo through a
# survivor. Needs etcd and protoc (the `etcd` feature); prints p50/p99/max over every moved
# client of every run, and how long the killed server's keys stayed in etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-100}
export CARGO_INCREMENTAL=0
command -v etcd >/dev/null || { echo "etcd is not installed (Debian: etcd-server)" >&2; exit 1; }
cargo test --features etcd --test e2e --no-run -q 2>/dev/null
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for run in $(seq "$RUNS"); do
    echo "run $run/$RUNS: $CLIENTS clients" >&2
    FAILOVER_CLIENTS=$CLIENTS cargo test -q --features etcd --test e2e \
        failover::after_kill_9_of_the_busiest_server_every_client_serves_again_through_the_others \
        -- --exact --nocapture 2>&1 | grep -E "^(failover|clients per|the killed server's keys)" >>"$out"
done
grep -E "^(clients per|the killed)" "$out" >&2
python3 - "$out" <<'PY'
import sys
ms = []
for line in open(sys.argv[1]):
    if line.startswith("failover-ms:"):
        ms += [int(x) for x in line.split()[1:]]
ms.sort()
def pct(p):
    import math
    return ms[max(1, math.ceil(len(ms) * p)) - 1]
print(f"failover after kill -9: {len(ms)} clients moved; p50 {pct(0.5)} ms, p99 {pct(0.99)} ms, max {ms[-1]} ms (target p99 < 2000 ms)")
PY

# Drain (make-before-break): a rolling restart of the three servers (SIGTERM, exit, start
# again) while users open new connections without pause through health-checking balancers.
# Target: 0 failed.
served=0
failed=0
for run in $(seq "$RUNS"); do
    line=$(cargo test -q --features etcd --test e2e \
        failover::a_rolling_restart_under_steady_new_connections_loses_none \
        -- --exact --nocapture 2>&1 | grep -E "^rolling restart of" || true)
    echo "run $run/$RUNS: ${line:-the test failed}" >&2
    s=$(sed -nE 's/.*: ([0-9]+) user connections served, ([0-9]+) failed/\1/p' <<<"$line")
    f=$(sed -nE 's/.*: ([0-9]+) user connections served, ([0-9]+) failed/\2/p' <<<"$line")
    served=$((served + ${s:-0}))
    failed=$((failed + ${f:-1}))
done
echo "rolling restart of 3 servers, $RUNS runs: $served new connections served, $failed failed (target 0)"
