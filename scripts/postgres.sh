#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster on a free loopback port, for tests and benchmarks.
#
#   scripts/postgres.sh start DIR   installs Debian's `postgresql` package when the binaries are
#                                   missing, runs initdb in DIR/data, starts the server, creates
#                                   the database `riskflow`, and prints (and writes to DIR/url)
#                                   postgres://riskflow@127.0.0.1:PORT/riskflow
#   scripts/postgres.sh stop DIR    stops the server and removes DIR
#   scripts/postgres.sh pause DIR   stops the server but keeps its data (an outage)
#   scripts/postgres.sh resume DIR  starts it again on the same port
#
# PostgreSQL refuses to run as root: as root, the server runs as the `postgres` user, and its
# files live in a directory that user can reach (DIR/cluster names it).
set -euo pipefail

pg_bindir() {
    local dir
    for dir in "${PG_BINDIR:-}" /usr/lib/postgresql/15/bin; do
        if [[ -n "$dir" && -x "$dir/initdb" ]]; then
            echo "$dir"
            return
        fi
    done
    if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then
        pg_config --bindir
        return
    fi
    echo "postgres.sh: installing Debian's postgresql package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
    ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Runs a command as the cluster's owner.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

server_start() {
    local dir=$1 bin port cluster
    bin=$(cat "$dir/bindir")
    port=$(cat "$dir/port")
    cluster=$(cat "$dir/cluster")
    as_owner "$bin/pg_ctl" -D "$cluster/data" -l "$cluster/server.log" -w -t 60 \
        -o "-p $port -k $cluster -c listen_addresses=127.0.0.1" \
        start >/dev/null
}

start() {
    local dir=$1 bin port
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    bin=$(pg_bindir)
    port=$(free_port)
    echo "$bin" >"$dir/bindir"
    echo "$port" >"$dir/port"
    local cluster=$dir
    if [[ $(id -u) -eq 0 ]]; then
        cluster=$(mktemp -d "${TMPDIR:-/tmp}/riskflow-postgres.XXXXXX")
        chmod 755 "$cluster"
        chown postgres "$cluster"
    fi
    echo "$cluster" >"$dir/cluster"
    as_owner "$bin/initdb" -D "$cluster/data" -U riskflow --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    server_start "$dir"
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U riskflow riskflow
    echo "postgres://riskflow@127.0.0.1:$port/riskflow" | tee "$dir/url"
}

stop() {
    local dir=$1 cluster
    [[ -d "$dir" ]] || return 0
    cluster=$(cat "$dir/cluster" 2>/dev/null || echo "$dir")
    if [[ -f "$dir/bindir" && -f "$cluster/data/postmaster.pid" ]]; then
        as_owner "$(cat "$dir/bindir")/pg_ctl" -D "$cluster/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$cluster" "$dir"
}

case "${1:-}" in
start) start "${2:?usage: postgres.sh start DIR}" ;;
stop) stop "${2:?usage: postgres.sh stop DIR}" ;;
pause) as_owner "$(cat "${2:?usage: postgres.sh pause DIR}/bindir")/pg_ctl" -D "$(cat "$2/cluster")/data" -m fast -w stop >/dev/null ;;
resume) server_start "${2:?usage: postgres.sh resume DIR}" ;;
*)
    echo "usage: postgres.sh start|stop|pause|resume DIR" >&2
    exit 2
    ;;
esac
