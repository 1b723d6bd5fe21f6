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
nohup "$BIN" run --http-addr 127.0.0.1:18080 >"$STATE/operator.log" 2>&1 &
echo $! >"$STATE/pids/mattermost-operator"
echo "[demo] operator running (pid $(cat "$STATE/pids/mattermost-operator"), log $STATE/operator.log, metrics http://127.0.0.1:18080/metrics)"

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -n "$NS" -f examples/secrets.yaml >/dev/null
kubectl apply -n "$NS" -f examples/mattermost.yaml
echo "[demo] waiting for mm-demo to become stable"
kubectl wait -n "$NS" --for=jsonpath='{.status.state}'=stable mattermost/mm-demo --timeout=180s
kubectl get -n "$NS" mattermost,deployment,pods,service,ingress
echo "[demo] try: kubectl -n $NS patch mm mm-demo --type merge -p '{\"spec\":{\"version\":\"10.9.0\"}}'; kubectl -n $NS get mm -w"
