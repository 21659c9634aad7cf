//! BPF object and perf event arguments → Tetragon's `bpf_attr_arg`, `bpf_prog_arg`,
//! `bpf_map_arg` and `perf_event_arg`, with the kernel's numbers named as Tetragon names
//! them (the UAPI enum's identifier; a number the table does not know stays a number).

use super::super::proto::tetragon::{
    KprobeBpfAttr, KprobeBpfMap, KprobePerfEvent, kprobe_argument::Arg,
};
use crate::events::model::BpfObj;

/// `enum bpf_prog_type` of `include/uapi/linux/bpf.h`, in order.
const PROG_TYPES: &[&str] = &[
    "UNSPEC",
    "SOCKET_FILTER",
    "KPROBE",
    "SCHED_CLS",
    "SCHED_ACT",
    "TRACEPOINT",
    "XDP",
    "PERF_EVENT",
    "CGROUP_SKB",
    "CGROUP_SOCK",
    "LWT_IN",
    "LWT_OUT",
    "LWT_XMIT",
    "SOCK_OPS",
    "SK_SKB",
    "CGROUP_DEVICE",
    "SK_MSG",
    "RAW_TRACEPOINT",
    "CGROUP_SOCK_ADDR",
    "LWT_SEG6LOCAL",
    "LIRC_MODE2",
    "SK_REUSEPORT",
    "FLOW_DISSECTOR",
    "CGROUP_SYSCTL",
    "RAW_TRACEPOINT_WRITABLE",
    "CGROUP_SOCKOPT",
    "TRACING",
    "STRUCT_OPS",
    "EXT",
    "LSM",
    "SK_LOOKUP",
    "SYSCALL",
    "NETFILTER",
];

/// `enum bpf_map_type` of `include/uapi/linux/bpf.h`, in order.
const MAP_TYPES: &[&str] = &[
    "UNSPEC",
    "HASH",
    "ARRAY",
    "PROG_ARRAY",
    "PERF_EVENT_ARRAY",
    "PERCPU_HASH",
    "PERCPU_ARRAY",
    "STACK_TRACE",
    "CGROUP_ARRAY",
    "LRU_HASH",
    "LRU_PERCPU_HASH",
    "LPM_TRIE",
    "ARRAY_OF_MAPS",
    "HASH_OF_MAPS",
    "DEVMAP",
    "SOCKMAP",
    "CPUMAP",
    "XSKMAP",
    "SOCKHASH",
    "CGROUP_STORAGE",
    "REUSEPORT_SOCKARRAY",
    "PERCPU_CGROUP_STORAGE",
    "QUEUE",
    "STACK",
    "SK_STORAGE",
    "DEVMAP_HASH",
    "STRUCT_OPS",
    "RINGBUF",
    "INODE_STORAGE",
    "TASK_STORAGE",
    "BLOOM_FILTER",
    "USER_RINGBUF",
    "CGRP_STORAGE",
    "ARENA",
];

/// The fixed `enum perf_type_id` of `include/uapi/linux/perf_event.h`; dynamic PMUs (kprobe,
/// uprobe, ...) have numbers from `PERF_TYPE_MAX` (6) on.
const PERF_TYPES: &[&str] = &[
    "PERF_TYPE_HARDWARE",
    "PERF_TYPE_SOFTWARE",
    "PERF_TYPE_TRACEPOINT",
    "PERF_TYPE_HW_CACHE",
    "PERF_TYPE_RAW",
    "PERF_TYPE_BREAKPOINT",
];

fn named(table: &[&str], prefix: &str, n: u32) -> String {
    match table.get(n as usize) {
        Some(name) => format!("{prefix}{name}"),
        None => n.to_string(),
    }
}

/// `BPF_PROG_TYPE_KPROBE` for 2.
pub fn prog_type_name(n: u32) -> String {
    named(PROG_TYPES, "BPF_PROG_TYPE_", n)
}

/// `BPF_MAP_TYPE_HASH` for 1.
pub fn map_type_name(n: u32) -> String {
    named(MAP_TYPES, "BPF_MAP_TYPE_", n)
}

/// `PERF_TYPE_TRACEPOINT` for 2.
pub fn perf_type_name(n: u32) -> String {
    named(PERF_TYPES, "", n)
}

/// The `KprobeArgument` member of a BPF object or perf event.
pub fn bpf_obj_arg(o: &BpfObj) -> Arg {
    match o {
        BpfObj::Prog {
            attr,
            prog_type,
            insn_cnt,
            name,
        } => {
            let a = KprobeBpfAttr {
                prog_type: prog_type_name(*prog_type),
                insn_cnt: *insn_cnt,
                prog_name: name.clone(),
            };
            if *attr {
                Arg::BpfAttrArg(a)
            } else {
                Arg::BpfProgArg(a)
            }
        }
        BpfObj::Map {
            map_type,
            key_size,
            value_size,
            max_entries,
            name,
        } => Arg::BpfMapArg(KprobeBpfMap {
            map_type: map_type_name(*map_type),
            key_size: *key_size,
            value_size: *value_size,
            max_entries: *max_entries,
            map_name: name.clone(),
        }),
        BpfObj::PerfEvent {
            perf_type,
            config,
            probe_offset,
            kprobe_func,
        } => Arg::PerfEventArg(KprobePerfEvent {
            kprobe_func: kprobe_func.clone(),
            r#type: perf_type_name(*perf_type),
            config: *config,
            probe_offset: *probe_offset,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_numbers_are_named_as_the_uapi_enums_and_unknown_ones_stay_numbers() {
        assert_eq!(prog_type_name(2), "BPF_PROG_TYPE_KPROBE");
        assert_eq!(prog_type_name(29), "BPF_PROG_TYPE_LSM");
        assert_eq!(map_type_name(1), "BPF_MAP_TYPE_HASH");
        assert_eq!(map_type_name(27), "BPF_MAP_TYPE_RINGBUF");
        assert_eq!(perf_type_name(2), "PERF_TYPE_TRACEPOINT");
        // A dynamic PMU (the kprobe PMU's number is the kernel's choice).
        assert_eq!(perf_type_name(8), "8");
        assert_eq!(prog_type_name(999), "999");
    }

    #[test]
    fn a_program_load_is_bpf_attr_arg_and_a_loaded_program_bpf_prog_arg() {
        let prog = |attr| BpfObj::Prog {
            attr,
            prog_type: 1,
            insn_cnt: 2,
            name: "lsm_vmtest".into(),
        };
        let Arg::BpfAttrArg(a) = bpf_obj_arg(&prog(true)) else {
            panic!("not bpf_attr_arg")
        };
        assert_eq!(
            (a.prog_type.as_str(), a.insn_cnt, a.prog_name.as_str()),
            ("BPF_PROG_TYPE_SOCKET_FILTER", 2, "lsm_vmtest")
        );
        assert!(matches!(bpf_obj_arg(&prog(false)), Arg::BpfProgArg(_)));
    }

    #[test]
    fn a_map_and_a_perf_event_keep_their_sizes_and_function() {
        let Arg::BpfMapArg(m) = bpf_obj_arg(&BpfObj::Map {
            map_type: 2,
            key_size: 4,
            value_size: 8,
            max_entries: 3,
            name: "m".into(),
        }) else {
            panic!("not bpf_map_arg")
        };
        assert_eq!(
            (m.map_type.as_str(), m.key_size, m.value_size, m.max_entries),
            ("BPF_MAP_TYPE_ARRAY", 4, 8, 3)
        );
        let Arg::PerfEventArg(p) = bpf_obj_arg(&BpfObj::PerfEvent {
            perf_type: 1,
            config: 0,
            probe_offset: 0,
            kprobe_func: String::new(),
        }) else {
            panic!("not perf_event_arg")
        };
        assert_eq!(p.r#type, "PERF_TYPE_SOFTWARE");
    }
}
