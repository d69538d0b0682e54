# The Defender image: what a protected ECS task definition pulls for its `defender` sidecar.
#
#   docker build -f deploy/defender.Dockerfile -t fargate-defender/defender:0.1.0 .
#
# (from the repository root; needs access to Docker Hub for the Rust build image). Hosts that
# cannot pull images: deploy/build-images.sh builds the same final image from binaries built
# on the host.
#
# The static `defender` binary lives in the volume /var/lib/defender, so application
# containers get it with `volumesFrom` and start as
# `/var/lib/defender/defender fargate entrypoint -- <their command>`; the wrappers reach the
# sidecar over a Unix socket in the same volume.

# ---- build stage: identical in defender/console/demo.Dockerfile, so Docker builds it once ----
ARG RUST_IMAGE=rust:1.95-slim
FROM ${RUST_IMAGE} AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Static (musl) binaries: the Defender runs inside arbitrary application images, and the
# final images have no libc. Symbols are stripped and the Console is built with LTO (size);
# SQLite is built at -O1 (Cargo.toml);
# the Defender uses its size-optimised profile (Cargo.toml [profile.defender]).
RUN set -eu; \
    target="$(uname -m)-unknown-linux-musl"; \
    rustup target add "$target"; \
    CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_LTO=fat \
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 cargo build --locked --release --target "$target" \
        -p defender-console -p defender-demo --bins; \
    CARGO_PROFILE_DEFENDER_STRIP=symbols cargo build --locked --profile defender \
        --target "$target" -p defender --bins; \
    DEFENDER_BIN_DIR="target/$target/defender" \
        sh deploy/stage-rootfs.sh "target/$target/release" /out

# ---- final image (deploy/build-images.sh builds this stage from host-built binaries) ----
FROM scratch
COPY --from=build /out/defender/ /
VOLUME ["/var/lib/defender"]
ENTRYPOINT ["/var/lib/defender/defender", "fargate", "sidecar"]
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/var/lib/defender/defender", "fargate", "healthcheck"]
LABEL org.opencontainers.image.title="defender" \
      org.opencontainers.image.description="App-Embedded Defender for AWS Fargate (sidecar and embedded entrypoint)" \
      org.opencontainers.image.licenses="Apache-2.0"
