#!/usr/bin/env bash
# Clippy over the code base, in the two runs it needs (as aya's template does): the BPF crate
# alone for its real target, then the host crates. One run cannot do both: feature
# unification would switch on lsm-shared's `user` feature (aya, std) inside the BPF crate.
#   scripts/clippy.sh [bpf|host|all]   (default: all; every part runs, any failure fails)
# The host run sets AYA_BUILD_SKIP=1 unless the caller set it: the BPF crate is checked by
# the first run, so the agent need not embed a freshly built object to be linted.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
what=${1:-all}

# lsm-ebpf for bpfel-unknown-none with `core` built from source, the way lsm-agent/build.rs
# has aya-build compile it: nightly when rustup has it, else stable with RUSTC_BOOTSTRAP=1.
clippy_bpf() {
  local cargo=(env RUSTC_BOOTSTRAP=1 cargo)
  if rustup run nightly rustc -V >/dev/null 2>&1; then
    cargo=(rustup run nightly cargo)
  fi
  echo "[clippy] lsm-ebpf for bpfel-unknown-none ($("${cargo[@]}" --version))"
  (cd lsm-ebpf && "${cargo[@]}" clippy --locked -p lsm-ebpf --release \
    --target bpfel-unknown-none -Z build-std=core -- -D warnings)
}

clippy_host() {
  echo "[clippy] host crates"
  AYA_BUILD_SKIP=${AYA_BUILD_SKIP:-1} cargo clippy --locked --workspace --all-targets -- -D warnings
}

status=0
case $what in
  bpf) clippy_bpf || status=1 ;;
  host) clippy_host || status=1 ;;
  all)
    clippy_bpf || { echo "[clippy] FAIL: lsm-ebpf"; status=1; }
    clippy_host || { echo "[clippy] FAIL: host crates"; status=1; }
    ;;
  *) echo "usage: $0 [bpf|host|all]" >&2; exit 2 ;;
esac
[ $status -eq 0 ] && echo "[clippy] ok ($what)"
exit $status
