#!/usr/bin/env bash
# Installs what the build and tests need beyond the Rust toolchain, so a fresh machine
# runs `.ci/run` with no manual step. Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

need_rust_components() {
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' &&
        rustup component list --installed 2>/dev/null | grep -q '^clippy'
}
if command -v rustup >/dev/null && ! need_rust_components; then
    rustup component add rustfmt clippy
fi

# Static (musl) binaries for the container images (deploy/build-images.sh): the musl C
# toolchain (ring and the bundled SQLite are C) and the Rust target. The compose test also
# needs curl and jq. One `apt-get update`, and only when a package is missing.
musl_target="$(uname -m)-unknown-linux-musl"
if command -v rustup >/dev/null && ! rustup target list --installed 2>/dev/null | grep -qx "$musl_target"; then
    rustup target add "$musl_target"
fi
missing=()
command -v "$(uname -m)-linux-musl-gcc" >/dev/null || command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
if [ "${#missing[@]}" -gt 0 ] && command -v apt-get >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "install-deps: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
elif [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: please install ${missing[*]} (no apt-get here)" >&2
fi
