#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, shared by the tests, CI and the
# README's "scaling out" section.
#
#   scripts/pg.sh start   installs PostgreSQL if missing, starts a cluster in
#                         target/pg (port in target/pg/port), prints its URL
#   scripts/pg.sh url     prints the URL of the running cluster
#   scripts/pg.sh restart restarts the running cluster (same port and data),
#                         for tests of a server that goes away
#   scripts/pg.sh stop    stops it and removes its data
#
# Only ever listens on 127.0.0.1; no unix socket. Run as root (CI) or as a
# user who can run `runuser -u postgres`.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/target/pg"
data="$root/data"

pg_bin() {
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$dir" ]; then
        echo "PostgreSQL is not installed; installing it" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    fi
    echo "$dir"
}

free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

as_postgres() { runuser -u postgres -- "$@"; }

url() {
    echo "postgres://postgres@127.0.0.1:$(cat "$root/port")/postgres"
}

case "${1:-}" in
start)
    bin=$(pg_bin)
    if [ -f "$root/port" ] && as_postgres "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        url
        exit 0
    fi
    rm -rf "$root"
    mkdir -p "$root"
    install -d -o postgres -m 700 "$data"
    as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust --no-sync >/dev/null
    # One role must give its password (the others are trusted): the tests
    # of refused credentials log in as it.
    { echo "host all saga_password 127.0.0.1/32 scram-sha-256"; cat "$data/pg_hba.conf"; } >"$root/hba"
    cat "$root/hba" >"$data/pg_hba.conf"
    rm "$root/hba"
    port=$(free_port)
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 200
fsync = on
CONF
    echo "$port" >"$root/port"
    chmod 755 "$root"
    as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w start >/dev/null
    url
    ;;
url)
    url
    ;;
restart)
    bin=$(pg_bin)
    as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -m fast -w restart >/dev/null
    url
    ;;
stop)
    bin=$(pg_bin)
    if [ -d "$data" ]; then
        as_postgres "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$root"
    ;;
*)
    echo "usage: $0 start|url|restart|stop" >&2
    exit 2
    ;;
esac
