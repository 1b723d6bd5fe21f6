#!/usr/bin/env bash
# Memory investigation on the local control plane, faster than hack/bench.sh: N installations of
# REPLICAS pods are created at once and reconciled by one operator process (cluster-wide, as
# bench.sh runs it); prints the operator's RSS when all are stable, then (UPGRADE=1) after all are
# upgraded to a new version. RSS is sampled every 2 s into $STATE/bench-mem-rss.log.
# Usage: hack/bench-mem.sh [N] [REPLICAS]
# Knobs: OP_BIN (operator binary, default target/release/mattermost-operator, built if default),
#        UPGRADE (0/1, default 0), MAX_ROLLOUTS (rollout cap, default 20), SETTLE (seconds idle
#        before the final figure, default 5), OP_ARGS (extra operator flags), OP_PRELOAD (a malloc
#        library preloaded into the operator only; it replaces malloc for C code, and for Rust code
#        only in an OP_BIN from before the jemalloc global allocator, commit d99fca7).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-300}
REPLICAS=${2:-2}
UPGRADE=${UPGRADE:-0}
MAX_ROLLOUTS=${MAX_ROLLOUTS:-20}
SETTLE=${SETTLE:-5}
STATE=${TESTENV_DIR:-$PWD/.testenv}
bash hack/testenv/up.sh >/dev/null
export KUBECONFIG="$STATE/kubeconfig" PATH="$STATE/bin:$PATH"
if [ -z "${OP_BIN:-}" ]; then
  cargo build --release -q -p mattermost-operator --bin mattermost-operator
  OP_BIN=target/release/mattermost-operator
fi
# shellcheck source=hack/bench-fleet.sh
source hack/bench-fleet.sh
rss() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$OP/status"; }
hwm() { awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$OP/status"; }

LD_PRELOAD=${OP_PRELOAD:-} "$OP_BIN" run --http-addr 127.0.0.1:0 --log-level warn \
  --max-reconciling-installations "$MAX_ROLLOUTS" ${OP_ARGS:-} >"$STATE/bench-mem-operator.log" 2>&1 &
OP=$!
trap 'kill $OP 2>/dev/null || true' EXIT
( t0=$(date +%s); while kill -0 $OP 2>/dev/null; do
    echo "$(( $(date +%s) - t0 )) $(awk '/VmRSS/ {print $2}' /proc/$OP/status 2>/dev/null)"; sleep 2
  done ) >"$STATE/bench-mem-rss.log" &
t0=$(date +%s)
fleet 10.8.1 | kubectl apply -f - >/dev/null
wait_stable 10.8.1
t1=$(date +%s)
echo "converged: $((t1 - t0)) s, RSS $(rss) MiB, peak $(hwm) MiB"
sleep "$SETTLE"
echo "converged + ${SETTLE}s: RSS $(rss) MiB, peak $(hwm) MiB"
if [ "$UPGRADE" = 1 ]; then
  fleet 10.9.0 | kubectl apply -f - >/dev/null
  wait_stable 10.9.0
  t2=$(date +%s)
  echo "upgraded: $((t2 - t1 - SETTLE)) s, RSS $(rss) MiB, peak $(hwm) MiB"
  sleep "$SETTLE"
  echo "upgraded + ${SETTLE}s: RSS $(rss) MiB, peak $(hwm) MiB"
fi
# The operator removes its finalizers: delete the fleet before stopping it.
delete_fleet
kill -TERM $OP; wait $OP 2>/dev/null || true
