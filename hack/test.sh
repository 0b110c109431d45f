#!/usr/bin/env bash
# Runs every test: formatting, lints, the CRD drift check, unit and integration tests, and the
# end-to-end tests against a real control plane that this script builds (once, cached) and
# starts, then stops. `make test` and CI run exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(($(date +%s) - started))"; }

step "prerequisites"
hack/prerequisites.sh

step "formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The GitHub workflows; shellcheck and pyflakes off, so the result does not depend on what else
# the machine has installed.
"$(hack/build-actionlint.sh)" -shellcheck= -pyflakes=
# helm built with its release ldflags knows the Kubernetes it was built against, so the chart's
# kubeVersion check passes with no --kube-version, as with a released helm.
"$(hack/build-control-plane.sh)/helm" template toma charts/toma >/dev/null

step "generated files are up to date"
hack/generate.sh
git diff --exit-code -- crds/ charts/ || { echo "generated files changed: run hack/generate.sh and commit" >&2; exit 1; }

step "unit and integration tests"
cargo test --workspace

step "property tests at length (bad input at scale: 5000 cases each, about 30 s)"
PROPTEST_CASES=${PROPTEST_CASES:-5000} cargo test --test properties

step "the local cluster alone: up with a node, pods on the pod network and the gateway, then down leaves nothing"
cargo test -p toma-cluster -- --ignored

step "control plane"
# CRDs go in before the controller-manager starts, so its garbage collector knows them at once.
# A kubelet that syncs pods every 10 s, so that the mount tests see rotations reach pods within
# about 15 s; hack/propagation.sh measures the default of 1 minute.
TOMA_NODE_SYNC_FREQUENCY=10s TOMA_CLUSTER_CRDS=crds/ hack/cluster.sh up
trap 'hack/cluster.sh down' EXIT
eval "$(hack/cluster.sh env)"
kubectl apply --server-side -f crds/

step "toma's image (make image), imported into the node under the chart's default reference"
hack/image.sh

step "end-to-end tests"
cargo test --test e2e -- --ignored --skip disruptive:: --skip pods:: --skip cluster_wide:: --test-threads "${E2E_THREADS:-4}"

step "WebRTC tests: the Secret in headless Chromium and turnutils_uclient against a real coturn"
cargo test --test webrtc -- --ignored

step "toma as pods installed by helm, and a toma for the whole cluster (cluster-wide, so alone)"
cargo test --test e2e -- --ignored pods:: cluster_wide:: --test-threads 1

step "end-to-end tests that disturb the control plane, alone"
cargo test --test e2e -- --ignored disruptive:: --test-threads 1

step "done in $(($(date +%s) - started)) s"
