# Shared by hack/bench.sh and hack/bench-mem.sh (sourced, not run): fresh `bench-NN` namespaces
# with the demo Secrets, kwok nodes with room for the fleet, and the fleet helpers.
# Needs: N, REPLICAS, OP_BIN (the operator binary, for its CRDs), kubectl on PATH.
# PER_NS installations share a namespace (default 100; PER_NS=N puts the whole fleet in one). Why
# not all in one: kube-controller-manager's disruption controller matches every pod event against
# every PodDisruptionBudget of the pod's namespace, so one namespace of 1,000 installations makes
# the control plane, not the operator, the bottleneck (docs/benchmarks.md).
PER_NS=${PER_NS:-100}
NAMESPACES=$(( (N + PER_NS - 1) / PER_NS ))
delete_fleet() { # the namespaces and the extra nodes
  kubectl delete namespace -l mattermost-operator.bench=fleet --wait=true >/dev/null
  kubectl delete node -l 'kubernetes.io/hostname' --field-selector metadata.name!=kwok-node-0,metadata.name!=kwok-node-1,metadata.name!=kwok-node-2 >/dev/null 2>&1 || true
}
"$OP_BIN" crd | kubectl apply --server-side --force-conflicts -f - >/dev/null
delete_fleet # what an interrupted run left
for j in $(seq 0 $((NAMESPACES - 1))); do
  ns=$(printf 'bench-%02d' "$j")
  kubectl create namespace "$ns" >/dev/null
  kubectl label namespace "$ns" mattermost-operator.bench=fleet >/dev/null
  kubectl apply -n "$ns" -f examples/secrets.yaml >/dev/null
done
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
  python3 - "$N" "$REPLICAS" "$1" "$PER_NS" <<'PY'
import json, sys
n, replicas, version, per_ns = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
items = [{
    "apiVersion": "installation.mattermost.com/v1beta1", "kind": "Mattermost",
    "metadata": {"name": f"mm-{i:04d}", "namespace": f"bench-{i // per_ns:02d}"},
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
    done_=$(kubectl get mm -A -o jsonpath='{range .items[*]}{.metadata.namespace} {.status.state} {.status.version}{"\n"}{end}' \
      | grep -c "^bench-[0-9]* stable $1\$" || true)
    [ "$done_" -ge "$N" ] && break
    sleep 3
  done
}
