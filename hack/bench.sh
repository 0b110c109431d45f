#!/usr/bin/env bash
# Benchmarks toma on a control plane of its own and prints figures (nothing passes or fails):
# time from creating N TurnCredentials to all Ready, provider mints and API writes per
# credential, toma's memory and CPU, a restart, an idle spell, and the same work done by a bare
# client with no operator (the floor). See tools/bench/README.md.
#
#   hack/bench.sh [N ...]      default: 100 1000
#   hack/bench.sh 5000         the long run (several minutes on 2 cores)
#
# Environment:
#   TOMA_BENCH_CONCURRENCY   toma --concurrency values to measure, space-separated (default "16 64")
#   TOMA_BENCH_MINT_RATES    toma --mint-rate-per-key values, each with every concurrency; 0 is no
#                            limit (default "100 0": the default limit, and none)
#   TOMA_BENCH_ROUNDS        run each N this many times, interleaved, and print medians (default 1)
#   TOMA_BENCH_PARALLELISM   requests the bench client keeps in flight (default 32)
#   TOMA_BENCH_NOTE          a remark printed with the figures (e.g. "2 cores shared with a build")
#   TOMA_BENCH_ARGS          more toma-bench flags (see target/release/toma-bench --help)
#
# The control plane lives in /tmp/toma-cluster-bench (TOMA_CLUSTER_DIR) and is stopped on exit,
# as is any toma the bench started. Results: target/bench/results-<N>.json; toma's logs:
# target/bench/logs/.
set -euo pipefail
cd "$(dirname "$0")/.."

counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(100 1000)
for n in "${counts[@]}"; do
  [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "usage: hack/bench.sh [N ...]  (N a positive number, got '$n')" >&2; exit 2; }
done

export TOMA_CLUSTER_DIR=/tmp/toma-cluster-bench
out=target/bench
pid_file=$out/toma.pids

# One benchmark at a time: two would share the control plane (and its request counters), and
# the first to finish would stop it under the other.
run_lock=$TOMA_CLUSTER_DIR.bench.lock
exec 8<>"$run_lock"
if ! flock -n 8; then
  echo "another hack/bench.sh is running (pid $(cat "$run_lock" 2>/dev/null || echo '?'), lock $run_lock); wait for it to finish" >&2
  exit 1
fi
echo $$ >"$run_lock"

hack/prerequisites.sh
echo "==> building toma and toma-bench (release)" >&2
cargo build --release --quiet -p toma -p toma-bench

# A toma left behind by a bench that was itself killed is stopped by its PID, and only if that
# PID still runs our toma binary.
stop_leftover_tomas() {
  local pid toma_bin
  [ -f "$pid_file" ] || return 0
  toma_bin=$(readlink -f target/release/toma)
  while read -r pid; do
    [[ $pid =~ ^[0-9]+$ ]] || continue
    if [ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$toma_bin" ]; then
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done <"$pid_file"
  rm -f "$pid_file"
}
cleanup() {
  stop_leftover_tomas
  hack/cluster.sh down || true
}

mkdir -p "$out"
stop_leftover_tomas
echo "==> control plane in $TOMA_CLUSTER_DIR" >&2
trap cleanup EXIT
# fd 8 (the lock) is not handed to the control plane, so that it cannot outlive this script.
# No node: nothing here runs a pod, and a kubelet would add to the CPU figures.
TOMA_NODE=0 TOMA_CLUSTER_CRDS=crds/ hack/cluster.sh up 8>&-
eval "$(hack/cluster.sh env)"
apiserver_pid=$(sed -n 's/^APISERVER_PID=//p' "$TOMA_CLUSTER_DIR/cluster.env")
etcd_pid=$(sed -n 's/^ETCD_PID=//p' "$TOMA_CLUSTER_DIR/cluster.env")
etcd_bin=$(sed -n 's/^BIN=//p' "$TOMA_CLUSTER_DIR/cluster.env")/etcd
etcd_version=$("$etcd_bin" --version 2>/dev/null | sed -n 's/^etcd Version: /etcd /p')

concurrency_flags=()
for c in ${TOMA_BENCH_CONCURRENCY:-16 64}; do concurrency_flags+=(--concurrency "$c"); done
for r in ${TOMA_BENCH_MINT_RATES:-100 0}; do concurrency_flags+=(--mint-rate "$r"); done
note_flags=()
[ -z "${TOMA_BENCH_NOTE:-}" ] || note_flags=(--note "$TOMA_BENCH_NOTE")
# shellcheck disable=SC2206 # word splitting of extra flags is the point
extra=(${TOMA_BENCH_ARGS:-})

echo "==> toma-bench ${counts[*]} on $(nproc) cores (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
target/release/toma-bench "${counts[@]}" \
  --toma target/release/toma \
  "${concurrency_flags[@]}" \
  --parallelism "${TOMA_BENCH_PARALLELISM:-32}" \
  --rounds "${TOMA_BENCH_ROUNDS:-1}" \
  --apiserver-pid "$apiserver_pid" --etcd-pid "$etcd_pid" \
  --etcd-version "$etcd_version" \
  --out-dir "$out" \
  "${note_flags[@]}" "${extra[@]}" 8>&-
