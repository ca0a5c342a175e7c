#!/usr/bin/env bash
# End to end, side by side (issue #8): the same loopback workloads direct (the baseline),
# through the tunnel over each transport (release binaries: tls, h2 and wss on the server's
# TLS port, ws on its ws_bind) and, when RATHOLE names a rathole binary, through rathole's
# `tcp` and `tls` transports, in one run. Prints one markdown table of measurements, a table
# of ratios (ours over direct, over tunnel (tls), over rathole tcp and tls) and the #8
# targets with the measured ratio and whether each is met.
#
# Per path:
#   1 stream    iperf3, one stream, upload and download (-R), Gbit/s
#   8 streams   iperf3 -P 8, upload and download, Gbit/s
#   CPU-s/GB    utime+stime of the tunnel's server and client processes (/proc/PID/stat) over
#               the two single-stream runs, per GB moved; again over the two 8-stream runs
#   c=1         wrk -t1 -c1 (keep-alive) against nginx serving a 100-byte file: req/s
#   c=200 p99   wrk -t2 -c200 --latency: 99th percentile latency, ms
#   new conns/s wrk -t2 -c50 -H 'Connection: close': req/s = new TCP connections/s
#   RSS         VmRSS of the tunnel's server (and client) idle, then with 200 idle
#               keep-alive connections open through the published port
# Every tunnel (ours and rathole) gets fresh processes, a warm-up (one HTTP request and a
# 1 MB iperf3 transfer: rathole opens its data channels lazily) before the idle RSS is read;
# our own RSS before any traffic is printed in the notes too.
#
#   benches/e2e.sh                                 # 5 s per measurement, every transport
#   RATHOLE=/tmp/rathole-bin/bin/rathole benches/e2e.sh
#   SECONDS_PER_RUN=10 RUNS=3 TRANSPORTS="tls h2" benches/e2e.sh   # medians of 3 runs
#   TRANSPORTS="tls tls:2 tls:4" benches/e2e.sh    # tls with connections = 2 and 4
#   BIN_DIR=/tmp/e2e-bins benches/e2e.sh           # prebuilt tunnel-server/-client, no cargo
#   KEEP_TMP=1 benches/e2e.sh                      # keep configs, logs and raw results
#
# A TRANSPORTS entry `kind:N` runs that transport with `connections = N` in the client (streams
# spread over N TLS connections); the default list has tls:4 beside the four transports.
#
# Runtime: about (7 × SECONDS_PER_RUN + 6 s) × RUNS per path; with the defaults and every
# path (direct, 5 tunnel paths, 2 rathole) about 6 minutes, plus the build. Loopback only;
# installs iperf3, wrk, nginx (and curl, openssl) with apt-get when missing; kills only the
# processes it started.
set -euo pipefail
t_start=$SECONDS
# RATHOLE and BIN_DIR may be relative to where the script was started from.
abs() { case "$1" in /*) echo "$1" ;; */*) echo "$PWD/$1" ;; *) command -v "$1" || echo "$1" ;; esac; }
[ -z "${RATHOLE:-}" ] || RATHOLE=$(abs "$RATHOLE")
[ -z "${BIN_DIR:-}" ] || BIN_DIR=$(abs "$BIN_DIR/")
cd "$(dirname "$0")/.."

T="${SECONDS_PER_RUN:-5}"
RUNS="${RUNS:-1}"
TRANSPORTS="${TRANSPORTS:-tls h2 wss ws tls:4}"
HOLD=200            # connections held open for the loaded RSS reading
case "$T$RUNS" in *[!0-9]*) echo "SECONDS_PER_RUN and RUNS must be whole numbers" >&2; exit 2 ;; esac
if [ "$T" -lt 1 ] || [ "$RUNS" -lt 1 ]; then echo "SECONDS_PER_RUN and RUNS must be >= 1" >&2; exit 2; fi
for entry in $TRANSPORTS; do
    case "$entry" in
        tls | h2 | wss | ws) ;;
        tls:[1-9] | h2:[1-9] | wss:[1-9] | ws:[1-9] | tls:1[0-6] | h2:1[0-6] | wss:1[0-6] | ws:1[0-6]) ;;
        *) echo "unknown transport '$entry' in TRANSPORTS (tls, h2, wss, ws, or one of them:N with N connections, 1-16)" >&2; exit 2 ;;
    esac
done
if [ -n "${RATHOLE:-}" ] && [ ! -x "$RATHOLE" ]; then
    echo "RATHOLE=$RATHOLE is not an executable" >&2; exit 2
fi

need=()
command -v iperf3 >/dev/null 2>&1 || need+=(iperf3)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -z "${RATHOLE:-}" ] || command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ -n "${BIN_DIR:-}" ]; then
    for b in tunnel-server tunnel-client; do
        [ -x "$BIN_DIR/$b" ] || { echo "BIN_DIR=$BIN_DIR has no executable $b" >&2; exit 2; }
    done
else
    cargo build --release --bins -q
    BIN_DIR=target/release
fi
BIN_DIR=$(cd "$BIN_DIR" && pwd)
t_bench=$SECONDS

# Enough descriptors for c=200 through two processes (the hard limit is not raised).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

tmp="$(mktemp -d)"
pids=()
declare -A logs=()
# Stops the given processes (ours only: every pid comes from `spawn`): TERM, then KILL after
# 5 s, and forgets them.
stop() {
    local p q deadline=$((SECONDS + 5)) keep=()
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for p in "$@"; do
        while kill -0 "$p" 2>/dev/null; do
            [ "$SECONDS" -lt "$deadline" ] || kill -9 "$p" 2>/dev/null || true
            sleep 0.05
        done
        wait "$p" 2>/dev/null || true
    done
    for q in ${pids[@]+"${pids[@]}"}; do
        [[ " $* " == *" $q "* ]] || keep+=("$q")
    done
    pids=(${keep[@]+"${keep[@]}"})
}
cleanup() {
    trap - EXIT INT TERM
    stop ${pids[@]+"${pids[@]}"}
    if [ -n "${KEEP_TMP:-}" ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Drop a binary's pages from the page cache so it starts as after a reboot. How much of its
# code the kernel maps (and so RSS) depends on what the page cache holds and in what folio
# sizes, which depends on how the file was last written or read: a freshly linked binary and
# a copy of it showed 1 MiB apart. Evicting both ours and rathole's makes the RSS rows fair.
cold_start() { python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1" 2>/dev/null || true; }

# spawn LOG CMD...: starts CMD in the background with its output in LOG; its pid in $LAST.
spawn() {
    local log=$1
    shift
    case "$1" in */tunnel-server | */tunnel-client | "${RATHOLE:-/nonexistent}") cold_start "$1" ;; esac
    "$@" >"$log" 2>&1 &
    LAST=$!
    pids+=("$LAST")
    logs[$LAST]=$log
}
note() { echo "$*" >>"$tmp/notes"; echo "note: $*" >&2; }
rec() { echo "$1 $2 $3" >>"$tmp/results"; }   # path metric value (one line per run)

. benches/ports.sh
# Waits (15 s at most) until something listens on 127.0.0.1:PORT. Reads /proc/net/tcp rather
# than connecting: a probe connection to a published port would travel the tunnel and reach
# the service (iperf3 would take it for a test).
listening() {
    awk -v p="$(printf ':%04X' "$1")" '$4 == "0A" && substr($2, length($2) - 4) == p { f = 1 }
        END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
wait_listen() {   # PORT WHAT [PIDS that must stay alive meanwhile...]
    local port=$1 what=$2 deadline=$((SECONDS + 15)) p
    shift 2
    until listening "$port"; do
        for p in "$@"; do
            kill -0 "$p" 2>/dev/null || { note "$what: exited before port $port opened: $(tail -1 "${logs[$p]:-/dev/null}")"; return 1; }
        done
        [ "$SECONDS" -lt "$deadline" ] || { note "$what: nothing listens on port $port after 15 s"; return 1; }
        sleep 0.05
    done
}
cpu_ticks() {   # "utime+stime stime" (fields 14, 15) of the pids, summed; comm may hold spaces
    local p sum=0 sys=0 f
    for p in "$@"; do
        f=$(sed 's/.*) //' "/proc/$p/stat") || return 1
        read -ra f <<<"$f"
        sum=$((sum + f[11] + f[12])); sys=$((sys + f[12]))
    done
    echo "$sum $sys"
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
per_gb() { awk -v t="$1" -v hz="$hz" -v b="$2" 'BEGIN { print (t / hz) / (b / 1e9) }'; }   # TICKS BYTES: CPU-s per GB
hz=$(getconf CLK_TCK)

# iperf PATH PORT STREAMS up|down: prints "<bits per second> <bytes moved>". The iperf3
# server takes one test at a time and may still be closing the previous one: retry.
iperf() {
    local out r args=(-c 127.0.0.1 -p "$2" -t "$T" -P "$3" -J)
    [ "$4" = down ] && args+=(-R)
    for r in 1 2 3 4 5; do
        if out=$(timeout $((T + 20)) iperf3 "${args[@]}" 2>/dev/null | python3 -c '
import json, sys
j = json.load(sys.stdin)
if "error" in j:
    sys.exit(j["error"])
r = j["end"]["sum_received"]
print(r["bits_per_second"], int(r["bytes"]))' 2>"$tmp/iperf.err"); then
            echo "$out"
            return
        fi
        sleep 1
    done
    note "$1: iperf3 -P $3 $4 through port $2 failed 5 times ($(tail -1 "$tmp/iperf.err"))"
    return 1
}

# wrk_run PATH WHAT PORT WRK-ARGS...: prints "<req/s> <p99 ms>"; socket errors and non-2xx
# answers go to the notes.
wrk_run() {
    local path=$1 what=$2 port=$3 out rps p99 errs
    shift 3
    if ! out=$(timeout $((T + 30)) wrk -d"${T}s" --latency --timeout 5s "$@" \
        "http://127.0.0.1:$port/s.txt" 2>&1); then
        note "$path: wrk $what failed: $(tail -1 <<<"$out")"
        return 1
    fi
    errs=$(grep -E 'Socket errors|Non-2xx' <<<"$out" | sed 's/^ *//' | paste -sd ';' -) || true
    [ -z "$errs" ] || note "$path: wrk $what: $errs"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { v = $2
        if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v) }
        else if (v ~ /m$/) { sub(/m$/, "", v); v *= 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }
        print v }' <<<"$out")
    if [ -z "$rps" ] || [ -z "$p99" ] || awk -v r="$rps" 'BEGIN { exit !(r <= 0) }'; then
        note "$path: wrk $what: no requests completed ($(tail -1 <<<"$out"))"
        return 1
    fi
    echo "$rps $p99"
}

# measure PATH IPERF-PORT HTTP-PORT [TUNNEL-PIDS...]: every throughput/latency metric, RUNS
# times; with pids, also the CPU those processes spend per GB over the one- and the
# eight-stream runs, and the kernel part of it.
measure() {
    local path=$1 ip=$2 hp=$3 r n c dir bps bytes b0 b1 k0 k1 ticks kticks moved rps p99 out p
    shift 3
    for ((r = 1; r <= RUNS; r++)); do
        for n in 1 8; do   # metrics cpu (one stream) and cpu8, each with its kernel part
            ticks=0; kticks=0; moved=0
            for dir in up down; do
                read -r b0 k0 <<<"$( (($# > 0)) && cpu_ticks "$@" || echo 0 0)"
                out=$(iperf "$path" "$ip" "$n" "$dir") || continue
                read -r b1 k1 <<<"$( (($# > 0)) && cpu_ticks "$@" || echo 0 0)"
                read -r bps bytes <<<"$out"
                rec "$path" "up${n}_$dir" "$bps"
                ticks=$((ticks + b1 - b0)); kticks=$((kticks + k1 - k0)); moved=$((moved + bytes))
            done
            if (($# > 0 && moved > 0)); then
                c=cpu; ((n == 1)) || c=cpu$n
                rec "$path" "$c" "$(per_gb "$ticks" "$moved")"
                rec "$path" "${c}_kernel" "$(per_gb "$kticks" "$moved")"
            fi
        done
        if out=$(wrk_run "$path" "c=1" "$hp" -t1 -c1); then
            read -r rps p99 <<<"$out"; rec "$path" c1 "$rps"
        fi
        if out=$(wrk_run "$path" "c=200" "$hp" -t2 -c200); then
            read -r rps p99 <<<"$out"; rec "$path" p99 "$p99"; rec "$path" c200 "$rps"
        fi
        if out=$(wrk_run "$path" "Connection: close" "$hp" -t2 -c50 -H 'Connection: close'); then
            read -r rps p99 <<<"$out"; rec "$path" ncps "$rps"
        fi
    done
    if (($# > 0)); then
        for p in "$@"; do kill -0 "$p" 2>/dev/null || note "$path: process $p died during the run"; done
    fi
}

# warm_and_rss PATH IPERF-PORT HTTP-PORT SERVER-PID CLIENT-PID: the warm-up, then the idle
# RSS and the RSS with HOLD connections open.
warm_and_rss() {
    local path=$1 ip=$2 hp=$3 sp=$4 cp=$5 r ok=""
    rec "$path" rss_pre_s "$(rss_kb "$sp")"; rec "$path" rss_pre_c "$(rss_kb "$cp")"
    for r in 1 2 3; do
        curl -sf --max-time 10 -o /dev/null "http://127.0.0.1:$hp/s.txt" && { ok=1; break; }
        sleep 0.5
    done
    [ -n "$ok" ] || note "$path: warm-up HTTP request through port $hp failed"
    ok=""
    for r in 1 2 3 4 5; do
        timeout 20 iperf3 -c 127.0.0.1 -p "$ip" -n 1M >/dev/null 2>&1 && { ok=1; break; }
        sleep 1
    done
    [ -n "$ok" ] || note "$path: warm-up iperf3 through port $ip failed"
    sleep 0.5
    rec "$path" rss_idle_s "$(rss_kb "$sp")"; rec "$path" rss_idle_c "$(rss_kb "$cp")"
    local out
    if out=$(timeout 60 python3 "$tmp/hold.py" "$hp" "$HOLD" "$sp" "$cp" 2>&1); then
        read -r s c <<<"$out"
        rec "$path" rss_hold_s "$s"; rec "$path" rss_hold_c "$c"
    else
        note "$path: holding $HOLD connections failed: $(tail -1 <<<"$out")"
    fi
    sleep 0.5   # let the tunnel tear the held connections down before the measurements
}

cat >"$tmp/hold.py" <<'PY'
# hold.py PORT N SERVER-PID CLIENT-PID: opens N connections, one keep-alive request each,
# keeps them open, prints the two VmRSS values (kB), then closes them.
import socket, sys, time
port, n, pids = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return line.split()[1]
socks = []
try:
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=15)
        s.sendall(b"GET /s.txt HTTP/1.1\r\nHost: bench\r\n\r\n")
        socks.append(s)
    for i, s in enumerate(socks):
        buf = b""
        while True:
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                length = next((int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")
                               if l.lower().startswith(b"content-length:")), 0)
                if len(body) >= length:
                    break
            chunk = s.recv(65536)
            if not chunk:
                sys.exit(f"connection {i} closed before its answer")
            buf += chunk
        if not buf.startswith(b"HTTP/1.1 200"):
            status = buf.split(b"\r\n")[0].decode(errors="replace")
            sys.exit(f"connection {i}: {status}")
    time.sleep(0.5)
    print(*(rss(p) for p in pids))
finally:
    for s in socks:
        s.close()
PY

# The services: iperf3 and nginx with a 100-byte file, both on loopback.
svc=$(free_port); web=$(free_port)
mkdir -p "$tmp/www"
head -c 99 /dev/zero | tr '\0' x >"$tmp/www/s.txt"; echo >>"$tmp/www/s.txt"
cat >"$tmp/nginx.conf" <<CONF
$([ "$(id -u)" = 0 ] && echo "user root;")
worker_processes ${NGINX_WORKERS:-1};
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp; proxy_temp_path $tmp; fastcgi_temp_path $tmp;
    uwsgi_temp_path $tmp; scgi_temp_path $tmp;
    keepalive_requests 100000;
    server { listen 127.0.0.1:$web; root $tmp/www; }
}
CONF
spawn "$tmp/iperf3.log" iperf3 -s -p "$svc"
spawn "$tmp/nginx.log" nginx -p "$tmp" -e "$tmp/nginx-error.log" -c "$tmp/nginx.conf" -g 'daemon off;'
wait_listen "$svc" iperf3 "${pids[0]}" && wait_listen "$web" nginx "${pids[1]}" || exit 1
curl -sf --max-time 5 -o /dev/null "http://127.0.0.1:$web/s.txt" || { echo "nginx does not serve" >&2; exit 1; }

# measure_tunnel PATH IPERF-PORT WEB-PORT SERVER-PID CLIENT-PID: once the published ports are
# open (the client has registered), warm up, read RSS and measure PATH; then stop both.
measure_tunnel() {
    local path=$1 pi=$2 ph=$3 srv=$4 cli=$5
    if wait_listen "$pi" "$path client" "$srv" "$cli" && wait_listen "$ph" "$path client" "$srv" "$cli"; then
        paths+=("$path")
        warm_and_rss "$path" "$pi" "$ph" "$srv" "$cli"
        measure "$path" "$pi" "$ph" "$srv" "$cli"
    fi
    stop "$cli" "$srv"
}

paths=(direct)
progress() { echo "[$((SECONDS - t_bench)) s] $*" >&2; }
progress "direct loopback"
measure direct "$svc" "$web"

for entry in $TRANSPORTS; do
    t=${entry%%:*}
    conns=1
    case "$entry" in *:*) conns=${entry#*:} ;; esac
    path="tunnel-$entry"
    progress "tunnel ($entry)"
    tun=$(free_port); ws=$(free_port); pi=$(free_port); ph=$(free_port)
    cat >"$tmp/server-$entry.toml" <<TOML
bind = "127.0.0.1:$tun"
ws_bind = "127.0.0.1:$ws"
auth_key = "bench"
publish_addr = "127.0.0.1"
stats_bind = ""
TOML
    spawn "$tmp/server-$entry.log" "$BIN_DIR/tunnel-server" --config "$tmp/server-$entry.toml"; srv=$LAST
    if ! { wait_listen "$tun" "$path server" "$srv" && wait_listen "$ws" "$path server" "$srv"; }; then
        stop "$srv"; continue
    fi
    fp=""
    for _ in $(seq 100); do
        fp=$(grep -o 'sha256:[0-9a-f]*' "$tmp/server-$entry.log" | head -1) && [ -n "$fp" ] && break
        sleep 0.05
    done
    [ -n "$fp" ] || { note "$path: no fingerprint in the server log"; stop "$srv"; continue; }
    addr="127.0.0.1:$tun"; [ "$t" = ws ] && addr="127.0.0.1:$ws"
    cat >"$tmp/client-$entry.toml" <<TOML
server_addr = "$addr"
connections = $conns
server_name = "localhost"
transport = "$t"
auth_key = "bench"
server_fingerprint = "$fp"
id = "bench-$t"

[[proxies]]
name = "iperf"
type = "tcp"
local_addr = "127.0.0.1:$svc"
publish_port = $pi

[[proxies]]
name = "web"
type = "tcp"
local_addr = "127.0.0.1:$web"
publish_port = $ph
TOML
    spawn "$tmp/client-$entry.log" "$BIN_DIR/tunnel-client" --config "$tmp/client-$entry.toml"; cli=$LAST
    measure_tunnel "$path" "$pi" "$ph" "$srv" "$cli"
done

# rathole, the strongest peer, when a binary is given (install it into a scratch directory,
# never into the repo: `cargo install rathole --root /tmp/rathole-bin`, then
# RATHOLE=/tmp/rathole-bin/bin/rathole benches/e2e.sh). Its `tcp` transport has no
# encryption; its `tls` transport takes a PKCS#12 identity, made here with openssl.
if [ -n "${RATHOLE:-}" ]; then
    (cd "$tmp" && openssl req -x509 -newkey rsa:2048 -nodes -keyout rh.key -out rh.crt \
        -days 1 -subj /CN=localhost -addext subjectAltName=DNS:localhost >/dev/null 2>&1 &&
        openssl pkcs12 -export -out rh.pfx -inkey rh.key -in rh.crt -passout pass:bench >/dev/null 2>&1) ||
        note "openssl could not make rathole's TLS identity"
    for rt in tcp tls; do
        path="rathole-$rt"
        progress "rathole $rt"
        ctrl=$(free_port); pi=$(free_port); ph=$(free_port)
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
bind_addr = "127.0.0.1:$pi"
[server.services.web]
bind_addr = "127.0.0.1:$ph"
TOML
        cat >"$tmp/rh-client-$rt.toml" <<TOML
[client]
remote_addr = "127.0.0.1:$ctrl"
default_token = "bench"
[client.transport]
type = "$rt"
$tls_client
[client.services.iperf]
local_addr = "127.0.0.1:$svc"
[client.services.web]
local_addr = "127.0.0.1:$web"
TOML
        spawn "$tmp/rh-server-$rt.log" "$RATHOLE" --server "$tmp/rh-server-$rt.toml"; rs=$LAST
        wait_listen "$ctrl" "$path server" "$rs" || { stop "$rs"; continue; }
        spawn "$tmp/rh-client-$rt.log" "$RATHOLE" --client "$tmp/rh-client-$rt.toml"; rc=$LAST
        measure_tunnel "$path" "$pi" "$ph" "$rs" "$rc"
    done
fi
stop ${pids[@]+"${pids[@]}"}

rh_version=""
[ -z "${RATHOLE:-}" ] || rh_version=$("$RATHOLE" --version 2>/dev/null | awk '/Build Version/ { print $3 }') || true
touch "$tmp/results" "$tmp/notes"
python3 - "$tmp/results" "$tmp/notes" "$T" "$RUNS" "$rh_version" "${paths[@]}" <<'PY'
import statistics, sys
results, notes_file, secs, runs, rh_version, *paths = sys.argv[1:]
vals = {}
for line in open(results):
    try:
        p, m, v = line.split()
        vals.setdefault((p, m), []).append(float(v))
    except ValueError:
        pass
def med(p, m):
    v = vals.get((p, m))
    return statistics.median(v) if v else None

LABEL = {"direct": "direct loopback"}
for p in paths:
    if p.startswith("tunnel-") and ":" in p:
        kind, n = p[7:].split(":")
        LABEL[p] = f"tunnel ({kind}, {n} connections)"
    elif p.startswith("tunnel-"):
        LABEL[p] = f"tunnel ({p[7:]})"
    elif p.startswith("rathole-"):
        LABEL[p] = f"rathole {p[8:]}"
NA = "–"
def fmt(v, f):
    return NA if v is None else format(v, f)
def none_sub(a, b):
    return None if a is None or b is None else a - b
def pair(a, b, f):
    return NA if a is None and b is None else f"{fmt(a, f)} / {fmt(b, f)}"

# Each metric: (column title, [(metric, scale)], format, higher is better)
COLS = [
    ("1 stream Gbit/s up / down", [("up1_up", 1e-9), ("up1_down", 1e-9)], ".2f", True),
    ("8 streams Gbit/s up / down", [("up8_up", 1e-9), ("up8_down", 1e-9)], ".2f", True),
    ("CPU-s per GB 1 / 8 streams", [("cpu", 1), ("cpu8", 1)], ".2f", False),
    ("c=1 req/s", [("c1", 1)], ".0f", True),
    ("c=200 p99 ms", [("p99", 1)], ".2f", False),
    ("new conns/s", [("ncps", 1)], ".0f", True),
    ("server RSS MiB idle / 200 conns", [("rss_idle_s", 1 / 1024), ("rss_hold_s", 1 / 1024)], ".1f", False),
    ("client RSS MiB idle / 200 conns", [("rss_idle_c", 1 / 1024), ("rss_hold_c", 1 / 1024)], ".1f", False),
]
def value(p, m, scale):
    v = med(p, m)
    return None if v is None else v * scale
def cell(p, metrics, f):
    vs = [value(p, m, s) for m, s in metrics]
    return fmt(vs[0], f) if len(vs) == 1 else pair(*vs, f)
def ratio(p, q, m):
    a, b = med(p, m), med(q, m)
    return None if a is None or b is None or b == 0 else a / b
def rcell(p, q, metrics):
    rs = [ratio(p, q, m) for m, _ in metrics]
    return fmt(rs[0], ".2f") if len(rs) == 1 else pair(*rs, ".2f")

runs = int(runs)
print()
print(f"### End to end, {secs} s per measurement" + (f", medians of {runs} runs" if runs > 1 else ""))
print()
print("| path | " + " | ".join(c[0] for c in COLS) + " |")
print("|---" * (len(COLS) + 1) + "|")
for p in paths:
    print(f"| {LABEL[p]} | " + " | ".join(cell(p, c[1], c[2]) for c in COLS) + " |")

ours = [p for p in paths if p.startswith("tunnel-")]
refs = [q for q in ("rathole-tcp", "rathole-tls") if q in paths]
rows = []
for q in refs:
    rows += [(p, q) for p in ours]
if "tunnel-tls" in paths:
    rows += [(p, "tunnel-tls") for p in ours if p != "tunnel-tls"]
rows += [(p, "direct") for p in ours if "direct" in paths]
if rows:
    print()
    print("Ratios, ours ÷ reference (> 1 is better for Gbit/s, req/s and conns/s; "
          "< 1 is better for CPU, p99 and RSS):")
    print()
    print("| ratio | " + " | ".join(c[0].replace(" Gbit/s", "").replace(" ms", "")
                                   .replace(" MiB", "") for c in COLS) + " |")
    print("|---" * (len(COLS) + 1) + "|")
    for p, q in rows:
        print(f"| {LABEL[p]} ÷ {LABEL[q]} | " + " | ".join(rcell(p, q, c[1]) for c in COLS) + " |")

# The targets of issues #8 and #19; "ours" is the tls transport unless named.
TARGETS = [
    ("1 stream, tls ≥ 1.3× rathole tls", "tunnel-tls", "rathole-tls", ["up1_up", "up1_down"], 1.3, True),
    ("1 stream, tls ≥ 1.0× rathole tcp", "tunnel-tls", "rathole-tcp", ["up1_up", "up1_down"], 1.0, True),
    ("CPU-s per GB, tls ≤ rathole tcp", "tunnel-tls", "rathole-tcp", ["cpu"], 1.0, False),
    ("8 streams, tls ≥ 0.9× rathole tcp (#19; #8 asked 1.0×)", "tunnel-tls", "rathole-tcp", ["up8_up", "up8_down"], 0.9, True),
    ("8 streams, tls ≥ 1.3× rathole tls", "tunnel-tls", "rathole-tls", ["up8_up", "up8_down"], 1.3, True),
    ("new conns/s, tls ≥ 1.0× rathole tcp", "tunnel-tls", "rathole-tcp", ["ncps"], 1.0, True),
    ("c=1 req/s, tls ≥ rathole tcp", "tunnel-tls", "rathole-tcp", ["c1"], 1.0, True),
    ("c=200 p99, tls ≤ 2× direct", "tunnel-tls", "direct", ["p99"], 2.0, False),
    ("server RSS idle, tls ≤ rathole tcp", "tunnel-tls", "rathole-tcp", ["rss_idle_s"], 1.0, False),
    ("server RSS 200 conns, tls ≤ rathole tcp", "tunnel-tls", "rathole-tcp", ["rss_hold_s"], 1.0, False),
]
for t in ("h2", "wss"):
    TARGETS += [
        (f"1 stream, {t} ≥ 0.8× tls", f"tunnel-{t}", "tunnel-tls", ["up1_up", "up1_down"], 0.8, True),
        (f"8 streams, {t} ≥ 0.8× tls", f"tunnel-{t}", "tunnel-tls", ["up8_up", "up8_down"], 0.8, True),
    ]
# Streams spread over several connections: the multi-stream targets again.
for p in paths:
    if p.startswith("tunnel-tls:"):
        n = p.split(":")[1]
        TARGETS += [
            (f"8 streams, tls with connections = {n} ≥ 0.9× rathole tcp", p, "rathole-tcp", ["up8_up", "up8_down"], 0.9, True),
        ]
# Per-byte cost independent of the stream count (#19): 8 streams within 5 % of one, on one
# connection and spread over several. A ratio of one path's two metrics, so `ratio` does not fit.
def self_ratio(p, a, b):
    x, y = med(p, a), med(p, b)
    return None if x is None or y is None or y == 0 else x / y
for p in paths:
    if p == "tunnel-tls" or p.startswith("tunnel-tls:"):
        what = "one connection" if p == "tunnel-tls" else f"connections = {p.split(':')[1]}"
        TARGETS += [(f"CPU-s per GB, 8 streams ≤ 1.05× 1 stream, tls on {what}", p, None, ["cpu8", "cpu"], 1.05, False)]
print()
print("Targets (issues #8 and #19):")
print()
print("| target | measured ratio | verdict |")
print("|---|---|---|")
met = total = 0
for name, p, q, metrics, bound, higher in TARGETS:
    rs = [self_ratio(p, *metrics)] if q is None else [ratio(p, q, m) for m in metrics]
    if any(r is None for r in rs):
        print(f"| {name} | {NA} | not measured |")
        continue
    ok = all(r >= bound if higher else r <= bound for r in rs)
    total += 1
    met += ok
    shown = " / ".join(f"{r:.2f}×" for r in rs) + (" (up / down)" if len(rs) == 2 else "")
    print(f"| {name} | {shown} | {'met' if ok else '**not met**'} |")
print()
print(f"{met} of {total} measured targets met.")

print()
print("Notes:")
print(f"- loopback; iperf3 and wrk {secs} s each; nginx serving a 100-byte file; "
      "RSS readings after a warm-up (one HTTP request and a 1 MB iperf3 transfer), "
      "the 200-connection reading with 200 idle keep-alive connections open through the published port"
      + (f"; rathole {rh_version}" if rh_version else ""))
pre = [f"{LABEL[p]} {fmt(value(p, 'rss_pre_s', 1/1024), '.1f')} / {fmt(value(p, 'rss_pre_c', 1/1024), '.1f')}"
       for p in paths if p != "direct"]
if pre:
    print("- RSS MiB server / client right after registration, before any traffic: " + "; ".join(pre))
c200 = [f"{LABEL[p]} {fmt(med(p, 'c200'), '.0f')}" for p in paths]
print("- c=200 req/s: " + "; ".join(c200))
# Where the CPU per GB goes: a ratio that grows in kernel time alone is the kernel's work on
# more sockets, not per-stream work of the tunnel's own (docs/benchmarks.md, issue #19).
split = [f"{LABEL[p]} {fmt(med(p, 'cpu_kernel'), '.2f')} + {fmt(none_sub(med(p, 'cpu'), med(p, 'cpu_kernel')), '.2f')}"
         f" / {fmt(med(p, 'cpu8_kernel'), '.2f')} + {fmt(none_sub(med(p, 'cpu8'), med(p, 'cpu8_kernel')), '.2f')}"
         for p in paths if med(p, "cpu") is not None]
if split:
    print("- CPU-s per GB, kernel + user space, 1 / 8 streams (both tunnel processes): " + "; ".join(split))
for line in open(notes_file):
    print("- " + line.rstrip())
PY
echo
echo "Total time: $((SECONDS - t_start)) s ($((SECONDS - t_bench)) s measuring)"
