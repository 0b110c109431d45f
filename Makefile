# The front door: see README.md.
.PHONY: setup build demo test generate clean-cluster image

setup: ## install prerequisites and build the local control plane (cached)
	hack/prerequisites.sh

build: ## build toma and the fake Cloudflare
	cargo build --workspace

image: ## toma's container image as an OCI archive, target/image/toma-<version>.oci.tar (no Docker)
	hack/image.sh

demo: ## control plane + fake Cloudflare + toma + an example TurnCredential, then a rotation
	hack/demo.sh

test: ## every test: lints, unit, integration and end-to-end against the real control plane
	hack/test.sh

generate: ## regenerate crds/ (and the chart's CRDs) from the Rust types
	hack/generate.sh

clean-cluster: ## stop the local control plane
	hack/cluster.sh down
