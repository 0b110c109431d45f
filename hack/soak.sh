#!/usr/bin/env bash
# The soak: 100 credentials with a 60 s ttl for SOAK_SECONDS (default 900) under random provider
# faults, against its own local control plane. Prints its figures.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/prerequisites.sh
export TOMA_CLUSTER_DIR=${TOMA_CLUSTER_DIR:-/tmp/toma-cluster-soak}
# No node: the soak needs only the control plane, and a kubelet would only add noise.
TOMA_NODE=0 TOMA_CLUSTER_CRDS=crds/ hack/cluster.sh up
trap 'hack/cluster.sh down' EXIT
eval "$(hack/cluster.sh env)"
cargo test --release --test soak -- --ignored --nocapture
