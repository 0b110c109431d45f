#!/usr/bin/env bash
# Builds, once, the external-secrets operator (ESO) controller used by hack/bench-eso.sh, from its
# pinned upstream Go module, into a cache outside the repository keyed by version, and copies its
# CRDs next to it. Nothing built here is committed.
#
#   hack/build-external-secrets.sh       build what is missing, print the cache directory
#                                        (<dir>/bin/external-secrets, <dir>/crds/*.yaml)
#
# Environment: ESO_VERSION (default v0.16.2), TOMA_CACHE (default ~/.cache/toma).
#
# Choices:
# - v0.16.2, not the newer v1.3.2 that the module proxy also serves: from v1.x on, the repository
#   is split into nested modules (apis, runtime, providers/v1/*, generators/v1/*) that its go.mod
#   pulls in with `replace … => ./apis` and friends. A module zip leaves nested modules out, and
#   those nested modules have no version tags of their own, so the proxy answers 404 for
#   github.com/external-secrets/external-secrets/apis@v1.3.2 (and every sibling): v1.3.2 cannot be
#   built from the module proxy, only from a git checkout. v0.16.2 is one module with a single
#   `replace` (sprig → external-secrets/sprig), which the wrapper module mirrors.
# - The main package is the module root (main.go → cmd/controller.Execute()); `webhook` and
#   `certcontroller` are subcommands of the same binary, unused by the benchmark.
# - The build is `nice -n 19 go build -p 1`: the machine has 2 cores shared with other work, and
#   ESO links every provider SDK (AWS, Azure, GCP, Vault, ...), so the build is long and large.
#   The build time is printed and written to <dir>/build-seconds.
# - CRDs: config/crds/bases/*.yaml from the module (the kubebuilder bases, without the
#   conversion-webhook stanza that deploy/crds/bundle.yaml carries for the Helm chart's webhook
#   Service, which does not exist on the bench control plane).
set -euo pipefail

ESO_VERSION=${ESO_VERSION:-v0.16.2}
ESO_MODULE=github.com/external-secrets/external-secrets

CACHE_ROOT=${TOMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/toma}
DIR=$CACHE_ROOT/external-secrets-$ESO_VERSION
BIN=$DIR/bin

log() { printf 'build-external-secrets: %s\n' "$*" >&2; }

export GOFLAGS=-mod=mod
export CGO_ENABLED=0

module_json() {
  go mod download -json "$ESO_MODULE@$ESO_VERSION"
}

json_field() {
  python3 -c 'import sys,json; d=json.load(sys.stdin); e=d.get("Error"); sys.exit("go mod download: "+e) if e else print(d[sys.argv[1]])' "$1"
}

build_eso() {
  local work gomod
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  cd "$work"
  go mod init example.invalid/toma-esobin >/dev/null 2>&1
  gomod=$(module_json | json_field GoMod)
  if grep -Eq '=>[[:space:]]*\.\.?/' "$gomod"; then
    log "error: $ESO_MODULE@$ESO_VERSION replaces $(grep -Ec '=>[[:space:]]*\.\.?/' "$gomod") modules with directories of its own repository, e.g."
    grep -E '=>[[:space:]]*\.\.?/' "$gomod" | head -3 | sed 's/^[[:space:]]*/    /' >&2
    log "those nested modules are not in the module zip and not served by the module proxy; pick ESO_VERSION=v0.16.2"
    return 1
  fi
  {
    echo
    # `replace` lines only take effect in the main module: mirror them (one-line and block form).
    awk '/^replace \(/{f=1;next} f&&/^\)/{f=0;next} f&&NF{print "replace", $0} /^replace [^(]/{print}' "$gomod"
    awk '/^godebug/{print} /^godebug \(/{f=1;next} f&&/^\)/{print;f=0} f{print}' "$gomod"
  } >>go.mod
  go get "$ESO_MODULE@$ESO_VERSION" >&2
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "github.com/external-secrets/external-secrets"
)
GO
  go mod tidy >&2
  mkdir -p "$BIN"
  nice -n 19 go build -p 1 -trimpath -ldflags "-s -w" -o "$BIN/external-secrets" "$ESO_MODULE" >&2
}

copy_crds() {
  local src
  src=$(module_json | json_field Dir)/config/crds/bases
  [ -d "$src" ] || { log "error: no $src in the module"; return 1; }
  mkdir -p "$DIR/crds"
  find "$src" -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml -exec cp {} "$DIR/crds/" \;
  chmod -R u+w "$DIR/crds"
}

if [ ! -x "$BIN/external-secrets" ]; then
  log "building external-secrets $ESO_VERSION with nice -n 19 go build -p 1 (a cold build takes a while)"
  started=$(date +%s)
  (build_eso)
  echo $(($(date +%s) - started)) >"$DIR/build-seconds"
  log "built in $(cat "$DIR/build-seconds") s"
fi
if ! ls "$DIR"/crds/*.yaml >/dev/null 2>&1; then
  copy_crds
fi
log "ready: $DIR"
echo "$DIR"
