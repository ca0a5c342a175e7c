#!/usr/bin/env bash
# Idle sessions (issue #8): CLIENTS client sessions (default 10,000) on one release
# `tunnel-server`, started by the `loadgen` example (it embeds the client crate), each proving
# it can serve a stream (one HTTP request per client through the server's virtual host to a
# service behind that client), then held idle while the server's RSS is measured. Prints a
# markdown table and PASS/FAIL against LIMIT_MIB (default 1024) of server RSS.
# Loopback only; kills only what it started; bounded runtime (about 1 minute for 10,000 on
# two cores, build aside; every wait has a deadline, at most about 4.5 minutes in all).
#
#   benches/sessions.sh                             # 10,000 clients
#   CLIENTS=2000 IDLE_SECONDS=5 benches/sessions.sh
#   BIN_DIR=target/release benches/sessions.sh      # skip the build (needs tunnel-server and
#                                                   # examples/loadgen in BIN_DIR)
#   KEEP_TMP=1 benches/sessions.sh                  # keep the config and logs afterwards
#
# Knobs: CONCURRENCY (handshakes in flight, default 200), CHECK_CONCURRENCY (requests in
# flight, default 64), IDLE_SECONDS (idle time after the checks before the second RSS reading,
# default 10: the server pings every session every 10 s), LIMIT_MIB.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS="${CLIENTS:-10000}"
CONCURRENCY="${CONCURRENCY:-200}"
CHECK_CONCURRENCY="${CHECK_CONCURRENCY:-64}"
IDLE_SECONDS="${IDLE_SECONDS:-10}"
LIMIT_MIB="${LIMIT_MIB:-1024}"

. benches/loadgen_setup.sh
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

tun=$(free_port); vhost=$(free_port)
max_clients=$((CLIENTS > 10000 ? CLIENTS + 100 : 10000))
pending=$((CONCURRENCY * 2 > 512 ? CONCURRENCY * 2 : 512))
cat >"$tmp/server.toml" <<TOML
bind = "127.0.0.1:$tun"
vhost_http_bind = "127.0.0.1:$vhost"
auth_key = "sessions-bench"
publish_addr = "127.0.0.1"
stats_bind = ""
max_clients = $max_clients
max_pending_handshakes = $pending
TOML
"$server_bin" --config "$tmp/server.toml" 2>"$tmp/server.log" & srv=$!; pids+=("$srv")
wait_port "$tun"; wait_port "$vhost"
fp=""
deadline=$((SECONDS + 15))
until fp=$(grep -o 'sha256:[0-9a-f]*' "$tmp/server.log" | head -1) && [ -n "$fp" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { echo "no fingerprint in the server log" >&2; exit 1; }
    sleep 0.05
done
rss_before=$(status_kib "$srv" VmRSS)

"$loadgen_bin" --clients "$CLIENTS" --server "127.0.0.1:$tun" --vhost "127.0.0.1:$vhost" \
    --fingerprint "$fp" --auth-key sessions-bench --server-name localhost \
    --concurrency "$CONCURRENCY" --check-concurrency "$CHECK_CONCURRENCY" \
    >"$tmp/loadgen.out" 2>"$tmp/loadgen.err" & lg=$!; pids+=("$lg")
wait_line "$tmp/loadgen.out" '^holding ' 150 "$lg"

rss_checked=$(status_kib "$srv" VmRSS)
fds_server=$(fds "$srv")
# Idle on purpose: every session sees its heartbeats. Sample the server's RSS meanwhile.
rss_idle_max=$rss_checked
end=$((SECONDS + IDLE_SECONDS))
while [ "$SECONDS" -lt "$end" ]; do
    sleep 1
    r=$(status_kib "$srv" VmRSS)
    [ "$r" -gt "$rss_idle_max" ] && rss_idle_max=$r
done
rss_idle=$(status_kib "$srv" VmRSS)
hwm=$(status_kib "$srv" VmHWM)
lg_rss=$(status_kib "$lg" VmRSS)
lg_hwm=$(status_kib "$lg" VmHWM)

# The loadgen checks every session once more, then shuts its clients down.
kill -TERM "$lg"
if ! wait_exit "$lg" 60; then
    echo "loadgen did not stop within 60 s" >&2
    exit 1
fi
lg_rc=0; wait "$lg" || lg_rc=$?
# How much the server gives back once the clients are gone.
deadline=$((SECONDS + 30))
until [ "$(grep -c 'client disconnected' "$tmp/server.log")" -ge "$CLIENTS" ] || [ "$SECONDS" -ge "$deadline" ]; do
    sleep 0.2
done
rss_after=$(status_kib "$srv" VmRSS)

connected=$(grep -c 'client connected' "$tmp/server.log" || true)
ready=$(field connected ready)
checked_ok=$(field checked ok)
rechecked_ok=$(field rechecked ok)
per_session=$(awk -v a="$rss_idle" -v b="$rss_before" -v n="$ready" 'BEGIN {printf "%.1f", n ? (a - b) / n : 0}')
limit_kib=$((LIMIT_MIB * 1024))
verdict=PASS
why=()
[ "$ready" = "$CLIENTS" ] || why+=("only $ready of $CLIENTS clients ready")
[ "$checked_ok" = "$CLIENTS" ] || why+=("only $checked_ok streams ok")
[ "${rechecked_ok:-0}" = "$CLIENTS" ] || why+=("only ${rechecked_ok:-0} streams ok after idle")
[ "$connected" = "$CLIENTS" ] || why+=("$connected sessions opened for $CLIENTS clients (reconnects)")
[ "$rss_idle_max" -lt "$limit_kib" ] || why+=("server RSS $(mib "$rss_idle_max") MiB over $LIMIT_MIB MiB")
[ "$lg_rc" = 0 ] || why+=("loadgen exit code $lg_rc")
[ "${#why[@]}" -eq 0 ] || verdict="FAIL ($(IFS=';'; echo "${why[*]}"))"

echo
echo "| metric | value |"
echo "|---|---|"
echo "| clients (ready / asked) | $ready / $CLIENTS |"
echo "| time to connect all | $(field connected secs) s ($(field connected rate) sessions/s, $CONCURRENCY at once; per client p50 $(field connected p50_ms) ms, p99 $(field connected p99_ms) ms) |"
echo "| streams checked ok (after connect) | $checked_ok / $ready in $(field checked secs) s |"
echo "| streams checked ok (after ${IDLE_SECONDS} s idle) | ${rechecked_ok:-?} / $ready in $(field rechecked secs) s |"
echo "| sessions opened on the server (reconnects if > clients) | $connected |"
echo "| server VmRSS idle, before clients | $(mib "$rss_before") MiB |"
echo "| server VmRSS, all clients connected, after the checks | $(mib "$rss_checked") MiB |"
echo "| server VmRSS, after ${IDLE_SECONDS} s idle (max sampled) | $(mib "$rss_idle") MiB ($(mib "$rss_idle_max") MiB) |"
echo "| server VmHWM (peak, ramp and checks included) | $(mib "$hwm") MiB |"
echo "| server memory per session | $per_session KiB |"
echo "| server fds with all clients | $fds_server |"
echo "| server VmRSS after the clients left | $(mib "$rss_after") MiB |"
echo "| loadgen VmRSS idle (peak) | $(mib "$lg_rss") MiB ($(mib "$lg_hwm") MiB) |"
echo "| result vs $LIMIT_MIB MiB server RSS | $verdict |"
[ "$verdict" = PASS ]
