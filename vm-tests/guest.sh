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

# /etc is an overlay private to this guest (--overlay-rwdir /etc): the write test needs a file
# there, created before the agent forbids writes under /etc.
echo "original content" > /etc/lsm-vmtest-append.conf || fail "guest /etc is not writable"

# Whether an lsm-agent runs. Only pgrep's "no match" (1) means none: any other failure (e.g. a
# pgrep killed by the policy of an agent that is still stopping) counts as "maybe", so that a
# stop loop never ends early on it.
agent_running() {
  pgrep -x lsm-agent >/dev/null
  local rc=$?
  [ $rc -ne 1 ] || return 1
  [ $rc -eq 0 ] || echo "[guest] pgrep failed ($rc) while waiting for the agent to stop"
  return 0
}

# pgrep matches at most 15 characters of a name: one call per program.
cluster_running() { pgrep -x kube-apiserver >/dev/null || pgrep -x etcd >/dev/null; }

status=0
while read -r t; do
  [ -n "$t" ] || continue
  echo "[guest] running $(basename "$t") at $(date +%T)"
  suite_start=$(date +%s)
  "$t" --test-threads=1 >>"$RES/tests.log" 2>&1
  rc=$?
  echo "[guest] $(basename "$t") exit $rc after $(( $(date +%s) - suite_start ))s"
  # One line per suite in the results, so that the host can print where the time went.
  echo "$(basename "$t" | sed 's/-[0-9a-f]*$//') rc=$rc $(( $(date +%s) - suite_start ))s" >> "$RES/timings"
  [ $rc -eq 0 ] || status=1
  # A binary's shared agent lives in a static that is never dropped: stop it here, or it
  # would keep enforcing its policies on the next binary's tests.
  # Under TCG a stop takes seconds (the agent's tasks get a grace period, then the kernel
  # detaches and frees every program): wait for it, and after a SIGKILL wait for the process to
  # be gone too, so that a slow exit is not mistaken for a survivor.
  stop_start=$(date +%s)
  pkill -TERM -x lsm-agent 2>/dev/null
  pkill -TERM -x lsmctl 2>/dev/null
  for _ in $(seq 1 150); do agent_running || break; sleep 0.2; done
  # Then SIGKILL whatever is left and wait for it to be gone.
  if agent_running; then
    echo "[guest] lsm-agent still running $(( $(date +%s) - stop_start ))s after SIGTERM:"
    ps -eo pid,ppid,stat,etimes,comm,args | grep -E '^ *PID|lsm-agent' | grep -v grep
  fi
  pkill -KILL -x lsm-agent 2>/dev/null
  for _ in $(seq 1 50); do agent_running || break; sleep 0.2; done
  if agent_running; then
    echo "[guest] an lsm-agent survived $(basename "$t"):"
    ps -eo pid,ppid,stat,etimes,comm,args | grep -E '^ *PID|lsm-agent' | grep -v grep
    status=1
  else
    echo "[guest] agent stopped $(( $(date +%s) - stop_start ))s after SIGTERM"
  fi
  # The kubernetes suite's watchdog stops its etcd + kube-apiserver once the binary is gone
  # (stop.sh waits up to 20 s for each): they must not outlive it.
  for _ in $(seq 1 250); do cluster_running || break; sleep 0.2; done
  if cluster_running; then
    echo "[guest] etcd or kube-apiserver survived $(basename "$t"):"
    ps -eo pid,ppid,stat,etimes,comm,args | grep -E '^ *PID|kube-apiserver|etcd' | grep -v grep
    pkill -KILL -x kube-apiserver
    pkill -KILL -x etcd
    status=1
  fi
done < "$RES/test-binaries"
echo "exit=$status" > "$RES/result"
