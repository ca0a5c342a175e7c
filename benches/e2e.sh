#!/usr/bin/env bash
# End-to-end throughput: one bulk TCP transfer (iperf3) direct on loopback versus through the
# tunnel over each transport (release binaries: tls, h2 and wss on the server's TLS port, ws
# on its ws_bind), in the same run, with the ratios to direct and to tls and the CPU the
# tunnel processes spent per GB moved. Loopback only; kills only what it started.
#
#   benches/e2e.sh                         # 10 s per measurement, every transport
#   SECONDS_PER_RUN=5 TRANSPORTS="tls h2" benches/e2e.sh
#   KEEP_TMP=1 benches/e2e.sh              # keep the configs and logs for a look afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

T="${SECONDS_PER_RUN:-10}"
TRANSPORTS="${TRANSPORTS:-tls h2 wss ws}"

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
    [ -n "${KEEP_TMP:-}" ] && echo "kept $tmp" >&2 || rm -rf "$tmp"
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
wait_closed() {
    local deadline=$((SECONDS + 15))
    while (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "port $1 did not close" >&2; exit 1; }
        sleep 0.05
    done
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

svc=$(free_port); tun=$(free_port); ws=$(free_port)
iperf3 -s -p "$svc" >/dev/null 2>&1 & pids+=($!)
cat >"$tmp/server.toml" <<TOML
bind = "127.0.0.1:$tun"
ws_bind = "127.0.0.1:$ws"
auth_key = "bench"
publish_addr = "127.0.0.1"
stats_bind = ""
TOML
./target/release/tunnel-server --config "$tmp/server.toml" 2>"$tmp/server.log" & srv=$!; pids+=($srv)
wait_port "$tun"; wait_port "$ws"; wait_port "$svc"
fp=$(grep -o 'sha256:[0-9a-f]*' "$tmp/server.log" | head -1)

# Prints "<bits per second> <bytes moved>" for one iperf3 run. The iperf3 server takes one
# test at a time and may still be closing the previous one: retry a few times.
run() {
    local out
    for _ in 1 2 3 4 5; do
        if out=$(iperf3 -c 127.0.0.1 -p "$1" -t "$T" -J $2 | python3 -c '
import json, sys
j = json.load(sys.stdin)
if "error" in j:
    sys.exit(j["error"])
r = j["end"]["sum_received"]
print(r["bits_per_second"], r["bytes"])'); then
            echo "$out"
            return
        fi
        sleep 1
    done
    echo "iperf3 through port $1 kept failing" >&2
    exit 1
}

hz=$(getconf CLK_TCK)
declare -A label=([up]="upload (user → service)" [down]="download (service → user)")
declare -A direct
for dir in up down; do
    read -r direct[$dir] _ < <(run "$svc" "$([ $dir = down ] && echo -R)")
done

printf '| path | direction | Gbit/s | ratio to direct | ratio to tls | tunnel CPU-s per GB |\n'
printf '|---|---|---|---|---|---|\n'
for dir in up down; do
    printf '| direct loopback | %s | %.2f | 1.00 | – | – |\n' "${label[$dir]}" "$(python3 -c "print(${direct[$dir]}/1e9)")"
done

declare -A tls_bps
for t in $TRANSPORTS; do
    pub=$(free_port)
    addr="127.0.0.1:$tun"; [ "$t" = ws ] && addr="127.0.0.1:$ws"
    cat >"$tmp/client-$t.toml" <<TOML
server_addr = "$addr"
server_name = "localhost"
transport = "$t"
auth_key = "bench"
server_fingerprint = "$fp"
id = "bench-$t"
[[proxies]]
name = "iperf"
type = "tcp"
local_addr = "127.0.0.1:$svc"
publish_port = $pub
TOML
    ./target/release/tunnel-client --config "$tmp/client-$t.toml" 2>"$tmp/client-$t.log" & cli=$!; pids+=($cli)
    wait_port "$pub"
    for dir in up down; do
        before=$(( $(cpu_ticks "$srv") + $(cpu_ticks "$cli") ))
        read -r bps bytes < <(run "$pub" "$([ $dir = down ] && echo -R)")
        after=$(( $(cpu_ticks "$srv") + $(cpu_ticks "$cli") ))
        [ "$t" = tls ] && tls_bps[$dir]=$bps
        python3 - "$t" "${label[$dir]}" "${direct[$dir]}" "$bps" "${tls_bps[$dir]:-}" "$bytes" "$((after - before))" "$hz" <<'PY'
import sys
t, d, direct, bps, tls, moved, ticks, hz = sys.argv[1:]
direct, bps, moved, ticks, hz = float(direct), float(bps), float(moved), int(ticks), int(hz)
vs_tls = f"{bps / float(tls):.2f}" if tls else "–"
cpu = (ticks / hz) / (moved / 1e9) if moved else float("nan")
print(f"| tunnel ({t}) | {d} | {bps/1e9:.2f} | {bps/direct:.2f} | {vs_tls} | {cpu:.2f} |")
PY
    done
    kill "$cli"; wait "$cli" 2>/dev/null || true
    wait_closed "$pub"
done

# rathole, the strongest peer, in the same run when a binary is given (install it into a
# scratch directory, never into the repo: `cargo install rathole --root /tmp/rathole`, then
# RATHOLE=/tmp/rathole/bin/rathole benches/e2e.sh). Its `tcp` transport has no encryption;
# its `tls` transport takes a PKCS#12 identity, made here with the openssl command.
if [ -n "${RATHOLE:-}" ]; then
    (cd "$tmp" && openssl req -x509 -newkey rsa:2048 -nodes -keyout rh.key -out rh.crt \
        -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1 &&
        openssl pkcs12 -export -out rh.pfx -inkey rh.key -in rh.crt -passout pass:bench >/dev/null 2>&1)
    for rt in tcp tls; do
        ctrl=$(free_port); pub=$(free_port)
        tls_server=""; tls_client=""
        if [ "$rt" = tls ]; then
            tls_server=$'[server.transport.tls]\npkcs12 = "'"$tmp/rh.pfx"$'"\npkcs12_password = "bench"'
            tls_client=$'[client.transport.tls]\ntrusted_root = "'"$tmp/rh.crt"$'"\nhostname = "localhost"'
        fi
        cat >"$tmp/rh-server-$rt.toml" <<TOML
[server]
bind_addr = "127.0.0.1:$ctrl"
default_token = "bench"
[server.transport]
type = "$rt"
$tls_server
[server.services.iperf]
bind_addr = "127.0.0.1:$pub"
TOML
        cat >"$tmp/rh-client-$rt.toml" <<TOML
[client]
remote_addr = "localhost:$ctrl"
default_token = "bench"
[client.transport]
type = "$rt"
$tls_client
[client.services.iperf]
local_addr = "127.0.0.1:$svc"
TOML
        "$RATHOLE" --server "$tmp/rh-server-$rt.toml" 2>"$tmp/rh-server-$rt.log" & rs=$!; pids+=($rs)
        wait_port "$ctrl"
        "$RATHOLE" --client "$tmp/rh-client-$rt.toml" 2>"$tmp/rh-client-$rt.log" & rc=$!; pids+=($rc)
        wait_port "$pub"
        # rathole opens its data channel lazily: let the first connection through first.
        sleep 1
        for dir in up down; do
            before=$(( $(cpu_ticks "$rs") + $(cpu_ticks "$rc") ))
            read -r bps bytes < <(run "$pub" "$([ $dir = down ] && echo -R)")
            after=$(( $(cpu_ticks "$rs") + $(cpu_ticks "$rc") ))
            python3 - "rathole $rt" "${label[$dir]}" "${direct[$dir]}" "$bps" "${tls_bps[$dir]:-}" "$bytes" "$((after - before))" "$hz" <<'PY'
import sys
t, d, direct, bps, tls, moved, ticks, hz = sys.argv[1:]
direct, bps, moved, ticks, hz = float(direct), float(bps), float(moved), int(ticks), int(hz)
# For rathole rows the ratio column is ours (tls) over rathole: > 1 means we are faster.
vs = f"ours {float(tls) / bps:.2f}×" if tls else "–"
cpu = (ticks / hz) / (moved / 1e9) if moved else float("nan")
print(f"| {t} | {d} | {bps/1e9:.2f} | {bps/direct:.2f} | {vs} | {cpu:.2f} |")
PY
        done
        kill "$rc" "$rs"; wait "$rc" "$rs" 2>/dev/null || true
    done
fi
