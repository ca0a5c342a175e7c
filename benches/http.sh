#!/usr/bin/env bash
# HTTP through the tunnel: wrk against a small local HTTP service (nginx answering a fixed
# 13-byte body) direct on loopback, through a `tcp` proxy and through an `http` proxy, in
# one run, with requests/s and p99 latency and their ratios to direct. Release binaries;
# loopback only; bounded runtime (3 × SECONDS_PER_RUN plus start-up); kills only what it
# started.
#
#   benches/http.sh                              # 10 s per measurement, 50 connections
#   SECONDS_PER_RUN=5 CONNECTIONS=20 benches/http.sh
set -euo pipefail
cd "$(dirname "$0")/.."

T="${SECONDS_PER_RUN:-10}"
C="${CONNECTIONS:-50}"

need=()
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --bins -q

tmp="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

. benches/ports.sh

svc=$(free_port); tun=$(free_port); ptcp=$(free_port); phttp=$(free_port)
cat >"$tmp/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp; proxy_temp_path $tmp; fastcgi_temp_path $tmp;
    uwsgi_temp_path $tmp; scgi_temp_path $tmp;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$svc; location / { return 200 "hello, bench\n"; } }
}
CONF
nginx -p "$tmp" -c "$tmp/nginx.conf" & pids+=($!)

cat >"$tmp/server.toml" <<TOML
bind = "127.0.0.1:$tun"
auth_key = "bench"
publish_addr = "127.0.0.1"
stats_bind = ""
max_streams_per_client = 4096
TOML
./target/release/tunnel-server --config "$tmp/server.toml" 2>"$tmp/server.log" & pids+=($!)
wait_port "$tun"; wait_port "$svc"
fp=$(grep -o 'sha256:[0-9a-f]*' "$tmp/server.log" | head -1)
cat >"$tmp/client.toml" <<TOML
server_addr = "127.0.0.1:$tun"
auth_key = "bench"
server_fingerprint = "$fp"
id = "bench"

[[proxies]]
name = "tcp"
type = "tcp"
local_addr = "127.0.0.1:$svc"
publish_port = $ptcp

[[proxies]]
name = "http"
type = "http"
local_addr = "127.0.0.1:$svc"
publish_port = $phttp
max_local_conns = 16
TOML
./target/release/tunnel-client --config "$tmp/client.toml" 2>"$tmp/client.log" & pids+=($!)
wait_port "$ptcp"; wait_port "$phttp"

# Prints "<requests/s> <p99 in ms>" for one wrk run.
measure() {
    local out rps p99
    out=$(wrk -t2 -c"$C" -d"${T}s" --latency --timeout 5s "http://127.0.0.1:$1/")
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$out")
    if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
        grep 'Non-2xx\|Socket errors' <<<"$out" | sed "s/^/  port $1: /" >&2
    fi
    echo "$rps $p99"
}

read -r d_rps d_p99 < <(measure "$svc")
read -r t_rps t_p99 < <(measure "$ptcp")
read -r h_rps h_p99 < <(measure "$phttp")
printf '%-12s %12s %10s %12s %12s\n' path "req/s" "p99 ms" "req/s ratio" "p99 ratio"
row() { awk -v n="$1" -v r="$2" -v p="$3" -v dr="$d_rps" -v dp="$d_p99" \
    'BEGIN { printf "%-12s %12.0f %10.2f %12.3f %12.2f\n", n, r, p, r/dr, p/dp }'; }
row direct "$d_rps" "$d_p99"
row tcp-proxy "$t_rps" "$t_p99"
row http-proxy "$h_rps" "$h_p99"
echo "($C connections, ${T}s each, wrk -t2; loopback; ratios are to direct)"
