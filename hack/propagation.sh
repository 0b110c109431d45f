#!/usr/bin/env bash
# The propagation run: a pod mounting a TurnCredential's Secret on a real node whose kubelet keeps
# its default settings (syncFrequency 1m, unless TOMA_NODE_SYNC_FREQUENCY says otherwise), through
# PROPAGATION_ROTATIONS (default 5) rotations of a PROPAGATION_TTL (default 240 s) credential with
# PROPAGATION_RENEW_BEFORE (default: toma's). Prints the delay from toma's Secret write to the
# changed file in the pod (min, median, max) and the count of reads that saw an expired
# credential. Takes about 12 minutes with the defaults, against its own local cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
export TOMA_CLUSTER_DIR=${TOMA_CLUSTER_DIR:-/tmp/toma-cluster-propagation}
TOMA_CLUSTER_CRDS=crds/ hack/cluster.sh up
trap 'hack/cluster.sh down' EXIT
eval "$(hack/cluster.sh env)"
kubectl apply --server-side -f crds/ >/dev/null
cargo test --test propagation -- --ignored --nocapture
