#!/usr/bin/env bash
# Shows, without the agent or any BPF, the emulator defect that vm-tests/run.sh boots a VM again
# for: under QEMU's multi-threaded TCG, a guest kernel patching code that its other vCPU is
# running can be left with a stale translation of the patch's temporary int3, and dies of
# "Oops: int3" in the patched function. Here ftrace switches its tracer on and off for
# `vfs_read` (each switch patches the call site at its start, as attaching a BPF trampoline
# does) while `dd` calls `vfs_read` on the other vCPU.
#   bash vm-tests/tcg-race.sh [TOGGLES] [QEMU_OPTS]
# e.g. `bash vm-tests/tcg-race.sh 2000 "-accel tcg,thread=single"` to try one vCPU thread.
# Prints what happened; exits 0 either way (a demonstration, not a test).
set -euo pipefail
if [ "${1:-}" = --guest ]; then
  toggles=$2 out=$3
  cd /sys/kernel/tracing
  echo vfs_read > set_ftrace_filter
  ( while :; do dd if=/dev/zero of=/dev/null bs=1 count=100000 2>/dev/null; done ) &
  for i in $(seq 1 "$toggles"); do
    echo function > current_tracer
    echo nop > current_tracer
    [ $((i % 100)) -ne 0 ] || echo "$i toggles at ${SECONDS}s" >> "$out/progress"
  done
  kill $!
  echo "survived $toggles toggles in ${SECONDS}s" >> "$out/progress"
  exit 0
fi
cd "$(dirname "$0")/.."
toggles=${1:-2000}
qemu_opts=${2:-}
version=$(ls /boot | sed -n 's/^vmlinuz-\(6\.12\.[0-9].*-amd64\)$/\1/p' | sort -V | tail -n 1)
[ -n "$version" ] || { echo "no 6.12 kernel installed (run scripts/setup.sh)"; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
opts=()
[ -z "$qemu_opts" ] || opts=(--qemu-opts="$qemu_opts")
echo "[tcg-race] booting $version, 2 vCPUs ${qemu_opts:-(one host thread per vCPU, the default)}"
set +e
timeout --foreground 1800 vng -r "$version" --disable-kvm --force-9p --user root --verbose \
  --cpus 2 --memory 1G "${opts[@]}" --rodir="$PWD=$PWD" --rwdir "/run/tcg-race=$out" \
  --exec "$PWD/vm-tests/tcg-race.sh --guest $toggles /run/tcg-race" > "$out/console.log" 2>&1 </dev/null
rc=$?
set -e
tail -n 1 "$out/progress" 2>/dev/null | sed 's/^/[tcg-race] guest: /' || true
if grep -qE '(Oops: )?int3: [0-9a-f]{4} \[#' "$out/console.log"; then
  echo "[tcg-race] reproduced (VM exit $rc):"
  grep -E -A3 '(Oops: )?int3: [0-9a-f]{4} \[#' "$out/console.log" | head -n 4
else
  echo "[tcg-race] not reproduced (VM exit $rc)"
fi
