#!/usr/bin/env bash
# Builds, once, what the local cluster's node runs: kubelet and kube-scheduler, containerd with its
# runc shim and ctr, runc, and two images (the pause image and a busybox image for consumer pods),
# from pinned upstream Go modules and Debian packages, into a cache outside the repository keyed by
# version. Nothing built here is committed.
#
#   hack/build-node.sh          build what is missing, print the node directory (bin/, images/)
#
# Choices (see ../README.md "The local node"):
# - kubelet and kube-scheduler v1.37.2 come from the same throw-away wrapper module technique and
#   version ldflags as hack/build-control-plane.sh; they reuse the Go caches its build leaves.
# - containerd v2.4.2 (Kubernetes 1.37 is paired with containerd 2.3/2.4) and runc v1.5.2 with
#   `go install`: neither go.mod carries replace lines. runc needs cgo for seccomp (libseccomp-dev);
#   the libpathrs tag stays off because that library is not in Debian 12.
# - The pause binary is built from k8s.io/kubernetes' own build/pause/linux/pause.c, statically.
# - Images are single-layer `docker save` archives written deterministically (fixed mtimes, uid and
#   gid 0, sorted entries), so no registry and no image builder is involved. busybox is Debian's
#   busybox-static with a symlink for every applet.
# - CNI plugins come from Debian's containernetworking-plugins (/usr/lib/cni).
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
RUNC_VERSION=${RUNC_VERSION:-v1.5.2}
PAUSE_TAG=3.10.2

CACHE_ROOT=${TOMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/toma}
NODE=$CACHE_ROOT/node-k8s-$K8S_VERSION-containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION
BIN=$NODE/bin
IMAGES=$NODE/images
mkdir -p "$BIN" "$IMAGES"

log() { printf 'build-node: %s\n' "$*" >&2; }

export GOFLAGS=-mod=mod

install_packages() {
  local missing=() entry
  for entry in /usr/lib/cni/bridge:containernetworking-plugins /bin/busybox:busybox-static \
    /usr/include/seccomp.h:libseccomp-dev /usr/bin/nsenter:util-linux /usr/bin/unshare:util-linux \
    /usr/bin/ip:iproute2 /usr/sbin/nft:nftables /usr/bin/gcc:gcc /usr/lib/x86_64-linux-gnu/libc.a:libc6-dev \
    /usr/bin/python3:python3; do
    [ -e "${entry%%:*}" ] || missing+=("${entry#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || { log "error: missing packages: ${missing[*]} (install them, or run as root)"; exit 1; }
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

build_kubelet_and_scheduler() {
  local work minor gomod ldflags date staging
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  cd "$work"
  go mod init example.invalid/toma-nodebins >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import sys,json;print(json.load(sys.stdin)["GoMod"])')
  staging=v0.${K8S_VERSION#v1.}
  {
    echo
    awk -v v="$staging" '/=> \.\/staging\/src\//{print "replace", $1, "=>", $1, v}' "$gomod"
    awk '/^godebug/{print} /^godebug \(/{f=1;next} f&&/^\)/{print;f=0} f{print}' "$gomod"
  } >>go.mod
  go get "k8s.io/kubernetes@$K8S_VERSION" >&2
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
  go mod tidy >&2
  minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date -X $pkg.gitCommit=0000000000000000000000000000000000000000"
  done
  CGO_ENABLED=0 go build -trimpath -tags providerless -ldflags "$ldflags" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler >&2
}

build_containerd() {
  local module=github.com/containerd/containerd/v2
  CGO_ENABLED=0 GOBIN=$BIN go install -trimpath -tags "urfave_cli_no_docs no_btrfs" \
    -ldflags "-s -w -X $module/version.Version=$CONTAINERD_VERSION" \
    "$module/cmd/containerd@$CONTAINERD_VERSION" \
    "$module/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$module/cmd/ctr@$CONTAINERD_VERSION" >&2
}

build_runc() {
  CGO_ENABLED=1 GOBIN=$BIN go install -trimpath -tags "seccomp urfave_cli_no_docs" -ldflags "-s -w" \
    "github.com/opencontainers/runc@$RUNC_VERSION" >&2
}

build_pause() {
  local dir
  dir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import sys,json;print(json.load(sys.stdin)["Dir"])')
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_TAG" -o "$BIN/pause.tmp" "$dir/build/pause/linux/pause.c"
  strip "$BIN/pause.tmp"
  mv "$BIN/pause.tmp" "$BIN/pause"
}

# pack_image ARCHIVE REF CONFIG_JSON ROOTFS_SPEC: a one-layer `docker save` archive. ROOTFS_SPEC is
# lines of "file <path> <mode> <source>", "dir <path> <mode>" or "link <path> <target>".
pack_image() {
  python3 - "$@" <<'PY'
import hashlib, io, json, sys, tarfile

archive, ref, config_json, spec = sys.argv[1:5]

def info(name, kind, mode, size=0, target=""):
    t = tarfile.TarInfo(name)
    t.type, t.mode, t.size, t.linkname = kind, mode, size, target
    t.mtime, t.uid, t.gid, t.uname, t.gname = 0, 0, 0, "", ""
    return t

entries = []
for line in spec.strip().splitlines():
    kind, path, *rest = line.split()
    if kind == "dir":
        entries.append((path, info(path, tarfile.DIRTYPE, int(rest[0], 8)), None))
    elif kind == "file":
        data = open(rest[1], "rb").read()
        entries.append((path, info(path, tarfile.REGTYPE, int(rest[0], 8), len(data)), data))
    elif kind == "link":
        entries.append((path, info(path, tarfile.SYMTYPE, 0o777, target=rest[0]), None))

def tar_bytes(items):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for _, t, data in items:
            tar.addfile(t, io.BytesIO(data) if data is not None else None)
    return out.getvalue()

layer = tar_bytes(sorted(entries, key=lambda e: e[0]))
layer_digest = hashlib.sha256(layer).hexdigest()
config = json.loads(config_json)
config.update({"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
               "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_digest]}})
config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
manifest = json.dumps([{"Config": config_name, "RepoTags": [ref],
                        "Layers": [layer_digest + "/layer.tar"]}]).encode()
outer = [(n, info(n, tarfile.REGTYPE, 0o644, len(d)), d) for n, d in [
    (layer_digest + "/layer.tar", layer), (config_name, config_bytes), ("manifest.json", manifest)]]
with open(archive + ".tmp", "wb") as f:
    f.write(tar_bytes(sorted(outer, key=lambda e: e[0])))
PY
  mv "$1.tmp" "$1"
}

pack_pause() {
  pack_image "$IMAGES/pause.tar" "localhost/pause:$PAUSE_TAG" \
    '{"config":{"Entrypoint":["/pause"],"User":"65535:65535","Env":["PATH=/"]}}' \
    "file pause 0755 $BIN/pause"
}

pack_busybox() {
  local spec applet passwd
  passwd=$(mktemp)
  trap 'rm -f "$passwd"' RETURN
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$passwd"
  spec="dir bin 0755
file bin/busybox 0755 /bin/busybox
dir etc 0755
file etc/passwd 0644 $passwd
dir tmp 1777
dir root 0700
dir var 0755
dir var/www 0755"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || spec+=$'\n'"link bin/$applet busybox"
  done
  pack_image "$IMAGES/busybox.tar" localhost/busybox:latest \
    '{"config":{"Cmd":["sh"],"Env":["PATH=/bin"]}}' "$spec"
}

started=$(date +%s)
install_packages
if [ ! -x "$BIN/kubelet" ] || [ ! -x "$BIN/kube-scheduler" ]; then
  log "building kubelet and kube-scheduler $K8S_VERSION"
  (build_kubelet_and_scheduler)
fi
if [ ! -x "$BIN/containerd" ] || [ ! -x "$BIN/containerd-shim-runc-v2" ] || [ ! -x "$BIN/ctr" ]; then
  log "building containerd $CONTAINERD_VERSION (a few minutes)"
  (build_containerd)
fi
[ -x "$BIN/runc" ] || { log "building runc $RUNC_VERSION"; (build_runc); }
[ -x "$BIN/pause" ] || { log "building pause $PAUSE_TAG"; build_pause; }
[ -f "$IMAGES/pause.tar" ] || { log "packing localhost/pause:$PAUSE_TAG"; pack_pause; }
[ -f "$IMAGES/busybox.tar" ] || { log "packing localhost/busybox:latest"; (pack_busybox); }
log "ready in $(($(date +%s) - started)) s: $NODE"
echo "$NODE"
