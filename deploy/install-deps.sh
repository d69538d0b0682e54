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
# The Defender image is also built for the other architecture (linux/arm64 on an x86_64 host):
# its Rust target, Zig and cargo-zigbuild from PyPI in a venv (a static aarch64 musl binary
# without a cross gcc or an aarch64 musl sysroot), and qemu-user-static to prove it runs.
case "$(uname -m)" in
    x86_64) other_arch=aarch64 ;;
    *) other_arch=x86_64 ;;
esac
if command -v rustup >/dev/null && ! rustup target list --installed 2>/dev/null | grep -qx "$other_arch-unknown-linux-musl"; then
    rustup target add "$other_arch-unknown-linux-musl"
fi
missing=()
tools="${DEFENDER_TOOLS_DIR:-$HOME/.cache/defender-tools}"
if [ ! -x "$tools/zigbuild/bin/cargo-zigbuild" ]; then
    if python3 -m venv "$tools/zigbuild" >/dev/null 2>&1 && [ -x "$tools/zigbuild/bin/pip" ]; then
        echo "install-deps: installing cargo-zigbuild and ziglang (PyPI) into $tools/zigbuild"
        "$tools/zigbuild/bin/pip" install -q --disable-pip-version-check "cargo-zigbuild==0.24.1" "ziglang==0.17.1"
    else
        rm -rf "$tools/zigbuild"
        missing+=(python3-venv)
    fi
fi
command -v "qemu-$other_arch-static" >/dev/null || missing+=(qemu-user-static)
command -v "$(uname -m)-linux-musl-gcc" >/dev/null || command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
# rpm and rpmbuild (Debian's rpm 4.18, SQLite backend): the rpmdb reader's test writes a real
# rpmdb.sqlite with them and checks the reader against `rpm -qa`.
command -v rpmbuild >/dev/null || missing+=(rpm)
# cargo-auditable (crates.io; ~3 min to build once): the inventory test builds a real
# cargo-auditable binary and reads its dependency section.
if command -v cargo >/dev/null && ! cargo auditable --help >/dev/null 2>&1; then
    echo "install-deps: installing cargo-auditable 0.7.7 (cargo install)"
    cargo install --quiet --locked cargo-auditable --version 0.7.7
fi
# Go (Debian's golang-go): the inventory test builds a real Go binary and reads its build info.
command -v go >/dev/null || missing+=(golang-go)
if [ "${#missing[@]}" -gt 0 ] && command -v apt-get >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "install-deps: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
elif [ "${#missing[@]}" -gt 0 ]; then
    echo "install-deps: please install ${missing[*]} (no apt-get here)" >&2
fi
# Debian's python3 without venv support: retry the Zig tools now that python3-venv is there.
if [ ! -x "$tools/zigbuild/bin/cargo-zigbuild" ] && python3 -m venv "$tools/zigbuild" >/dev/null 2>&1; then
    "$tools/zigbuild/bin/pip" install -q --disable-pip-version-check "cargo-zigbuild==0.24.1" "ziglang==0.17.1"
fi
