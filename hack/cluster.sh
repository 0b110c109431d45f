#!/usr/bin/env bash
# A real, local Kubernetes control plane for toma's end-to-end tests and the demo:
# etcd + kube-apiserver + kube-controller-manager, all on 127.0.0.1, no containers, no kubelet.
#
#   hack/cluster.sh up       start it (builds the binaries once, see hack/build-control-plane.sh);
#                            a no-op when it is already up and healthy
#   hack/cluster.sh down     stop it and remove its state directory
#   hack/cluster.sh env      print `export KUBECONFIG=...` and `export PATH=<bin>:$PATH`, for
#                            eval "$(hack/cluster.sh env)"  (kubectl and helm then come from the cache)
#   hack/cluster.sh status   say whether it is up (apiserver /readyz) and where; exit 0 only when up
#   hack/cluster.sh restart-apiserver [SECONDS]   stop the apiserver for SECONDS (default 10), restart it
#
# Environment: TOMA_CLUSTER_DIR (state dir, default /tmp/toma-cluster); TOMA_CLUSTER_CRDS (a file or
# directory of manifests applied right after the apiserver is ready, before the controller
# manager starts; see "garbage collector and CRDs" below); TOMA_CLUSTER_READY_TIMEOUT (seconds
# to wait for the apiserver's /readyz, default 120).
#
# State lives in ${TOMA_CLUSTER_DIR:-/tmp/toma-cluster}: pki/, kubeconfig, logs/, etcd data, one
# <component>.pid per process, and cluster.env (ports, PIDs, bin dir; sourceable by other scripts).
#
# Choices, and where they deviate from the envtest defaults:
# - Processes run detached: each one is started through `setsid`, so it leads its own session and
#   process group, has stdin from /dev/null and logs to a file. The shell that ran `up` can exit
#   (or get SIGHUP) and the control plane stays up until `down`, which signals each process group.
#   Each process writes its own PID file just before exec, so the PID is exact whether or not
#   setsid had to fork.
# - A lock (flock on "$STATE.lock", outside the state dir) serializes concurrent up/down/status.
# - Ports: four free loopback ports picked at once (bind to port 0 while holding all four sockets),
#   never the well-known 2379/2380/6443/10257, so a second control plane (another TOMA_CLUSTER_DIR)
#   or anything else on the machine does not collide with this one.
# - PKI with openssl: one CA; an apiserver serving certificate with SANs IP:127.0.0.1,
#   DNS:localhost, DNS:kubernetes.default.svc, IP:10.0.0.1 (the first IP of the service range)
#   and explicit v3 extensions (CA:TRUE/keyCertSign on the CA; CA:FALSE, serverAuth and key
#   identifiers on the leaf), since rustls/webpki (kube-rs) is stricter than openssl about them;
#   kube-rs with rustls was checked to connect via both https://127.0.0.1 and https://localhost.
#   An RSA-2048 ServiceAccount signing key pair.
# - Authentication: a static token file (--token-auth-file) with an admin user in system:masters
#   and a separate user for the controller manager (also system:masters), so that the audit log
#   or request logs can tell the two apart. ServiceAccount tokens come from the TokenRequest API
#   (`kubectl create token`), which needs only the issuer and key flags on the apiserver.
# - Admission: the ServiceAccount admission plugin stays ENABLED (envtest disables it because it
#   runs no controllers). Instead the controller manager runs serviceaccount-controller, which
#   creates the `default` ServiceAccount in every namespace as in a real cluster; `up` waits for
#   it in `default`. Tests that create a namespace and then a Pod must wait for that namespace's
#   `default` ServiceAccount, exactly as on a real cluster.
# - The ServiceAccount issuer is https://kubernetes.default.svc.cluster.local (the kubeadm
#   default) rather than the per-run https://127.0.0.1:<port>: tokens and their audience then do
#   not depend on a random port.
# - --endpoint-reconciler-type=none: with --advertise-address=127.0.0.1 the default (lease)
#   reconciler refuses to start ("cannot use public IP 127.0.0.1 with endpoint reconciler: may not
#   be in the loopback range"). Nothing runs in-cluster, so the `kubernetes` Service simply has no
#   endpoints; advertising a made-up non-loopback address instead would only be less honest.
# - Controllers: garbage-collector (ownerReferences), namespace (finishes namespace deletion),
#   serviceaccount (default SAs), serviceaccount-token (legacy token Secrets, if a chart creates
#   one) and root-ca-certificate-publisher (the kube-root-ca.crt ConfigMap every namespace has).
#   No scheduler and no kubelet: Pods never run and Deployments never become Available.
# - Garbage collector and CRDs (measured): a dependent of a custom resource whose CRD was created
#   after the controller manager started is collected only after the collector's next discovery
#   resync, ~30 s later (41 s measured, against 0.2 s for built-in owners). Either install the CRDs
#   with TOMA_CLUSTER_CRDS, or give such assertions a 60 s timeout. Deleting a namespace takes ~5 s.
# - The controller manager authenticates requests to its own port with TokenReview/SubjectAccessReview
#   (--authentication/authorization-kubeconfig), so the admin token can read its /metrics. Its
#   client CA comes from --client-ca-file with --authentication-skip-lookup: without that it keeps
#   failing to load the request-header CA from kube-system/extension-apiserver-authentication (the
#   apiserver runs no aggregation front proxy) and logs that error over and over.
# - etcd: --unsafe-no-fsync (test data, loses nothing that matters on a crash of the machine) and
#   explicit peer/initial-cluster flags, so nothing is bound on etcd's default ports 2379/2380.
set -euo pipefail

HACK=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${TOMA_CLUSTER_DIR:-/tmp/toma-cluster}
STATE=${STATE%/}
LOCK=$STATE.lock
READY_TIMEOUT=${TOMA_CLUSTER_READY_TIMEOUT:-120}
STOP_TIMEOUT=10
COMPONENTS=(etcd kube-apiserver kube-controller-manager)   # start order; stop order is reversed

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
  sed -n '4,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
  exit 2
}

# ---------------------------------------------------------------------------------------------
# Tools

ensure_tools() {
  local missing=() tool pkg
  for tool in openssl:openssl curl:curl python3:python3 ss:iproute2 setsid:util-linux flock:util-linux; do
    pkg=${tool#*:}
    tool=${tool%%:*}
    command -v "$tool" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    die "missing packages: ${missing[*]} (install them, or run as root)"
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

# ---------------------------------------------------------------------------------------------
# State helpers

# cluster.env holds KEY=value lines written by `up`; read one key without sourcing arbitrary code.
state_get() {
  local key=$1 line
  [ -f "$STATE/cluster.env" ] || return 1
  while IFS= read -r line; do
    case $line in "$key="*) printf '%s\n' "${line#*=}"; return 0 ;; esac
  done <"$STATE/cluster.env"
  return 1
}

# A PID counts as ours only while it is alive, not a zombie, and its command line points into the
# state dir: a PID recycled after a reboot (or after the process died) is never signalled.
pid_is_ours() {
  local pid=$1 stat cmdline
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ] || return 1
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmdline == *"$STATE/"* ]]
}

component_pid() { cat "$STATE/$1.pid" 2>/dev/null || true; }

component_alive() {
  local pid
  pid=$(component_pid "$1")
  [ -n "$pid" ] && pid_is_ours "$pid"
}

apiserver_ready() {
  local port token
  port=$(state_get API_PORT) || return 1
  token=$(state_get ADMIN_TOKEN_FILE) || return 1
  [ -f "$STATE/pki/ca.crt" ] && [ -f "$token" ] || return 1
  [ "$(curl -sS --max-time 5 --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(cat "$token")" \
    "https://127.0.0.1:$port/readyz" 2>/dev/null)" = ok ]
}

# up: every process alive and the apiserver ready. stale: a state dir exists but is not up.
cluster_state() {
  local c
  [ -d "$STATE" ] || { echo absent; return; }
  [ -f "$STATE/cluster.env" ] || { echo stale; return; }
  for c in "${COMPONENTS[@]}"; do
    component_alive "$c" || { echo stale; return; }
  done
  apiserver_ready && echo up || echo stale
}

# Other processes still running with the state dir on their command line (e.g. from an `up` that
# was killed before it wrote its PID files). Matching on the unique state-dir path, not on names.
stray_pids() {
  local f p
  while IFS= read -r f; do
    p=${f#/proc/}
    p=${p%/cmdline}
    pid_is_ours "$p" || continue
    # Only our control-plane binaries, never a shell or an editor that mentions the path.
    case $(readlink "/proc/$p/exe" 2>/dev/null) in
      */etcd | */kube-apiserver | */kube-controller-manager) echo "$p" ;;
    esac
  done < <(grep -lsF -- "$STATE/" /proc/[0-9]*/cmdline || true)
}

listening_ports() {
  local p out=()
  for p in "$@"; do
    [ -n "$p" ] || continue
    if [ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]; then out+=("$p"); fi
  done
  echo "${out[*]}"
}

# SIGTERM the process group, wait up to STOP_TIMEOUT s, then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 waited=0
  pid_is_ours "$pid" || return 0
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  while pid_is_ours "$pid" && [ "$waited" -lt $((STOP_TIMEOUT * 10)) ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  if pid_is_ours "$pid"; then
    log "$name ($pid) still running after ${STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    waited=0
    while pid_is_ours "$pid" && [ "$waited" -lt 50 ]; do sleep 0.1; waited=$((waited + 1)); done
  fi
  ! pid_is_ours "$pid"
}

# The processes were re-parented to PID 1 when `up` exited, and PID 1 may reap them lazily (about
# 1.5-2 s on the project's machines). Wait up to 5 s for the zombies to go, so that `pgrep` right
# after `down` lists no <defunct> entry. A zombie holds no port, memory or file, so this never fails.
wait_reaped() {
  local pid waited=0
  for pid in "$@"; do
    while [ -e "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] \
      && [ "$waited" -lt 50 ]; do
      sleep 0.1
      waited=$((waited + 1))
    done
  done
}

# Stop everything recorded in the state dir plus strays; fail if a process or port is left.
stop_all() {
  local i c pid ports left=0 stopped=()
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c=${COMPONENTS[i]}
    pid=$(component_pid "$c")
    [ -n "$pid" ] || continue
    stop_pid "$c" "$pid" || { log "$c ($pid) did not stop"; left=1; }
    stopped+=("$pid")
  done
  for pid in $(stray_pids); do
    log "stopping stray process $pid ($(readlink "/proc/$pid/exe" 2>/dev/null))"
    stop_pid stray "$pid" || { log "stray $pid did not stop"; left=1; }
    stopped+=("$pid")
  done
  wait_reaped "${stopped[@]}"
  ports=$(listening_ports "$(state_get ETCD_PORT || true)" "$(state_get ETCD_PEER_PORT || true)" \
    "$(state_get API_PORT || true)" "$(state_get KCM_PORT || true)")
  if [ -n "$ports" ]; then
    log "ports still listening: $ports"
    left=1
  fi
  return "$left"
}

# ---------------------------------------------------------------------------------------------
# up

free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

gen_pki() {
  local pki=$STATE/pki
  mkdir -p "$pki"
  (
    cd "$pki"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=toma-test-ca \
      -keyout ca.key -out ca.crt \
      -addext basicConstraints=critical,CA:TRUE \
      -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature \
      -addext subjectKeyIdentifier=hash 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver \
      -keyout apiserver.key -out apiserver.csr 2>/dev/null
    cat >apiserver.ext <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:kubernetes,IP:10.0.0.1
EXT
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile apiserver.ext -out apiserver.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    openssl rand -hex 32 >admin.token
    openssl rand -hex 32 >kcm.token
    # token,user,uid,"groups"
    printf '%s,toma-admin,uid-toma-admin,"system:masters"\n' "$(cat admin.token)" >tokens.csv
    printf '%s,toma-kube-controller-manager,uid-toma-kcm,"system:masters"\n' "$(cat kcm.token)" >>tokens.csv
    chmod 0644 ca.crt apiserver.crt sa.pub
  )
}

write_kubeconfig() {
  local file=$1 user=$2 token_file=$3
  cat >"$file" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: toma
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $user
  user:
    token: $(cat "$token_file")
contexts:
- name: toma
  context:
    cluster: toma
    user: $user
    namespace: default
current-context: toma
YAML
  chmod 0600 "$file"
}

# launch NAME CMD...: detached in its own session; PID written by the process itself before exec.
launch() {
  local name=$1 pidfile=$STATE/$1.pid i
  shift
  rm -f "$pidfile"
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
    </dev/null >>"$STATE/logs/$name.log" 2>&1 9>&- &
  for ((i = 0; i < 100; i++)); do
    [ -s "$pidfile" ] && return 0
    sleep 0.05
  done
  die "$name did not start (see $STATE/logs/$name.log)"
}

# The apiserver's command line, shared by `up` and `restart-apiserver`.
launch_apiserver() {
  local pki=$STATE/pki
  launch kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 \
    --endpoint-reconciler-type=none \
    --secure-port="$API_PORT" \
    --cert-dir="$STATE/apiserver-certs" \
    --tls-cert-file="$pki/apiserver.crt" \
    --tls-private-key-file="$pki/apiserver.key" \
    --client-ca-file="$pki/ca.crt" \
    --token-auth-file="$pki/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$pki/sa.pub" \
    --service-account-signing-key-file="$pki/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=RBAC \
    --allow-privileged=true \
    --v=1
}

# wait_for NAME TIMEOUT CHECK [WHAT]: poll CHECK every 0.2 s while NAME's process lives.
wait_for() {
  local name=$1 timeout=$2 check=$3 what=${4:-ready} start=$SECONDS
  until "$check" >/dev/null 2>&1; do
    if ! component_alive "$name"; then
      log "$name exited; last lines of $STATE/logs/$name.log:"
      tail -n 25 "$STATE/logs/$name.log" >&2 || true
      return 1
    fi
    if [ $((SECONDS - start)) -ge "$timeout" ]; then
      log "$name not ready after ${timeout}s; last lines of $STATE/logs/$name.log:"
      tail -n 25 "$STATE/logs/$name.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  log "$name: $what after $((SECONDS - start))s"
}

etcd_healthy() {
  curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" | grep -q '"health":"true"'
}

apiserver_readyz() {
  [ "$(curl -sS --max-time 5 --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(cat "$STATE/pki/admin.token")" \
    "https://127.0.0.1:$API_PORT/readyz")" = ok ]
}

kcm_healthy() {
  [ "$(curl -ksS --max-time 5 "https://127.0.0.1:$KCM_PORT/healthz")" = ok ]
}

default_sa_exists() {
  "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" --request-timeout=5s -n default get serviceaccount default
}

cmd_up() {
  local started=$SECONDS state pki=$STATE/pki
  ensure_tools
  state=$(cluster_state)
  if [ "$state" = up ]; then
    log "already up at https://127.0.0.1:$(state_get API_PORT) (state in $STATE); nothing to do"
    print_summary
    return 0
  fi
  if [ "$state" = stale ]; then
    log "found a stale state dir $STATE; cleaning it"
    stop_all || die "could not stop the previous control plane"
    rm -rf "$STATE"
  fi

  BIN=$("$HACK/build-control-plane.sh" | tail -n 1)
  local b
  for b in etcd kube-apiserver kube-controller-manager kubectl; do
    [ -x "$BIN/$b" ] || die "$BIN/$b missing after hack/build-control-plane.sh"
  done

  mkdir -p "$STATE/logs" "$STATE/etcd" "$STATE/apiserver-certs" "$STATE/kcm-certs"
  chmod 0700 "$STATE/etcd"
  UP_DONE=0
  trap 'if [ "$UP_DONE" = 0 ]; then log "up failed; stopping what was started (logs kept in $STATE/logs)"; stop_all || true; fi' EXIT

  gen_pki
  read -r ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT < <(free_ports 4)
  cat >"$STATE/cluster.env" <<ENV
BIN=$BIN
STATE=$STATE
KUBECONFIG=$STATE/kubeconfig
SERVER=https://127.0.0.1:$API_PORT
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
KCM_PORT=$KCM_PORT
ADMIN_TOKEN_FILE=$pki/admin.token
ENV

  launch etcd "$BIN/etcd" \
    --name=toma \
    --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="toma=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync=true \
    --log-level=warn
  wait_for etcd 30 etcd_healthy

  launch_apiserver
  wait_for kube-apiserver "$READY_TIMEOUT" apiserver_readyz

  write_kubeconfig "$STATE/kubeconfig" toma-admin "$pki/admin.token"
  write_kubeconfig "$STATE/kcm.kubeconfig" toma-kube-controller-manager "$pki/kcm.token"

  if [ -n "${TOMA_CLUSTER_CRDS:-}" ]; then
    log "installing CRDs from $TOMA_CLUSTER_CRDS before the controller manager starts"
    "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" apply --server-side -R -f "$TOMA_CLUSTER_CRDS" >&2
    "$BIN/kubectl" --kubeconfig "$STATE/kubeconfig" wait --for=condition=Established crd --all --timeout=60s >&2
  fi

  launch kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/kcm.kubeconfig" \
    --authentication-kubeconfig="$STATE/kcm.kubeconfig" \
    --authorization-kubeconfig="$STATE/kcm.kubeconfig" \
    --authentication-skip-lookup=true \
    --client-ca-file="$pki/ca.crt" \
    --controllers=garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller \
    --leader-elect=false \
    --use-service-account-credentials=false \
    --service-account-private-key-file="$pki/sa.key" \
    --root-ca-file="$pki/ca.crt" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --cert-dir="$STATE/kcm-certs" \
    --v=1
  wait_for kube-controller-manager 60 kcm_healthy
  # Proves the controller manager reaches the apiserver and its controllers run.
  wait_for kube-controller-manager 60 default_sa_exists "default ServiceAccount created"

  {
    echo "ETCD_PID=$(component_pid etcd)"
    echo "APISERVER_PID=$(component_pid kube-apiserver)"
    echo "KCM_PID=$(component_pid kube-controller-manager)"
  } >>"$STATE/cluster.env"
  UP_DONE=1
  log "up in $((SECONDS - started))s"
  print_summary
}

print_summary() {
  local c
  {
    echo "control plane up: https://127.0.0.1:$(state_get API_PORT)"
    echo "  kubeconfig: $STATE/kubeconfig"
    echo "  binaries:   $(state_get BIN)"
    for c in "${COMPONENTS[@]}"; do
      printf '  %-24s pid %-8s log %s\n' "$c" "$(component_pid "$c")" "$STATE/logs/$c.log"
    done
    echo "  ports: etcd $(state_get ETCD_PORT) (peer $(state_get ETCD_PEER_PORT)), apiserver $(state_get API_PORT), controller-manager $(state_get KCM_PORT)"
    echo "  use:   eval \"\$($HACK/cluster.sh env)\""
  } >&2
}

# ---------------------------------------------------------------------------------------------
# down / env / status

cmd_down() {
  local started=$SECONDS
  if [ ! -d "$STATE" ]; then
    log "not up (no $STATE)"
    stop_all || die "stray control-plane processes or ports left"
    return 0
  fi
  stop_all || die "processes or ports left; state kept in $STATE"
  rm -rf "$STATE"
  log "down in $((SECONDS - started))s"
}

cmd_env() {
  local bin
  bin=$(state_get BIN || true)
  if [ -z "$bin" ]; then
    log "not up; KUBECONFIG points at $STATE/kubeconfig once \`hack/cluster.sh up\` ran"
    bin=$("$HACK/build-control-plane.sh" | tail -n 1)
  fi
  printf 'export KUBECONFIG=%q\n' "$STATE/kubeconfig"
  # $PATH stays literal: it is expanded by the shell that evaluates these lines.
  # shellcheck disable=SC2016
  printf 'export PATH=%q:$PATH\n' "$bin"
}

cmd_status() {
  local state c pid rss
  state=$(cluster_state)
  case $state in
    up)
      echo "up: https://127.0.0.1:$(state_get API_PORT) (readyz ok)"
      echo "  kubeconfig: $STATE/kubeconfig"
      for c in "${COMPONENTS[@]}"; do
        pid=$(component_pid "$c")
        rss=$(awk '/^VmRSS:/{printf "%d MiB", $2/1024}' "/proc/$pid/status" 2>/dev/null || true)
        printf '  %-24s pid %-8s rss %s\n' "$c" "$pid" "$rss"
      done
      ;;
    stale)
      echo "down: stale state in $STATE (run \`hack/cluster.sh down\` or \`up\`)"
      return 1
      ;;
    *)
      echo "down: no control plane in $STATE"
      return 1
      ;;
  esac
}

# Stops the apiserver for SECONDS, then starts it again on the same port with the same state:
# for tests of how clients ride out an API outage. etcd and the controller manager keep running.
cmd_restart_apiserver() {
  local downtime=${1:-10}
  [ "$(cluster_state)" = up ] || die "the control plane is not up"
  # shellcheck disable=SC1091
  . "$STATE/cluster.env"
  stop_pid kube-apiserver "$(component_pid kube-apiserver)" || die "kube-apiserver did not stop"
  log "kube-apiserver stopped for ${downtime}s"
  sleep "$downtime"
  launch_apiserver
  wait_for kube-apiserver "$READY_TIMEOUT" apiserver_readyz
  sed -i "s/^APISERVER_PID=.*/APISERVER_PID=$(component_pid kube-apiserver)/" "$STATE/cluster.env"
  log "kube-apiserver is back"
}

main() {
  [ $# -ge 1 ] || usage
  case $1 in
    up | down | env | status) [ $# -eq 1 ] || usage ;;
    restart-apiserver) [ $# -le 2 ] || usage ;;
    *) usage ;;
  esac
  exec 9>"$LOCK"
  flock -w 600 9 || die "another hack/cluster.sh holds $LOCK"
  local command=${1//-/_}
  shift
  "cmd_$command" "$@"
}

main "$@"
