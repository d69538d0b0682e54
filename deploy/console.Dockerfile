# The Console image: gRPC (mTLS) for Defenders on 8084, UI and REST API on 8083, SQLite data
# in the volume /data, running as the non-root user 65532.
#
#   docker build -f deploy/console.Dockerfile -t fargate-defender/console:0.1.0 .
#   docker run -d -p 127.0.0.1:8083:8083 -p 8084:8084 -v defender-console:/data \
#       fargate-defender/console:0.1.0 serve --san console.example.com
#
# (build from the repository root; needs access to Docker Hub for the Rust build image). Hosts
# that cannot pull images: deploy/build-images.sh builds the same final image from binaries
# built on the host. Every `serve` flag is also an environment variable (CONSOLE_*).

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
COPY --from=build /out/console/root/ /
COPY --from=build --chown=65532:65532 /out/console/owned/ /
USER 65532:65532
ENV CONSOLE_DATA_DIR=/data \
    CONSOLE_HTTP_LISTEN=0.0.0.0:8083 \
    CONSOLE_GRPC_LISTEN=0.0.0.0:8084
VOLUME ["/data"]
EXPOSE 8083 8084
ENTRYPOINT ["/usr/local/bin/defender-console"]
CMD ["serve"]
LABEL org.opencontainers.image.title="defender-console" \
      org.opencontainers.image.description="Console for App-Embedded Defenders: gRPC ingest, web UI, REST API" \
      org.opencontainers.image.licenses="Apache-2.0"
