#!/usr/bin/env bash
# Builds the images fargate-defender/{defender,console,demo} WITHOUT pulling anything: the static
# (musl) binaries are built on this machine with cargo, and each image is the final `FROM scratch`
# stage of deploy/<image>.Dockerfile, taken verbatim from that file (only `COPY --from=build`
# becomes a COPY from a staged directory). Same files, same configuration as the conventional
# multi-stage build; for hosts that cannot reach a registry (air-gapped, CI here).
#
#   deploy/build-images.sh            # then: docker compose -f deploy/docker-compose.yml up
#
# Environment:
#   CARGO_TARGET_DIR   cargo's target directory (default ./target); a separate one, e.g.
#                      /work/target-musl, keeps the musl build from waiting on other builds
#   IMAGE_TAG          tag besides `latest` (default: the workspace version, e.g. 0.1.0)
#   IMAGE_PREFIX       repository prefix (default fargate-defender)
#   CARGO_PROFILE      cargo profile of the binaries (default release)
# Needs: Docker, and the musl toolchain (deploy/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
profile="${CARGO_PROFILE:-release}"
prefix="${IMAGE_PREFIX:-fargate-defender}"
version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)"
tag="${IMAGE_TAG:-${version:-dev}}"
triple="$(uname -m)-unknown-linux-musl"
images=(defender console demo)

if ! command -v "$(uname -m)-linux-musl-gcc" >/dev/null && ! command -v musl-gcc >/dev/null; then
    echo "build-images: no musl C compiler; run deploy/install-deps.sh (apt-get install musl-tools)" >&2
    exit 1
fi
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$triple"; then
    echo "build-images: rust target $triple missing; run deploy/install-deps.sh" >&2
    exit 1
fi

t0=$SECONDS
echo "==> cargo build --profile $profile --target $triple (static binaries; target dir $target_dir)"
# Stripped binaries: the images carry no debugger anyway.
CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_TARGET_DIR="$target_dir" \
    cargo build --locked --profile "$profile" --target "$triple" \
    -p defender -p defender-console -p defender-demo --bins
t_cargo=$((SECONDS - t0))

# cargo names the output directory of the dev profile "debug".
out_dir="$profile"
[ "$profile" = dev ] && out_dir=debug
bin_dir="$target_dir/$triple/$out_dir"
stage="$target_dir/docker-rootfs"
sh deploy/stage-rootfs.sh "$bin_dir" "$stage"

t1=$SECONDS
for image in "${images[@]}"; do
    dockerfile="$stage/$image.Dockerfile"
    # The final stage, from its `FROM scratch` to the end of the file.
    sed -n '/^FROM scratch/,$p' "deploy/$image.Dockerfile" |
        sed -e 's#--from=build ##' -e 's#/out/[a-z]*/#./#' >"$dockerfile"
    if ! grep -q '^FROM scratch' "$dockerfile" || grep -Eq -- '--from|^RUN' "$dockerfile"; then
        echo "build-images: deploy/$image.Dockerfile: its final stage must be FROM scratch with COPY --from=build /out/$image/… only" >&2
        exit 1
    fi
    echo "==> $prefix/$image:$tag (FROM scratch, no pull)"
    if ! docker build -f "$dockerfile" -t "$prefix/$image:$tag" -t "$prefix/$image:latest" \
        "$stage/$image" >"$stage/$image.log" 2>&1; then
        cat "$stage/$image.log" >&2
        exit 1
    fi
done
t_docker=$((SECONDS - t1))

echo "==> images (cargo ${t_cargo}s, docker ${t_docker}s)"
for image in "${images[@]}"; do
    bytes="$(docker image inspect -f '{{.Size}}' "$prefix/$image:$tag")"
    printf '    %-34s %6.1f MB\n' "$prefix/$image:$tag" "$(echo "$bytes" | awk '{print $1 / 1000000}')"
done
