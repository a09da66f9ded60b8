#!/usr/bin/env bash
# Builds, from scratch with buildah, a stand-in for the official node:20-bookworm-slim image
# out of this machine's own files, for machines that cannot pull a base image:
#
#   test/deploy/container/node-base-standin.sh IMAGE-NAME NPM-CACHE-PATH
#
# It holds what deploy/container/Containerfile uses of the official image, where the
# official image has it: node at /usr/local/bin/node and npm under /usr/local/lib/node_modules,
# /bin/sh, the coreutils the Containerfile runs, groupadd and useradd, the shared libraries
# all of them load (found with ldd), and /etc's user and group files with the `node` user
# (UID 1000) that the official image has. The host must be Debian bookworm (the official
# image's Debian) with node 20: the libc the stand-in's node and native addons run on is then
# the one the real image has. Anything else is refused, not approximated.
#
# One difference: its npm installs offline from the cache at NPM-CACHE-PATH (npm's builtin
# npmrc says so), which the build mounts there (buildah build -v CACHE:NPM-CACHE-PATH) after an
# install on the host filled it. The machines that run this reach the npm registry only
# through their own network setup, which a build container does not share; a real build
# of the Containerfile fetches from the registry as usual.
set -euo pipefail

image="${1:?usage: node-base-standin.sh IMAGE-NAME NPM-CACHE-PATH}"
npm_cache="${2:?usage: node-base-standin.sh IMAGE-NAME NPM-CACHE-PATH}"

fail() { echo "node-base-standin: $*" >&2; exit 1; }

. /etc/os-release
[ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ] \
  || fail "this machine is ${PRETTY_NAME:-unknown}, not Debian bookworm: a stand-in made of its files would not have the official image's libc"
node_bin="$(command -v node)" || fail "no node on PATH"
node_bin="$(readlink -f "$node_bin")"
node_version="$("$node_bin" -p 'process.versions.node')"
[ "${node_version%%.*}" = 20 ] || fail "node here is $node_version; the Containerfile's base is Node 20"
npm_dir="$(dirname "$(readlink -f "$(command -v npm)")")/.." || fail "no npm on PATH"
npm_dir="$(cd "$npm_dir" && pwd)"
[ -f "$npm_dir/bin/npm-cli.js" ] || fail "cannot find npm's package directory (looked at $npm_dir)"

root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

# Programs the Containerfile's RUN lines and the image's entrypoint (#!/usr/bin/env node) use.
programs=(/bin/sh /usr/sbin/nologin /usr/bin/env /bin/mkdir /bin/chown /bin/chmod /bin/ls /bin/rm /usr/sbin/groupadd /usr/sbin/useradd)
for p in "${programs[@]}"; do
  [ -e "$p" ] || fail "$p is missing here"
  mkdir -p "$root$(dirname "$p")"
  cp -L "$p" "$root$p"
done
mkdir -p "$root/usr/local/bin" "$root/usr/local/lib/node_modules"
cp "$node_bin" "$root/usr/local/bin/node"
cp -a "$npm_dir" "$root/usr/local/lib/node_modules/npm"
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$root/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$root/usr/local/bin/npx"
# npm's builtin config (npmrc in its own directory): unlike the global one, it does not move
# with --prefix.
printf 'offline=true\ncache=%s\n' "$npm_cache" > "$root/usr/local/lib/node_modules/npm/npmrc"

# The shared libraries of every program, at the paths the dynamic loader looks in.
for p in "$node_bin" "${programs[@]}"; do
  for lib in $(ldd "$p" | grep -o '/[^ ]*\.so[^ ]*'); do
    [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
  done
done

# Users and groups as the official image has them: root, nogroup and node (1000).
mkdir -p "$root/etc" "$root/tmp" "$root/root" "$root/home/node" "$root/var/lib" "$root/var/log"
chmod 1777 "$root/tmp"
cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
node:x:1000:1000::/home/node:/bin/bash
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
node:x:1000:
EOF
printf 'root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\nnode:!:19000:0:99999:7:::\n' > "$root/etc/shadow"
printf 'root:*::\nnogroup:*::\nnode:!::\n' > "$root/etc/gshadow"
chmod 0640 "$root/etc/shadow" "$root/etc/gshadow"
chown 1000:1000 "$root/home/node"
cp /etc/login.defs /etc/nsswitch.conf "$root/etc/"

container="$(buildah from scratch)"
trap 'buildah rm "$container" >/dev/null 2>&1 || true; rm -rf "$root"' EXIT
buildah copy --quiet "$container" "$root" / >/dev/null
# The official image's configuration (its PATH, NODE_VERSION and CMD).
buildah config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env NODE_VERSION="$node_version" \
  --cmd node \
  --label "io.weft.standin=node:$node_version-bookworm-slim made from this machine's files" \
  "$container"
buildah commit --quiet --rm "$container" "$image" >/dev/null
trap 'rm -rf "$root"' EXIT
echo "$image"
