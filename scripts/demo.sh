#!/usr/bin/env bash
# `make demo`: boots the BPF-LSM VM (Debian 6.12 kernel, QEMU TCG) with this checkout visible
# and runs scripts/demo-guest.sh inside.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(ls /boot | sed -n 's/^vmlinuz-\(6\.12\.[0-9].*-amd64\)$/\1/p' | sort -V | tail -n 1)
[ -n "$version" ] || { echo "no 6.12 kernel installed: run scripts/setup.sh"; exit 1; }
# The guest sees the host's root read-only, but virtme-ng mounts fresh file systems over /var/tmp,
# /run, /dev/shm...: share the checkout and ../shared at their own paths, wherever they live.
repo=$(pwd -P)
shares=("--rodir=$repo=$repo")
[ -d "$repo/../shared" ] && shares+=("--rodir=$(dirname "$repo")/shared=$(realpath "$repo/../shared")")
# 4 GB: etcd and kube-apiserver run in the guest beside the agent.
echo "Booting $version with lsm=...,bpf (takes about a minute under emulation)..."
exec vng -r "$version" --disable-kvm --force-9p --user root --cpus 2 --memory 4G \
  "${shares[@]}" --overlay-rwdir /etc --append "lsm=lockdown,capability,landlock,yama,bpf" \
  --exec "$repo/scripts/demo-guest.sh"
