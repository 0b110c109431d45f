#!/usr/bin/env bash
# Installs what the WebRTC tests (tests/webrtc) need from Debian: coturn (turnserver, the TURN
# server the tests start on loopback, and turnutils_uclient, a non-browser TURN client) and
# chromium (the browser the tests run headless). Idempotent: apt runs only when a binary is
# missing, and `apt-get update` only then.
set -euo pipefail
missing=()
command -v turnserver >/dev/null && command -v turnutils_uclient >/dev/null || missing+=(coturn)
command -v chromium >/dev/null || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "webrtc-prerequisites: missing packages: ${missing[*]} (install them, or run as root)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# coturn's package enables a system-wide turnserver service; the tests start their own on
# loopback. Nothing is started here (no init system runs in CI containers), and a running
# service would not collide: the tests pick free ports.
