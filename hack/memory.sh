#!/usr/bin/env bash
# The memory run: toma with 100 TurnCredentials, then MEMORY_SECRETS (default 500) unrelated
# Secrets of 1 MiB each in the namespace it watches, against its own local control plane (no
# node). Prints toma's RSS before and after and its reconcile and mint counts. About 3 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/prerequisites.sh
export TOMA_CLUSTER_DIR=${TOMA_CLUSTER_DIR:-/tmp/toma-cluster-memory}
TOMA_NODE=0 TOMA_CLUSTER_CRDS=crds/ hack/cluster.sh up
trap 'hack/cluster.sh down' EXIT
eval "$(hack/cluster.sh env)"
kubectl apply --server-side -f crds/ >/dev/null
cargo test --test memory -- --ignored --nocapture
