#!/usr/bin/env bash
# Builds, once, the real Kubernetes control plane used by the end-to-end tests and the demo:
# kube-apiserver, kube-controller-manager, kubectl, etcd and helm, from pinned upstream Go modules,
# into a cache outside the repository keyed by version. Nothing built here is committed.
#
#   hack/build-control-plane.sh          build what is missing, print the bin directory
#
# Choices (measured on a 2-core machine, see README "Running the tests"):
# - Kubernetes v1.37.2: `go install k8s.io/kubernetes/cmd/...@v1.37.2` is refused because its go.mod
#   carries `replace` lines for the staging modules, so a throw-away wrapper module mirrors those lines
#   (derived from the real go.mod, so no staging module is missed) and builds the commands from there.
# - The version is stamped with ldflags so that /version and `kubectl version` report v1.37.2 (helm's
#   kubeVersion checks rely on it).
# - etcd v3.7.x: Kubernetes v1.37 pins the etcd 3.7 client (go.mod, build/dependencies.yaml); built from a wrapper main around etcdmain.Main since
#   the server module also carries `replace` lines.
# - helm v3.22.0 with `go install` (its go.mod has no replace lines) and the ldflags of helm's own
#   Makefile: version, tree state, and the Kubernetes version helm assumes without a cluster
#   (`helm template` without --kube-version), derived like the Makefile from its go.mod's client-go.
#   Without them helm assumes v1.20 and the chart's kubeVersion check fails. The ldflags are kept
#   next to the binary, so a helm built with other flags (an older recipe) is rebuilt.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
HELM_VERSION=${HELM_VERSION:-v3.22.0}

CACHE_ROOT=${TOMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/toma}
BIN=$CACHE_ROOT/control-plane-k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION/bin
mkdir -p "$BIN"

log() { printf 'build-control-plane: %s\n' "$*" >&2; }

export GOFLAGS=-mod=mod
export CGO_ENABLED=0

build_kubernetes() {
  local work minor gomod ldflags date
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  cd "$work"
  go mod init example.invalid/toma-k8sbins >/dev/null 2>&1
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import sys,json;print(json.load(sys.stdin)["GoMod"])')
  local staging=v0.${K8S_VERSION#v1.}
  {
    echo
    awk -v v="$staging" '/=> \.\/staging\/src\//{print "replace", $1, "=>", $1, v}' "$gomod"
    # godebug lines only take effect in the main module.
    awk '/^godebug/{print} /^godebug \(/{f=1;next} f&&/^\)/{print;f=0} f{print}' "$gomod"
  } >>go.mod
  go get "k8s.io/kubernetes@$K8S_VERSION" >&2
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy >&2
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date -X $pkg.gitCommit=0000000000000000000000000000000000000000"
  done
  go build -trimpath -tags providerless -ldflags "$ldflags" -o "$BIN/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl >&2
}

build_etcd() {
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  cd "$work"
  go mod init example.invalid/toma-etcdbin >/dev/null 2>&1
  cat >main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
  go mod tidy >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" . >&2
}

# helm's release ldflags (helm's Makefile). The module proxy does not carry the tag's commit, so
# gitCommit stays empty rather than invented.
helm_ldflags() {
  local gomod client_go version major minor
  gomod=$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | python3 -c 'import sys,json;print(json.load(sys.stdin)["GoMod"])')
  client_go=$(awk '$1 == "k8s.io/client-go" {print $2}' "$gomod")
  [ -n "$client_go" ] || { log "no k8s.io/client-go in helm's go.mod"; return 1; }
  # client-go v0.37.0 is Kubernetes v1.37: helm's Makefile adds one to the major version.
  version=${client_go#v}
  major=$((${version%%.*} + 1))
  minor=${version#*.}; minor=${minor%%.*}
  echo "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "-X helm.sh/helm/v3/internal/version.metadata= -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
    "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" \
    "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$major -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$minor"
}

build_helm() {
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  # Built aside and moved in, so a helm that is running elsewhere is never overwritten mid-way.
  GOBIN=$work go install -trimpath -ldflags "$HELM_LDFLAGS" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  mv -f "$work/helm" "$BIN/helm"
  printf '%s\n' "$HELM_LDFLAGS" >"$BIN/helm.ldflags"
}

started=$(date +%s)
[ -x "$BIN/etcd" ] || { log "building etcd $ETCD_VERSION"; (build_etcd); }
HELM_LDFLAGS=$(helm_ldflags)
if [ ! -x "$BIN/helm" ] || [ "$(cat "$BIN/helm.ldflags" 2>/dev/null)" != "$HELM_LDFLAGS" ]; then
  log "building helm $HELM_VERSION"
  (build_helm)
fi
if [ ! -x "$BIN/kube-apiserver" ] || [ ! -x "$BIN/kube-controller-manager" ] || [ ! -x "$BIN/kubectl" ]; then
  log "building kube-apiserver, kube-controller-manager and kubectl $K8S_VERSION (a cold build takes a while)"
  (build_kubernetes)
fi
log "ready in $(($(date +%s) - started)) s: $BIN"
echo "$BIN"
