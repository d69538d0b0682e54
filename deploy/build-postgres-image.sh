#!/usr/bin/env bash
# Builds a PostgreSQL image WITHOUT pulling anything, for hosts that cannot reach Docker Hub
# (this project's CI machines): Debian's `postgresql` package binaries from this host, their
# shared libraries (ldd) and data files, `FROM scratch`, with a small entry point that behaves
# like the official image's for what deploy/docker-compose.replicas.yml uses:
#
#   POSTGRES_USER, POSTGRES_PASSWORD (required), POSTGRES_DB; data in PGDATA
#   (/var/lib/postgresql/data, a volume); initdb when that is empty, then `postgres`, listening
#   on every address with password (scram-sha-256) authentication; pg_isready and psql on PATH.
#
#   deploy/build-postgres-image.sh            # prints the tag it built, e.g. postgres:15
#
# It is tagged `postgres:<major version of the host's package>` (the name the compose file
# uses, with POSTGRES_VERSION set to that version), and labelled as built here. An existing
# `postgres:<version>` without that label (a real image, pulled) is left alone and used as it is.
# Installs the `postgresql` package when it is missing (apt-get; its own cluster and service are
# not used). Environment: CARGO_TARGET_DIR (staging under it, default ./target).
set -euo pipefail
cd "$(dirname "$0")/.."

built_by="fargate-defender deploy/build-postgres-image.sh"

pg_dir() { ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n1 | sed 's#/bin/postgres$##'; }
dir="$(pg_dir)"
if [ -z "$dir" ]; then
    echo "build-postgres-image: installing PostgreSQL (Debian package postgresql)" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >&2
    dir="$(pg_dir)"
fi
[ -n "$dir" ] || {
    echo "build-postgres-image: no /usr/lib/postgresql/*/bin/postgres after installing" >&2
    exit 1
}
ver="${dir##*/}"
tag="postgres:$ver"

if docker image inspect "$tag" >/dev/null 2>&1; then
    vendor="$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.vendor"}}' "$tag")"
    if [ "$vendor" != "$built_by" ]; then
        echo "build-postgres-image: $tag exists and was not built here; using it" >&2
        echo "$tag"
        exit 0
    fi
fi

stage="${CARGO_TARGET_DIR:-target}/postgres-rootfs"
root="$stage/root"
owned="$stage/owned"
rm -rf "$stage"
mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/usr/share/postgresql" "$root/usr/lib/postgresql" \
    "$owned/var/lib/postgresql/data" "$owned/var/run/postgresql"

# The server and client programs, the server's modules (not the LLVM JIT: ~100 MB of LLVM for
# nothing here; jit is off), the data files initdb needs, and the time zones.
cp -a "$dir" "$root/usr/lib/postgresql/"
rm -f "$root/usr/lib/postgresql/$ver/lib/llvmjit"*.so
rm -rf "$root/usr/lib/postgresql/$ver/lib/bitcode"
cp -a "/usr/share/postgresql/$ver" "$root/usr/share/postgresql/"
mkdir -p "$root/usr/share"
cp -a /usr/share/zoneinfo "$root/usr/share/"
# initdb and postgres run helpers through /bin/sh (popen); dash is enough, and runs the entry point.
cp -L /bin/dash "$root/bin/sh"

# Every shared library those binaries and modules need, at the path the loader looks for it.
elfs=("$root/bin/sh")
while IFS= read -r f; do elfs+=("$f"); done < <(find "$root/usr/lib/postgresql" -type f \( -perm -u+x -o -name '*.so' \))
libs="$(for f in "${elfs[@]}"; do ldd "$f" 2>/dev/null || true; done |
    awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}' | sort -u)"
# glibc loads libgcc_s by itself when a thread is cancelled.
libgcc="$(ldconfig -p | awk '/libgcc_s.so.1 .*x86-64|libgcc_s.so.1 .*AArch64/ {print $NF; exit}')"
for lib in $libs $libgcc; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done

printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/sh' >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'postgres:x:999:' >"$root/etc/group"
printf '%s\n' 'passwd: files' 'group: files' >"$root/etc/nsswitch.conf"
chmod 1777 "$root/tmp"
chmod 0700 "$owned/var/lib/postgresql/data"
chmod 2775 "$owned/var/run/postgresql"

cat >"$root/docker-entrypoint.sh" <<'EOF'
#!/bin/sh
# initdb on an empty data directory (superuser POSTGRES_USER with POSTGRES_PASSWORD, database
# POSTGRES_DB), then the server on every address, password authentication from the network.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres: POSTGRES_PASSWORD is not set: refusing to create a database without one" >&2
        exit 1
    fi
    # The password reaches initdb on a pipe, never in argv or a file.
    printf '%s\n' "$POSTGRES_PASSWORD" |
        initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/dev/stdin -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$POSTGRES_DB" != postgres ]; then
        printf 'CREATE DATABASE "%s";\n' "$POSTGRES_DB" | postgres --single -D "$PGDATA" postgres >/dev/null
    fi
    echo "postgres: initialised $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c jit=off "$@"
EOF
chmod 0755 "$root/docker-entrypoint.sh"

cat >"$stage/Dockerfile" <<EOF
FROM scratch
COPY root/ /
COPY --chown=999:999 owned/ /
ENV PATH=/usr/lib/postgresql/$ver/bin:/bin \\
    PGDATA=/var/lib/postgresql/data \\
    TZ=UTC
USER 999:999
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/docker-entrypoint.sh"]
LABEL org.opencontainers.image.vendor="$built_by" \\
      org.opencontainers.image.description="PostgreSQL $ver from Debian's package, for offline tests"
EOF
if ! docker build -t "$tag" "$stage" >"$stage/build.log" 2>&1; then
    cat "$stage/build.log" >&2
    exit 1
fi
echo "build-postgres-image: $tag ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.1f MB", $1 / 1000000}'), PostgreSQL $ver from $dir)" >&2
echo "$tag"
