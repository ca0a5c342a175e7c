# Sourced by the bench scripts: loopback port helpers.

# A port that was free a moment ago (the OS picked it).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Wait until 127.0.0.1:$1 accepts connections, at most $2 seconds (15 by default); exit the
# script if it never does.
wait_port() {
    local deadline=$((SECONDS + ${2:-15}))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || { echo "port $1 did not open" >&2; exit 1; }
        sleep 0.05
    done
}
