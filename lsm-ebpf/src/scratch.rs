//! Per-CPU working memory.
use aya_ebpf::maps::lpm_trie::Key;
use lsm_shared::*;

/// Size of the path buffer: twice `PATH_BUF_LEN` so that every masked offset plus a bounded
/// length stays inside it, which is what the verifier needs to see.
pub const BUF_LEN: usize = 2 * PATH_BUF_LEN;
pub const BUF_MASK: usize = BUF_LEN - 1;

#[repr(C)]
pub struct Scratch {
    pub buf: [u8; BUF_LEN],
    pub rec: PathRec,
    pub exe: PathRec,
    /// Per argument position, the string records the generic reader filled (`args::read`).
    pub strs: [PathRec; MAX_ARGS],
    /// Per argument position, the address of the record `strs[i]` stands for: its own, or
    /// the `FILES` cache's record of the file, whose bytes the reader does not copy (it
    /// copies the length and flags into `strs[i]`). Read back from map memory it is a
    /// number to the verifier, read with helpers only.
    pub str_at: [u64; MAX_ARGS],
    /// The raw arguments an entry point collected for the generic reader ([`Scratch::set_raw`]).
    pub raw: [u64; MAX_ARGS],
    /// The argument values the generic reader produced (integers cut to their width).
    pub vals: [u64; MAX_ARGS],
    /// The verdict a file hook stores for its file (`eval::match_file`): map memory, not
    /// the stack, for the helper that copies it into `FILE_VERDICTS`.
    pub verdict: FileVerdict,
    /// 1: `verdict` holds the file's current verdict, as `eval::file_passes` found it; 0: it
    /// found none, and `eval::match_file` computes one.
    pub verdict_known: u64,
    /// What the generic reader's loop steps read (`args::read`).
    pub read: ReadPlan,
    /// Bit `i`: the generic reader filled `strs[i]`. Kept in map memory, not a register, so
    /// that which arguments had strings does not split the verifier's states for the whole
    /// evaluation that follows (see [`Scratch::str_mask`]).
    pub str_bits: u64,
    pub key: StrKey,
    pub lpm: Key<LpmStr>,
    pub proc_info: ProcInfo,
    /// Process attributes read for numeric filters (`ATTR_*`).
    pub attrs: [u64; NUM_ATTRS as usize],
    pub pid_key: PidKey,
    /// The connection at `socket_connect`.
    pub net: NetInfo,
    pub lpm4: Key<Addr4>,
    pub lpm6: Key<Addr6>,
    /// Write position of the dentry walk. Kept in map memory, not a register: the verifier
    /// does not track map contents, so every loop iteration looks the same to it and the
    /// walk verifies in linear rather than exponential time.
    pub walk_pos: u64,
    /// The current process's root (`fs_struct.root`: mount, dentry), where the walk stops as
    /// `d_path` does. In map memory for the same reason as `walk_pos`, and to keep two
    /// registers off the stack of every program that inlines the walk.
    pub walk_root: [u64; 2],
    /// What identifies the open `file_open` runs for (`dentry::open_passes`), and the dentry
    /// to keep its verdict under (0: none). In map memory: the insert's value, and a key read
    /// after the path's resolution.
    pub dentry: DentryVerdict,
    pub dentry_key: u64,
    /// The task's `fs_struct` and its sequence count when `dentry` was read.
    pub dentry_fs: [u64; 2],
    /// The tgid of the process that tracked a socket argument of this call (`TrackSock`),
    /// 0 for none: the event is posted as that process's.
    pub owner: u64,
    /// Which point of a uprobe hook ran ([`lsm_shared::HookEvent::point`]); set by every
    /// entry ([`crate::entry::enter`]), so that no other program posts a stale one.
    pub point: u64,
    /// Never written: a source of zeros for clearing records with one helper call.
    pub zero: [u8; 1024],
}

/// The state of the generic reader's loop: each argument's [`ArgDesc`] as
/// `kind | src << 8 | width << 16 | size << 24`, copied from the plan when the loop starts,
/// and the return value at a kretprobe.
#[repr(C)]
pub struct ReadPlan {
    pub descs: [u32; MAX_ARGS],
    pub has_ret: u32,
    /// [`HookConfig::net_arg`].
    pub net_arg: u32,
    /// Where the plan is in `HOOK_CFG`, for the `resolve` paths (the same bank: it does not
    /// change while the program runs).
    pub cfg_at: u32,
    /// The return value at a kretprobe, stored by the evaluator before anything reads it.
    pub ret: u64,
}

impl Scratch {
    /// The argument positions whose string record the generic reader filled.
    #[inline(always)]
    pub fn str_mask(&self) -> u64 {
        // SAFETY: a field of the scratch area; volatile keeps it in memory (see `str_bits`).
        unsafe { core::ptr::read_volatile(&self.str_bits) }
    }

    #[inline(always)]
    pub fn set_str_mask(&mut self, bits: u64) {
        // SAFETY: a field of the scratch area, which this program alone uses.
        unsafe { core::ptr::write_volatile(&mut self.str_bits, bits) }
    }

    /// The return value at a kretprobe ([`ReadPlan::ret`]).
    #[inline(always)]
    pub fn ret(&self) -> u64 {
        // SAFETY: a field of the scratch area; volatile keeps it in memory, not a register.
        unsafe { core::ptr::read_volatile(&self.read.ret) }
    }

    /// The address of argument `i`'s string record ([`Scratch::str_at`], the field), for the helpers
    /// that copy out of it; null for a position past the last.
    #[inline(always)]
    pub fn str_addr(&self, i: usize) -> *const PathRec {
        // SAFETY: a field of the scratch area; volatile so that it is read from memory,
        // where the reader stored it, as a number.
        self.str_at
            .get(i)
            .map_or(0, |a| unsafe { core::ptr::read_volatile(a) }) as *const PathRec
    }

    /// Stores raw argument `i`: one 8-byte store each, so that the compiler does not merge
    /// an entry's stores (and zeros) into a `memset` the verifier would have to walk.
    #[inline(always)]
    pub fn set_raw(&mut self, i: usize, v: u64) {
        if let Some(slot) = self.raw.get_mut(i) {
            // SAFETY: a valid, aligned slot of the scratch area.
            unsafe { core::ptr::write_volatile(slot, v) };
        }
    }
}
