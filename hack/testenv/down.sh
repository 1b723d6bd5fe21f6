#!/usr/bin/env bash
# Stops every process hack/testenv/up.sh started (by PID, never by name) and removes the state
# directory. Safe to run when nothing is up.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
D="${TESTENV_DIR:-$repo/.testenv}"
[ -d "$D" ] || exit 0
pids=()
# reverse start order: clients first, etcd last
for n in mattermost-operator kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f="$D/pids/$n"
  [ -f "$f" ] || continue
  p=$(cat "$f")
  if kill -0 "$p" 2>/dev/null; then kill -TERM "$p" 2>/dev/null || true; pids+=("$p"); fi
done
for _ in $(seq 1 15); do
  alive=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && break
  sleep 0.2
done
for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
for _ in $(seq 1 50); do
  alive=0
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=$p; done
  [ "$alive" = 0 ] && break
  sleep 0.1
done
if [ "$alive" != 0 ]; then printf '[testenv] process %s survived SIGKILL\n' "$alive" >&2; exit 1; fi
rm -rf "$D"
printf '[testenv] down\n' >&2
