#!/usr/bin/env bash
# toma next to external-secrets (ESO), the tool a user would otherwise pick: for each N, toma's
# own benchmark (toma-bench, as hack/bench.sh runs it), then N ExternalSecrets with a Webhook
# generator posting to the fake Cloudflare, measured by the same toma-bench
# (`--operator toma --operator eso`), on the same control plane, one after the other, never both
# at once. Prints one table per N: time to all Ready, memory, CPU, mints and API writes per
# credential, a restart, an idle spell, and the floor. Nothing passes or fails. See
# bench/eso/README.md.
#
#   hack/bench-eso.sh [N ...]      default: 100 1000
#
# Environment:
#   ESO_VERSION           external-secrets version (default v0.16.2; see hack/build-external-secrets.sh)
#   ESO_BENCH_CONFIGS     ESO configurations to measure, one column each, as CONCURRENT:QPS pairs
#                         (default "16:50": --concurrent 16, toma's default concurrency, and ESO's
#                         default client QPS 50, burst 100; another QPS gets burst twice the QPS).
#                         ESO's Helm chart runs --concurrent 1: "16:50 16:1000 1:50" shows all three
#   ESO_BENCH_ARGS        more ESO flags for every ESO run, space-separated
#   ESO_BENCH_TOMA        run (default): toma on the same N; skip: ESO's figures (and the floor) only
#   TOMA_BENCH_NOTE       a remark printed with the figures
#
# The control plane lives in /tmp/toma-cluster-eso (TOMA_CLUSTER_DIR), with both toma's and ESO's
# CRDs, and is stopped on exit, as is every ESO and toma the bench started. It is not
# hack/bench.sh's /tmp/toma-cluster-bench, so both can run on one machine (their figures then
# share the CPUs). Results: target/bench-eso/results-N.json; logs (one per namespace):
# target/bench-eso/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(100 1000)
for n in "${counts[@]}"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "usage: hack/bench-eso.sh [N ...]  (N a positive number, got '$n')" >&2; exit 2; }
done
toma_mode=${ESO_BENCH_TOMA:-run}
case $toma_mode in run | skip) ;; *) echo "ESO_BENCH_TOMA must be run or skip" >&2; exit 2 ;; esac
read -r -a configs <<<"${ESO_BENCH_CONFIGS:-16:50}"
# toma-bench checks each pair too; this only fails before the long build rather than after it.
for c in "${configs[@]}"; do
  [[ $c =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]] || { echo "ESO_BENCH_CONFIGS: CONCURRENT:QPS pairs, got '$c'" >&2; exit 2; }
done

export TOMA_CLUSTER_DIR=/tmp/toma-cluster-eso
out=target/bench-eso
log() { printf 'bench-eso: %s\n' "$*" >&2; }

hack/prerequisites.sh
eso_dir=$(hack/build-external-secrets.sh)
eso_bin=$eso_dir/bin/external-secrets
eso_version=$(basename "$eso_dir"); eso_version=${eso_version#external-secrets-}
log "building toma and toma-bench (release)"
cargo build --release --quiet -p toma -p toma-bench

# Processes the bench started are stopped by PID, and only if that PID still runs the binary
# it was started from (a leftover of a bench that was itself killed, say).
stop_pids() { # FILE BINARY
  local pid
  [ -f "$1" ] || return 0
  while read -r pid; do
    [[ $pid =~ ^[0-9]+$ ]] || continue
    if [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$2")" ]; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done <"$1"
  rm -f "$1"
}
cleanup() {
  stop_pids "$out/eso.pids" "$eso_bin"
  stop_pids "$out/toma.pids" target/release/toma
  hack/cluster.sh down || true
}

mkdir -p "$out"
stop_pids "$out/eso.pids" "$eso_bin"
stop_pids "$out/toma.pids" target/release/toma
trap cleanup EXIT
trap 'exit 130' INT TERM

# Both sets of CRDs before the controller manager starts (its garbage collector then knows the
# owners of the Secrets at once; see hack/cluster.sh).
rm -rf "$out/crds" && mkdir -p "$out/crds"
cp crds/*.yaml "$eso_dir"/crds/*.yaml "$out/crds/"
log "control plane in $TOMA_CLUSTER_DIR, with the CRDs of toma and ESO $eso_version"
TOMA_NODE=0 TOMA_CLUSTER_CRDS=$out/crds hack/cluster.sh up
cluster_env=$TOMA_CLUSTER_DIR/cluster.env
apiserver_pid=$(sed -n 's/^APISERVER_PID=//p' "$cluster_env")
etcd_pid=$(sed -n 's/^ETCD_PID=//p' "$cluster_env")
bin=$(sed -n 's/^BIN=//p' "$cluster_env")
etcd_version=$("$bin/etcd" --version 2>/dev/null | sed -n 's/^etcd Version: /etcd /p')
export KUBECONFIG=$TOMA_CLUSTER_DIR/kubeconfig

flags=(--eso "$eso_bin" --eso-version "$eso_version" --parallelism 32
  --apiserver-pid "$apiserver_pid" --etcd-pid "$etcd_pid" --etcd-version "$etcd_version" --out-dir "$out")
[ "$toma_mode" = skip ] || flags+=(--operator toma --toma target/release/toma --concurrency 16)
flags+=(--operator eso)
for c in "${configs[@]}"; do flags+=(--eso-config "$c"); done
# shellcheck disable=SC2086 # word splitting of extra flags is the point
for a in ${ESO_BENCH_ARGS:-}; do flags+=("--eso-arg=$a"); done
[ -z "${TOMA_BENCH_NOTE:-}" ] || flags+=(--note "$TOMA_BENCH_NOTE")

log "toma-bench ${counts[*]} on $(nproc) cores (load average $(cut -d' ' -f1-3 /proc/loadavg))"
target/release/toma-bench "${counts[@]}" "${flags[@]}"
if [ "$toma_mode" = skip ]; then
  echo "toma's figures for the same N: hack/bench.sh ${counts[*]}"
fi
