#!/usr/bin/env bash
# `make test`: everything CI runs. Lints, then unit and real-control-plane tests. Builds the
# control plane when the cache is cold, starts it when it is not up, and stops it again at the end
# if this script started it (a cluster you brought up with `make cluster-up` is left running).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export TESTENV_DIR="${TESTENV_DIR:-$repo/.testenv}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

bash hack/testenv/build.sh
bash hack/tools.sh
started=0
if ! "$TESTENV_DIR/bin/kubectl" --kubeconfig "$TESTENV_DIR/kubeconfig" get --raw /readyz >/dev/null 2>&1; then
  bash hack/testenv/up.sh
  started=1
fi
cleanup() {
  if [ "$started" = 1 ]; then bash hack/testenv/down.sh; fi
}
trap cleanup EXIT

cargo test --workspace --all-targets
