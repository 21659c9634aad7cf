//! What every program does first, and how a `try_` function's result becomes its return
//! value.
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_task, bpf_ktime_get_boot_ns},
    },
    programs::LsmContext,
};

use lsm_shared::MAX_ERRNO;

use crate::{
    kernel::{kconf, read_u64},
    maps::{CANARY, CANARY_HITS, SCRATCH},
    scratch::Scratch,
};

const EPERM: i32 = 1;

/// The task a program runs in. Its ids are asked of the kernel where they are used, not at
/// the program's start: most runs (a read of a file whose verdict passes) never use them, and
/// the helper call was a measurable part of such a run.
#[derive(Clone, Copy)]
pub struct Current;

impl Current {
    /// Thread id (in the initial pid namespace).
    #[inline(always)]
    pub fn pid(self) -> u32 {
        bpf_get_current_pid_tgid() as u32
    }

    /// Thread-group id: the process.
    #[inline(always)]
    pub fn tgid(self) -> u32 {
        (bpf_get_current_pid_tgid() >> 32) as u32
    }

    /// Whether this task of the agent's thread group is the agent's: its process started
    /// when the agent did (else the pid was given again after the agent was gone, while its
    /// programs stayed pinned). Read only for a task of `agent_tgid`.
    #[inline(always)]
    pub fn is_agent(self) -> bool {
        let leader = read_u64(self.task(), kconf!(task_group_leader));
        let start = read_u64(leader, kconf!(task_start_boottime));
        // A range, not a division: a division by a value the compiler cannot prove non-zero
        // brings in a panic path, which BPF has no way to run.
        start >= kconf!(agent_start_ns) && start < kconf!(agent_start_end_ns)
    }

    /// Address of the task's `struct task_struct`.
    #[inline(always)]
    pub fn task(self) -> u64 {
        // SAFETY: a helper without arguments; it only returns the current task's address.
        unsafe { bpf_get_current_task() }
    }
}

/// Boot-time nanoseconds now (the clock of every event's `ktime`).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments that reads a clock.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// The start of every program: this CPU's scratch area and the current task. `Err` carries
/// the program's return value for an early exit: 0 (allow) if the scratch slot is missing,
/// which cannot happen for index 0 of a one-entry array.
#[inline(always)]
pub fn enter() -> Result<(&'static mut Scratch, Current), i32> {
    let slot = SCRATCH.get_ptr_mut(0).ok_or(0)?;
    // SAFETY: the per-CPU slot belongs to this CPU, and a BPF program runs to completion
    // without being preempted by another program on the same CPU that uses it, so this is
    // the only reference to it while the program runs.
    let s = unsafe { &mut *slot };
    s.point = 0;
    Ok((s, Current))
}

/// The start of every LSM program: argument `prev_arg` is the verdict of the LSMs that ran
/// before; a denial there stands and nothing is evaluated. Then the canary: the agent's
/// armed thread is denied at the armed `hook` (and the hit counted), proving that this
/// program runs and its verdict reaches the caller. [`enter`] gives both the scratch area and
/// the task, so the task is read once.
#[inline(always)]
pub fn enter_lsm(
    ctx: &LsmContext,
    prev_arg: usize,
    hook: u32,
) -> Result<(&'static mut Scratch, Current), i32> {
    previous(ctx, prev_arg)?;
    let (s, cur) = enter()?;
    // Armed for a few milliseconds at a time: one load for every other run.
    if let Some(arm) = CANARY.get(0)
        && arm.tid != 0
        && arm.hook == hook
        && cur.tgid() == kconf!(agent_tgid)
        && arm.tid == cur.pid()
    {
        if let Some(hits) = CANARY_HITS.get_ptr_mut(hook) {
            // SAFETY: a valid array slot; only the armed thread writes it.
            unsafe { *hits += 1 };
        }
        return Err(-EPERM);
    }
    Ok((s, cur))
}

/// `Err` with the verdict of the BPF programs that ran before on the same hook (argument
/// `prev_arg`) if it denies: that denial stands.
#[inline(always)]
pub fn previous(ctx: &LsmContext, prev_arg: usize) -> Result<(), i32> {
    // Read and tested as the whole 64-bit slot: the verifier knows the range of the slot as
    // loaded ([-MAX_ERRNO, 0]), but not of a zero-extended 32-bit copy, and a program that
    // returned such a copy would be rejected for a return value outside that range.
    let prev: i64 = ctx.arg(prev_arg);
    if prev != 0 {
        return Err(prev as i32);
    }
    Ok(())
}

/// The return value of a program from its `try_` function: the verdict, or the early
/// exit's value.
///
/// The verifier checks an LSM program's whole 64-bit return register against
/// `[-MAX_ERRNO, 0]`. A verdict the compiler kept on the stack as 32 bits comes back
/// zero-extended, which the verifier cannot bound; so the value goes through a 64-bit stack
/// slot (a volatile access the compiler cannot see through) and is bounded in 64 bits right
/// before it is returned. Every verdict the programs produce is already in that range.
#[inline(always)]
pub fn ret(result: Result<i32, i32>) -> i32 {
    let v = match result {
        Ok(v) | Err(v) => v,
    };
    let slot = i64::from(v);
    // SAFETY: reading a local through a valid pointer.
    let v = unsafe { core::ptr::read_volatile(&slot) };
    if v < -i64::from(MAX_ERRNO) || v > 0 {
        return 0;
    }
    v as i32
}
