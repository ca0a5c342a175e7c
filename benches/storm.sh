#!/usr/bin/env bash
# Login storm (issue #19): CLIENTS sessions (default 10,000, from the `loadgen` example) on one
# release `tunnel-server`; the server is killed (SIGKILL, or SIGTERM with GRACEFUL=1) and
# started again on the same port with the same identity (`state_dir`), and every client must
# notice, reconnect with its own backoff, register again and serve a request through the
# server's virtual host. Prints a markdown table: time until every client was back (from the
# first loss), logins per second the new server sustained, p50/p99/max per client, the new
# server's CPU over the storm, full vs resumed TLS handshakes (`tunnel_handshakes_resumed_total`:
# tickets die with the process, so a restart means full handshakes), the admission refusals
# (pre-auth limits) and whether every session served again, against TARGET_S (default 30).
#
#   benches/storm.sh                           # 10,000 clients
#   CLIENTS=2000 benches/storm.sh
#   SERVER_EXTRA=$'pending_handshakes_per_source = 0' benches/storm.sh
#   BIN_DIR=target/release benches/storm.sh    # prebuilt tunnel-server and examples/loadgen
#   KEEP_TMP=1 benches/storm.sh
#
# All clients come from 127.0.0.1, as behind an L4 balancer: the per-source admission limits
# (`pending_handshakes_per_source`) apply to all of them at once; SERVER_EXTRA changes the
# server's config to compare. Loopback only; kills only what it started; every wait has a
# deadline.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS="${CLIENTS:-10000}"
CONCURRENCY="${CONCURRENCY:-200}"
TARGET_S="${TARGET_S:-30}"
STORM_LIMIT="${STORM_LIMIT:-120}"

. benches/loadgen_setup.sh
# cpu_ticks PID: utime + stime, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
metric() { curl -s "http://127.0.0.1:$stats/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

tun=$(free_port); vhost=$(free_port); stats=$(free_port)
max_clients=$((CLIENTS > 10000 ? CLIENTS + 100 : 10000))
cat >"$tmp/server.toml" <<TOML
bind = "127.0.0.1:$tun"
vhost_http_bind = "127.0.0.1:$vhost"
stats_bind = "127.0.0.1:$stats"
auth_key = "storm-bench-shared-key"
state_dir = "$tmp/state"
publish_addr = "127.0.0.1"
max_clients = $max_clients
${SERVER_EXTRA:-}
TOML
start_server() {
    "$server_bin" --config "$tmp/server.toml" 2>>"$tmp/server.log" & srv=$!; pids+=("$srv")
    wait_port "$tun"; wait_port "$vhost"
}
start_server
fp=$(grep -o 'sha256:[0-9a-f]*' "$tmp/server.log" | head -1)
[ -n "$fp" ] || { echo "no fingerprint in the server log" >&2; exit 1; }

"$loadgen_bin" --clients "$CLIENTS" --server "127.0.0.1:$tun" --vhost "127.0.0.1:$vhost" \
    --fingerprint "$fp" --auth-key storm-bench-shared-key --server-name localhost \
    --concurrency "$CONCURRENCY" --storm "$STORM_LIMIT" \
    >"$tmp/loadgen.out" 2>"$tmp/loadgen.err" & lg=$!; pids+=("$lg")
wait_line "$tmp/loadgen.out" '^storm-armed ' 300 "$lg"

# The restart: the old process goes, a new one takes the same port and identity.
if [ -n "${GRACEFUL:-}" ]; then kill -TERM "$srv"; else kill -KILL "$srv"; fi
wait_exit "$srv" 30 || { echo "the server did not exit" >&2; exit 1; }
start_server
ticks0=$(cpu_ticks "$srv")
wait_line "$tmp/loadgen.out" '^recovered ' $((STORM_LIMIT + 30)) "$lg"
ticks1=$(cpu_ticks "$srv")
resumed=$(metric tunnel_handshakes_resumed_total)
logins=$(metric tunnel_handshake_seconds_count)
refused=$(curl -s "http://127.0.0.1:$stats/metrics" | awk '$1 ~ /^tunnel_preauth_refused_total/ {s += $2} END {print s + 0}')
wait_line "$tmp/loadgen.out" '^rechecked ' 120 "$lg"
kill -TERM "$lg" 2>/dev/null || true
wait_exit "$lg" 60 || true

hz=$(getconf CLK_TCK)
cpu_s=$(awk -v a="$ticks0" -v b="$ticks1" -v hz="$hz" 'BEGIN {printf "%.1f", (b - a) / hz}')
all_back=$(field recovered all_back_s)
back=$(field recovered back)
ok=$(field rechecked ok)
verdict=PASS
why=()
[ "$back" = "$CLIENTS" ] || why+=("only $back of $CLIENTS clients back")
[ "$ok" = "$CLIENTS" ] || why+=("only $ok of $CLIENTS serving again")
awk -v t="$all_back" -v l="$TARGET_S" 'BEGIN {exit !(t <= l)}' || why+=("${all_back} s > ${TARGET_S} s")
[ "${#why[@]}" -eq 0 ] || verdict="FAIL ($(IFS=';'; echo "${why[*]}"))"

echo
echo "load before the storm: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
echo
echo "| metric | value |"
echo "|---|---|"
echo "| clients | $CLIENTS (first connect: $(field connected secs) s, $(field connected rate)/s) |"
echo "| restart | $([ -n "${GRACEFUL:-}" ] && echo SIGTERM || echo SIGKILL), then a new process on the same port |"
echo "| all back (from the first loss) | $all_back s |"
echo "| logins per second (clients / time to all back) | $(field recovered rate) |"
echo "| per client back: p50 / p99 / max | $(field recovered p50_ms) / $(field recovered p99_ms) / $(field recovered max_ms) ms |"
echo "| new server CPU over the storm | $cpu_s s |"
echo "| logins on the new server (resumed TLS) | ${logins:-?} (${resumed:-?}) |"
echo "| pre-auth refusals (admission limits) | $refused |"
echo "| serving again (one request each) | $ok / $CLIENTS in $(field rechecked secs) s |"
echo "| result vs ${TARGET_S} s | $verdict |"
[ "$verdict" = PASS ]
