//! The generic argument reader: raw arguments (whatever the entry point collected: an LSM
//! hook's context slots, a kprobe's registers) → the values the evaluator and the event need,
//! following the hook's [`ArgDesc`]s. One reader for every hook without a hand-written
//! program, so adding a hook adds a table row in user space and a thin entry here, never a
//! new reader.
use core::ffi::c_void;

use aya_ebpf::helpers::generated::{
    bpf_get_current_task, bpf_loop, bpf_probe_read_kernel, bpf_probe_read_kernel_str,
    bpf_probe_read_user, bpf_probe_read_user_str,
};
use lsm_shared::*;

use crate::{
    eval::kcopy,
    kernel::{kconf, kconf_at, read_u8, read_u16, read_u32, read_u64},
    maps::{FILES, HOOK_CFG, SCRATCH, SOCK_OWNERS},
    path::{finish, resolve_walk, unresolved},
    scratch::{BUF_MASK, Scratch},
};

/// Reads the first `nargs` arguments `cfg.args` describes out of `s.raw` into `s.vals` and
/// `s.strs`, and marks in `s.str_mask()` the positions whose string record it filled.
/// Bounded: at most [`MAX_ARGS`] descriptors, at most one string read or one dentry walk
/// each. A `bpf_loop`: the verifier walks [`read_step`] (a string read, a dentry walk) once,
/// where an open-coded loop had it walk them once per argument position.
#[inline(always)]
pub fn read(s: &mut Scratch, cfg: &HookConfig, cfg_at: u32, nargs: usize, has_ret: bool) {
    s.set_str_mask(0);
    // The descriptors are copied for the loop: the step must not look the plan up again (the
    // live bank may change while the program runs). In the scratch area rather than in the
    // loop's context on the stack: the evaluator's frame is what 6.1's stack budget is short of.
    s.read.has_ret = has_ret as u32;
    s.read.net_arg = cfg.net_arg;
    s.read.cfg_at = cfg_at;
    // The loop stops after the last argument a policy reads: each step is a callback with a
    // map lookup, which a hook reading only its first argument (a file) need not pay for the
    // others.
    let mut last = 0usize;
    let mut i = 0usize;
    while i < MAX_ARGS {
        let d = cfg.args[i];
        let packed = u32::from_le_bytes([d.kind, d.src, d.width, d.size]);
        // SAFETY: `i < MAX_ARGS`, the length of `descs`; one 4-byte store each.
        unsafe { core::ptr::write_volatile(s.read.descs.as_mut_ptr().add(i), packed) };
        // Positions past the last read one stay 0, as a skipped one's would.
        // SAFETY: `i < MAX_ARGS`, the length of `vals`.
        unsafe { core::ptr::write_volatile(s.vals.as_mut_ptr().add(i), 0) };
        if d.kind != ARG_SKIP {
            last = i + 1;
        }
        i += 1;
    }
    let n = if nargs < last { nargs } else { last };
    if n == 0 {
        return;
    }
    // SAFETY: the callback is a static function of this object that takes bpf_loop's
    // (index, context); it finds its state in the scratch area, not in the (null) context.
    unsafe { bpf_loop(n as u32, read_step as *mut c_void, core::ptr::null_mut(), 0) };
}

/// Reads argument `i` of [`read`]: 0 goes on, 1 stops.
#[inline(never)]
extern "C" fn read_step(i: u64, _ctx: *mut c_void) -> i64 {
    let i = i as usize;
    if i >= MAX_ARGS {
        return 1;
    }
    let Some(slot) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot, which only this program run uses (see `entry::enter`);
    // the caller holds no reference into it across the helper call.
    let s = unsafe { &mut *slot };
    let l = &raw const s.read;
    // SAFETY: `read` filled `s.read`; `i < MAX_ARGS`, the length of `descs`.
    let packed = unsafe { core::ptr::read_volatile((*l).descs.as_ptr().add(i)) };
    let [kind, src, width, size] = packed.to_le_bytes();
    let resolved = src != SRC_RET && src & SRC_RESOLVE != 0;
    let v = if src == SRC_RET {
        // SAFETY: as for `packed`; 0 outside a kretprobe.
        unsafe { (*l).ret }
    } else if resolved {
        let root = if src & SRC_CURRENT != 0 {
            // SAFETY: no arguments; the current task's address.
            unsafe { bpf_get_current_task() }
        } else {
            s.raw.get((src & SRC_POS) as usize).copied().unwrap_or(0)
        };
        // SAFETY: as for `packed`.
        resolve(root, unsafe { (*l).cfg_at }, i)
    } else {
        s.raw.get(src as usize).copied().unwrap_or(0)
    };
    let val = if kind == ARG_INT && resolved {
        // A resolved integer's walk ends on its address: exactly its bytes are read, so a
        // member that ends where readable memory ends is still read.
        read_int(v, width)
    } else if kind == ARG_INT {
        int_of_width(v, width)
    } else if kind == ARG_KCAP {
        // Unreadable (NULL) reads as the empty set.
        read_u64(v, 0)
    } else if arg_is_string(kind) {
        // Every record-filling kind: one record, one mark. A buffer's value is its length.
        // SAFETY: `i < MAX_ARGS`, the length of `strs`.
        let rec = unsafe { s.strs.as_mut_ptr().add(i) };
        // Where the record's bytes are: the scratch record, or a cached file's own.
        let mut at = rec as u64;
        let val = if kind == ARG_BUF {
            // SAFETY: as for `packed`.
            let (has_ret, ret) = unsafe { ((*l).has_ret, (*l).ret) };
            let len = buf_len(s, size, has_ret != 0, ret);
            read_buf(s, v, len, rec);
            len
        } else if kind == ARG_I32_ARR {
            // `size` elements of 4 bytes: at most 1020, within the record.
            read_buf(s, v, u64::from(size) * 4, rec);
            u64::from(size)
        } else if kind == ARG_IOV_ITER {
            read_iov(s, v, rec, (PATH_BUF_LEN - 1) as u64)
        } else if kind == ARG_DNS {
            read_dns(s, v, rec)
        } else if kind == ARG_CRED {
            read_cred(v, rec);
            v
        } else if kind == ARG_MODULE {
            read_module(s, v, rec)
        } else if arg_is_obj(kind) {
            read_obj(s, kind, v, rec);
            v
        } else if kind == ARG_SOCK || kind == ARG_SKB {
            // SAFETY: as for `packed`.
            let subject = unsafe { (*l).net_arg } == i as u32 + 1;
            read_net(s, kind, v, rec, subject);
            v
        } else {
            // A cached file stays where it is: `str_at` points the evaluator there.
            let cached = read_string(s, kind, v, rec);
            if cached != 0 {
                at = cached;
            }
            v
        };
        // SAFETY: `i < MAX_ARGS`, the length of `str_at`; a plain store into the scratch
        // area, through which the address reaches the evaluator as a number.
        unsafe { core::ptr::write_volatile(s.str_at.as_mut_ptr().add(i), at) };
        let bits = s.str_mask() | (1 << i);
        s.set_str_mask(bits);
        val
    } else {
        0
    };
    // SAFETY: `i < MAX_ARGS`, the length of `vals`; a plain store into the scratch area.
    unsafe { core::ptr::write_volatile(s.vals.as_mut_ptr().add(i), val) };
    0
}

/// The `width`-byte integer at `addr` in kernel memory (8 bytes for any other width); 0 when
/// unreadable.
#[inline(always)]
fn read_int(addr: u64, width: u8) -> u64 {
    match width {
        1 => u64::from(read_u8(addr, 0)),
        2 => u64::from(read_u16(addr, 0)),
        4 => u64::from(read_u32(addr, 0)),
        _ => read_u64(addr, 0),
    }
}

/// Walks argument `i`'s `resolve` path ([`ResolvePath`]) of the plan at `cfg_at` from `v`:
/// the address of the field it names (an integer's too: [`read_int`] reads it there), or the
/// pointer loaded there. 0 when a pointer on the way is NULL or unreadable.
#[inline(always)]
fn resolve(v: u64, cfg_at: u32, i: usize) -> u64 {
    let Some(cfg) = HOOK_CFG.get(cfg_at) else {
        return 0;
    };
    let Some(p) = cfg.resolve.get(i) else {
        return 0;
    };
    walk(v, p)
}

/// The hook's `data` values into the scratch area's attributes (0 for those its plan does not
/// read: `HookConfig::attrs` lacks their [`ATTR_DATA_BASE`] bit): each an integer of its width
/// at the end of its walk from the current task `task`; 0 when a pointer on the way is NULL
/// or unreadable. A function of its own (not inlined), that looks the plan and the scratch
/// area up itself: its locals stay out of the evaluator's frame, whose stack the deepest
/// callback chain adds to (the verifier allows 512 bytes for the chain).
#[inline(never)]
pub fn read_data(task: u64, cfg_at: u32) {
    let Some(cfg) = HOOK_CFG.get(cfg_at) else {
        return;
    };
    let Some(slot) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch slot, which only this program run uses (see `entry::enter`);
    // the caller holds no reference into it across this call.
    let s = unsafe { &mut *slot };
    let mut d = 0usize;
    while d < NUM_DATA {
        let a = ATTR_DATA_BASE as usize + d;
        let addr = if cfg.attrs & (1 << a) != 0 {
            walk(task, &cfg.data[d])
        } else {
            0
        };
        s.attrs[a] = if addr == 0 {
            0
        } else {
            read_int(addr, cfg.data_width[d])
        };
        d += 1;
    }
}

/// Follows walk `p` from `v`: the address of the field it names, or the pointer loaded there;
/// 0 when a pointer on the way is NULL or unreadable.
#[inline(always)]
fn walk(mut v: u64, p: &ResolvePath) -> u64 {
    let (steps, load) = (p.steps as usize, p.load);
    let mut j = 0usize;
    while j < MAX_RESOLVE_DEPTH && j < steps {
        if v == 0 {
            return 0;
        }
        v = v.wrapping_add(u64::from(p.off[j]));
        if load & (1 << j) != 0 {
            v = read_u64(v, 0);
        }
        j += 1;
    }
    v
}

/// Fills `rec` with the string, path or file `v` of kind `kind` points to. One walk call
/// site for every path-like kind, so the verifier checks the walk once per argument.
/// For a file the `FILES` cache holds, only the record's length and flags are copied, and
/// the cached record's address is returned (0 otherwise): copying its 520 bytes was most of
/// what a generic probe cost a non-matching `read()`.
#[inline(always)]
fn read_string(s: &mut Scratch, kind: u8, v: u64, rec: *mut PathRec) -> u64 {
    if kind == ARG_STR || kind == ARG_USTR {
        read_str(s, v, rec, kind == ARG_USTR);
        return 0;
    }
    let (mnt, dentry) = if kind == ARG_PATH {
        (
            read_u64(v, kconf!(path_mnt)),
            read_u64(v, kconf!(path_dentry)),
        )
    } else if kind == ARG_DENTRY {
        (0, v)
    } else {
        let file = if kind == ARG_BINPRM {
            read_u64(v, kconf!(binprm_file))
        } else if kind == ARG_KIOCB {
            read_u64(v, kconf!(kiocb_filp))
        } else if kind == ARG_FD {
            fd_file(v)
        } else {
            v
        };
        if file == 0 {
            unresolved(s, rec);
            return 0;
        }
        if let Some(cached) = FILES.get_ptr(&file) {
            // SAFETY: a live map value of the same type; `rec` is a scratch record. The
            // program runs under RCU, so the value stays readable until it returns, as the
            // hand-written programs' in-place records do.
            unsafe {
                (*rec).len = (*cached).len;
                (*rec).flags = (*cached).flags;
            }
            return cached as u64;
        }
        let fp = file + kconf!(file_f_path);
        (
            read_u64(fp, kconf!(path_mnt)),
            read_u64(fp, kconf!(path_dentry)),
        )
    };
    resolve_walk(s, mnt, dentry, rec);
    0
}

/// The `struct file *` of descriptor `fd` in the current task's table; 0 when there is
/// none (closed, out of range, or unreadable).
#[inline(always)]
fn fd_file(fd: u64) -> u64 {
    // Descriptors are C ints: a negative one (an error passed along) has no file.
    let fd = fd as u32;
    if fd > i32::MAX as u32 {
        return 0;
    }
    // SAFETY: a helper without arguments; it only returns the current task's address.
    let task = unsafe { bpf_get_current_task() };
    let files = read_u64(task, kconf!(task_files));
    let fdt = read_u64(files, kconf!(files_fdt));
    if fd >= read_u32(fdt, kconf!(fdt_max_fds)) {
        return 0;
    }
    let array = read_u64(fdt, kconf!(fdt_fd));
    read_u64(array, u64::from(fd) * 8)
}

/// A buffer's length, as its descriptor's `size` says: the return value (a failed call,
/// negative, copied nothing), raw argument `size - 1`, or none.
#[inline(always)]
fn buf_len(s: &Scratch, size: u8, has_ret: bool, ret: u64) -> u64 {
    if size == SIZE_RETVAL {
        if has_ret && (ret as i64) > 0 { ret } else { 0 }
    } else if size != 0 {
        s.raw.get(size as usize - 1).copied().unwrap_or(0)
    } else {
        0
    }
}

/// The name of the `struct module` at `m` into `rec` (NULL: an unresolved record), and its
/// [`module_value`].
#[inline(always)]
fn read_module(s: &mut Scratch, m: u64, rec: *mut PathRec) -> u64 {
    if m == 0 {
        unresolved(s, rec);
        return 0;
    }
    read_str(s, m + kconf!(module_name), rec, false);
    let taints = read_u64(m, kconf!(module_taints));
    let sig_off = kconf!(module_sig_ok);
    let sig = if sig_off == NO_FIELD {
        None
    } else {
        Some(read_u8(m, sig_off) != 0)
    };
    module_value(taints, sig)
}

/// The first bytes (at most `max`) of the data the `struct iov_iter` at `it` walks into
/// `rec` (as a buffer: [`read_buf`]), and its `count`. A user buffer (`ITER_UBUF`) is read
/// from its start, an iovec or kvec array from its first segment; other kinds (pages,
/// pipes) leave an unresolved record.
#[inline(always)]
fn read_iov(s: &mut Scratch, it: u64, rec: *mut PathRec, max: u64) -> u64 {
    if it == 0 {
        unresolved(s, rec);
        return 0;
    }
    let ty = u64::from(read_u8(it, kconf_at!(iov_fields, 0)));
    let skip = read_u64(it, kconf_at!(iov_fields, 1));
    let count = read_u64(it, kconf_at!(iov_fields, 2));
    let ptr = read_u64(it, kconf_at!(iov_fields, 3));
    let (base, len) = if ty == kconf_at!(iter_types, 0) {
        (ptr + skip, count)
    } else if ty == kconf_at!(iter_types, 1) || ty == kconf_at!(iter_types, 2) {
        // struct iovec and struct kvec are both {base, len}.
        let seg = read_u64(ptr, 8);
        let left = seg.saturating_sub(skip);
        (
            read_u64(ptr, 0) + skip,
            if left < count { left } else { count },
        )
    } else {
        unresolved(s, rec);
        return count;
    };
    read_buf(s, base, if len < max { len } else { max }, rec);
    count
}

/// `prog_name` in the UAPI `union bpf_attr` of `BPF_PROG_LOAD` (after `prog_type`,
/// `insn_cnt`, `insns`, `license`, `log_level`, `log_size`, `log_buf`, `kern_version`,
/// `prog_flags`): fixed by the ABI, so not looked up in BTF.
const BPF_ATTR_PROG_NAME: u64 = 48;
/// `BPF_OBJ_NAME_LEN`: a program's or map's name, NUL included.
const BPF_OBJ_NAME_LEN: u32 = 16;
/// In the UAPI `struct perf_event_attr`: `config`, `config1` (`kprobe_func`, a user pointer
/// for a kprobe or uprobe PMU event), `config2` (`probe_offset`).
const PERF_ATTR_CONFIG: u64 = 8;
const PERF_ATTR_KPROBE_FUNC: u64 = 56;
const PERF_ATTR_PROBE_OFFSET: u64 = 64;
/// `PERF_TYPE_MAX`: types from here on are dynamic PMUs (kprobe, uprobe, ...), whose
/// `config1` may name the probed function.
const PERF_TYPE_MAX: u32 = 6;

/// The BPF program, map or perf event `p` (of `kind`, see [`arg_is_obj`]) as a
/// [`BpfObjRec`] at the head of `rec`; unreadable fields are 0, a NULL `p` leaves an
/// unresolved record.
#[inline(always)]
fn read_obj(s: &Scratch, kind: u8, p: u64, rec: *mut PathRec) {
    // SAFETY: `rec` is a scratch record, whose `head` (STR_LEN bytes, at an 8-byte aligned
    // offset) holds a BpfObjRec (160 bytes); `zero` is longer than that; every store stays
    // inside the record, and the helpers report (rather than take) faults on the source.
    unsafe {
        (*rec).len = 0;
        (*rec).flags = PATH_UNRESOLVED | PATH_OBJ;
        let r = (*rec).head.as_mut_ptr() as *mut BpfObjRec;
        kcopy(r, s.zero.as_ptr() as *const BpfObjRec);
        if p == 0 {
            return;
        }
        let (name, len, user) = if kind == ARG_BPF_ATTR {
            (*r).ty = read_u32(p, 0);
            (*r).count = read_u32(p, 4);
            (p + BPF_ATTR_PROG_NAME, BPF_OBJ_NAME_LEN, false)
        } else if kind == ARG_BPF_MAP {
            (*r).ty = read_u32(p, kconf_at!(map_fields, 0));
            (*r).count = read_u32(p, kconf_at!(map_fields, 1));
            (*r).value_size = read_u32(p, kconf_at!(map_fields, 2));
            (*r).max_entries = read_u32(p, kconf_at!(map_fields, 3));
            (p + kconf_at!(map_fields, 4), BPF_OBJ_NAME_LEN, false)
        } else if kind == ARG_BPF_PROG {
            (*r).ty = read_u32(p, kconf_at!(prog_fields, 0));
            (*r).count = read_u32(p, kconf_at!(prog_fields, 1));
            let aux = read_u64(p, kconf_at!(prog_fields, 2));
            let name = if aux == 0 {
                0
            } else {
                aux + kconf_at!(prog_fields, 3)
            };
            (name, BPF_OBJ_NAME_LEN, false)
        } else {
            let a = p + kconf!(perf_event_attr);
            (*r).ty = read_u32(a, 0);
            (*r).config = read_u64(a, PERF_ATTR_CONFIG);
            (*r).probe_offset = read_u64(a, PERF_ATTR_PROBE_OFFSET);
            let func = if (*r).ty >= PERF_TYPE_MAX {
                read_u64(a, PERF_ATTR_KPROBE_FUNC)
            } else {
                0
            };
            (func, OBJ_NAME_LEN as u32, true)
        };
        if name != 0 {
            let dst = (*r).name.as_mut_ptr() as *mut c_void;
            if user {
                bpf_probe_read_user_str(dst, len, name as *const c_void);
            } else {
                bpf_probe_read_kernel_str(dst, len, name as *const c_void);
            }
        }
        (*rec).len = core::mem::size_of::<BpfObjRec>() as u32;
        (*rec).flags = PATH_RESOLVED | PATH_OBJ;
    }
}

/// The credentials at `cred` as a [`CredRec`] at the head of `rec` (fields that cannot be
/// read are 0; a NULL `cred` leaves an unresolved record).
#[inline(always)]
fn read_cred(cred: u64, rec: *mut PathRec) {
    // SAFETY: `rec` is a scratch record, whose `head` (STR_LEN bytes, at an 8-byte aligned
    // offset) holds a CredRec; every store stays inside it.
    unsafe {
        (*rec).len = 0;
        (*rec).flags = PATH_UNRESOLVED | PATH_CRED;
        if cred == 0 {
            return;
        }
        let c = (*rec).head.as_mut_ptr() as *mut CredRec;
        let mut k = 0usize;
        while k < 8 {
            (*c).ids[k] = read_u32(cred, kconf_at!(cred_ids, k));
            k += 1;
        }
        (*c).securebits = read_u32(cred, kconf!(cred_securebits));
        let mut k = 0usize;
        while k < NUM_CAP_SETS as usize {
            (*c).caps[k] = read_u64(cred, kconf_at!(cred_caps, k));
            k += 1;
        }
        let ns = read_u64(cred, kconf_at!(ns_member, NS_USER as usize));
        (*c).userns_level = read_u32(ns, kconf!(userns_level));
        (*c).userns_owner = read_u32(ns, kconf!(userns_owner));
        (*c).userns_group = read_u32(ns, kconf!(userns_group));
        (*c).userns_inum = read_u32(ns, kconf_at!(ns_inum, NS_USER as usize));
        (*c)._pad = 0;
        (*rec).len = core::mem::size_of::<CredRec>() as u32;
        (*rec).flags = PATH_RESOLVED | PATH_CRED;
    }
}

/// The connection of the `struct sock *` (`ARG_SOCK`) or the packet of the
/// `struct sk_buff *` (`ARG_SKB`) at `ptr`, as a [`SockRec`]/[`SkbRec`] at the head of `rec`
/// (unreadable fields are 0, a NULL pointer leaves an unresolved record); for the hook's
/// `net_arg` (`subject`) also the connection the network operators match.
#[inline(always)]
fn read_net(s: &mut Scratch, kind: u8, ptr: u64, rec: *mut PathRec, subject: bool) {
    // SAFETY: `rec` is a scratch record, whose `head` (STR_LEN bytes, at an 8-byte aligned
    // offset) holds a SockRec or a SkbRec, both 64 bytes; every store stays inside it.
    unsafe {
        let flag = if kind == ARG_SOCK { PATH_NET } else { PATH_SKB };
        (*rec).len = 0;
        (*rec).flags = PATH_UNRESOLVED | flag;
        let r = (*rec).head.as_mut_ptr() as *mut SockRec;
        kcopy(r, s.zero.as_ptr() as *const SockRec);
        if ptr != 0 {
            if kind == ARG_SOCK {
                read_sock(ptr, r);
            } else {
                read_skb(ptr, r as *mut SkbRec);
            }
            (*rec).len = core::mem::size_of::<SockRec>() as u32;
            (*rec).flags = PATH_RESOLVED | flag;
            if kind == ARG_SOCK
                && let Some(o) = SOCK_OWNERS.get_ptr(&ptr)
            {
                s.owner = u64::from((*o).tgid);
            }
        }
        if subject {
            kcopy(&mut s.net, &(*r).net);
            s.net.write_attrs(&mut s.attrs);
            // A packet has no TCP state: 0, which no state name is.
            s.attrs[ATTR_SOCK_STATE as usize] = if kind == ARG_SOCK {
                u64::from((*r).state)
            } else {
                0
            };
        }
    }
}

/// Fills `r` from the `struct sock` at `sk`.
#[inline(always)]
fn read_sock(sk: u64, r: *mut SockRec) {
    // SAFETY: `r` points to a scratch SockRec (see read_net); the reads report faults.
    unsafe {
        let n = &mut (*r).net;
        n.family = read_u16(sk, kconf!(sock_family));
        n.sock_type = read_u16(sk, kconf!(sock_type));
        n.protocol = read_u16(sk, kconf!(sock_protocol));
        n.sport = read_u16(sk, kconf!(sock_num));
        n.dport = u16::from_be(read_u16(sk, kconf!(sock_dport)));
        let (len, saddr, daddr) = if n.family == AF_INET6 {
            (16, kconf!(sock_v6_rcv_saddr), kconf!(sock_v6_daddr))
        } else {
            (4, kconf!(sock_rcv_saddr), kconf!(sock_daddr))
        };
        if n.family == AF_INET || n.family == AF_INET6 {
            bpf_probe_read_kernel(
                n.saddr.as_mut_ptr() as *mut _,
                len,
                (sk + saddr) as *const _,
            );
            bpf_probe_read_kernel(
                n.daddr.as_mut_ptr() as *mut _,
                len,
                (sk + daddr) as *const _,
            );
        }
        (*r).mark = read_u32(sk, kconf!(sock_mark));
        (*r).priority = read_u32(sk, kconf!(sock_priority));
        (*r).state = u32::from(read_u8(sk, kconf!(sock_state)));
    }
}

/// Fills `r` from the `struct sk_buff` at `skb`: its IPv4 or IPv6 header, and the ports of
/// a TCP or UDP header after it.
#[inline(always)]
fn read_skb(skb: u64, r: *mut SkbRec) {
    // SAFETY: `r` points to a scratch SkbRec (see read_net); the reads report faults.
    unsafe {
        (*r).len = read_u32(skb, kconf!(skb_len));
        (*r).hash = read_u32(skb, kconf!(skb_hash));
        (*r).mark = read_u32(skb, kconf!(skb_mark));
        (*r).priority = read_u32(skb, kconf!(skb_priority));
        let head = read_u64(skb, kconf!(skb_head));
        let nh = read_u16(skb, kconf!(skb_network_header));
        let th = read_u16(skb, kconf!(skb_transport_header));
        if head == 0 || nh == u16::MAX {
            return;
        }
        let ip = head + u64::from(nh);
        let n = &mut (*r).net;
        let version = read_u8(ip, 0) >> 4;
        if version == 4 {
            n.family = AF_INET;
            n.protocol = u16::from(read_u8(ip, 9));
            bpf_probe_read_kernel(n.saddr.as_mut_ptr() as *mut _, 4, (ip + 12) as *const _);
            bpf_probe_read_kernel(n.daddr.as_mut_ptr() as *mut _, 4, (ip + 16) as *const _);
        } else if version == 6 {
            n.family = AF_INET6;
            n.protocol = u16::from(read_u8(ip, 6));
            bpf_probe_read_kernel(n.saddr.as_mut_ptr() as *mut _, 16, (ip + 8) as *const _);
            bpf_probe_read_kernel(n.daddr.as_mut_ptr() as *mut _, 16, (ip + 24) as *const _);
        } else {
            return;
        }
        // The transport header is set (not ~0) once the stack has placed it.
        if (n.protocol == IPPROTO_TCP || n.protocol == IPPROTO_UDP) && th != u16::MAX {
            let t = head + u64::from(th);
            n.sport = u16::from_be(read_u16(t, 0));
            n.dport = u16::from_be(read_u16(t, 2));
        }
    }
}

/// The first `len` bytes (at most `PATH_BUF_LEN - 1`) of the buffer at `ptr`, in kernel
/// memory or, when that read faults, user memory (a kprobe's `char __user *`). A fault in
/// both leaves an unresolved record.
#[inline(always)]
fn read_buf(s: &mut Scratch, ptr: u64, len: u64, rec: *mut PathRec) {
    let max = (PATH_BUF_LEN - 1) as u64;
    let n = if len > max { max } else { len } as u32;
    if n == 0 {
        finish(s, rec, 0, 0, PATH_RESOLVED | PATH_BYTES);
        return;
    }
    let dst = s.buf.as_mut_ptr() as *mut c_void;
    // SAFETY: the buffer is PATH_BUF_LEN bytes of the scratch area and `n` is below that;
    // the helpers report (rather than take) a fault on the source.
    let failed = unsafe {
        bpf_probe_read_kernel(dst, n, ptr as *const c_void) != 0
            && bpf_probe_read_user(dst, n, ptr as *const c_void) != 0
    };
    if failed {
        finish(s, rec, 0, 0, PATH_UNRESOLVED | PATH_BYTES);
        return;
    }
    finish(s, rec, 0, n as usize, PATH_RESOLVED | PATH_BYTES);
}

/// A `char *` in kernel or (`user`) user memory: its first `PATH_BUF_LEN - 1` bytes (the
/// rest is cut); NULL is the empty string, an unreadable pointer an unresolved record
/// (string filters fail closed).
#[inline(always)]
fn read_str(s: &mut Scratch, ptr: u64, rec: *mut PathRec, user: bool) {
    if ptr == 0 {
        finish(s, rec, 0, 0, PATH_RESOLVED);
        return;
    }
    // SAFETY: the buffer is PATH_BUF_LEN bytes of the scratch area; the helpers stop there,
    // NUL-terminate, and report (rather than take) a fault on the source.
    let n = unsafe {
        if user {
            bpf_probe_read_user_str(
                s.buf.as_mut_ptr() as *mut _,
                PATH_BUF_LEN as u32,
                ptr as *const _,
            )
        } else {
            bpf_probe_read_kernel_str(
                s.buf.as_mut_ptr() as *mut _,
                PATH_BUF_LEN as u32,
                ptr as *const _,
            )
        }
    };
    if n <= 0 || n as usize > PATH_BUF_LEN {
        unresolved(s, rec);
        return;
    }
    // `n` counts the terminating NUL.
    finish(s, rec, 0, (n - 1) as usize, PATH_RESOLVED);
}

/// Bytes of a DNS message before the question's name: id, flags, and the four counts.
const DNS_HEADER: usize = 12;
/// Longest name read (RFC 1035: 255 bytes in wire form).
const DNS_NAME_MAX: u32 = 255;

/// The DNS query in the data of the `struct msghdr *` at `msg` (the first bytes of its
/// `msg_iter`), as the question's name in `rec` and [`dns_value`] as the value. Only the
/// first question is read. Data that is no standard query (most datagrams; a compressed
/// name, which a query has no reason to use; another opcode; no question; unreadable) is an
/// empty name with class 0, never an unresolved record: an enforcing selector would match
/// that (fail-closed) and a `Sigkill` on one name would kill every UDP sender.
#[inline(always)]
fn read_dns(s: &mut Scratch, msg: u64, rec: *mut PathRec) -> u64 {
    if msg == 0 {
        finish(s, rec, 0, 0, PATH_RESOLVED);
        return 0;
    }
    // No more than a question can take: a large datagram's payload is not copied for nothing.
    read_iov(
        s,
        msg + kconf!(msghdr_msg_iter),
        rec,
        (DNS_HEADER + DNS_NAME_MAX as usize + 5) as u64,
    );
    // SAFETY: `rec` is this argument's scratch record, which `read_iov` just filled.
    let (got, flags) = unsafe { ((*rec).len as usize, (*rec).flags) };
    let b = |s: &Scratch, i: usize| u16::from(s.buf[i & BUF_MASK]);
    if flags & PATH_UNRESOLVED != 0 || got < DNS_HEADER + 5 {
        finish(s, rec, 0, 0, PATH_RESOLVED);
        return 0;
    }
    let id = b(s, 0) << 8 | b(s, 1);
    let hflags = b(s, 2) << 8 | b(s, 3);
    let questions = b(s, 4) << 8 | b(s, 5);
    // A standard query (opcode 0) with a question.
    if questions == 0 || (hflags >> 11) & 0xf != 0 {
        finish(s, rec, 0, 0, PATH_RESOLVED);
        return dns_value(id, hflags, 0, 0);
    }
    let mut l = DnsLoop {
        got: got as u32,
        next: DNS_HEADER as u32,
        end: 0,
        ok: 0,
    };
    // One step per byte of the name, in a callback the verifier walks once: a plain loop's
    // paths (where the next label starts) would multiply.
    // SAFETY: the callback is a static function of this object that reads the context as
    // the `DnsLoop` passed here, which lives on this frame until the helper returns.
    unsafe {
        bpf_loop(
            DNS_NAME_MAX + 1,
            dns_step as *mut c_void,
            &raw mut l as *mut c_void,
            0,
        )
    };
    let end = l.end as usize;
    let at = DNS_HEADER + end;
    if l.ok == 0 || at + 4 >= got {
        finish(s, rec, 0, 0, PATH_RESOLVED);
        return dns_value(id, hflags, 0, 0);
    }
    let qtype = b(s, at + 1) << 8 | b(s, at + 2);
    let qclass = b(s, at + 3) << 8 | b(s, at + 4);
    // The name is `end - 1` bytes (none for the root) from `NAME_AT + 1`.
    finish(s, rec, NAME_AT + 1, end.saturating_sub(1), PATH_RESOLVED);
    dns_value(id, hflags, qtype, qclass)
}

/// The context of [`read_dns`]'s loop: bytes read, where the next label's length byte is,
/// and, once the name's terminating 0 is found (`ok`), its position after the header.
#[repr(C)]
struct DnsLoop {
    got: u32,
    next: u32,
    end: u32,
    ok: u32,
}

/// Where [`dns_step`] writes the name: byte `i` of the name's wire form goes to
/// `NAME_AT + i`, in the half of the buffer the message's bytes (at most `PATH_BUF_LEN - 1`)
/// leave free. The dotted name starts at `NAME_AT + 1` (byte 0 is the first length).
const NAME_AT: usize = PATH_BUF_LEN;

/// Byte `i` of the name (`DNS_HEADER + i` of the message): a label's character is written
/// lower-cased, a length byte as a dot, at `NAME_AT + i`. (Writing the name over the
/// message, at `i - 1`, compiles to a store at a negative offset that the 6.1 verifier
/// refuses.) 0 goes on, 1 stops.
#[inline(never)]
extern "C" fn dns_step(i: u64, ctx: *mut c_void) -> i64 {
    let l = ctx as *mut DnsLoop;
    let Some(slot) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch slot, which only this program run uses; bpf_loop passes
    // `read_dns`'s `DnsLoop`, which nothing else touches while the helper runs.
    let (s, l) = unsafe { (&mut *slot, &mut *l) };
    let i = i as usize;
    let k = DNS_HEADER + i;
    if k >= l.got as usize || i > DNS_NAME_MAX as usize {
        return 1;
    }
    let c = s.buf[k & BUF_MASK];
    if k == l.next as usize {
        if c == 0 {
            l.end = i as u32;
            l.ok = 1;
            return 1;
        }
        // 64 and up: a compression pointer, or not DNS.
        if c > 63 {
            return 1;
        }
        s.buf[(NAME_AT + i) & BUF_MASK] = b'.';
        l.next = (k + 1 + c as usize) as u32;
    } else {
        s.buf[(NAME_AT + i) & BUF_MASK] = c.to_ascii_lowercase();
    }
    0
}
