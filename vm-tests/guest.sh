#!/bin/bash
# Runs inside the VM (started by vm-tests/run.sh): checks that BPF LSM is active, prepares
# the guest, runs every test binary listed in $RES/test-binaries, and writes $RES/result.
set -u
RES=$1
export LSM_VMTEST_RESULTS=$RES
fail() { echo "FAIL: $*" | tee "$RES/result"; exit 1; }

lsms=$(cat /sys/kernel/security/lsm 2>/dev/null) || fail "no /sys/kernel/security/lsm"
echo "[guest] kernel $(uname -r), lsm=$lsms"
case ",$lsms," in *,bpf,*) ;; *) fail "BPF LSM is not active (lsm=$lsms)";; esac
[ -e /sys/kernel/btf/vmlinux ] || fail "kernel has no BTF"

# /etc is an overlay private to this guest (--overlay-rwdir /etc): the write test needs a file
# there, created before the agent forbids writes under /etc.
echo "original content" > /etc/lsm-vmtest-append.conf || fail "guest /etc is not writable"

status=0
while read -r t; do
  [ -n "$t" ] || continue
  echo "[guest] running $(basename "$t")"
  "$t" --test-threads=1 >>"$RES/tests.log" 2>&1
  rc=$?
  echo "[guest] $(basename "$t") exit $rc"
  [ $rc -eq 0 ] || status=1
  # A binary's shared agent lives in a static that is never dropped: stop it here, or it
  # would keep enforcing its policies on the next binary's tests.
  # Under TCG a stop takes seconds (the agent's tasks get a grace period, then the kernel
  # detaches and frees every program): wait for it, and after a SIGKILL wait for the process to
  # be gone too, so that a slow exit is not mistaken for a survivor.
  stop_start=$(date +%s)
  pkill -TERM -x lsm-agent 2>/dev/null
  pkill -TERM -x lsmctl 2>/dev/null
  for _ in $(seq 1 150); do pgrep -x lsm-agent >/dev/null || break; sleep 0.2; done
  if pgrep -x lsm-agent >/dev/null; then
    echo "[guest] lsm-agent still running $(( $(date +%s) - stop_start ))s after SIGTERM: SIGKILL"
    pkill -KILL -x lsm-agent 2>/dev/null
    for _ in $(seq 1 50); do pgrep -x lsm-agent >/dev/null || break; sleep 0.2; done
  fi
  if pgrep -x lsm-agent >/dev/null; then
    echo "[guest] an lsm-agent survived $(basename "$t")"; status=1
  else
    echo "[guest] agent stopped $(( $(date +%s) - stop_start ))s after SIGTERM"
  fi
done < "$RES/test-binaries"
echo "exit=$status" > "$RES/result"
