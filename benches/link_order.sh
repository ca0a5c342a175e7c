#!/usr/bin/env bash
# Regenerate bins/tunnel-server/link-order.txt and bins/tunnel-client/link-order.txt: the
# functions each binary runs, phase by phase (start-up, login and registration; traffic both
# ways; the stats endpoint; shutdown), which the release link places side by side at the
# front of .text in that order (see build.rs). A running server then touches
# a few hundred KiB of packed code instead of pages scattered over 8.5 MB; idle RSS drops
# by about 4 MiB (docs/benchmarks.md, "Idle memory").
#
#   benches/link_order.sh               # needs valgrind, iperf3, curl, python3
#   BIN_DIR=target/release benches/link_order.sh   # trace prebuilt binaries
#
# Symbol names in the file survive edits inside a function (a legacy-mangled name's hash comes
# from the crate's metadata and the item's path and, for a generic instance, its type
# arguments, not its code), but changing types many functions are generic over (an error type
# across a crate) re-hashes those instances: regenerate after such changes, a version bump or
# a dependency change. A stale file still links, it just packs less (idle RSS up 1.5 MiB once).
# Runs in about a minute, most of it under callgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind iperf3 curl python3; do
    command -v "$tool" >/dev/null || { echo "link_order.sh needs $tool" >&2; exit 2; }
done
if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release -q -p tls-tunnel --bins
    BIN_DIR=target/release
fi
tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
. benches/ports.sh   # free_port, wait_port
trace() {   # trace NAME CMD...: run CMD under callgrind, names left mangled
    valgrind --tool=callgrind --demangle=no --compress-strings=no --compress-pos=no \
        --callgrind-out-file="$tmp/$1.cg" "${@:2}" >"$tmp/$1.log" 2>&1 &
    pids+=($!)
}

tun=$(free_port) stats=$(free_port) web=$(free_port) svc=$(free_port) pw=$(free_port) pi=$(free_port)
python3 -m http.server "$web" --bind 127.0.0.1 >/dev/null 2>&1 & pids+=($!)
iperf3 -s -p "$svc" >/dev/null 2>&1 & pids+=($!)
cat >"$tmp/server.toml" <<TOML
bind = "127.0.0.1:$tun"
auth_key = "link-order"
publish_addr = "127.0.0.1"
stats_bind = "127.0.0.1:$stats"
TOML
trace server "$BIN_DIR/tunnel-server" --config "$tmp/server.toml"
server=${pids[-1]}
fp=""
for _ in $(seq 600); do
    fp=$(grep -o 'sha256:[0-9a-f]*' "$tmp/server.log" | head -1) && [ -n "$fp" ] && break
    sleep 0.1
done
[ -n "$fp" ] || { echo "the server printed no fingerprint" >&2; exit 1; }
cat >"$tmp/client.toml" <<TOML
server_addr = "127.0.0.1:$tun"
server_name = "localhost"
auth_key = "link-order"
server_fingerprint = "$fp"
id = "link-order"

[[proxies]]
name = "web"
type = "tcp"
local_addr = "127.0.0.1:$web"
publish_port = $pw

[[proxies]]
name = "iperf"
type = "tcp"
local_addr = "127.0.0.1:$svc"
publish_port = $pi
TOML
trace client "$BIN_DIR/tunnel-client" --config "$tmp/client.toml"
client=${pids[-1]}
wait_port "$pw" 60; wait_port "$pi" 60   # callgrind starts slowly
# Each phase's functions go after the earlier phases' (callgrind_control dumps what ran since
# the last dump), so what an idle session needs is packed tightest.
phase() { callgrind_control -d "$server" >/dev/null 2>&1; callgrind_control -d "$client" >/dev/null 2>&1; }
# The iperf3 server takes one test at a time and may still be closing the last one.
iperf() { for _ in 1 2 3 4 5; do timeout 60 iperf3 -c 127.0.0.1 -p "$pi" -n 20M "$@" >/dev/null 2>&1 && return 0; sleep 1; done; return 1; }
sleep 2   # a few heartbeats and timer ticks belong to the idle phase
phase
for _ in 1 2 3 4 5; do curl -sf -o /dev/null "http://127.0.0.1:$pw/"; done
iperf
iperf -R
phase
curl -sf -o /dev/null "http://127.0.0.1:$stats/metrics"
curl -sf -o /dev/null "http://127.0.0.1:$stats/api/stats" || true
phase
# A graceful stop, so shutdown's code is in the file too and callgrind writes its last part.
kill -TERM "$client"; wait "$client" || true
kill -TERM "$server"; wait "$server" || true
for bin in server client; do
    out=bins/tunnel-$bin/link-order.txt
    # Dumps in phase order (NAME.cg.1, .2, ...; the last part at exit is NAME.cg); recursion
    # marks ('2) dropped; first appearance wins.
    for f in $(ls "$tmp/$bin.cg".* | sort -t. -k3 -n) "$tmp/$bin.cg"; do
        [ -f "$f" ] && grep '^fn=' "$f" | sed 's/^fn=//; s/'"'"'[0-9]*$//'
    done | awk '!seen[$0]++' >"$out"
    echo "$out: $(wc -l <"$out") functions"
done
