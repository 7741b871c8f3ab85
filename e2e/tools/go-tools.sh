#!/usr/bin/env bash
# Builds the Go-based infrastructure from the Go module proxy into the cache:
#   kube-apiserver, kube-controller-manager, kubectl, etcd, helm, minio, and kt-health (the
#   kstatus library and Argo CD's Lua VM, for the GitOps health tests). (No kube-scheduler:
#   the process kubelet binds pods to its one node itself.)
# Idempotent: a binary that is already in the cache is not rebuilt.
# Usage: go-tools.sh [k8s|etcd|helm|minio]...   (default: all)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
CACHE=${KAFKATABLE_CACHE:-$HOME/.cache/kafkatable}
export GOFLAGS=-buildvcs=false CGO_ENABLED=0
# Go's module and build caches live in the cache too, so removing $CACHE is a true cold start.
export GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build
mkdir -p "$CACHE"

log() { printf '[go-tools] %s\n' "$*" >&2; }

# Runs `go build` for each package in a throwaway wrapper module whose go.mod is read from stdin.
build_in_wrapper() {
  local out=$1 ldflags=$2; shift 2
  local work; work=$(mktemp -d "$CACHE/.gobuild.XXXXXX")
  cat > "$work/go.mod"
  printf 'package tools\n\nimport (\n' > "$work/tools.go"
  for pkg in "$@"; do printf '\t_ "%s"\n' "$pkg" >> "$work/tools.go"; done
  printf ')\n' >> "$work/tools.go"
  sed -i '1i //go:build tools\n' "$work/tools.go"
  (cd "$work" && go mod tidy -e >/dev/null 2>&1 || true
   cd "$work" && GOFLAGS="$GOFLAGS -mod=mod" go mod download
   mkdir -p "$out.tmp"
   for pkg in "$@"; do
     log "building $pkg"
     GOFLAGS="$GOFLAGS -mod=mod" go build -trimpath -ldflags "$ldflags" -o "$out.tmp/" "$pkg"
   done)
  rm -rf "$out"; mv "$out.tmp" "$out"; rm -rf "$work"
}

k8s() {
  local out="$CACHE/k8s-$K8S_VERSION"
  [[ -x $out/kube-apiserver && -x $out/kubectl && -x $out/kube-controller-manager ]] && return 0
  local staging="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
    cloud-provider cluster-bootstrap code-generator component-base component-helpers
    controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation
    endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy
    kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission sample-apiserver
    sample-cli-plugin sample-controller"
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ld+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
  ld+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  log "building Kubernetes $K8S_VERSION (first time: 10-25 min on 2 cores)"
  {
    echo "module kafkatable.local/k8stools"
    echo "go 1.24"
    echo "require k8s.io/kubernetes $K8S_VERSION"
    for m in $staging; do echo "replace k8s.io/$m => k8s.io/$m $K8S_STAGING_VERSION"; done
  } | build_in_wrapper "$out" "$ld" k8s.io/kubernetes/cmd/kube-apiserver \
        k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
}

etcd() {
  local out="$CACHE/etcd-$ETCD_VERSION"
  [[ -x $out/etcd ]] && return 0
  rm -rf "$out"
  log "building etcd $ETCD_VERSION"
  printf 'module kafkatable.local/etcdtools\ngo 1.24\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" \
    | build_in_wrapper "$out" "-s -w" go.etcd.io/etcd/server/v3
  # go names a binary after the path element before a major-version suffix: server/v3 -> server
  mv "$out/server" "$out/etcd"
}

helm() {
  local out="$CACHE/helm-$HELM_VERSION"
  [[ -x $out/helm ]] && return 0
  log "building helm $HELM_VERSION"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

minio() {
  local out="$CACHE/minio-$MINIO_VERSION"
  [[ -x $out/minio ]] && return 0
  log "building minio $MINIO_VERSION"
  GOBIN="$out.tmp" go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION"
  rm -rf "$out"; mv "$out.tmp" "$out"
}

# kt-health (e2e/tools/health): kstatus and Argo CD's Lua VM over captured KafkaTables. Keyed
# by its sources, which pin the module versions.
health() {
  local src="$here/health"
  local key; key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
  local out="$CACHE/kt-health-$key"
  [[ -x $out/kt-health ]] && return 0
  log "building kt-health (kstatus, gopher-lua)"
  mkdir -p "$out.tmp"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$out.tmp/kt-health" .)
  rm -rf "$out"; mv "$out.tmp" "$out"
  ln -sfn "$out" "$CACHE/kt-health"
}

targets=("$@"); [[ ${#targets[@]} -eq 0 ]] && targets=(k8s etcd helm minio health)
for t in "${targets[@]}"; do "$t"; done
