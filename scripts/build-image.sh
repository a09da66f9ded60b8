#!/usr/bin/env bash
# Builds the sidecar's container image from deploy/container/Containerfile, with buildah,
# or podman or docker when buildah is not there (WEFT_IMAGE_BUILDER picks one).
#
#   scripts/build-image.sh [--tarball weft-mesh-VERSION.tgz] [--tag NAME:TAG] [--builder buildah|podman|docker]
#
# Without --tarball it packs this checkout (`npm pack`). The tag defaults to
# weft-mesh:VERSION, the version being the tarball's. NODE_IMAGE, when set, replaces the
# Containerfile's pinned base (e.g. to pin a digest); WEFT_IMAGE_BUILD_FLAGS, when set, is
# added to the builder's arguments (split on spaces; e.g. "--isolation chroot"). The image
# is written in the docker format: the OCI format has no HEALTHCHECK, and buildah and podman
# drop it there.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
containerfile="$root/deploy/container/Containerfile"
tarball=""
tag=""
builder="${WEFT_IMAGE_BUILDER:-}"

usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --tarball) tarball="${2:?--tarball needs a file}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a name}"; shift 2 ;;
    --builder) builder="${2:?--builder needs buildah, podman or docker}"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "build-image: unknown argument $1" >&2; usage ;;
  esac
done

if [ -z "$builder" ]; then
  if command -v buildah >/dev/null; then builder=buildah
  elif command -v podman >/dev/null; then builder=podman
  elif command -v docker >/dev/null && docker info >/dev/null 2>&1; then builder=docker
  else
    echo "build-image: no image builder: install buildah (apt-get install buildah) or podman, or start docker" >&2
    exit 1
  fi
fi
case "$builder" in buildah|podman|docker) ;; *) echo "build-image: unknown builder '$builder' (buildah, podman or docker)" >&2; exit 2 ;; esac

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT

if [ -z "$tarball" ]; then
  echo "build-image: packing $root" >&2
  (cd "$root" && npm pack --silent --pack-destination "$context" >/dev/null)
else
  [ -f "$tarball" ] || { echo "build-image: $tarball: no such file" >&2; exit 1; }
  cp "$tarball" "$context/"
fi
packed=("$context"/*.tgz)
if [ ${#packed[@]} -ne 1 ] || [ ! -f "${packed[0]}" ]; then
  echo "build-image: expected one packed package in the build context, found: ${packed[*]}" >&2
  exit 1
fi
name="$(basename "${packed[0]}")"
case "$name" in weft-*.tgz) ;; *) echo "build-image: $name is not a packed weft package (weft-*.tgz)" >&2; exit 1 ;; esac
cp "$root/deploy/container/healthcheck.mjs" "$context/"

# weft-mesh-0.2.0.tgz -> weft-mesh:0.2.0, weft-mesh-0.3.0-rc.1.tgz -> weft-mesh:0.3.0-rc.1
if [ -z "$tag" ]; then
  base="${name%.tgz}"
  if [[ "$base" =~ ^(.+)-([0-9]+\.[0-9]+\.[0-9]+.*)$ ]]; then
    tag="${BASH_REMATCH[1]}:${BASH_REMATCH[2]}"
  else
    echo "build-image: cannot read a version from $name; give --tag" >&2
    exit 1
  fi
fi

args=(-f "$containerfile" -t "$tag")
[ -n "${NODE_IMAGE:-}" ] && args+=(--build-arg "NODE_IMAGE=$NODE_IMAGE")
# shellcheck disable=SC2206 # split on purpose: one flag per word
[ -n "${WEFT_IMAGE_BUILD_FLAGS:-}" ] && args+=(${WEFT_IMAGE_BUILD_FLAGS})
echo "build-image: $builder builds $tag from $name" >&2
case "$builder" in
  buildah) buildah build --format docker "${args[@]}" "$context" ;;
  podman) podman build --format docker "${args[@]}" "$context" ;;
  docker) docker build "${args[@]}" "$context" ;;
esac
echo "$tag"
