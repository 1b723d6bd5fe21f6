#!/usr/bin/env bash
# make demo: local control plane → CRDs → operator (background) → sample installation → stable.
# `make demo-down` stops the operator; `make cluster-down` stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
NS=${DEMO_NAMESPACE:-mattermost-demo}
STATE=${TESTENV_DIR:-$PWD/.testenv}

bash hack/testenv/up.sh
export KUBECONFIG="$STATE/kubeconfig" PATH="$STATE/bin:$PATH"

cargo build -p mattermost-operator --bin mattermost-operator
BIN=target/debug/mattermost-operator
"$BIN" crd | kubectl apply --server-side --force-conflicts -f - >/dev/null
kubectl wait --for=condition=Established crd/mattermosts.installation.mattermost.com --timeout=60s >/dev/null

bash hack/demo-down.sh >/dev/null 2>&1 || true
# A free port outside the control plane's range (12000-31999).
HTTP_PORT=${DEMO_HTTP_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
nohup "$BIN" run --http-addr "127.0.0.1:$HTTP_PORT" >"$STATE/operator.log" 2>&1 &
echo $! >"$STATE/pids/mattermost-operator"
sleep 1
kill -0 "$(cat "$STATE/pids/mattermost-operator")" || { cat "$STATE/operator.log"; exit 1; }
echo "[demo] operator running (pid $(cat "$STATE/pids/mattermost-operator"), log $STATE/operator.log, metrics http://127.0.0.1:$HTTP_PORT/metrics)"

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n "$NS" -f examples/secrets.yaml >/dev/null
kubectl apply -n "$NS" -f examples/mattermost.yaml
echo "[demo] waiting for mm-demo to become stable"
kubectl wait -n "$NS" --for=jsonpath='{.status.state}'=stable mattermost/mm-demo --timeout=180s
kubectl get -n "$NS" mattermost,deployment,pods,service,ingress
echo "[demo] try: kubectl -n $NS patch mm mm-demo --type merge -p '{\"spec\":{\"version\":\"10.9.0\"}}'; kubectl -n $NS get mm -w"
