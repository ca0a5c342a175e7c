#!/usr/bin/env bash
# End-to-end throughput: one bulk TCP transfer (iperf3) direct on loopback versus through the
# tunnel (release binaries, TLS transport), in the same run, with the ratio and the CPU the
# tunnel processes spent per GB moved. Loopback only; kills only what it started.
#
#   benches/e2e.sh            # 10 s per measurement
#   SECONDS_PER_RUN=5 benches/e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."

T="${SECONDS_PER_RUN:-10}"

if ! command -v iperf3 >/dev/null 2>&1; then
    echo "installing iperf3" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local deadline=$((SECONDS + 15))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "port $1 did not open" >&2; exit 1; }
        sleep 0.05
    done
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

svc=$(free_port); tun=$(free_port); pub=$(free_port)
iperf3 -s -p "$svc" >/dev/null 2>&1 & pids+=($!)
./target/release/tunnel-server --bind "127.0.0.1:$tun" --publish-addr 127.0.0.1 --auth-key bench \
    2>"$tmp/server.log" & srv=$!; pids+=($srv)
wait_port "$tun"
fp=$(grep -o 'sha256:[0-9a-f]*' "$tmp/server.log" | head -1)
cat >"$tmp/client.toml" <<TOML
server_addr = "127.0.0.1:$tun"
auth_key = "bench"
server_fingerprint = "$fp"
id = "bench"
[[proxies]]
name = "iperf"
type = "tcp"
local_addr = "127.0.0.1:$svc"
publish_port = $pub
TOML
./target/release/tunnel-client --config "$tmp/client.toml" 2>"$tmp/client.log" & cli=$!; pids+=($cli)
wait_port "$svc"; wait_port "$pub"

# Prints "<bits per second> <bytes moved>" for one iperf3 run.
run() {
    iperf3 -c 127.0.0.1 -p "$1" -t "$T" -J $2 | python3 -c '
import json, sys
e = json.load(sys.stdin)["end"]
r = e["sum_received"]
print(r["bits_per_second"], r["bytes"])'
}

hz=$(getconf CLK_TCK)
printf '| path | direction | Gbit/s | ratio to direct | tunnel CPU-s per GB |\n|---|---|---|---|---|\n'
for dir in "" "-R"; do
    name=$([ -z "$dir" ] && echo "upload (user → service)" || echo "download (service → user)")
    read -r direct_bps _ < <(run "$svc" "$dir")
    before=$(( $(cpu_ticks "$srv") + $(cpu_ticks "$cli") ))
    read -r tunnel_bps bytes < <(run "$pub" "$dir")
    after=$(( $(cpu_ticks "$srv") + $(cpu_ticks "$cli") ))
    python3 - "$direct_bps" "$tunnel_bps" "$bytes" "$((after - before))" "$hz" "$name" <<'PY'
import sys
direct, tunnel, moved, ticks, hz, name = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
cpu_per_gb = (ticks / hz) / (moved / 1e9) if moved else float("nan")
print(f"| direct loopback | {name} | {direct/1e9:.2f} | 1.00 | – |")
print(f"| tunnel (TLS) | {name} | {tunnel/1e9:.2f} | {tunnel/direct:.2f} | {cpu_per_gb:.2f} |")
PY
done
