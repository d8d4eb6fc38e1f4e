#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, shared by the tests, CI and the
# README's "scaling out" section.
#
#   scripts/pg.sh start   installs PostgreSQL if missing, starts a cluster,
#                         prints its URL
#   scripts/pg.sh url     prints the URL of the running cluster
#   scripts/pg.sh ca      prints the path of the CA certificate the cluster's
#                         server certificate is signed by (for
#                         `sslmode=verify-full&sslrootcert=<path>`)
#   scripts/pg.sh restart restarts the running cluster (same port and data),
#                         for tests of a server that goes away
#   scripts/pg.sh stop    stops it and removes its data
#
# The checkout keeps what finds the cluster, in target/pg: `port`, and
# `cluster`, the path of its data. The data itself lives in a directory of
# its own under /var/tmp (`saga-pg.XXXXXX`, owned by `postgres`), because
# the `postgres` user must enter every directory above it: a checkout under
# /root or in a `mktemp -d` folder is closed to that user.
#
# A process that sets SAGA_PG_USER_PID=<its pid> when it calls `start` (the
# tests do, when SAGA_PG_URL is unset) registers as a user of the cluster;
# if that `start` created the cluster, it also leaves a watcher that stops
# the cluster and removes its data once no registered process has been alive
# for 10 s. A cluster started without it (CI, the README) runs until
# `scripts/pg.sh stop`.
#
# TLS is on (`ssl = on`), optional for clients: the URL has no `sslmode`,
# so a client that does not ask for TLS connects as before. `start` makes a
# throwaway CA and a server certificate it signs, for `localhost` and
# 127.0.0.1; the CA's certificate is target/pg/ca.crt (`scripts/pg.sh ca`).
#
# Only ever listens on 127.0.0.1; no unix socket. Run as root (CI) or as a
# user who can run `runuser -u postgres`.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD/target/pg"
# Outside $root, which `stop` removes: serializes starts, stops and the
# watcher's check (tests start the cluster from parallel threads).
lock="$PWD/target/pg.lock"

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

# From `/`: the caller's directory may be closed to `postgres`. Without the
# lock's descriptor, which a server left running would otherwise hold.
as_postgres() { (cd / && runuser -u postgres -- "$@" 9>&-); }

# The cluster's data directory, or nothing if none was started.
data_dir() {
    if [ -f "$root/cluster" ]; then
        echo "$(cat "$root/cluster")/data"
    fi
}

url() {
    echo "postgres://postgres@127.0.0.1:$(cat "$root/port")/postgres"
}

# A CA and a server certificate it signs (for localhost and 127.0.0.1), in
# data directory $1; the CA's certificate copied to $root/ca.crt.
make_certs() {
    local data=$1 tmp
    if ! command -v openssl >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl >/dev/null
    fi
    tmp=$(mktemp -d)
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=saga test CA" \
        -keyout "$tmp/ca.key" -out "$tmp/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
    printf 'subjectAltName = DNS:localhost, IP:127.0.0.1\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n' >"$tmp/ext"
    openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" \
        -CAcreateserial -days 30 -extfile "$tmp/ext" -out "$tmp/server.crt" 2>/dev/null
    install -o postgres -m 600 "$tmp/server.key" "$data/server.key"
    install -o postgres -m 644 "$tmp/server.crt" "$data/server.crt"
    install -m 644 "$tmp/ca.crt" "$root/ca.crt"
    rm -rf "$tmp"
}

running() {
    local data
    data=$(data_dir)
    [ -n "$data" ] && [ -f "$root/port" ] &&
        as_postgres "$1/pg_ctl" -D "$data" status >/dev/null 2>&1
}

register() {
    if [ -n "${SAGA_PG_USER_PID:-}" ]; then
        echo "$SAGA_PG_USER_PID" >>"$root/users"
    fi
}

stop_cluster() {
    local data
    data=$(data_dir)
    if [ -n "$data" ] && [ -d "$data" ]; then
        as_postgres "$(pg_bin)/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    if [ -f "$root/cluster" ]; then
        rm -rf "$(cat "$root/cluster")"
    elif [ -d "$root/data" ]; then
        # A cluster of an earlier version of this script, kept in target/pg.
        as_postgres "$(pg_bin)/pg_ctl" -D "$root/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$root"
}

mkdir -p target
exec 9>"$lock"

case "${1:-}" in
start)
    flock 9
    bin=$(pg_bin)
    if running "$bin"; then
        register
        url
        exit 0
    fi
    stop_cluster
    mkdir -p "$root"
    cluster=$(mktemp -d /var/tmp/saga-pg.XXXXXX)
    echo "$cluster" >"$root/cluster"
    chown postgres "$cluster"
    chmod 700 "$cluster"
    data="$cluster/data"
    install -d -o postgres -m 700 "$data"
    as_postgres "$bin/initdb" -D "$data" -U postgres --auth=trust --no-sync >/dev/null
    # One role must give its password (the others are trusted): the tests
    # of refused credentials log in as it.
    { echo "host all saga_password 127.0.0.1/32 scram-sha-256"; cat "$data/pg_hba.conf"; } >"$root/hba"
    cat "$root/hba" >"$data/pg_hba.conf"
    rm "$root/hba"
    port=$(free_port)
    make_certs "$data"
    cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 200
fsync = on
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
CONF
    echo "$port" >"$root/port"
    chmod 755 "$root"
    as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w start >/dev/null
    if [ -n "${SAGA_PG_USER_PID:-}" ]; then
        register
        # Detached, every descriptor closed, so the caller's wait for this
        # script's output ends now.
        setsid "$PWD/scripts/pg.sh" watch "$cluster" </dev/null >/dev/null 2>&1 9>&- &
    fi
    url
    ;;
url)
    url
    ;;
ca)
    if [ ! -f "$root/ca.crt" ]; then
        echo "no CA certificate: the cluster was not started by this version of the script (scripts/pg.sh stop, then start)" >&2
        exit 1
    fi
    echo "$root/ca.crt"
    ;;
restart)
    bin=$(pg_bin)
    data=$(data_dir)
    as_postgres "$bin/pg_ctl" -D "$data" -l "$data/server.log" -m fast -w restart >/dev/null
    url
    ;;
stop)
    flock 9
    stop_cluster
    ;;
watch)
    # Internal (see the top): stops cluster $2 once no registered user has
    # been alive for 10 s in a row; ends if the cluster was stopped or
    # replaced meanwhile.
    idle=0
    while :; do
        sleep 1
        exec 9>"$lock"
        flock 9
        if [ ! -f "$root/cluster" ] || [ "$(cat "$root/cluster")" != "$2" ]; then
            exit 0
        fi
        alive=0
        for pid in $(cat "$root/users" 2>/dev/null); do
            if kill -0 "$pid" 2>/dev/null; then
                alive=1
                break
            fi
        done
        if [ "$alive" = 1 ]; then
            idle=0
        else
            idle=$((idle + 1))
        fi
        if [ "$idle" -ge 10 ]; then
            stop_cluster
            exit 0
        fi
        exec 9>&-
    done
    ;;
*)
    echo "usage: $0 start|url|ca|restart|stop" >&2
    exit 2
    ;;
esac
