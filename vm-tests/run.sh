#!/usr/bin/env bash
# Builds the agent and the VM tests, then boots each configuration listed in vm-tests/kernels
# (virtme-ng, QEMU TCG) and runs the tests inside. A configuration is a kernel series, booted
# with BPF LSM active, or a series with `-nolsm` (e.g. `6.12-nolsm`), booted without `bpf` in
# `lsm=` to test the kprobe fallback. Fails, never skips, when a VM does not boot, the LSM set
# is not the configuration's, or a test fails. A VM killed by QEMU's own race (`shows_race`) is
# booted again for the suites it had not finished, and the report says so.
#   LSM_VM_KERNELS="6.12"  limit the configurations
#   LSM_VM_SUITES="actions reload"  run only these test binaries (for development)
#   LSM_VM_LANES=2                  boot two VMs at a time (default 1: the kubernetes suite
#                                   ran 5x slower beside another VM and missed its 90 s waits)
# 4 GB: the kubernetes suite runs etcd and kube-apiserver in the guest (its 111 MiB binary on
# tmpfs, ~250 MB resident) beside the agent.
set -euo pipefail
cd "$(dirname "$0")/.."
# Only when missing: lsm-agent's build script reruns on any change of PATH, and the agent
# built by `make unit-test` (same PATH) must be reused as it is.
case ":$PATH:" in *":$HOME/.cargo/bin:"*) ;; *) export PATH="$HOME/.cargo/bin:$PATH" ;; esac

# Series to boot; LSM_VM_KERNELS="6.12" limits them.
kernels=${LSM_VM_KERNELS:-$(grep -v '^#' vm-tests/kernels | awk 'NF {print $1}' | xargs)}
# The test binaries listed for a series in vm-tests/kernels (empty: all).
suites_for() { grep -v '^#' vm-tests/kernels | awk -v s="$1" '$1 == s { $1 = ""; print }' | xargs; }
# Suites that only make sense without BPF LSM: never part of a BPF-LSM configuration's "all".
nolsm_only="fallback"
# Suites that `make bench` runs (LSM_VM_SUITES), not `make test`: the pod-scoping benchmark
# creates 1,000 pods through the guest's API server, more than 15 minutes under TCG.
bench_only="k8s_benchmark"
lsm_set="lockdown,capability,landlock,yama,bpf"
nolsm_set="lockdown,capability,landlock,yama"
results=vm-tests/results
# What in the guest's kernel log fails a configuration whose tests passed. The console shows
# only emergencies (virtme-ng boots with loglevel=1), so guest.sh saves the whole log
# (dmesg.log). RCU stall reports are left out: TCG's slow emulation produces them on a
# healthy kernel.
kernel_trouble='BUG:|WARNING:|Oops|general protection fault|Kernel panic'
rm -rf "$results"
mkdir -p "$results"

echo "[vm-tests] building"
# The agent and lsmctl exactly as `make unit-test` (cargo test --release) builds them, so that
# after it nothing is compiled again: `cargo build -p lsm-agent` would resolve other features
# (no dev-dependencies) and rebuild the whole tree. The test helpers depend on nix alone.
cargo test --release --locked --no-run
cargo build --release --locked -p vm-tests --bins
cargo test --release --locked -p vm-tests --no-run --message-format=json 2>/dev/null \
  | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    # The suites in vm-tests/tests only: the crate'\''s lib and bin unit-test harnesses test
    # nothing that needs a VM, and each would still cost a round of guest bookkeeping.
    if (m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test")
            and m.get("executable") and m.get("target", {}).get("kind") == ["test"]):
        print(m["executable"])
' > "$results/test-binaries.all"
[ -s "$results/test-binaries.all" ] || { echo "[vm-tests] no test binaries built"; exit 1; }

# The guest sees the host's root read-only, except where virtme-ng mounts its own file systems:
# /tmp is an overlay of the host's, but /var/tmp, /run, /dev/shm, /var/log... start empty. Share
# what the tests read at the path they know it by, wherever the checkout and the target dir
# live: the repository, the release dir (the agent, lsmctl, the test binaries) and ../shared.
repo=$(pwd -P)
release=$(dirname "$(dirname "$(head -n 1 "$results/test-binaries.all")")")
shares=("--rodir=$repo=$repo")
case "$release/" in "$repo"/*) ;; *) shares+=("--rodir=$release=$(realpath "$release")");; esac
[ -d "$repo/../shared" ] && shares+=("--rodir=$(dirname "$repo")/shared=$(realpath "$repo/../shared")")
# Results go to a guest-local path: a --rwdir inside a --rodir would be hidden by it.
guest_res=/run/lsm-vmtest-results

# QEMU's race: seen in CI with 2 vCPUs as "Oops: int3" at `bpf_lsm_file_permission+0x5` while
# an agent attached its programs. QEMU 7.2's multi-threaded TCG can translate code another vCPU
# is patching between its invalidation of the old translation and the patching store, and then
# runs the kernel's temporary int3 after the kernel has removed it. vm-tests/tcg-race.sh
# reproduces it with ftrace alone, no BPF, and tells it from a console (6.12 dies of an oops;
# 6.1 hangs, which softlockup_panic=1 turns into a panic). `-accel tcg,thread=single` avoids
# it but made each patch take ~0.4 s (a vCPU waits up to 100 ms for the other's turn at every
# IPI).
shows_race() { bash vm-tests/tcg-race.sh --shows-race "$1"; }

# A guest whose heartbeat (guest.sh writes $res/heartbeat every 10 s) is older than this is
# killed: its kernel no longer schedules. A suite that hangs in user space keeps it beating.
silence=120

# Process $1 and its descendants, deepest first (timeout, vng, virtme-run, QEMU).
kill_tree() {
  local c
  for c in $(pgrep -P "$1"); do kill_tree "$c"; done
  kill -TERM "$1" 2>/dev/null || true
}

# Watches the VM started as process $2 for configuration dir $1 until it ends: once the
# guest's heartbeat is $silence s old, says so on its console (what tcg-race.sh reads) and
# kills it.
watch_heartbeat() {
  local res=$1 vm=$2 beat
  while kill -0 "$vm" 2>/dev/null; do
    sleep 2
    beat=$(stat -c %Y "$res/heartbeat" 2>/dev/null) || continue
    if [ $(( $(date +%s) - beat )) -gt "$silence" ]; then
      echo "[vm-tests] the guest has been silent for over $silence s (no heartbeat since" \
        "$(date -d "@$beat" +%T)): VM killed" >> "$res/console.log"
      kill_tree "$vm"
      return 0
    fi
  done
}

# The test binaries of $1/test-binaries.planned whose suite has no line in $1/timings yet.
suites_left() {
  local t name
  while read -r t; do
    [ -n "$t" ] || continue
    name=${t##*/}
    grep -q "^${name%-*} rc=" "$1/timings" 2>/dev/null || echo "$t"
  done < "$1/test-binaries.planned"
}

# Every kernel log of configuration dir $1: the last boot's console and dmesg, and the consoles
# of boots lost to the race up to the race's oops (what follows it is the race's own report).
kernel_log() {
  local c
  cat "$1/console.log" "$1/dmesg.log" 2>/dev/null
  for c in "$1"/console-race-*.log; do
    [ -f "$c" ] && bash vm-tests/tcg-race.sh --before-race "$c"
  done
  return 0
}

# One configuration: boots its VM, runs its suites and prints what happened. Returns 1 on any
# failure. Runs in a background lane, so it writes only below its own results dir.
run_config() {
  local config=$1 series lsm_mode lsms version res suites suite start rc result skip failed=0
  local vm watcher
  series=${config%%-*}
  case "$config" in
    "$series") lsm_mode=lsm; lsms=$lsm_set ;;
    "$series-nolsm") lsm_mode=nolsm; lsms=$nolsm_set ;;
    *) echo "[vm-tests] FAIL: unknown configuration $config (SERIES or SERIES-nolsm)"; return 1 ;;
  esac
  version=$(ls /boot | sed -n "s/^vmlinuz-\(${series//./\\.}\.[0-9].*-amd64\)\$/\1/p" | sort -V | tail -n 1)
  if [ -z "$version" ]; then
    echo "[vm-tests] FAIL: no installed kernel for series $series (run scripts/setup.sh)"
    return 1
  fi
  res="$PWD/$results/$config"
  mkdir -p "$res"
  suites=${LSM_VM_SUITES:-$(suites_for "$config")}
  if [ -z "$suites" ] && [ "$lsm_mode" = nolsm ]; then
    echo "[vm-tests] FAIL: configuration $config lists no suites (BPF-LSM suites fail there by design)"
    return 1
  fi
  if [ -n "$suites" ]; then
    : > "$res/test-binaries"
    for suite in $suites; do
      grep "/deps/${suite}-[0-9a-f]*\$" "$results/test-binaries.all" >> "$res/test-binaries" \
        || { echo "[vm-tests] FAIL: no test binary $suite"; failed=1; }
    done
  else
    skip="$nolsm_only $bench_only"
    grep -v -E "/deps/(${skip// /|})-[0-9a-f]*\$" "$results/test-binaries.all" > "$res/test-binaries"
  fi
  cp "$res/test-binaries" "$res/test-binaries.planned"
  # `tee -a`: stderr may be the file stdout goes to (`make test > log 2>&1`); tee without -a
  # opens it with O_TRUNC and wiped the log at every boot.
  # Two ways a VM is booted again, each said loudly, neither skipping a suite:
  # - a guest that never started (no `[guest]` line: QEMU or the 9p root failed before guest.sh
  #   ran; seen as exit 255 after ~6 s with an empty console), at most twice;
  # - a guest killed by QEMU's cross-modifying-code race (`shows_race`, above), at most twice:
  #   the suites it had not finished, the one it died in included, run in a new boot. Each
  #   suite still runs to its end once, and one that failed in any boot fails the configuration.
  # A guest that died any other way is never booted again.
  local unstarted=0 races=0 attempt=0 remaining
  while :; do
    attempt=$((attempt + 1))
    echo "[vm-tests] booting $version (lsm=$lsms) at $(date +%T), attempt $attempt" | tee -a /dev/stderr
    start=$(date +%s)
    set +e
    # --verbose: the kernel's log goes to the console too, so that a guest that dies without
    # reporting leaves its kernel's last words in console.log, which the summary below shows.
    # softlockup_panic=1: a soft lockup fails the run anyway (`kernel_trouble`); the panic
    # ends the VM at once instead of leaving it hung until the timeout (QEMU's race on 6.1).
    rm -f "$res/heartbeat"
    timeout --foreground 2700 vng -r "$version" --disable-kvm --force-9p --user root --verbose \
      --cpus 2 --memory 4G "${shares[@]}" --rwdir "$guest_res=$res" --overlay-rwdir /etc \
      --append "lsm=$lsms softlockup_panic=1" \
      --exec "$repo/vm-tests/guest.sh $guest_res $lsm_mode" >>"$res/console.log" 2>&1 </dev/null &
    vm=$!
    watch_heartbeat "$res" "$vm" &
    watcher=$!
    wait "$vm"
    rc=$?
    wait "$watcher"
    set -e
    echo "VM exited $rc after $(( $(date +%s) - start ))s (attempt $attempt)" > "$res/vm-exit"
    echo "[vm-tests] $version: $(cat "$res/vm-exit")" | tee -a /dev/stderr
    [ -f "$res/result" ] && break
    if ! grep -q '^\[guest\]' "$res/console.log"; then
      echo "[vm-tests] $version: the guest never started; its console:" | tee -a /dev/stderr
      tail -n 20 "$res/console.log" | tee -a /dev/stderr
      unstarted=$((unstarted + 1))
      [ "$unstarted" -le 2 ] || break
      mv "$res/console.log" "$res/console-attempt-$attempt.log"
    elif shows_race "$res/console.log" && [ "$races" -lt 2 ]; then
      races=$((races + 1))
      remaining=$(suites_left "$res")
      echo "$version: the guest was lost to QEMU's cross-modifying-code race (a stale int3" \
        "where the kernel patched its code: an oops, or a soft lockup or an RCU stall and" \
        "then silence; vm-tests/tcg-race.sh shows it without the agent); its console is" \
        "console-race-$races.log. Booting again for the suites it had" \
        "not finished: $(echo "$remaining" | sed 's|.*/||; s/-[0-9a-f]*$//' | xargs)" >> "$res/races"
      tail -n 1 "$res/races" | sed 's/^/[vm-tests] /' | tee -a /dev/stderr
      bash vm-tests/tcg-race.sh --race-lines "$res/console.log" | tee -a /dev/stderr
      mv "$res/console.log" "$res/console-race-$races.log"
      echo "$remaining" > "$res/test-binaries"
    else
      break
    fi
    sleep 5
  done
  cat "$res/tests.log" 2>/dev/null | grep -E '^(test |running|test result|failures:|---- )|panicked' || true
  # Where the time went, suite by suite (written by guest.sh).
  [ -f "$res/timings" ] && sed 's/^/[vm-tests] suite /' "$res/timings"
  result=$(cat "$res/result" 2>/dev/null || echo "no result (VM did not boot or died)")
  # After a boot lost to the race, result is the last boot's: a suite that failed in an
  # earlier boot must still fail the configuration.
  if [ "$result" = "exit=0" ] && grep -qv ' rc=0 ' "$res/timings" 2>/dev/null; then
    result="exit=1 (a suite failed in an earlier boot, see timings)"
  fi
  if [ "$result" != "exit=0" ]; then
    echo "[vm-tests] FAIL on $version: $result"
    tail -n 40 "$res/console.log"
    [ -f "$res/tests.log" ] && tail -n 80 "$res/tests.log"
    failed=1
  elif kernel_log "$res" | grep -qE "$kernel_trouble"; then
    echo "[vm-tests] FAIL on $version: kernel warnings in the guest's log"
    kernel_log "$res" | grep -E -A5 "$kernel_trouble" | head -n 60
    failed=1
  else
    echo "[vm-tests] ok on $version"
  fi
  [ -f "$res/races" ] && sed 's/^/[vm-tests] note: /' "$res/races"
  for report in "$res"/bench-*.md; do [ -f "$report" ] && cat "$report"; done
  return $failed
}

# The configurations run in LSM_VM_LANES parallel VMs (default 1), each lane taking the next
# configuration when it is free. Two lanes on a 2-core machine were measured: the suites
# that run etcd and kube-apiserver beside the agent slowed down 5x, so one lane stays the
# default. Each configuration's report is printed whole: as its VM ends with one lane, in the
# listed order at the end with more.
lanes=${LSM_VM_LANES:-1}
running=0
for config in $kernels; do
  if [ "$running" -ge "$lanes" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  mkdir -p "$results/$config"
  # With one lane, each report is printed as its VM ends: a CI log cut off by a time limit
  # still shows the configurations that finished.
  ( set +e; run_config "$config" > "$results/$config/report.log"
    echo $? > "$results/$config/status"
    [ "$lanes" -gt 1 ] || cat "$results/$config/report.log" ) &
  running=$((running + 1))
done
wait
failed=0
for config in $kernels; do
  [ "$lanes" -le 1 ] || cat "$results/$config/report.log" 2>/dev/null || true
  [ "$(cat "$results/$config/status" 2>/dev/null)" = 0 ] || { echo "[vm-tests] FAIL: $config"; failed=1; }
done
# A CI log may be shown by its tail only: restate what failed, configuration by configuration,
# as the last lines (the suites that failed, the tests that failed and where they panicked).
for config in $kernels; do
  [ "$(cat "$results/$config/status" 2>/dev/null)" = 0 ] && continue
  echo "[vm-tests] summary of $config: $(cat "$results/$config/result" 2>/dev/null || echo 'no result'), $(cat "$results/$config/vm-exit" 2>/dev/null || echo 'VM not booted')"
  # Without a result the guest died or never started: its last suite and console lines say how.
  if [ ! -f "$results/$config/result" ]; then
    grep '^\[guest\] running' "$results/$config/console.log" 2>/dev/null | tail -n 1 \
      | sed 's/^/[vm-tests]   last suite started: /' || true
    tail -n 15 "$results/$config/console.log" 2>/dev/null | sed 's/^/[vm-tests]   console: /' || true
  fi
  grep -v ' rc=0 ' "$results/$config/timings" 2>/dev/null | sed 's/^/[vm-tests]   suite /' || true
  sed 's/^/[vm-tests]   boot lost: /' "$results/$config/races" 2>/dev/null || true
  grep -E '^test .* FAILED$|panicked at|^---- ' "$results/$config/tests.log" 2>/dev/null \
    | head -n 30 | sed 's/^/[vm-tests]   /' || true
  grep -A3 'panicked at' "$results/$config/tests.log" 2>/dev/null | grep -v 'panicked at' \
    | head -n 20 | sed 's/^/[vm-tests]     /' || true
done
exit $failed
