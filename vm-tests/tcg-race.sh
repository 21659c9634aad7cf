#!/usr/bin/env bash
# Shows, without the agent or any BPF, the emulator defect that vm-tests/run.sh boots a VM again
# for: under QEMU's multi-threaded TCG, a guest kernel patching code that its other vCPU is
# running can be left with a stale translation of the patch's temporary int3, and dies of
# "Oops: int3" in the patched function. Here ftrace switches its tracer on and off for
# `vfs_read` (each switch patches the call site at its start, as attaching a BPF trampoline
# does) while `dd` calls `vfs_read` on the other vCPU.
#   bash vm-tests/tcg-race.sh [TOGGLES] [QEMU_OPTS] [SERIES]
# e.g. `bash vm-tests/tcg-race.sh 2000 "-accel tcg,thread=single"` to try one vCPU thread, or
# `bash vm-tests/tcg-race.sh 2000 "" 6.1` on Linux 6.1 (default 6.12).
# Prints what happened; exits 0 either way (a demonstration, not a test).
#   bash vm-tests/tcg-race.sh --shows-race CONSOLE   exit 0 if a guest's console shows the race
#   bash vm-tests/tcg-race.sh --before-race CONSOLE  the console up to the race's first trace
#   bash vm-tests/tcg-race.sh --race-lines CONSOLE   4 lines about the race's first trace
# (vm-tests/run.sh uses both).
set -euo pipefail
# What the race leaves on the console. 6.12 dies of an oops ("Oops: int3: 0000 [#1]"). 6.1
# loops instead: its int3 handler sees the int3 gone from memory, backs up onto it and runs
# the stale translation again, for ever; the watchdog then reports a soft lockup (a panic with
# softlockup_panic=1) with the looping vCPU in the int3 handler or at the patched instruction,
# here always a 5-byte NOP (`Code: ... <0f> 1f 44 00 00`, a function's ftrace/trampoline site).
# Once, 6.1 hung without that report: an RCU stall whose backtrace of the looping vCPU never
# came, then silence; vm-tests/run.sh kills a guest silent for two minutes and writes the
# `silent` line below on its console. Only both together count: a stall alone is not the race.
oops='(Oops: )?int3: [0-9a-f]{4} \[#[0-9]+\]'
looping='asm_exc_int3|RIP: 0010:(exc_int3|poke_int3_handler|kprobe_int3_handler)\+|Code: .*<0f> 1f 44 00 00'
stall='rcu: INFO: rcu_(preempt|sched) (self-)?detected stall'
silent='^\[vm-tests\] the guest has been silent'
shows_race() {
  grep -qE "$oops" "$1" || { grep -q 'BUG: soft lockup' "$1" && grep -qE "$looping" "$1"; } ||
    { grep -qE "$silent" "$1" && grep -qE "$stall" "$1"; }
}
first="$oops|$looping|BUG: soft lockup|$stall"
case "${1:-}" in
  --shows-race) shows_race "$2"; exit ;;
  --before-race) sed -E "/$first/,\$d" "$2"; exit 0 ;;
  --race-lines) grep -E -m1 -B1 -A2 "$first" "$2"; exit 0 ;;
esac
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
series=${3:-6.12}
version=$(ls /boot | sed -n "s/^vmlinuz-\(${series//./\\.}\.[0-9].*-amd64\)\$/\1/p" | sort -V | tail -n 1)
[ -n "$version" ] || { echo "no $series kernel installed (run scripts/setup.sh)"; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
opts=()
[ -z "$qemu_opts" ] || opts=(--qemu-opts="$qemu_opts")
echo "[tcg-race] booting $version, 2 vCPUs ${qemu_opts:-(one host thread per vCPU, the default)}"
set +e
timeout --foreground 1800 vng -r "$version" --disable-kvm --force-9p --user root --verbose \
  --cpus 2 --memory 1G "${opts[@]}" --rodir="$PWD=$PWD" --rwdir "/run/tcg-race=$out" \
  --append "softlockup_panic=1" \
  --exec "$PWD/vm-tests/tcg-race.sh --guest $toggles /run/tcg-race" > "$out/console.log" 2>&1 </dev/null
rc=$?
set -e
tail -n 1 "$out/progress" 2>/dev/null | sed 's/^/[tcg-race] guest: /' || true
if shows_race "$out/console.log"; then
  echo "[tcg-race] reproduced (VM exit $rc):"
  grep -E -m1 -B1 -A2 "$first" "$out/console.log"
else
  echo "[tcg-race] not reproduced (VM exit $rc); the console ends:"
  tail -n 5 "$out/console.log"
fi
