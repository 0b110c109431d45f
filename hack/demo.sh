#!/usr/bin/env bash
# The demo: a local control plane, the fake Cloudflare, toma, and an example TurnCredential.
# Shows the Secret and status toma produces, then a rotation. Leaves the control plane up;
# `hack/cluster.sh down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/prerequisites.sh
cargo build --quiet --workspace --bins
hack/cluster.sh up
eval "$(hack/cluster.sh env)"
state=${TOMA_CLUSTER_DIR:-/tmp/toma-cluster}

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

target/debug/fake-cloudflare --listen 127.0.0.1:8787 --key 0123456789abcdef0123456789abcdef=demo-api-token \
  >"$state/logs/fake-cloudflare.log" 2>&1 &
pids+=($!)
kubectl apply --server-side -f crds/ >/dev/null
target/debug/toma run --http-addr 127.0.0.1:8080 >"$state/logs/toma.log" 2>&1 &
pids+=($!)
until curl -sf http://127.0.0.1:8080/readyz >/dev/null; do sleep 0.5; done

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
say "$ kubectl apply -f examples/demo/demo.yaml"
kubectl apply -f examples/demo/demo.yaml
kubectl wait -n app tc/web --for=condition=Ready --timeout=60s >/dev/null
say "$ kubectl get tc -n app -o wide"
kubectl get tc -n app -o wide
say "$ kubectl get secret web-ice -n app -o jsonpath='{.data.iceServers\.json}' | base64 -d"
kubectl get secret web-ice -n app -o jsonpath='{.data.iceServers\.json}' | base64 -d | python3 -m json.tool
first=$(kubectl get secret web-ice -n app -o jsonpath='{.data.username}' | base64 -d)
say "Waiting for the rotation (the credential lives 60 s and is renewed 45 s before expiry)..."
until [ "$(kubectl get secret web-ice -n app -o jsonpath='{.data.username}' | base64 -d)" != "$first" ]; do sleep 1; done
say "$ kubectl get tc -n app -o wide"
kubectl get tc -n app -o wide
say "$ kubectl get events -n app"
kubectl get events -n app --sort-by=.lastTimestamp
say "Rotated: username ${first:0:16}… became $(kubectl get secret web-ice -n app -o jsonpath='{.data.username}' | base64 -d | cut -c1-16)…"
echo "toma's log: $state/logs/toma.log. Stop the control plane with: hack/cluster.sh down"
