//! The one writer of the ring buffer.
use aya_ebpf::helpers::generated::{bpf_get_current_cgroup_id, bpf_get_smp_processor_id};
use lsm_shared::*;

use crate::{maps::EVENTS, path::count};

/// A ring-buffer record.
///
/// # Safety
/// The type must be `#[repr(C)]` with its [`EventHeader`] as the first field, so that a
/// pointer to it is a pointer to its header.
pub unsafe trait Event: 'static {
    /// The header's `kind`: `EVENT_*`.
    const KIND: u32;
}

macro_rules! events {
    ($($t:ty => $kind:expr),* $(,)?) => {$(
        // SAFETY: `$t` is `#[repr(C)]` in lsm-shared, and the assertion below pins its
        // header at offset 0.
        unsafe impl Event for $t {
            const KIND: u32 = $kind;
        }
        const _: () = assert!(core::mem::offset_of!($t, header) == 0);
    )*};
}
events!(
    ExecEvent => EVENT_EXEC,
    ExitEvent => EVENT_EXIT,
    HookEvent => EVENT_HOOK,
    ForkEvent => EVENT_FORK,
);

/// `BPF_RB_AVAIL_DATA`: `bpf_ringbuf_query`'s unread bytes.
const BPF_RB_AVAIL_DATA: u64 = 0;

/// Sends one event: reserves a `T` in the ring buffer, writes its header (kind, this CPU,
/// `ktime`, `pid`, `tgid`, the current task's cgroup v2 id), lets `fill` write the rest of
/// the record, and submits it. When the ring buffer is full the event is dropped and counted
/// in `STAT_RING_LOST`; no program's verdict depends on it. An event that is not an
/// `enforcement` event is also dropped (and counted) once the unread data would reach into
/// [`EVENTS_ENFORCEMENT_RESERVE`].
#[inline(always)]
pub fn emit<T: Event>(
    pid: u32,
    tgid: u32,
    ktime: u64,
    enforcement: bool,
    fill: impl FnOnce(*mut T),
) {
    let limit = u64::from(EVENTS_BYTES - EVENTS_ENFORCEMENT_RESERVE);
    if !enforcement && EVENTS.query(BPF_RB_AVAIL_DATA) + size_of::<T>() as u64 > limit {
        count(STAT_RING_LOST);
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count(STAT_RING_LOST);
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: a helper without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    // SAFETY: a helper without arguments; every program type that emits (LSM, BTF
    // tracepoints) may call it.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: `ev` is the reserved record, ours alone until submitted, and it starts with
    // its header (the contract of `Event`).
    unsafe {
        ev.cast::<EventHeader>().write(EventHeader {
            kind: T::KIND,
            cpu,
            ktime,
            pid,
            tgid,
            cgroup_id,
        });
    }
    fill(ev);
    entry.submit(0);
}
