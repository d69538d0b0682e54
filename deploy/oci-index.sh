#!/usr/bin/env bash
# Writes a multi-platform OCI image layout (OCI image spec, "image-layout") from single-platform
# images in the local Docker engine, without a registry and without buildx:
#
#   deploy/oci-index.sh OUT_DIR TAG IMAGE...
#
#   OUT_DIR/oci-layout, OUT_DIR/index.json, OUT_DIR/blobs/sha256/…
#
# index.json names one image index (annotation org.opencontainers.image.ref.name = TAG) whose
# entries are the IMAGEs' manifests with their platform (from `docker image inspect`). Push it
# whole, e.g. `skopeo copy --all oci:OUT_DIR:TAG docker://REGISTRY/REPO:TAG` or
# `crane push OUT_DIR REGISTRY/REPO:TAG` (README: "Multi-arch Defender image").
# Needs docker, jq, sha256sum, gzip, tar.
set -euo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: $0 OUT_DIR TAG IMAGE..." >&2
    exit 2
fi
out="$1"
tag="$2"
shift 2

rm -rf "$out"
mkdir -p "$out/blobs/sha256"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Stores file $1 as a blob; prints "<digest> <size>".
blob() {
    local sum size
    sum="$(sha256sum "$1" | cut -d' ' -f1)"
    size="$(stat -c %s "$1")"
    cp "$1" "$out/blobs/sha256/$sum"
    echo "sha256:$sum $size"
}

entries="[]"
for image in "$@"; do
    dir="$work/$(echo "$image" | tr '/:' '__')"
    mkdir -p "$dir"
    docker save "$image" | tar -x -C "$dir"
    # manifest.json is written by every `docker save` format (legacy and OCI).
    config="$(jq -r '.[0].Config' "$dir/manifest.json")"
    read -r config_digest config_size < <(blob "$dir/$config")
    layers="[]"
    while IFS= read -r layer; do
        gzip -n -c "$dir/$layer" >"$dir/layer.tar.gz"
        read -r d s < <(blob "$dir/layer.tar.gz")
        layers="$(jq -c --arg d "$d" --argjson s "$s" \
            '. + [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $d, size: $s}]' <<<"$layers")"
    done < <(jq -r '.[0].Layers[]' "$dir/manifest.json")
    jq -c -n --arg cd "$config_digest" --argjson cs "$config_size" --argjson layers "$layers" \
        '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
          config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs},
          layers: $layers}' >"$dir/manifest.oci.json"
    read -r md ms < <(blob "$dir/manifest.oci.json")
    os="$(docker image inspect -f '{{.Os}}' "$image")"
    arch="$(docker image inspect -f '{{.Architecture}}' "$image")"
    entries="$(jq -c --arg d "$md" --argjson s "$ms" --arg os "$os" --arg arch "$arch" \
        '. + [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $d, size: $s,
               platform: {os: $os, architecture: $arch}}]' <<<"$entries")"
done

jq -c -n --argjson m "$entries" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json", manifests: $m}' \
    >"$work/index.oci.json"
read -r index_digest index_size < <(blob "$work/index.oci.json")
jq -n --arg d "$index_digest" --argjson s "$index_size" --arg tag "$tag" \
    '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [{mediaType: "application/vnd.oci.image.index.v1+json", digest: $d, size: $s,
                   annotations: {"org.opencontainers.image.ref.name": $tag}}]}' >"$out/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
echo "$index_digest"
