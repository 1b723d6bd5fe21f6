#!/usr/bin/env bash
# Stops the operator started by `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PIDFILE=${TESTENV_DIR:-$PWD/.testenv}/pids/mattermost-operator
[ -f "$PIDFILE" ] || exit 0
PID=$(cat "$PIDFILE")
kill "$PID" 2>/dev/null || true
for _ in $(seq 30); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
kill -9 "$PID" 2>/dev/null || true
rm -f "$PIDFILE"
