#!/usr/bin/env bash
# The demo, as a user runs toma: the local cluster with its node, the fake Cloudflare, toma's image
# (make image) installed by its Helm chart into toma-system, an example TurnCredential, and a pod
# that mounts its Secret and prints iceServers.json before and after a rotation. Leaves everything
# up; `helm uninstall toma -n toma-system` removes toma, `hack/cluster.sh down` the cluster.
#
# The node's kubelet syncs pods every TOMA_NODE_SYNC_FREQUENCY (10s here, so the rotated file shows
# within about 15 s; the kubelet's own default, 1m, takes up to 90 s).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/prerequisites.sh
cargo build --quiet -p fake-cloudflare -p toma --bins
TOMA_NODE_SYNC_FREQUENCY=${TOMA_NODE_SYNC_FREQUENCY:-10s} hack/cluster.sh up
eval "$(hack/cluster.sh env)"
state=$TOMA_CLUSTER_DIR

say() { printf '\n\033[1m%s\033[0m\n' "$*"; }
say "$ make image   (toma's image, imported into the node as the chart's default image)"
hack/image.sh

# The fake Cloudflare on the host's loopback; toma's pod reaches it through the pod gateway.
if ! curl -s -o /dev/null http://127.0.0.1:8787/; then
  nohup target/debug/fake-cloudflare --listen 127.0.0.1:8787 \
    --key 0123456789abcdef0123456789abcdef=demo-api-token >"$state/logs/fake-cloudflare.log" 2>&1 &
  until curl -s -o /dev/null http://127.0.0.1:8787/; do sleep 0.2; done
fi

say "$ helm install toma charts/toma -n toma-system --create-namespace --wait -f \"\$TOMA_HELM_VALUES\""
helm upgrade --install toma charts/toma -n toma-system --create-namespace --wait --timeout 180s \
  -f "$TOMA_HELM_VALUES"
kubectl get pods -n toma-system -o wide

say "$ kubectl apply -f examples/demo/demo.yaml"
kubectl apply -f examples/demo/demo.yaml
kubectl wait -n app tc/web --for=condition=Ready --timeout=60s >/dev/null
say "$ kubectl get tc -n app -o wide"
kubectl get tc -n app -o wide

say "$ kubectl apply -f examples/demo/reader.yaml   (a pod that mounts the Secret web-ice)"
kubectl apply -f examples/demo/reader.yaml
kubectl wait -n app pod/reader --for=condition=Ready --timeout=120s >/dev/null
until kubectl logs -n app reader | grep -q "iceServers.json:$"; do sleep 1; done
say "$ kubectl logs -n app reader"
kubectl logs -n app reader

first=$(kubectl get secret web-ice -n app -o jsonpath='{.data.username}' | base64 -d)
say "$ toma rotate web -n app   (a new credential now; the kubelet updates the mounted file at its next sync)"
target/debug/toma rotate web -n app
until [ "$(kubectl logs -n app reader | grep -c "iceServers.json:$")" -ge 2 ]; do sleep 1; done
say "$ kubectl logs -n app reader"
kubectl logs -n app reader
say "$ toma status web -n app"
target/debug/toma status web -n app
now=$(kubectl get secret web-ice -n app -o jsonpath='{.data.username}' | base64 -d)
say "Rotated: username ${first:0:16}… became ${now:0:16}…, and the pod read it from its mounted file."
echo "toma's pods: kubectl logs -n toma-system deploy/toma. Remove: helm uninstall toma -n toma-system; hack/cluster.sh down"
