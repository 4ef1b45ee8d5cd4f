# holdfast: the Makefile is the interface. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

export HOLDFAST_CACHE ?= $(CURDIR)/.cache
CARGO ?= cargo
PROFILE ?= release
TARGET_DIR := $(CURDIR)/target/$(PROFILE)
export HOLDFAST_BIN_DIR ?= $(TARGET_DIR)

.PHONY: help setup build test unit integration lint bench demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: ## install what is missing (containerd 1.6, runc, busybox, CNI plugins, build deps), cache containerd 1.7.24, build CRIU 4.1.1
	@bash scripts/setup.sh

build: ## build the release binaries
	$(CARGO) build --workspace --release --bins

unit: ## unit tests only (no root, no containerd)
	$(CARGO) test --workspace --release --lib --bins

integration: setup build ## end-to-end tests against containerd 1.6.20 and 1.7.24
	@bash scripts/integration.sh

test: setup build unit integration ## everything CI runs: unit and integration tests on both containerd versions

lint: ## fmt check, clippy -D warnings, rustdoc without warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

bench: setup build ## measure the shim against the Go containerd-shim-runc-v2 and holdfastd against dockerd --live-restore, write BENCHMARKS.md
	@bash scripts/bench.sh

demo: setup build ## private containerd + holdfastd, a logging container survives kill -9 of both
	@bash scripts/demo.sh

clean: ## remove build output and the demo/bench scratch folders (keeps the download cache)
	$(CARGO) clean
	rm -rf .demo .bench
