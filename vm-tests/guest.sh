#!/bin/bash
# Runs inside the VM (started by vm-tests/run.sh): checks that BPF LSM is active (or, for a
# `nolsm` configuration, that it is not), prepares the guest, runs every test binary listed in
# $RES/test-binaries, and writes $RES/result.
set -u
RES=$1
MODE=${2:-lsm}
export LSM_VMTEST_RESULTS=$RES
fail() { echo "FAIL: $*" | tee "$RES/result"; exit 1; }

lsms=$(cat /sys/kernel/security/lsm 2>/dev/null) || fail "no /sys/kernel/security/lsm"
echo "[guest] kernel $(uname -r), lsm=$lsms"
case "$MODE,$lsms," in
  lsm,*,bpf,*) ;;
  lsm,*) fail "BPF LSM is not active (lsm=$lsms)";;
  nolsm,*,bpf,*) fail "BPF LSM is active in a nolsm configuration (lsm=$lsms)";;
  nolsm,*) ;;
  *) fail "unknown configuration mode $MODE";;
esac
[ -e /sys/kernel/btf/vmlinux ] || fail "kernel has no BTF"

# A heartbeat for the host (vm-tests/run.sh), which kills a guest silent for two minutes: on
# 6.1 QEMU's race can leave the kernel stuck without the soft lockup's panic (an RCU stall
# whose backtrace never comes), and the VM would otherwise run into the 45-minute timeout.
( while :; do printf '%(%s)T\n' -1 > "$RES/heartbeat"; sleep 10; done ) &

# /etc is an overlay private to this guest (--overlay-rwdir /etc): the write test needs a file
# there, created before the agent forbids writes under /etc.
echo "original content" > /etc/lsm-vmtest-append.conf || fail "guest /etc is not writable"

# The pids of the processes named $1 (/proc/PID/comm, at most 15 characters), by shell
# builtins only: under TCG every program started from the 9p root costs seconds, and pgrep or
# pkill after each suite cost half a minute of nothing. The fork of $(...) execs nothing.
pids_named() {
  local f c out=()
  for f in /proc/[0-9]*/comm; do
    # stderr first: a process gone since the glob must not print an error.
    read -r c 2>/dev/null < "$f" || continue
    [ "$c" = "$1" ] || continue
    f=${f#/proc/}
    out+=("${f%/comm}")
  done
  echo "${out[@]}"
}
running() { [ -n "$(pids_named "$1")" ]; }
signal_all() {
  local p
  for p in $(pids_named "$2"); do kill "-$1" "$p" 2>/dev/null; done
}
agent_running() { running lsm-agent; }
cluster_running() { running kube-apiserver || running etcd; }

status=0
while read -r t; do
  [ -n "$t" ] || continue
  name=${t##*/}
  printf -v now '%(%T)T' -1
  echo "[guest] running $name at $now"
  suite_start=$EPOCHSECONDS
  "$t" --test-threads=1 >>"$RES/tests.log" 2>&1
  rc=$?
  echo "[guest] $name exit $rc after $(( EPOCHSECONDS - suite_start ))s"
  # One line per suite in the results, so that the host can print where the time went.
  echo "${name%-*} rc=$rc $(( EPOCHSECONDS - suite_start ))s" >> "$RES/timings"
  [ $rc -eq 0 ] || status=1
  # A binary's shared agent lives in a static that is never dropped: stop it here, or it
  # would keep enforcing its policies on the next binary's tests.
  # Under TCG a stop takes seconds (the agent's tasks get a grace period, then the kernel
  # detaches and frees every program): wait for it, and after a SIGKILL wait for the process to
  # be gone too, so that a slow exit is not mistaken for a survivor.
  stop_start=$EPOCHSECONDS
  signal_all TERM lsm-agent
  signal_all TERM lsmctl
  for _ in {1..150}; do agent_running || break; sleep 0.2; done
  # Then SIGKILL whatever is left and wait for it to be gone.
  if agent_running; then
    echo "[guest] lsm-agent still running $(( EPOCHSECONDS - stop_start ))s after SIGTERM:"
    ps -eo pid,ppid,stat,etimes,comm,args | grep -E '^ *PID|lsm-agent' | grep -v grep
  fi
  signal_all KILL lsm-agent
  for _ in {1..50}; do agent_running || break; sleep 0.2; done
  if agent_running; then
    echo "[guest] an lsm-agent survived $name:"
    ps -eo pid,ppid,stat,etimes,comm,args | grep -E '^ *PID|lsm-agent' | grep -v grep
    status=1
  else
    echo "[guest] agent stopped $(( EPOCHSECONDS - stop_start ))s after SIGTERM"
  fi
  # Stopped agents leave their programs pinned and enforcing (by design, see bpf/pin.rs):
  # lift them before the next suite, as `lsm-agent --unload` would.
  [ -d /sys/fs/bpf/lsm-agent ] && rm -rf /sys/fs/bpf/lsm-agent
  # The kubernetes suite's watchdog stops its etcd + kube-apiserver once the binary is gone
  # (stop.sh waits up to 20 s for each): they must not outlive it.
  for _ in {1..250}; do cluster_running || break; sleep 0.2; done
  if cluster_running; then
    echo "[guest] etcd or kube-apiserver survived $name:"
    ps -eo pid,ppid,stat,etimes,comm,args | grep -E '^ *PID|kube-apiserver|etcd' | grep -v grep
    signal_all KILL kube-apiserver
    signal_all KILL etcd
    status=1
  fi
done < "$RES/test-binaries"
# The kernel's log, for the host's check of warnings and oopses (the console shows only
# emergencies). A missing log fails the configuration: the check must not pass by default.
dmesg > "$RES/dmesg.log" 2>&1 || { echo "[guest] dmesg failed"; status=1; }
echo "exit=$status" > "$RES/result"
