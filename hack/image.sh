#!/usr/bin/env bash
# Builds toma's container image with no container engine, registry or base image: the release
# binary, the libraries it links, the CA bundle and a passwd entry for 65532, written by
# tools/image as a reproducible OCI image archive (see README "The image").
#
#   hack/image.sh        build target/image/toma-<appVersion>.oci.tar, print its path and reference
#
# When the local cluster (hack/cluster.sh, TOMA_CLUSTER_DIR) is up with its node, the archive is
# imported into the node's containerd as well, so `helm install toma charts/toma -f
# "$TOMA_HELM_VALUES"` finds the chart's default image there and needs no overrides.
#
# The reference is the chart's default image, read from charts/toma (values.yaml's
# image.repository, Chart.yaml's appVersion), so the archive imports under the name `helm install`
# asks for. Every file is stamped with the commit's time (SOURCE_DATE_EPOCH), so building twice
# from one commit, with the same toolchain and checkout path, gives the same digest.
set -euo pipefail
cd "$(dirname "$0")/.."

repository=$(awk '/^image:/{f=1;next} f&&/^[^ #]/{f=0} f&&$1=="repository:"{print $2; exit}' charts/toma/values.yaml)
version=$(awk '$1=="appVersion:"{gsub(/"/,"",$2); print $2; exit}' charts/toma/Chart.yaml)
crate_version=$(awk '/^\[package\]/{f=1} f&&$1=="version"{gsub(/"/,"",$3); print $3; exit}' Cargo.toml)
[ -n "$repository" ] && [ -n "$version" ] || { echo "image: no image.repository or appVersion in charts/toma" >&2; exit 1; }
[ "$version" = "$crate_version" ] || {
  echo "image: the chart's appVersion ($version) is not toma's crate version ($crate_version)" >&2
  exit 1
}
reference=$repository:$version
# ghcr.io/<owner>/toma is published from github.com/<owner>/toma.
source_url=https://github.com/${repository#ghcr.io/}

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || revision=$revision-dirty
# Given to the packer only: ring's build script watches SOURCE_DATE_EPOCH, so in cargo's
# environment it would rebuild ring, kube and toma whenever a plain `cargo build --release`
# ran in between.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

started=$(date +%s)
# Two builds, not one with both packages: together, cargo would unify their dependencies'
# features and build a toma that differs from `cargo build --release -p toma`.
env -u SOURCE_DATE_EPOCH cargo build --release --locked -p toma
env -u SOURCE_DATE_EPOCH cargo build --release --locked -p toma-image
target=${CARGO_TARGET_DIR:-target}
archive=$target/image/toma-$version.oci.tar
"$target/release/toma-image" --binary "$target/release/toma" --out "$archive" \
  --reference "$reference" --version "$version" --revision "$revision" --source "$source_url" \
  --source-date-epoch "$epoch"
echo "image: built in $(($(date +%s) - started)) s"
if status=$(hack/cluster.sh status 2>/dev/null) && ! grep -q "node: *none" <<<"$status"; then
  # The archive names its image (index.json), so no REF: ctr's --index-name would store the index
  # under that name in place of the manifest, which the kubelet then does not find.
  hack/cluster.sh import-image "$archive"
  echo "image: imported into the local node as $reference"
fi
