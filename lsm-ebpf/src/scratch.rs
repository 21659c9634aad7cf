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
    /// Never written: a source of zeros for clearing records with one helper call.
    pub zero: [u8; 1024],
}
