#!/usr/bin/env bash
# Fleet benchmark on the local control plane: N installations of REPLICAS pods (external Postgres
# and S3) reconciled by one operator process (cluster-wide, as the chart installs it, rollout cap
# 20), in four phases: converge (create all, wait until all are stable) -> 60 s idle -> upgrade all
# to a new version (wait until all are stable on it) -> 60 s idle. Prints per phase: duration, the
# operator's API requests and writes (apiserver audit log, by user agent) per installation, and
# by verb and resource; the operator's peak and final RSS (VmHWM/VmRSS) and CPU seconds; then the
# fleet CLI's `status` over the fleet.
# The fleet is spread over namespaces of PER_NS installations (default 100, hack/bench-fleet.sh).
# Usage: hack/bench.sh [N] [REPLICAS]   (default 200 1). N=1000 REPLICAS=2 takes about 15 min on 2
# cores, then the namespaces' teardown.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
REPLICAS=${2:-1}
IDLE=${BENCH_IDLE:-60}
STATE=${TESTENV_DIR:-$PWD/.testenv}
bash hack/testenv/up.sh >/dev/null
export KUBECONFIG="$STATE/kubeconfig" PATH="$STATE/bin:$PATH"
cargo build --release -q -p mattermost-operator --bin mattermost-operator -p kubectl-mattermost --bin kubectl-mattermost
OP_BIN=target/release/mattermost-operator
CLI=target/release/kubectl-mattermost
# shellcheck source=hack/bench-fleet.sh
source hack/bench-fleet.sh
mark() { wc -l <"$STATE/audit.log"; }
now() { date +%s.%N; }
cpu() { awk -v t="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / t}' "/proc/$OP/stat"; }

m0=$(mark)
"$OP_BIN" run --http-addr 127.0.0.1:0 --log-level warn >"$STATE/bench-operator.log" 2>&1 &
OP=$!
trap 'kill $OP 2>/dev/null || true' EXIT
t0=$(now)
fleet 10.8.1 | kubectl apply -f - >/dev/null
wait_stable 10.8.1
t1=$(now); m1=$(mark); rss_converged=$(awk '/VmRSS/ {print $2}' "/proc/$OP/status"); cpu1=$(cpu)
sleep "$IDLE"
t2=$(now); m2=$(mark)
fleet 10.9.0 | kubectl apply -f - >/dev/null
wait_stable 10.9.0
t3=$(now); m3=$(mark); cpu3=$(cpu)
sleep "$IDLE"
t4=$(now); m4=$(mark)
rss_final=$(awk '/VmRSS/ {print $2}' "/proc/$OP/status"); rss_peak=$(awk '/VmHWM/ {print $2}' "/proc/$OP/status")
cpu4=$(cpu)
c0=$(now); "$CLI" -A status >/dev/null || true; c1=$(now)
sleep 1
python3 - "$STATE/audit.log" "$N" "$REPLICAS" "$m0" "$m1" "$m2" "$m3" "$m4" "$t0" "$t1" "$t2" "$t3" "$t4" \
  "$rss_converged" "$rss_final" "$rss_peak" "$cpu1" "$cpu3" "$cpu4" "$c0" "$c1" "$NAMESPACES" <<'PY'
import json, sys, collections
a = sys.argv
path, n, replicas = a[1], int(a[2]), int(a[3])
m = [int(x) for x in a[4:9]]
t = [float(x) for x in a[9:14]]
rss_c, rss_f, rss_p = (int(x) / 1024 for x in a[14:17])
cpu1, cpu3, cpu4 = (float(x) for x in a[17:20])
c0, c1, namespaces = float(a[20]), float(a[21]), int(a[22])
lines = open(path).read().splitlines()
def ours(chunk, agent="mattermost-operator/"):
    # The operator's requests for the bench namespaces and cluster-scoped ones (other namespaces
    # of the cluster are not the benchmark's).
    out = []
    for line in chunk:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        ns = e.get("objectRef", {}).get("namespace")
        if e.get("stage") == "ResponseComplete" and e.get("userAgent", "").startswith(agent) and (ns is None or ns.startswith("bench-")):
            out.append(e)
    return out
writes = lambda es: [e for e in es if e["verb"] in ("create", "update", "patch", "delete", "deletecollection")]
print(f"installations: {n} x {replicas} replicas in {namespaces} namespaces, rollout cap 20")
for name, (i, j), (s, e) in [("converge", (0, 1), (0, 1)), ("idle", (1, 2), (1, 2)),
                             ("upgrade", (2, 3), (2, 3)), ("idle after upgrade", (3, 4), (3, 4))]:
    es = ours(lines[m[i]:m[j]])
    w = writes(es)
    print(f"{name:20s} {t[e] - t[s]:7.1f} s  requests {len(es):6d} ({len(es) / n:5.1f}/installation)  "
          f"writes {len(w):6d} ({len(w) / n:5.1f}/installation)")
    if name in ("converge", "upgrade"):
        by = collections.Counter(f'{x["verb"]} {x.get("objectRef", {}).get("resource", "")}'
                                 + (f'/{x["objectRef"]["subresource"]}' if x.get("objectRef", {}).get("subresource") else "")
                                 for x in es)
        for k, v in by.most_common():
            print(f"    {v:6d}  {k}")
lists = [x for x in ours(lines[m[0]:m[4]]) if x["verb"] == "list" and x.get("objectRef", {}).get("resource") in ("nodes", "pods")]
print(f"LIST of nodes/pods over the run: {len(lists)} (the watches' initial lists)")
print(f"operator RSS: converged {rss_c:.1f} MiB, final {rss_f:.1f} MiB ({(rss_f / rss_c - 1) * 100:+.0f} %), peak {rss_p:.1f} MiB")
print(f"operator CPU: converge {cpu1:.1f} s, upgrade {cpu3 - cpu1:.1f} s, total {cpu4:.1f} s")
cli = ours(lines[m[4]:], "kubectl-mattermost/")
print(f"kubectl mattermost status: {c1 - c0:.2f} s, {len(cli)} API requests")
PY
delete_fleet
