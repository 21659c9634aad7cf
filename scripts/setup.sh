#!/usr/bin/env bash
# Idempotent set-up for building lsm-agent and running its BPF-LSM VM tests on Debian 12.
# Every step checks first and does nothing when its tool is already there, so both
# `make demo` and `make test` can call it on every run.
set -euo pipefail

log() { printf '[setup] %s\n' "$*" >&2; }
have() { command -v "$1" >/dev/null 2>&1; }

export PATH="$HOME/.cargo/bin:$PATH"
LLVM_MAJOR=22
STAMP_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/lsm-agent"
mkdir -p "$STAMP_DIR"

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated -eq 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Newest Debian kernel image of a series (e.g. 6.12) that apt offers; never a hard-coded patch
# level, because the archive drops old ones.
newest_kernel_pkg() {
  local series="$1"
  if [ $apt_updated -eq 0 ] && ! apt-cache show "linux-image-${series}.0-0-amd64" >/dev/null 2>&1; then
    : # fall through; the search below works on whatever lists exist
  fi
  apt-cache search --names-only "^linux-image-${series}[.][0-9][0-9.+a-z-]*-amd64\$" 2>/dev/null \
    | awk '{print $1}' | grep -v -e '-cloud-' -e '-rt-' -e 'unsigned' | sort -V | tail -n 1
}

# Installed kernel release for a series (e.g. 6.12.117+deb12-amd64), if any.
installed_kernel() {
  local series="$1"
  ls /boot 2>/dev/null | sed -n "s/^vmlinuz-\(${series//./\\.}\.[0-9].*-amd64\)\$/\1/p" | sort -V | tail -n 1
}

# 1. Debian packages: QEMU (TCG), busybox/cpio for virtme-ng's initramfs, LLVM for bpf-linker;
#    iproute2, util-linux and dnsmasq for the network VM tests (addresses, namespaces, a DNS
#    server inside the guest), curl for the demo; etcd-server, zstd and openssl for the real
#    kube-apiserver of ../shared/tools/k8s that the Kubernetes tests start.
apt_install qemu-system-x86 busybox-static cpio kmod "llvm-${LLVM_MAJOR}-dev" "libpolly-${LLVM_MAJOR}-dev" \
  libzstd-dev zlib1g-dev python3-pip protobuf-compiler iproute2 util-linux dnsmasq-base curl \
  etcd-server zstd openssl

# 2. Kernels for the VM: the newest 6.12 (primary) and 6.1 (second kernel).
for series in 6.12 6.1; do
  if [ -z "$(installed_kernel "$series")" ]; then
    pkg=$(newest_kernel_pkg "$series")
    if [ -z "$pkg" ]; then
      [ $apt_updated -eq 0 ] && { DEBIAN_FRONTEND=noninteractive apt-get update -qq; apt_updated=1; }
      pkg=$(newest_kernel_pkg "$series")
    fi
    [ -n "$pkg" ] || { log "no linux-image-${series}.*-amd64 package offered by apt"; exit 1; }
    log "installing kernel $pkg"
    # The kernel goes to /boot only; no bootloader update is wanted on this machine.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >/dev/null
  fi
done

# 3. virtme-ng.
if ! have vng; then
  log "pip install virtme-ng"
  pip install -q virtme-ng
fi

# 4. Rust: nightly rust-src for build-std=core; bpf-linker built against Debian's LLVM.
if rustup run nightly rustc -V >/dev/null 2>&1; then
  if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    log "rustup component add rust-src (nightly)"
    rustup component add rust-src --toolchain nightly
  fi
else
  if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
    log "rustup component add rust-src (stable, used with RUSTC_BOOTSTRAP=1)"
    rustup component add rust-src
  fi
fi
if ! have bpf-linker; then
  log "cargo install bpf-linker (llvm-${LLVM_MAJOR})"
  PATH="/usr/lib/llvm-${LLVM_MAJOR}/bin:$PATH" cargo install --locked bpf-linker \
    --no-default-features --features "llvm-${LLVM_MAJOR}"
fi

log "ok"
