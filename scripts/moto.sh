#!/usr/bin/env bash
# A local AWS (S3 and Glue) for tests: moto in server mode on a free loopback port.
#
#   scripts/moto.sh start DIR   installs moto[server] from PyPI when missing, starts it, waits
#                               until it answers, prints (and writes to DIR/url) http://127.0.0.1:PORT
#   scripts/moto.sh stop DIR    stops it
#
# Point clients at it with AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL_GLUE and dummy credentials.
set -euo pipefail

MOTO="moto[server]==5.2.1"

start() {
    local dir=$1 port
    mkdir -p "$dir"
    if ! python3 -c 'import moto.server, boto3' 2>/dev/null; then
        echo "moto.sh: installing $MOTO from PyPI" >&2
        python3 -m pip install --quiet --disable-pip-version-check "$MOTO" >&2
    fi
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    python3 -m moto.server -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
    echo $! >"$dir/moto.pid"
    for _ in $(seq 1 100); do
        if python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=0.5)" 2>/dev/null; then
            echo "http://127.0.0.1:$port" | tee "$dir/url"
            return
        fi
        sleep 0.1
    done
    echo "moto.sh: moto did not start; its log:" >&2
    cat "$dir/moto.log" >&2
    exit 1
}

stop() {
    local dir=$1
    if [[ -f "$dir/moto.pid" ]]; then
        kill "$(cat "$dir/moto.pid")" 2>/dev/null || true
        rm -f "$dir/moto.pid"
    fi
}

case "${1:-}" in
start) start "${2:?usage: moto.sh start DIR}" ;;
stop) stop "${2:?usage: moto.sh stop DIR}" ;;
*)
    echo "usage: moto.sh start|stop DIR" >&2
    exit 2
    ;;
esac
