#!/usr/bin/env bash
# Test tools built from Go modules, each into its own version-keyed cache directory next to the
# control plane's (so a new tool version never forces a Kubernetes rebuild):
#   kstatus  - hack/tools/kstatus, a tiny wrapper around sigs.k8s.io/cli-utils/pkg/kstatus
#   promtool - github.com/prometheus/prometheus/cmd/promtool
# A warm cache skips everything. Only the Go module proxy is contacted.
# `hack/tools.sh env` prints KSTATUS=... and PROMTOOL=... lines for the tests.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=testenv/versions.sh
. "$here/testenv/versions.sh"
KSTATUS_VERSION=v0.37.2   # sigs.k8s.io/cli-utils, pinned in hack/tools/kstatus/go.mod
PROMTOOL_VERSION=v0.316.0 # github.com/prometheus/prometheus
# The wrapper's own source is part of its key, so an edit rebuilds it.
KSTATUS_SRC=$(cat "$here/tools/kstatus/go.mod" "$here/tools/kstatus/go.sum" "$here/tools/kstatus/main.go" | sha256sum | cut -c1-12)
KSTATUS="$TESTENV_CACHE/kstatus-$KSTATUS_VERSION-$KSTATUS_SRC/bin/kstatus"
PROMTOOL="$TESTENV_CACHE/promtool-$PROMTOOL_VERSION/bin/promtool"
if [ "${1:-}" = env ]; then
  printf 'KSTATUS=%s\nPROMTOOL=%s\n' "$KSTATUS" "$PROMTOOL"
  exit 0
fi
export GOTOOLCHAIN=local CGO_ENABLED=0
log() { printf '[tools] %s\n' "$*" >&2; }

if ! grep -q "sigs.k8s.io/cli-utils $KSTATUS_VERSION" "$here/tools/kstatus/go.mod"; then
  log "hack/tools/kstatus/go.mod does not pin cli-utils $KSTATUS_VERSION"; exit 1
fi
if [ ! -x "$KSTATUS" ]; then
  log "building kstatus (cli-utils $KSTATUS_VERSION)"
  mkdir -p "$(dirname "$KSTATUS")"
  ( cd "$here/tools/kstatus" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$KSTATUS.tmp" . )
  mv "$KSTATUS.tmp" "$KSTATUS"
fi
if [ ! -x "$PROMTOOL" ]; then
  log "installing promtool $PROMTOOL_VERSION (cold: a few minutes on 2 cores)"
  mkdir -p "$(dirname "$PROMTOOL")"
  GOBIN="$(dirname "$PROMTOOL")" go install -trimpath -ldflags "-s -w" \
    "github.com/prometheus/prometheus/cmd/promtool@$PROMTOOL_VERSION"
fi
