#!/usr/bin/env bash
# Starts the local control plane on 127.0.0.1: etcd, kube-apiserver (audit log on),
# kube-controller-manager (all controllers), kube-scheduler and kwok with 3 fake nodes.
# Writes $TESTENV_DIR/kubeconfig (default .testenv/kubeconfig). Safe to run twice: a live
# control plane is reused, a half-dead one is stopped and started again.
#
# Knobs (environment):
#   TESTENV_DIR              state directory (default: <repo>/.testenv)
#   TESTENV_CACHE            binary cache root (default: ~/.cache/mattermost-operator/testenv)
#   TESTENV_POD_READY_DELAY  default delay before a pod becomes Running+Ready (default 1s)
#   TESTENV_NODE_CPU / TESTENV_NODE_MEMORY   allocatable per fake node (default 8 / 32Gi)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.sh
. "$here/versions.sh"
D="${TESTENV_DIR:-$repo/.testenv}"
READY_DELAY="${TESTENV_POD_READY_DELAY:-1s}"
NODE_CPU="${TESTENV_NODE_CPU:-8}"
NODE_MEMORY="${TESTENV_NODE_MEMORY:-32Gi}"
log() { printf '[testenv] %s\n' "$*" >&2; }
t0=$(date +%s.%N)

# --- reuse a live control plane ----------------------------------------------------------------
alive() {
  [ -d "$D/pids" ] || return 1
  local n
  for n in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
    [ -f "$D/pids/$n" ] && kill -0 "$(cat "$D/pids/$n")" 2>/dev/null || return 1
  done
  "$D/bin/kubectl" --kubeconfig "$D/kubeconfig" get --raw /readyz >/dev/null 2>&1
}
if alive; then
  log "already up: export KUBECONFIG=$D/kubeconfig"
  exit 0
fi
[ -d "$D" ] && "$here/down.sh"

"$here/build.sh"
BIN="$TESTENV_BIN"
mkdir -p "$D"/{pids,logs,certs,bin,cmdlines}
ln -sf "$BIN/kubectl" "$D/bin/kubectl"
ln -sf "$BIN/helm" "$D/bin/helm"
D=$(cd "$D" && pwd)

# --- ports ---------------------------------------------------------------------------------------
used=" "
free_port() {
  local p
  while :; do
    # below the kernel's ephemeral range (32768+), so no client socket can hold the port
    p=$(( 12000 + RANDOM % 20000 ))
    case "$used" in *" $p "*) continue ;; esac
    if command -v ss >/dev/null && [ -n "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ]; then continue; fi
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then used="$used$p "; echo "$p"; return; fi
  done
}
ETCD_PORT=$(free_port); ETCD_PEER=$(free_port); API_PORT=$(free_port)
KCM_PORT=$(free_port); SCHED_PORT=$(free_port); KWOK_PORT=$(free_port)
printf 'API_PORT=%s\nETCD_PORT=%s\nKCM_PORT=%s\nSCHED_PORT=%s\nKWOK_PORT=%s\n' \
  "$API_PORT" "$ETCD_PORT" "$KCM_PORT" "$SCHED_PORT" "$KWOK_PORT" > "$D/ports"

# --- certificates (X.509 v3; rustls rejects v1 and CN-only certificates) -------------------------
(
  cd "$D/certs"
  key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
  key ca
  openssl req -x509 -new -key ca.key -out ca.crt -days 3650 -subj "/CN=testenv-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  sign() { # name subject eku [san]
    key "$1"
    openssl req -new -key "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
    { echo "basicConstraints=CA:FALSE"; echo "keyUsage=critical,digitalSignature"; echo "extendedKeyUsage=$3"
      [ -n "${4:-}" ] && echo "subjectAltName=$4"; } > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -out "$1.crt" -extfile "$1.ext" 2>/dev/null
  }
  sign apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1"
  sign admin "/O=system:masters/CN=testenv-admin" clientAuth
  sign kcm "/CN=system:kube-controller-manager" clientAuth
  sign scheduler "/CN=system:kube-scheduler" clientAuth
  sign kwok "/O=system:masters/CN=kwok-controller" clientAuth
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
kubeconfig() { # file cert-basename
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster: {server: "https://127.0.0.1:$API_PORT", certificate-authority: "$D/certs/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$D/certs/$2.crt", client-key: "$D/certs/$2.key"}
contexts:
- name: testenv
  context: {cluster: testenv, user: $2}
current-context: testenv
EOF
}
kubeconfig "$D/kcm.kubeconfig" kcm
kubeconfig "$D/scheduler.kubeconfig" scheduler
kubeconfig "$D/kwok.kubeconfig" kwok

# --- helpers -------------------------------------------------------------------------------------
start() { # name args...
  local name=$1; shift
  # The exact command line (NUL-separated), so a test can restart the process identically.
  printf '%s\0' "$@" > "$D/cmdlines/$name"
  setsid "$@" >"$D/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$D/pids/$name"
}
wait_for() { # name seconds command...
  local name=$1 secs=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$D/pids/$name")" 2>/dev/null; then
      log "$name exited; last log lines:"; tail -20 "$D/logs/$name.log" >&2; exit 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$name not ready after ${secs}s; last log lines:"; tail -20 "$D/logs/$name.log" >&2; exit 1
    fi
    sleep 0.2
  done
}
CURL=(curl -sf --max-time 2 --cacert "$D/certs/ca.crt" --cert "$D/certs/admin.crt" --key "$D/certs/admin.key")

# --- etcd ----------------------------------------------------------------------------------------
start etcd "$BIN/etcd" --name=testenv --data-dir="$D/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster="testenv=http://127.0.0.1:$ETCD_PEER" --listen-metrics-urls="" \
  --unsafe-no-fsync=true --auto-compaction-retention=1 --quota-backend-bytes=4294967296 --log-level=warn
wait_for etcd 30 curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver (audit log: metadata level, one JSON line per request) -----------------------
cat > "$D/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
EOF
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --secure-port="$API_PORT" \
  --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
  --tls-cert-file="$D/certs/apiserver.crt" --tls-private-key-file="$D/certs/apiserver.key" \
  --client-ca-file="$D/certs/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$D/certs/sa.pub" --service-account-signing-key-file="$D/certs/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --authorization-mode=Node,RBAC --allow-privileged=true \
  --enable-priority-and-fairness=false --profiling=false \
  --audit-policy-file="$D/audit-policy.yaml" --audit-log-path="$D/audit.log" \
  --audit-log-format=json --audit-log-maxsize=1024 --audit-log-maxbackup=1 \
  --v=1
wait_for kube-apiserver 90 "${CURL[@]}" "https://127.0.0.1:$API_PORT/readyz"
kubeconfig "$D/admin.kubeconfig" admin
KC=("$BIN/kubectl" --kubeconfig "$D/admin.kubeconfig")

# --- controller-manager and scheduler ------------------------------------------------------------
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig="$D/kcm.kubeconfig" \
  --authentication-kubeconfig="$D/kcm.kubeconfig" --authorization-kubeconfig="$D/kcm.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
  --controllers='*' --use-service-account-credentials=true \
  --service-account-private-key-file="$D/certs/sa.key" --root-ca-file="$D/certs/ca.crt" \
  --cluster-signing-cert-file="$D/certs/ca.crt" --cluster-signing-key-file="$D/certs/ca.key" \
  --enable-hostpath-provisioner=true \
  --node-monitor-grace-period=2m \
  --kube-api-qps=200 --kube-api-burst=400 --concurrent-deployment-syncs=10 \
  --concurrent-replicaset-syncs=10 --concurrent-service-endpoint-syncs=10 --concurrent-gc-syncs=20 \
  --v=1
cat > "$D/scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection: {kubeconfig: "$D/scheduler.kubeconfig", qps: 200, burst: 400}
leaderElection: {leaderElect: false}
EOF
start kube-scheduler "$BIN/kube-scheduler" --config="$D/scheduler.yaml" \
  --authentication-kubeconfig="$D/scheduler.kubeconfig" --authorization-kubeconfig="$D/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --v=1

# --- kwok: node stages from kwok's module, pod stages of our own (stages.yaml) --------------------
{
  printf 'apiVersion: config.kwok.x-k8s.io/v1alpha1\nkind: KwokConfiguration\noptions:\n'
  printf '  cidr: 10.200.0.0/16\n  nodeIP: 127.0.0.1\n  nodeLeaseDurationSeconds: 40\n'
  # kwok applies its option defaults only when it has no config file, so set them here
  printf '  podPlayStageParallelism: 16\n  nodePlayStageParallelism: 4\n  nodeLeaseParallelism: 4\n'
  printf '  podsOnNodeSyncParallelism: 2\n  enablePodsOnNodeSyncListPager: true\n'
  printf '  enableDebuggingHandlers: false\n  enableProfilingHandler: false\n'
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           node/chaos/node-not-ready.yaml; do
    printf -- '---\n'; cat "$BIN/../kwok-stages/$f"
  done
  printf -- '---\n'
  sed "s/__READY_DELAY__/$READY_DELAY/g" "$here/stages.yaml"
} > "$D/kwok.yaml"
start kwok "$BIN/kwok" --kubeconfig="$D/kwok.kubeconfig" --config="$D/kwok.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-ip=127.0.0.1 --node-lease-duration-seconds=40 --cidr=10.200.0.0/16 \
  --server-address="127.0.0.1:$KWOK_PORT"
wait_for kwok 30 curl -sf --max-time 2 "http://127.0.0.1:$KWOK_PORT/healthz"
wait_for kube-controller-manager 60 curl -sfk --max-time 2 "https://127.0.0.1:$KCM_PORT/healthz"
wait_for kube-scheduler 60 curl -sfk --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz"

# --- cluster objects: 3 fake nodes in 3 zones, default StorageClass -------------------------------
{
  zones=(zone-a zone-b zone-c)
  for i in 0 1 2; do
    zone=${zones[$i]}
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels:
    type: kwok
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    topology.kubernetes.io/zone: $zone
    topology.kubernetes.io/region: testenv
status:
  allocatable: {cpu: "$NODE_CPU", memory: "$NODE_MEMORY", pods: "110"}
  capacity: {cpu: "$NODE_CPU", memory: "$NODE_MEMORY", pods: "110"}
EOF
  done
  cat <<EOF
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
} | "${KC[@]}" apply -f - >/dev/null
"${KC[@]}" wait --for=condition=Ready node --all --timeout=60s >/dev/null
# the default ServiceAccount appears once the controller-manager's token controller runs
for _ in $(seq 1 100); do
  "${KC[@]}" -n default get serviceaccount default >/dev/null 2>&1 && break; sleep 0.2
done

cp "$D/admin.kubeconfig" "$D/kubeconfig"
log "up in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s: export KUBECONFIG=$D/kubeconfig PATH=$D/bin:\$PATH"
