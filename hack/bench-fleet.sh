# Shared by hack/bench.sh and hack/bench-mem.sh (sourced, not run): a fresh `bench` namespace with
# the demo Secrets, kwok nodes with room for the fleet, and the fleet helpers.
# Needs: N, REPLICAS, NS, OP_BIN (the operator binary, for its CRDs), kubectl on PATH.
"$OP_BIN" crd | kubectl apply --server-side --force-conflicts -f - >/dev/null
kubectl delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
kubectl create namespace "$NS" >/dev/null
kubectl apply -n "$NS" -f examples/secrets.yaml >/dev/null
# Room for the fleet: the testenv's three nodes take 110 pods each.
nodes=$(( (N * (REPLICAS + 1)) / 1000 + 1 ))
for i in $(seq 0 $((nodes - 1))); do
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: bench-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {type: kwok, kubernetes.io/hostname: bench-node-$i, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
status:
  allocatable: {cpu: "64", memory: 512Gi, pods: "1100"}
  capacity: {cpu: "64", memory: 512Gi, pods: "1100"}
EOF
done | kubectl apply -f - >/dev/null

fleet() { # fleet VERSION: the N installations as one List
  python3 - "$N" "$REPLICAS" "$1" <<'PY'
import json, sys
n, replicas, version = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
items = [{
    "apiVersion": "installation.mattermost.com/v1beta1", "kind": "Mattermost",
    "metadata": {"name": f"mm-{i:04d}"},
    "spec": {"replicas": replicas, "version": version, "ingress": {"enabled": False},
             "database": {"external": {"secret": "mm-demo-database"}},
             "fileStore": {"external": {"url": "s3.amazonaws.com", "bucket": "b", "secret": "mm-demo-s3"}},
             "scheduling": {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}}},
} for i in range(n)]
print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
PY
}
wait_stable() { # wait_stable VERSION: until all N are stable at it
  while :; do
    done_=$(kubectl get mm -n "$NS" -o jsonpath='{range .items[*]}{.status.state} {.status.version}{"\n"}{end}' \
      | grep -c "^stable $1\$" || true)
    [ "$done_" -ge "$N" ] && break
    sleep 3
  done
}
