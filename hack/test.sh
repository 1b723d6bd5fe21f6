#!/usr/bin/env bash
# `make test`: everything CI runs. Lints, then unit and real-control-plane tests. Builds the
# control plane when the cache is cold, starts it when it is not up, and stops it again at the end
# if this script started it (a cluster you brought up with `make cluster-up` is left running).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export TESTENV_DIR="${TESTENV_DIR:-$repo/.testenv}"
# A second control plane for the tests of several clusters at once (`sites`: one per site).
export TESTENV_DIR_B="${TESTENV_DIR_B:-$TESTENV_DIR-b}"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

bash hack/testenv/build.sh
bash hack/tools.sh
started=()
for dir in "$TESTENV_DIR" "$TESTENV_DIR_B"; do
  if ! "$dir/bin/kubectl" --kubeconfig "$dir/kubeconfig" get --raw /readyz >/dev/null 2>&1; then
    TESTENV_DIR="$dir" bash hack/testenv/up.sh
    started+=("$dir")
  fi
done
cleanup() {
  for dir in "${started[@]}"; do TESTENV_DIR="$dir" bash hack/testenv/down.sh; done
}
trap cleanup EXIT

cargo test --workspace --all-targets
