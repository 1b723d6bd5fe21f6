#!/usr/bin/env bash
# Fleet benchmark on the local control plane: N installations reconciled to `stable` by one
# operator process. Prints time to converge, the operator's memory, and its API requests (from
# the apiserver audit log), then the fleet CLI's `status` over the converged fleet (time and
# requests). Usage: hack/bench.sh [N]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
NS=bench
STATE=${TESTENV_DIR:-$PWD/.testenv}
bash hack/testenv/up.sh >/dev/null
export KUBECONFIG="$STATE/kubeconfig" PATH="$STATE/bin:$PATH"
cargo build --release -q -p mattermost-operator --bin mattermost-operator -p kubectl-mattermost --bin kubectl-mattermost
BIN=target/release/mattermost-operator
CLI=target/release/kubectl-mattermost
"$BIN" crd | kubectl apply --server-side --force-conflicts -f - >/dev/null
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl apply -n "$NS" -f examples/secrets.yaml >/dev/null

mark=$(wc -l <"$STATE/audit.log")
"$BIN" run --watch-namespace "$NS" --http-addr 127.0.0.1:0 --log-level warn >"$STATE/bench-operator.log" 2>&1 &
OP=$!
trap 'kill $OP 2>/dev/null || true' EXIT
start=$(date +%s.%N)
python3 - "$N" <<'PY' | kubectl apply -n "$NS" -f - >/dev/null
import json, sys
n = int(sys.argv[1])
items = [{
    "apiVersion": "installation.mattermost.com/v1beta1", "kind": "Mattermost",
    "metadata": {"name": f"mm-{i:04d}"},
    "spec": {"replicas": 1, "version": "10.8.1", "ingress": {"enabled": True, "host": f"mm-{i}.example.test"},
             "database": {"external": {"secret": "mm-demo-database"}},
             "fileStore": {"external": {"url": "s3.amazonaws.com", "bucket": "b", "secret": "mm-demo-s3"}},
             "scheduling": {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}},
} for i in range(n)]
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PY
while :; do
  stable=$(kubectl get mm -n "$NS" -o jsonpath='{range .items[*]}{.status.state}{"\n"}{end}' | grep -c '^stable$' || true)
  [ "$stable" -ge "$N" ] && break
  sleep 2
done
end=$(date +%s.%N)
converge_mark=$(wc -l <"$STATE/audit.log")
rss_converged=$(awk '/VmRSS/ {print $2}' /proc/$OP/status)
sleep 30
idle_mark=$(wc -l <"$STATE/audit.log")
rss_idle=$(awk '/VmRSS/ {print $2}' /proc/$OP/status)
cli_start=$(date +%s.%N)
"$CLI" -n "$NS" status >/dev/null || true
cli_end=$(date +%s.%N)
sleep 1
python3 - "$STATE/audit.log" "$mark" "$converge_mark" "$idle_mark" "$N" "$start" "$end" "$rss_converged" "$rss_idle" "$cli_start" "$cli_end" <<'PY'
import json, sys, collections
path, m0, m1, m2, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
start, end, rss_c, rss_i = float(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8]), int(sys.argv[9])
cli_s, cli_e = float(sys.argv[10]), float(sys.argv[11])
def ours(lines, agent="mattermost-operator/"):
    out = []
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("stage") == "ResponseComplete" and e.get("userAgent", "").startswith(agent):
            out.append(e)
    return out
lines = open(path).read().splitlines()
conv, idle = ours(lines[m0:m1]), ours(lines[m1:m2])
cli = ours(lines[m2:], "kubectl-mattermost/")
writes = lambda es: [e for e in es if e["verb"] in ("create", "update", "patch", "delete")]
by = collections.Counter(f'{e["verb"]} {e.get("objectRef", {}).get("resource", "")}' for e in conv)
print(f"installations:            {n}")
print(f"time to all stable:       {end - start:.1f} s")
print(f"operator RSS converged:   {rss_c / 1024:.1f} MiB")
print(f"operator RSS idle (30 s): {rss_i / 1024:.1f} MiB")
print(f"API requests to converge: {len(conv)} ({len(conv) / n:.1f} per installation), writes {len(writes(conv))} ({len(writes(conv)) / n:.1f} per installation)")
print(f"API requests idle 30 s:   {len(idle)}, writes {len(writes(idle))}")
for k, v in by.most_common(12):
    print(f"  {v:6d}  {k}")
print(f"kubectl mattermost status: {cli_e - cli_s:.2f} s, {len(cli)} API requests ({', '.join(sorted(set(e['verb'] + ' ' + e.get('objectRef', {}).get('resource', '') for e in cli)))})")
PY
kubectl delete namespace "$NS" --wait=false >/dev/null
