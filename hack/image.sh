#!/usr/bin/env bash
# `make image`: builds the operator's container image without a Docker daemon and writes it as an
# OCI archive (an OCI image layout in a tar) to target/image/mattermost-operator.oci.tar.
#
# - The binary is static (glibc with crt-static), so the image is one file on an empty base.
# - The image is assembled by crane (github.com/google/go-containerregistry), built from its Go
#   module into the testenv cache like the control plane, pushing to a throw-away in-memory
#   registry on 127.0.0.1 and pulling the result back as OCI layout.
# - Entrypoint /mattermost-operator (the Go operator's path, so its chart's `command` works),
#   user 65532:65532 (nonroot), no shell, OCI labels.
#
# Knobs: IMAGE_PROFILE (cargo profile, default release), IMAGE_OUT (archive path),
#        IMAGE_REF (name written into the layout's index annotation).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
. hack/testenv/versions.sh
CRANE_VERSION=v0.22.1
CRANE="$TESTENV_CACHE/crane-$CRANE_VERSION/bin/crane"
PROFILE=${IMAGE_PROFILE:-release}
TARGET=x86_64-unknown-linux-gnu
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
OUT=${IMAGE_OUT:-$repo/target/image/mattermost-operator.oci.tar}
REF=${IMAGE_REF:-mattermost-operator:$VERSION}
log() { printf '[image] %s\n' "$*" >&2; }

if [ ! -x "$CRANE" ]; then
  log "installing crane $CRANE_VERSION from the Go module proxy"
  mkdir -p "$(dirname "$CRANE")"
  GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$(dirname "$CRANE")" \
    go install -trimpath -ldflags "-s -w" "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
fi

log "building a static binary (profile $PROFILE)"
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --profile "$PROFILE" --target "$TARGET" -p mattermost-operator --bin mattermost-operator
dir=$PROFILE; [ "$PROFILE" = dev ] && dir=debug
BIN="${CARGO_TARGET_DIR:-$repo/target}/$TARGET/$dir/mattermost-operator"
if readelf -d "$BIN" 2>/dev/null | grep -q NEEDED; then log "$BIN is not static (it needs shared libraries)"; exit 1; fi

work=$(mktemp -d)
registry_pid=
cleanup() { [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

# The layer: the binary and a passwd/group naming the nonroot user (for tools that show names).
mkdir -p "$work/root/etc" "$work/root/tmp"
install -m 0755 "$BIN" "$work/root/mattermost-operator"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$work/root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$work/root/etc/group"
chmod 1777 "$work/root/tmp"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/root" -cf "$work/layer.tar" .

# A registry that lives as long as this script, on a free loopback port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$CRANE" registry serve --address "127.0.0.1:$port" >"$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
staging="127.0.0.1:$port/mattermost-operator"

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
created=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
"$CRANE" append --oci-empty-base --platform linux/amd64 -f "$work/layer.tar" -t "$staging:layer" >/dev/null
"$CRANE" mutate "$staging:layer" -t "$staging:$VERSION" \
  --entrypoint /mattermost-operator --user 65532:65532 --workdir / --set-platform linux/amd64 \
  --exposed-ports 8383/tcp \
  -l org.opencontainers.image.title=mattermost-operator \
  -l "org.opencontainers.image.description=Kubernetes operator for Mattermost, written in Rust" \
  -l "org.opencontainers.image.version=$VERSION" \
  -l "org.opencontainers.image.revision=$revision" \
  -l "org.opencontainers.image.created=$created" \
  -l org.opencontainers.image.licenses=Apache-2.0 \
  -l org.opencontainers.image.source=https://github.com/mattermost-operator-rs/mattermost-operator \
  >/dev/null
"$CRANE" pull --format=oci "$staging:$VERSION" "$work/oci"
# Name the image in the layout's index, as `docker buildx --output type=oci` does.
python3 - "$work/oci/index.json" "$REF" <<'PY'
import json, sys
path, ref = sys.argv[1], sys.argv[2]
index = json.load(open(path))
for m in index["manifests"]:
    m.setdefault("annotations", {})["org.opencontainers.image.ref.name"] = ref
json.dump(index, open(path, "w"))
PY
mkdir -p "$(dirname "$OUT")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work/oci" -cf "$OUT" .
log "wrote $OUT ($(du -h "$OUT" | cut -f1)); digest $("$CRANE" digest "$staging:$VERSION")"
