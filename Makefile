# Quick start: `make demo` and `make test`. Both run the idempotent set-up first.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
# The commit label of the lsm_agent_build_info metric (the same for every target, so that
# switching targets does not rebuild the agent).
export LSM_AGENT_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null)

.PHONY: all setup build unit-test vm-test test bench demo fmt clippy lint

all: build

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --release --locked -p lsm-agent

# Unit and integration tests: no root, no VM. In release, so that the VM tests reuse the
# build (vm-tests/run.sh) instead of compiling everything a second time.
unit-test: setup
	cargo test --locked --release
	cargo test --locked --release -p vm-tests --lib

# Everything that loads BPF, in VMs (vm-tests/kernels: 6.12, 6.1, 6.12 without BPF LSM), one at a time.
vm-test: setup
	bash vm-tests/run.sh

test: lint unit-test vm-test

# The benchmarks (they report numbers, assert none) on 6.12: read(), connect() and exec costs,
# events delivered under a flood, and
# pod scoping with 1,000 pods (not in `make test`: it takes more than 15 minutes under TCG).
bench: setup
	LSM_VM_KERNELS=6.12 LSM_VM_SUITES="benchmark quickstart_benchmark event_benchmark k8s_benchmark" bash vm-tests/run.sh

demo: build
	bash scripts/demo.sh

fmt:
	cargo fmt --all

# Clippy with the workspace lints, -D warnings: the host crates, then lsm-ebpf for its BPF target.
lint: setup
	cargo fmt --all --check
	bash scripts/clippy.sh all

clippy: lint
