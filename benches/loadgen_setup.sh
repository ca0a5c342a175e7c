# Sourced by the benches that drive many clients with the `loadgen` example against one
# release `tunnel-server` (sessions.sh, storm.sh), after they set CLIENTS: picks or builds the
# binaries, raises the open-file limit, and gives them `$tmp`, `pids` (killed on exit),
# `wait_line`, `wait_exit` and the port helpers of ports.sh.

if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release -q -p tls-tunnel --bins
    cargo build --release -q -p tunnel-client --example loadgen
    BIN_DIR=target/release
fi
server_bin="$BIN_DIR/tunnel-server"
loadgen_bin="$BIN_DIR/examples/loadgen"
[ -x "$loadgen_bin" ] || loadgen_bin="$BIN_DIR/loadgen"
for b in "$server_bin" "$loadgen_bin"; do
    [ -x "$b" ] || { echo "missing $b (build it, or unset BIN_DIR)" >&2; exit 1; }
done

# One socket per session on each side, plus a few hundred for checks and the runtime.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
need=$((CLIENTS + 512))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    echo "open-file limit $(ulimit -n) is below $need: raise ulimit -Hn, or lower CLIENTS" >&2
    exit 1
fi

tmp="$(mktemp -d)"
pids=()
cleanup() {
    # Our own processes only: TERM, a few seconds to finish, then KILL.
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait_exit "$p" 5 || kill -KILL "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP_TMP:-}" ]; then echo "kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

. benches/ports.sh
# wait_line FILE PATTERN SECONDS PID: until a line of FILE matches, while PID lives.
wait_line() {
    local deadline=$((SECONDS + $3))
    until grep -q "$2" "$1" 2>/dev/null; do
        if ! kill -0 "$4" 2>/dev/null; then
            echo "process $4 exited before printing '$2'; its stderr:" >&2
            tail -20 "$tmp/loadgen.err" >&2
            exit 1
        fi
        [ "$SECONDS" -lt "$deadline" ] || { echo "no '$2' within $3 s" >&2; tail -5 "$tmp/loadgen.err" >&2; exit 1; }
        sleep 0.1
    done
}
# wait_exit PID SECONDS: 0 once PID is gone, 1 at the deadline.
wait_exit() {
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}
# field LINE-PREFIX KEY: value of key=value on the loadgen's line starting with LINE-PREFIX.
field() { grep "^$1 " "$tmp/loadgen.out" | tail -1 | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k {print $2}'; }
