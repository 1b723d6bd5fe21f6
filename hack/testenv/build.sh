#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules into a version-keyed cache directory:
# kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes through the
# consumer module in go/k8s), etcd (go/etcd), kwok and helm (go install). A warm cache skips
# everything. Only the Go module proxy is contacted.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
mkdir -p "$TESTENV_BIN"
log() { printf '[testenv-build] %s\n' "$*" >&2; }
start=$(date +%s)

stamp_ldflags() {
  local now ld="-s -w"
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$K8S_MINOR"
    ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=$now"
  done
  printf '%s' "$ld"
}

need() { for b in "$@"; do [ -x "$TESTENV_BIN/$b" ] || return 0; done; return 1; }

if need kube-apiserver kube-controller-manager kube-scheduler kubectl; then
  log "building Kubernetes $K8S_VERSION (cold: 15-30 min on 2 cores)"
  ( cd "$here/go/k8s" && go build -trimpath -ldflags "$(stamp_ldflags)" -o "$TESTENV_BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl )
fi
if need etcd; then
  log "building etcd $ETCD_VERSION"
  ( cd "$here/go/etcd" && go build -trimpath -ldflags "-s -w" -o "$TESTENV_BIN/etcd" go.etcd.io/etcd/server/v3 )
fi
if need kwok; then
  log "installing kwok $KWOK_VERSION"
  GOBIN="$TESTENV_BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
fi
if need helm; then
  log "installing helm $HELM_VERSION"
  GOBIN="$TESTENV_BIN" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
# kwok's default stage files ship in its module; keep a copy next to the binaries so cluster-up
# needs neither the module cache nor the network.
if [ ! -d "$TESTENV_BIN/../kwok-stages" ]; then
  src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  mkdir -p "$TESTENV_BIN/../kwok-stages.tmp"
  cp -r "$src/kustomize/stage/." "$TESTENV_BIN/../kwok-stages.tmp/"
  chmod -R u+w "$TESTENV_BIN/../kwok-stages.tmp"
  mv "$TESTENV_BIN/../kwok-stages.tmp" "$TESTENV_BIN/../kwok-stages"
fi

v=$("$TESTENV_BIN/kube-apiserver" --version)
case "$v" in *"$K8S_VERSION"*) ;; *) log "kube-apiserver reports '$v', expected $K8S_VERSION"; exit 1 ;; esac
log "ready in $TESTENV_BIN ($(( $(date +%s) - start ))s)"
