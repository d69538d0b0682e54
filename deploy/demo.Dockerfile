# The demo workload of the docker compose demo (deploy/docker-compose.yml), not part of the
# product: `defender-demo app` (HTTP server, child processes, outbound connections) and
# `defender-demo ecs-metadata` (a stand-in for the ECS task metadata endpoint v4).
#
#   docker build -f deploy/demo.Dockerfile -t fargate-defender/demo:0.1.0 .

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
COPY --from=build /out/demo/ /
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/defender-demo"]
CMD ["app"]
LABEL org.opencontainers.image.title="defender-demo" \
      org.opencontainers.image.description="Demo workload and ECS task metadata stand-in for the Fargate Defender compose demo" \
      org.opencontainers.image.licenses="Apache-2.0"
