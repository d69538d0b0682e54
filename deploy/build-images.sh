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
#   CARGO_PROFILE      cargo profile of the binaries (default: release for the Console and the
#                      demo, defender — size-optimised, LTO — for the Defender)
# The Defender image is built for linux/amd64 and linux/arm64: the other architecture's static
# binary with cargo-zigbuild (Zig from PyPI), checked to run under qemu-user-static, tagged
# `$IMAGE_TAG-amd64` / `$IMAGE_TAG-arm64`, and joined into a multi-arch OCI image layout in
# $CARGO_TARGET_DIR/defender-oci (deploy/oci-index.sh; README "Multi-arch Defender image").
# Needs: Docker, jq, and the musl toolchain, Zig tools and qemu (deploy/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
profile="${CARGO_PROFILE:-release}"
# The Defender's profile: `defender` (size-optimised, LTO) unless CARGO_PROFILE names another.
defender_profile="${CARGO_PROFILE:-defender}"
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
# Stripped binaries: the images carry no debugger anyway; the Console and the demo with
# whole-program LTO in one codegen unit (smaller and no slower; only the images pay its build
# time, not the test and benchmark builds). The Defender, which runs inside every protected
# task, is built with its own size-optimised profile (Cargo.toml [profile.defender]).
CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    CARGO_TARGET_DIR="$target_dir" \
    cargo build --locked --profile "$profile" --target "$triple" \
    -p defender-console -p defender-demo --bins
echo "==> cargo build --profile $defender_profile --target $triple -p defender"
CARGO_PROFILE_DEFENDER_STRIP=symbols CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_TARGET_DIR="$target_dir" \
    cargo build --locked --profile "$defender_profile" --target "$triple" -p defender --bins
t_cargo=$((SECONDS - t0))

# cargo names the output directory of the dev profile "debug".
out_dir="$profile"
[ "$profile" = dev ] && out_dir=debug
defender_out="$defender_profile"
[ "$defender_profile" = dev ] && defender_out=debug
bin_dir="$target_dir/$triple/$out_dir"
stage="$target_dir/docker-rootfs"
DEFENDER_BIN_DIR="$target_dir/$triple/$defender_out" sh deploy/stage-rootfs.sh "$bin_dir" "$stage"

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

# ---- The Defender for the other architecture (linux/arm64 here), and a multi-arch layout ----
# ECS tasks on Graviton (runtimePlatform.cpuArchitecture ARM64) pull the arm64 variant.
case "$(uname -m)" in
    x86_64) host_arch=amd64 other=aarch64 other_arch=arm64 ;;
    aarch64) host_arch=arm64 other=x86_64 other_arch=amd64 ;;
    *)
        echo "build-images: no second architecture for $(uname -m)" >&2
        exit 1
        ;;
esac
other_triple="$other-unknown-linux-musl"
tools="${DEFENDER_TOOLS_DIR:-$HOME/.cache/defender-tools}"
export PATH="$tools/zigbuild/bin:$PATH"
if ! command -v cargo-zigbuild >/dev/null || ! command -v "qemu-$other-static" >/dev/null; then
    echo "build-images: cargo-zigbuild or qemu-$other-static missing; run deploy/install-deps.sh" >&2
    exit 1
fi
t2=$SECONDS
echo "==> cargo zigbuild --profile $defender_profile --target $other_triple -p defender (static, via Zig)"
CARGO_PROFILE_DEFENDER_STRIP=symbols CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_TARGET_DIR="$target_dir" \
    cargo zigbuild --locked --profile "$defender_profile" --target "$other_triple" -p defender --bins
t_cross=$((SECONDS - t2))
other_bin="$target_dir/$other_triple/$defender_out/defender"
# Prove the binary runs on that architecture (user-mode emulation) and is ours.
ran="$("qemu-$other-static" "$other_bin" --version)"
if [ "$ran" != "defender $version" ]; then
    echo "build-images: $other_bin under qemu-$other-static printed \"$ran\", not \"defender $version\"" >&2
    exit 1
fi
echo "==> $other_bin runs under qemu-$other-static: $ran"
other_stage="$target_dir/docker-rootfs-$other_arch"
rm -rf "$other_stage"
install -D -m 0755 "$other_bin" "$other_stage/defender/var/lib/defender/defender"
echo "==> $prefix/defender:$tag-$other_arch (FROM scratch, linux/$other_arch, no pull)"
# --no-cache: the classic builder would otherwise reuse a layer of the other platform.
if ! docker build --no-cache --platform "linux/$other_arch" -f "$stage/defender.Dockerfile" \
    -t "$prefix/defender:$tag-$other_arch" "$other_stage/defender" >"$other_stage/build.log" 2>&1; then
    cat "$other_stage/build.log" >&2
    exit 1
fi
docker tag "$prefix/defender:$tag" "$prefix/defender:$tag-$host_arch"
for arch in "$host_arch" "$other_arch"; do
    got="$(docker image inspect -f '{{.Os}}/{{.Architecture}}' "$prefix/defender:$tag-$arch")"
    if [ "$got" != "linux/$arch" ]; then
        echo "build-images: $prefix/defender:$tag-$arch is $got, not linux/$arch" >&2
        exit 1
    fi
done
oci_dir="$target_dir/defender-oci"
index_digest="$(bash deploy/oci-index.sh "$oci_dir" "$tag" \
    "$prefix/defender:$tag-amd64" "$prefix/defender:$tag-arm64")"
echo "==> multi-arch OCI layout $oci_dir (linux/amd64 + linux/arm64, index $index_digest)"
echo "    push: skopeo copy --all oci:$oci_dir:$tag docker://REGISTRY/defender:$tag"
t_cross_total=$((SECONDS - t2))

echo "==> images (cargo ${t_cargo}s, docker ${t_docker}s, $other_arch Defender ${t_cross_total}s of which cargo zigbuild ${t_cross}s)"
for image in "${images[@]}" "defender:$tag-$other_arch"; do
    ref="$prefix/$image"
    [ "${image#*:}" = "$image" ] && ref="$prefix/$image:$tag"
    bytes="$(docker image inspect -f '{{.Size}}' "$ref")"
    printf '    %-34s %6.1f MB\n' "$ref" "$(echo "$bytes" | awk '{print $1 / 1000000}')"
done
