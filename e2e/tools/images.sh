#!/usr/bin/env bash
# Builds the operator and ingester images from operator/Containerfile and ingester/Containerfile
# with buildah and saves each as an OCI archive (ready for `skopeo copy oci-archive:...` or
# `podman load -i ...`), tagged with the chart's appVersion.
#
#   images.sh release   the release binaries -> $KAFKATABLE_CACHE/images/release (`make images`)
#   images.sh test      the debug binaries   -> $KAFKATABLE_CACHE/images/test (what the process
#                       kubelet runs in the tests and the demo; same Containerfiles, faster build)
#
# The runtime root filesystem is scratch plus exactly what the binary needs: the shared libraries
# `ldd` lists (glibc, OpenSSL, zlib, libgcc, copied from this machine's Debian packages, with
# their copyright files), CA certificates, time zones, and /etc/passwd with the user 65532.
# Idempotent: an archive whose inputs (binary, Containerfile, libraries) did not change is kept.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
CACHE=${KAFKATABLE_CACHE:-$HOME/.cache/kafkatable}
RUN=${KAFKATABLE_RUN:-$CACHE/run}
TARGET=${CARGO_TARGET_DIR:-$CACHE/target}
flavour=${1:-release}
case $flavour in
  release) profile=release ;;
  test) profile=debug ;;
  *) echo "usage: images.sh release|test" >&2; exit 2 ;;
esac
out=$CACHE/images/$flavour
version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/charts/kafkatable-operator/Chart.yaml")
registry=ghcr.io/kafkatable

log() { printf '[images] %s\n' "$*" >&2; }

if ! command -v buildah >/dev/null; then
  log "installing buildah from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends buildah >/dev/null
fi
# Rootful vfs storage in the cache: works without a container engine or overlay support.
bah() { buildah --root "$CACHE/buildah/storage" --runroot "$RUN/buildah" --storage-driver vfs "$@"; }
mkdir -p "$out" "$RUN/buildah"

# The package that owns a file, for its copyright notice.
package_of() {
  { dpkg -S "$1" 2>/dev/null || dpkg -S "$(readlink -f "$1")" 2>/dev/null || true; } | head -n1 | cut -d: -f1
}

# Stages the image context for one binary under $1: rootfs/ and the Containerfile's inputs.
stage() {
  local ctx=$1 bin=$2
  local rootfs=$ctx/rootfs
  rm -rf "$ctx"; mkdir -p "$rootfs"/{usr/local/bin,etc/ssl/certs,usr/share/doc,tmp}
  chmod 1777 "$rootfs/tmp"
  install -m 0755 "$bin" "$rootfs/usr/local/bin/"
  local packages=(ca-certificates tzdata)
  # Each library at the path the dynamic loader looks for it, the loader itself included.
  while read -r lib; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
    packages+=("$(package_of "$lib")")
  done < <(ldd "$bin" | grep -oE '/[^ ]+\.so[^ ]*' | sort -u)
  cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  cp -a /usr/share/zoneinfo "$rootfs/usr/share/"
  for p in $(printf '%s\n' "${packages[@]}" | grep -v '^$' | sort -u); do
    if [[ -f /usr/share/doc/$p/copyright ]]; then
      mkdir -p "$rootfs/usr/share/doc/$p"; cp "/usr/share/doc/$p/copyright" "$rootfs/usr/share/doc/$p/"
    fi
  done
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
  printf 'hosts: files dns\n' > "$rootfs/etc/nsswitch.conf"
  # Mount points a runtime binds over; present so a read-only root needs no new directories.
  mkdir -p "$rootfs"/{proc,dev,sys,var/run/secrets}
  : > "$rootfs/etc/hosts"; : > "$rootfs/etc/resolv.conf"; : > "$rootfs/etc/hostname"
}

build() {
  local name=$1
  local bin=$TARGET/$profile/$name
  [[ -x $bin ]] || { log "ERROR: $bin missing: cargo build${profile/debug/} -p $name"; exit 1; }
  local ref=$registry/$name:$version
  local archive=$out/$name-$version.tar
  local ctx=$CACHE/images/.context-$flavour-$name
  stage "$ctx" "$bin"
  cp "$root/$(crate_dir "$name")/Containerfile" "$ctx/Containerfile"
  local sum; sum=$( (cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | sha256sum | cut -c1-64)
  if [[ -f $archive && $(cat "$archive.inputs" 2>/dev/null) == "$sum" ]]; then
    log "$ref unchanged ($archive)"; return 0
  fi
  log "building $ref from $(crate_dir "$name")/Containerfile ($profile binary)"
  # --timestamp 0: the same inputs give the same image digest, so the kubelet unpacks it once.
  bah bud --quiet --timestamp 0 --layers=false --build-arg "VERSION=$version" \
    -f "$ctx/Containerfile" -t "$ref" "$ctx" >/dev/null
  rm -f "$archive.tmp"
  bah push --quiet "$ref" "oci-archive:$archive.tmp:$ref"
  mv "$archive.tmp" "$archive"
  echo "$sum" > "$archive.inputs"
  bah rmi -f "$ref" >/dev/null 2>&1 || true
  rm -rf "$ctx"
  log "$ref -> $archive ($(du -h "$archive" | cut -f1))"
}

crate_dir() { case $1 in kafkatable-operator) echo operator ;; kafkatable-ingester) echo ingester ;; esac; }

# The smoke tests' image: static busybox (its applets as links) and kubectl.
toolbox() {
  local ref=localhost/kafkatable-e2e-toolbox:test archive=$out/kafkatable-e2e-toolbox-$K8S_VERSION.tar
  local ctx=$CACHE/images/.context-toolbox kubectl=$CACHE/k8s-$K8S_VERSION/kubectl
  if [[ ! -x /bin/busybox ]] || ! /bin/busybox --list >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends busybox-static >/dev/null
  fi
  [[ -f $archive ]] && return 0
  rm -f "$out"/kafkatable-e2e-toolbox-*.tar
  rm -rf "$ctx"; mkdir -p "$ctx/rootfs"/{bin,usr/local/bin,etc,tmp,proc,dev}
  chmod 1777 "$ctx/rootfs/tmp"
  install -m 0755 /bin/busybox "$ctx/rootfs/bin/busybox"
  for applet in $(/bin/busybox --list); do [[ $applet == busybox ]] || ln -sf busybox "$ctx/rootfs/bin/$applet"; done
  install -m 0755 "$kubectl" "$ctx/rootfs/usr/local/bin/kubectl"
  printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/tmp:/bin/sh\n' > "$ctx/rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' > "$ctx/rootfs/etc/group"
  cp "$root/e2e/images/toolbox.Containerfile" "$ctx/Containerfile"
  bah bud --quiet --timestamp 0 --layers=false -f "$ctx/Containerfile" -t "$ref" "$ctx" >/dev/null
  bah push --quiet "$ref" "oci-archive:$archive.tmp:$ref" && mv "$archive.tmp" "$archive"
  bah rmi -f "$ref" >/dev/null 2>&1 || true
  rm -rf "$ctx"
  log "$ref -> $archive"
}

build kafkatable-operator
build kafkatable-ingester
if [[ $flavour == test ]]; then toolbox; fi
