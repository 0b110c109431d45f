#!/usr/bin/env bash
# Regenerates every generated file from the Rust types. Never edit crds/ by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --bin toma -- crds > crds/toma.dev.yaml
if [ -d charts/toma/crds ]; then
  cp crds/toma.dev.yaml charts/toma/crds/toma.dev.yaml
fi
