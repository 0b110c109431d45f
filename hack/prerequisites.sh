#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh machine: Debian's openssl and curl, coturn
# and Chromium (for the WebRTC tests), and
# the control plane and the local node built from pinned upstream Go modules (cached outside the
# repository).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for tool in openssl curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
hack/webrtc-prerequisites.sh
hack/build-control-plane.sh >/dev/null
hack/build-node.sh >/dev/null
hack/build-actionlint.sh >/dev/null
