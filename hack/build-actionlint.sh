#!/usr/bin/env bash
# Builds, once, actionlint (the GitHub Actions workflow linter) from its pinned Go module into a
# cache outside the repository keyed by version, and prints the binary's path.
#
#   hack/build-actionlint.sh             build it if missing, print its path
set -euo pipefail

ACTIONLINT_VERSION=${ACTIONLINT_VERSION:-v1.7.12}
CACHE_ROOT=${TOMA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/toma}
BIN=$CACHE_ROOT/actionlint-$ACTIONLINT_VERSION/bin

if [ ! -x "$BIN/actionlint" ]; then
  echo "build-actionlint: building actionlint $ACTIONLINT_VERSION" >&2
  mkdir -p "$BIN"
  GOFLAGS=-mod=mod CGO_ENABLED=0 GOBIN=$BIN go install -trimpath \
    -ldflags "-s -w" \
    "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION" >&2
fi
echo "$BIN/actionlint"
