#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the test suite: `start` installs PostgreSQL from Debian's
# packages when it is missing, creates a cluster in a new temporary directory, owned by an
# unprivileged user, listening on 127.0.0.1 only on a free port (trust authentication: nothing
# but this machine can reach it, and it lives for one run), and prints the lines to `eval`:
#
#   eval "$(bash deploy/pg-test-cluster.sh start)"   # sets CONSOLE_TEST_DATABASE_URL, PG_TEST_DIR
#   cargo test -p defender-console                  # every Console test on PostgreSQL
#   bash deploy/pg-test-cluster.sh stop "$PG_TEST_DIR"
#
# No system service is started or changed; `stop` removes the cluster and its directory.
set -euo pipefail

pg_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    if [[ -n "$d" && -x "$d/initdb" ]]; then echo "$d"; fi
}

case "${1:-}" in
start)
    bin=$(pg_bin)
    if [[ -z "$bin" ]]; then
        echo "==> installing PostgreSQL (Debian package postgresql)" >&2
        if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
        $SUDO apt-get update -qq >&2
        # The package's own cluster and service are not used (and not started in a container).
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >&2
        bin=$(pg_bin)
    fi
    [[ -n "$bin" ]] || { echo "PostgreSQL's initdb not found after installing" >&2; exit 1; }
    dir=$(mktemp -d /tmp/pg-test.XXXXXX)
    chmod 0755 "$dir"
    run=()
    if [[ $(id -u) -eq 0 ]]; then
        # initdb refuses to run as root: the cluster belongs to the package's `postgres` user
        # (or `nobody` where that does not exist).
        owner=postgres
        id -u postgres >/dev/null 2>&1 || owner=nobody
        chown "$owner" "$dir"
        run=(runuser -u "$owner" --)
    fi
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "${run[@]}" "$bin/initdb" -D "$dir/data" -U defender -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    # Sized for the suite: many tests each open a Console (a pool of up to 8 connections).
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >&2 || { cat "$dir/server.log" >&2; exit 1; }
    echo "export PG_TEST_DIR=$dir"
    echo "export CONSOLE_TEST_DATABASE_URL=postgres://defender@127.0.0.1:$port/postgres"
    ;;
stop)
    dir=${2:?usage: pg-test-cluster.sh stop DIR}
    [[ -d "$dir/data" ]] || exit 0
    bin=$(pg_bin)
    run=()
    if [[ $(id -u) -eq 0 ]]; then run=(runuser -u "$(stat -c %U "$dir/data")" --); fi
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: $0 start | stop DIR" >&2
    exit 2
    ;;
esac
