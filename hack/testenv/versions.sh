# Pinned versions of the local control plane. Sourced by the testenv scripts.
# Changing any of them changes the cache key, so the next run rebuilds.
K8S_VERSION=v1.36.3
K8S_MINOR=36
ETCD_VERSION=v3.6.14
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
TESTENV_KEY="k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-kwok-${KWOK_VERSION}-helm-${HELM_VERSION}"
TESTENV_CACHE="${TESTENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mattermost-operator/testenv}"
TESTENV_BIN="$TESTENV_CACHE/$TESTENV_KEY/bin"
