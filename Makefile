# Stable entry points: docs, CI and users rely on these targets.
SHELL := /bin/bash
TESTENV_DIR ?= $(CURDIR)/.testenv
export TESTENV_DIR

.PHONY: help testenv-build cluster-up cluster-down test test-unit lint fmt crds demo demo-down image chart-manifests

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

testenv-build: ## build the control-plane binaries into the version-keyed cache (cold: ~10 min)
	bash hack/testenv/build.sh

cluster-up: ## start the local control plane; kubeconfig at .testenv/kubeconfig
	bash hack/testenv/up.sh

cluster-down: ## stop every control-plane process and remove .testenv (and the second one, .testenv-b)
	bash hack/testenv/down.sh
	TESTENV_DIR=$(TESTENV_DIR)-b bash hack/testenv/down.sh

test: ## everything CI runs: fmt, clippy, unit and real-control-plane tests
	bash hack/test.sh

test-unit: ## unit tests only (no cluster)
	cargo test --workspace --lib --bins

lint: ## fmt check and clippy
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## format the code
	cargo fmt --all

crds: ## regenerate deploy/crds from the Rust types
	UPDATE_CRDS=1 cargo test -p mattermost-operator --lib crd

demo: ## local control plane + operator + sample installation, until it is stable
	bash hack/demo.sh

demo-down: ## stop the operator started by make demo
	bash hack/demo-down.sh

image: ## container image as an OCI archive in target/image/ (no Docker daemon needed)
	bash hack/image.sh

chart-manifests: ## re-render deploy/operator.yaml (and deploy/namespace.yaml) from the Helm chart
	UPDATE_MANIFESTS=1 cargo test -p mattermost-operator --test chart rendered_manifests
