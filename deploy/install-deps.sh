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
