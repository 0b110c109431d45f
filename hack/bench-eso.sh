#!/usr/bin/env bash
# toma next to external-secrets (ESO), the tool a user would otherwise pick: for each N, N
# ExternalSecrets with a Webhook generator posting to the fake Cloudflare, then toma's own
# benchmark (toma-bench, as hack/bench.sh runs it) on the same N and the same control plane,
# one after the other, never both at once. Prints one table per N: time to all Ready, memory,
# CPU, mints and API writes per credential, a restart, an idle spell. Nothing passes or fails.
# See bench/eso/README.md.
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
#   ESO_BENCH_TOMA        run (default): toma-bench on the same N; skip: ESO's figures only
#   TOMA_BENCH_NOTE       a remark printed with the figures
#
# The control plane lives in /tmp/toma-cluster-eso (TOMA_CLUSTER_DIR), with both toma's and ESO's
# CRDs, and is stopped on exit, as are the fake Cloudflare and every ESO and toma the bench
# started. It is not hack/bench.sh's /tmp/toma-cluster-bench, so both can run on one machine
# (their figures then share the CPUs). Results: target/bench-eso/eso-N-cC-qpsQ.json,
# target/bench-eso/toma/results-N.json; logs: target/bench-eso/logs/, target/bench-eso/toma/logs/.
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
for c in "${configs[@]}"; do
  [[ $c =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]] || { echo "ESO_BENCH_CONFIGS: CONCURRENT:QPS pairs, got '$c'" >&2; exit 2; }
done

export TOMA_CLUSTER_DIR=/tmp/toma-cluster-eso
out=target/bench-eso
pid_file=$out/pids
toma_out=$out/toma
fake_pid=
log() { printf 'bench-eso: %s\n' "$*" >&2; }

hack/prerequisites.sh
eso_dir=$(hack/build-external-secrets.sh)
eso_bin=$eso_dir/bin/external-secrets
eso_version=$(basename "$eso_dir"); eso_version=${eso_version#external-secrets-}
log "building toma, toma-bench and the fake Cloudflare (release)"
packages=(-p fake-cloudflare)
[ "$toma_mode" = skip ] || packages+=(-p toma -p toma-bench)
cargo build --release --quiet "${packages[@]}"

# Processes this script started are stopped by PID, and only if that PID still runs the binary
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
  stop_pids "$pid_file" "$eso_bin"
  stop_pids "$toma_out/toma.pids" target/release/toma
  if [ -n "$fake_pid" ]; then kill -TERM "$fake_pid" 2>/dev/null || true; wait "$fake_pid" 2>/dev/null || true; fi
  hack/cluster.sh down || true
}

mkdir -p "$out/logs" "$toma_out"
stop_pids "$pid_file" "$eso_bin"
stop_pids "$toma_out/toma.pids" target/release/toma
trap cleanup EXIT
trap 'exit 130' INT TERM

# Both sets of CRDs before the controller manager starts (its garbage collector then knows the
# owners of the Secrets at once; see hack/cluster.sh).
rm -rf "$out/crds" && mkdir -p "$out/crds"
cp crds/*.yaml "$eso_dir"/crds/*.yaml "$out/crds/"
log "control plane in $TOMA_CLUSTER_DIR, with the CRDs of toma and ESO $eso_version"
TOMA_CLUSTER_CRDS=$out/crds hack/cluster.sh up
cluster_env=$TOMA_CLUSTER_DIR/cluster.env
apiserver_pid=$(sed -n 's/^APISERVER_PID=//p' "$cluster_env")
etcd_pid=$(sed -n 's/^ETCD_PID=//p' "$cluster_env")
bin=$(sed -n 's/^BIN=//p' "$cluster_env")
etcd_version=$("$bin/etcd" --version 2>/dev/null | sed -n 's/^etcd Version: /etcd /p')
export KUBECONFIG=$TOMA_CLUSTER_DIR/kubeconfig
export PATH=$bin:$PATH
k8s_version=$(kubectl version -o json 2>/dev/null | python3 -c 'import sys,json; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])' || echo unknown)

rm -f "$out/fake.addr"
target/release/fake-cloudflare --listen 127.0.0.1:0 --key 0123456789abcdef0123456789abcdef=bench-api-token-0123456789 \
  --addr-file "$out/fake.addr" >"$out/logs/fake-cloudflare.out" 2>"$out/logs/fake-cloudflare.log" </dev/null &
fake_pid=$!
for _ in $(seq 100); do [ -s "$out/fake.addr" ] && break; sleep 0.1; done
[ -s "$out/fake.addr" ] || { log "error: the fake Cloudflare did not start; see $out/logs/fake-cloudflare.log"; exit 1; }
fake=$(cat "$out/fake.addr")

note_flags=()
[ -z "${TOMA_BENCH_NOTE:-}" ] || note_flags=(--note "$TOMA_BENCH_NOTE")
extra=()
# shellcheck disable=SC2206 # word splitting of extra flags is the point
for a in ${ESO_BENCH_ARGS:-}; do extra+=("--eso-arg=$a"); done
toma_cmd=(target/release/toma-bench --toma target/release/toma --concurrency 16 --parallelism 32
  --apiserver-pid "$apiserver_pid" --etcd-pid "$etcd_pid" --etcd-version "$etcd_version" --out-dir "$toma_out")
toma_failed=()

for n in "${counts[@]}"; do
  for c in "${configs[@]}"; do
    concurrent=${c%%:*} q=${c#*:}
    qps_flags=()
    [ "$q" = 50 ] || qps_flags=(--eso-arg=--client-qps="$q" --eso-arg=--client-burst=$((2 * q)))
    log "ESO $eso_version, N=$n, --concurrent $concurrent, client QPS $q, on $(nproc) cores (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    python3 bench/eso/bench.py run "$n" --eso "$eso_bin" --fake "$fake" --out-dir "$out" --pid-file "$pid_file" \
      --result "$out/eso-$n-c$concurrent-qps$q.json" --concurrent "$concurrent" \
      --apiserver-pid "$apiserver_pid" --etcd-pid "$etcd_pid" "${qps_flags[@]}" "${extra[@]}"
  done
  if [ "$toma_mode" = run ]; then
    rm -f "$toma_out/results-$n.json"
    log "toma, N=$n: ${toma_cmd[*]} $n"
    "${toma_cmd[@]}" "${note_flags[@]}" "$n" >"$out/logs/toma-bench-$n.txt" || toma_failed+=("$n")
  fi
done

cleanup
fake_pid=
trap - EXIT

echo
for n in "${counts[@]}"; do
  eso_flags=()
  for c in "${configs[@]}"; do eso_flags+=(--eso "$out/eso-$n-c${c%%:*}-qps${c#*:}.json"); done
  toma_flags=()
  [ ! -f "$toma_out/results-$n.json" ] || toma_flags=(--toma "$toma_out/results-$n.json" --floor)
  python3 bench/eso/bench.py table "${eso_flags[@]}" "${toma_flags[@]}" "${note_flags[@]}" \
    --versions "external-secrets $eso_version, Kubernetes $k8s_version${etcd_version:+, $etcd_version}"
  echo
done
if [ "$toma_mode" = skip ]; then
  echo "toma's figures for the same N: hack/bench.sh ${counts[*]}"
elif [ ${#toma_failed[@]} -gt 0 ]; then
  echo "toma-bench failed for N = ${toma_failed[*]} (see $out/logs/toma-bench-N.txt); toma's figures: hack/bench.sh ${toma_failed[*]}"
fi
