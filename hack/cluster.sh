#!/usr/bin/env bash
# The local Kubernetes cluster for toma's tests and the demo: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler on 127.0.0.1, and a real node (containerd, runc and
# the kubelet; pods on an isolated bridge). tools/cluster (the `toma-cluster` binary, also a
# library for tests) does the work; this shim keeps the verbs, builds what is missing, and passes
# the built directories on.
#
#   hack/cluster.sh up       start it, with the node unless TOMA_NODE=0 (builds the binaries once,
#                            see hack/build-control-plane.sh and hack/build-node.sh); a no-op when up
#   hack/cluster.sh down     stop it and remove its state directory, leaving no process, container,
#                            mount, network namespace, cgroup or port behind
#   hack/cluster.sh env      print export lines for eval "$(hack/cluster.sh env)": KUBECONFIG, PATH
#                            (kubectl and helm), TOMA_CLUSTER_DIR and TOMA_HELM_VALUES
#   hack/cluster.sh status   say whether it is up and where; exit 0 only when up
#   hack/cluster.sh restart-apiserver [SECONDS]   stop the apiserver for SECONDS (default 10), restart it
#   hack/cluster.sh restart-kubelet               restart the kubelet, wait for the node to be Ready
#   hack/cluster.sh import-image ARCHIVE [REF]    import an image archive into the node (as REF)
#
# Environment: TOMA_CLUSTER_DIR (state dir, default /tmp/toma-cluster); TOMA_CLUSTER_CRDS (a file or
# directory of manifests applied before the controller manager starts, so its garbage collector
# knows their kinds at once); TOMA_CLUSTER_READY_TIMEOUT (seconds to wait for the apiserver,
# default 120); TOMA_NODE (0: the control plane alone); TOMA_NODE_SYNC_FREQUENCY (the kubelet's
# syncFrequency, default 1m: how late a mounted Secret's change may reach a pod).
#
# State lives in the state dir: pki/, kubeconfig, logs/, node/, one <component>.pid per process,
# helm-values.yaml, and cluster.env (ports, PIDs, bin dir; KEY=value lines other scripts read).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  sed -n '8,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

case ${1:-} in
  up)
    TOMA_CONTROL_PLANE_BIN=$("$ROOT/hack/build-control-plane.sh" | tail -n 1)
    export TOMA_CONTROL_PLANE_BIN
    if [ "${TOMA_NODE:-1}" != 0 ] && [[ " $* " != *" --no-node "* ]]; then
      TOMA_NODE_DIR=$("$ROOT/hack/build-node.sh" | tail -n 1)
      export TOMA_NODE_DIR
    fi
    ;;
  down | env | status | restart-apiserver | restart-kubelet | import-image) ;;
  *) usage ;;
esac

# Built when its sources changed, not on every call: cargo would wait for the build directory's
# lock while a `cargo test` that calls this script (restart-apiserver) holds it.
target=${CARGO_TARGET_DIR:-$ROOT/target}
case $target in /*) ;; *) target=$PWD/$target ;; esac
bin=$target/debug/toma-cluster
if [ ! -x "$bin" ] || [ -n "$(find "$ROOT/tools/cluster" "$ROOT/Cargo.lock" -newer "$bin" -type f -print -quit)" ]; then
  cargo build --quiet --manifest-path "$ROOT/Cargo.toml" -p toma-cluster >&2
fi
exec "$bin" "$@"
