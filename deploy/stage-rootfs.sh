#!/bin/sh
# Lays out the root filesystems of the three images from static binaries:
#
#   stage-rootfs.sh BIN_DIR OUT_DIR
#
#   OUT_DIR/defender/var/lib/defender/defender
#   OUT_DIR/console/root/usr/local/bin/defender-console, etc/passwd, etc/group, tmp/
#   OUT_DIR/console/owned/data/                  (copied with --chown=65532:65532)
#   OUT_DIR/demo/usr/local/bin/defender-demo
#
# The Dockerfiles copy whole trees (`COPY --from=build /out/console/root/ /`): Docker keeps the
# modes of the directories inside a copied tree (/tmp 1777, /data 0700), not of its top.
#
# Used by both ways of building the images, so they hold the same files: the build stage of
# deploy/*.Dockerfile (binaries built in the official Rust image) and deploy/build-images.sh
# (binaries built on this machine, for hosts that cannot pull images). POSIX sh: it runs in the
# build image too.
set -eu

bin="$1"
out="$2"
# The Defender may come from another profile's directory (Cargo.toml [profile.defender]).
defender_bin="${DEFENDER_BIN_DIR:-$bin}/defender"

for b in "$defender_bin" "$bin/defender-console" "$bin/defender-demo"; do
    if [ ! -x "$b" ]; then
        echo "stage-rootfs: $b is missing (build it first)" >&2
        exit 1
    fi
done

rm -rf "$out"
mkdir -p "$out/defender/var/lib/defender" \
    "$out/console/root/usr/local/bin" "$out/console/root/etc" "$out/console/root/tmp" \
    "$out/console/owned/data" "$out/demo/usr/local/bin"

# Defender: the binary sits in the volume the app containers get with volumesFrom.
install -m 0755 "$defender_bin" "$out/defender/var/lib/defender/defender"

# Console: non-root (65532, as in distroless images), data in /data, a /tmp for SQLite.
root="$out/console/root"
install -m 0755 "$bin/defender-console" "$root/usr/local/bin/defender-console"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/data:/sbin/nologin' >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
chmod 1777 "$root/tmp"
chmod 0700 "$out/console/owned/data"

# Demo workload and ECS metadata stand-in.
install -m 0755 "$bin/defender-demo" "$out/demo/usr/local/bin/defender-demo"

# Demo: a real package database (a Debian 12 dpkg status and one Python distribution, from
# console/tests/fixtures/inventory), so the demo image's Monitor > Vulnerabilities page lists an
# inventory; importing vuln/tests/fixtures/osv shows a finding (Jinja2 3.1.2: GHSA-h5c8-rqwp-cp95).
fx="$(dirname "$0")/../console/tests/fixtures/inventory"
demo="$out/demo"
mkdir -p "$demo/etc" "$demo/var/lib/dpkg" "$demo/usr/lib/python3/dist-packages/Jinja2-3.1.2.dist-info"
install -m 0644 "$fx/os-release-debian12" "$demo/etc/os-release"
install -m 0644 "$fx/dpkg-status-bookworm" "$demo/var/lib/dpkg/status"
install -m 0644 "$fx/Jinja2-3.1.2.METADATA" "$demo/usr/lib/python3/dist-packages/Jinja2-3.1.2.dist-info/METADATA"
