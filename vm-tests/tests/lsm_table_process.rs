//! The wider LSM table, process side: capabilities, credentials, user namespaces, ptrace,
//! the clock, bpf(2), module requests and loading, socket creation and allocation, each
//! enforced at its LSM hook from a Tetragon kprobe (or lsmhook) policy. As in `lsm_table`, one test
//! per translation: the named operation is denied, the event carries the argument values, and an
//! operation the selector does not name is allowed. Most selectors name a binary, so that nothing
//! else in the guest is touched. Runs inside the VM only; one agent serves every test.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    sync::MutexGuard,
};

use vm_tests::*;

fn agent() -> MutexGuard<'static, Agent> {
    shared_agent(&[])
}

const EPERM: i32 = 1;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON line of the event of `function`, once the stream has it.
fn event_of(events: &EventStream, function: &str) -> String {
    events.expect(function, |l| {
        l.contains(&format!("\"function_name\":\"{function}\""))
    })
}

#[test]
fn bpf_lsm_is_active_in_the_guest() {
    assert_bpf_lsm_active();
}

/// `cap_capable` → `capable(cred, ns, cap, opts)`: hostname(1) needs CAP_SYS_ADMIN (21) in
/// its UTS namespace; the selector denies it to hostname only, and the event shows the
/// capability as Tetragon's capability_arg.
#[test]
fn cap_sys_admin_is_denied_to_hostname_and_the_event_names_the_capability() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("deny-cap-sys-admin-of-hostname-eperm.yaml"));
    // A private UTS namespace: the allowed case really renames it, the host keeps its name.
    let denied = run(
        Path::new("/usr/bin/unshare"),
        &["-u", "/usr/bin/hostname", "lsm-vmtest-denied"],
    );
    let allowed = run(
        Path::new("/usr/bin/unshare"),
        &[
            "-u",
            "/usr/bin/sh",
            "-c",
            "echo lsm-vmtest > /proc/sys/kernel/hostname",
        ],
    );
    let line = event_of(&events, "cap_capable");
    policy.delete();

    assert_ne!(exit_code(&denied), 0, "hostname must fail");
    assert!(
        stderr(&denied).contains("ermission") || stderr(&denied).contains("must be root"),
        "hostname: {}",
        stderr(&denied)
    );
    assert_eq!(
        exit_code(&allowed),
        0,
        "another binary keeps CAP_SYS_ADMIN: {}",
        stderr(&allowed)
    );
    assert!(
        line.contains("{\"capability_arg\":{\"name\":\"CAP_SYS_ADMIN\",\"value\":21}}"),
        "arg 2 is the capability: {line}"
    );
    assert!(line.contains("\"binary\":\"/usr/bin/hostname\""), "{line}");
}

/// `security_create_user_ns` → `userns_create(cred)`: creating a user namespace is denied to
/// unshare(1); a copy of the same program elsewhere may.
#[test]
fn creating_a_user_namespace_is_denied_to_unshare_and_allowed_to_another_binary() {
    let a = agent();
    let events = a.json_stream();
    let dir = scratch_dir("userns");
    let copy = dir.join("unshare-copy");
    fs::copy("/usr/bin/unshare", &copy).expect("copying unshare");
    let policy = a.add_policy(&fixture("deny-userns-create-of-unshare-eperm.yaml"));
    let denied = run(Path::new("/usr/bin/unshare"), &["-U", "/usr/bin/true"]);
    let allowed = run(&copy, &["-U", "/usr/bin/true"]);
    let line = event_of(&events, "security_create_user_ns");
    policy.delete();

    assert_ne!(exit_code(&denied), 0, "unshare -U must fail");
    assert!(
        stderr(&denied).contains("Operation not permitted"),
        "unshare: {}",
        stderr(&denied)
    );
    assert_eq!(exit_code(&allowed), 0, "the copy: {}", stderr(&allowed));
    assert!(line.contains("\"binary\":\"/usr/bin/unshare\""), "{line}");
    assert!(
        line.contains("\"action\":\"KPROBE_ACTION_OVERRIDE\""),
        "{line}"
    );
}

/// `security_task_fix_setuid` → `task_fix_setuid(new, old, flags)`: setresuid(2) (flags
/// LSM_SETID_RES = 4) is denied to setpriv(1).
#[test]
fn setresuid_is_denied_to_setpriv_and_the_event_carries_the_flags() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("deny-setresuid-of-setpriv-eperm.yaml"));
    let denied = run(
        Path::new("/usr/bin/setpriv"),
        &["--reuid=65534", "/usr/bin/true"],
    );
    let allowed = python_errno(None, "import os; os.setuid(0); print(0)");
    let line = event_of(&events, "security_task_fix_setuid");
    policy.delete();

    assert_ne!(exit_code(&denied), 0, "setpriv must fail");
    assert!(
        stderr(&denied).contains("Operation not permitted"),
        "setpriv: {}",
        stderr(&denied)
    );
    assert_eq!(allowed, 0, "setuid(0) by python is allowed");
    assert!(
        line.contains("{\"int_arg\":4,\"label\":\"flags\"}"),
        "arg 2 is the flags: {line}"
    );
}

/// `security_ptrace_access_check` → `ptrace_access_check(child, mode)`: reading another
/// process's `/proc/PID/environ` needs ptrace read access; denied to cat(1), the read fails
/// (the kernel reports EACCES for it), head(1) reads it.
#[test]
fn ptrace_read_access_is_denied_to_cat_and_the_event_carries_the_mode() {
    let a = agent();
    let events = a.json_stream();
    let mut child = Command::new("/usr/bin/sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep");
    let environ = format!("/proc/{}/environ", child.id());
    let policy = a.add_policy(&fixture("deny-ptrace-read-by-cat-eperm.yaml"));
    let denied = run(Path::new("/usr/bin/cat"), &[&environ]);
    let allowed = run(Path::new("/usr/bin/head"), &["-c", "1", &environ]);
    let line = event_of(&events, "security_ptrace_access_check");
    policy.delete();
    let _ = child.kill();
    let _ = child.wait();

    assert_ne!(exit_code(&denied), 0, "cat must fail");
    assert!(
        stderr(&denied).contains("Permission denied"),
        "cat: {}",
        stderr(&denied)
    );
    assert_eq!(exit_code(&allowed), 0, "head: {}", stderr(&allowed));
    // The access mode: PTRACE_MODE_READ (1), with the kernel's choice of credentials bit.
    let mode: u32 = line
        .split("{\"label\":\"mode\",\"uint_arg\":")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("arg 1 is the access mode: {line}"));
    assert_eq!(mode & 0x3, 1, "a read access: {line}");
}

/// `security_settime64` → `settime(ts, tz)`: setting the clock is denied to date(1); python
/// may set it (to the time it reads, so the guest's clock stays right).
#[test]
fn setting_the_clock_is_denied_to_date_and_allowed_to_another_binary() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("deny-settime-of-date-eperm.yaml"));
    let denied = run(
        Path::new("/usr/bin/sh"),
        &["-c", "/usr/bin/date -s @$(/usr/bin/date +%s)"],
    );
    let allowed = python_errno(
        None,
        "import time; time.clock_settime(time.CLOCK_REALTIME, time.time()); print(0)",
    );
    let line = event_of(&events, "security_settime64");
    policy.delete();

    assert_ne!(exit_code(&denied), 0, "date -s must fail");
    assert!(
        stderr(&denied).contains("Operation not permitted"),
        "date: {}",
        stderr(&denied)
    );
    assert_eq!(allowed, 0, "python may set the clock");
    assert!(line.contains("\"binary\":\"/usr/bin/date\""), "{line}");
}

/// `bpf` as an lsmhook: BPF_MAP_CREATE (cmd 0) is denied to python with EPERM; another
/// command goes on to the kernel's own checks (an empty attr is invalid).
#[test]
fn bpf_map_create_is_denied_to_python_and_the_event_carries_the_command() {
    let a = agent();
    let events = a.json_stream();
    let bpf = |cmd: u32| {
        python_errno(
            None,
            &format!(
                "import ctypes; l = ctypes.CDLL(None, use_errno=True); \
                 a = ctypes.create_string_buffer(128); \
                 r = l.syscall(321, {cmd}, a, 128); print(ctypes.get_errno() if r < 0 else 0)"
            ),
        )
    };
    let policy = a.add_policy(&fixture("deny-bpf-map-create-of-python-eperm.yaml"));
    let denied = bpf(0);
    let other = bpf(1);
    let line = events.expect("the bpf lsm event", |l| {
        l.contains("\"process_lsm\"") && l.contains("\"function_name\":\"bpf\"")
    });
    policy.delete();

    assert_eq!(denied, EPERM, "BPF_MAP_CREATE by python");
    assert_ne!(
        other, EPERM,
        "BPF_MAP_LOOKUP_ELEM is not denied by the policy"
    );
    assert!(
        line.contains("{\"int_arg\":0,\"label\":\"cmd\"}") && line.contains("{\"uint_arg\":128}"),
        "args 0 and 2 are the command and the size: {line}"
    );
}

/// `security_kernel_module_request` → `kernel_module_request(kmod_name)`: a socket of a family
/// the kernel has as a module (AF_PHONET, 35) makes it ask for `net-pf-35`; the request is
/// denied, so the module stays unloaded, and the event names it.
#[test]
fn a_module_request_for_a_socket_family_is_denied_and_the_event_names_the_module() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("deny-module-request-net-pf-eperm.yaml"));
    let errno = python_errno(
        None,
        "import socket\ntry:\n socket.socket(35, socket.SOCK_DGRAM); print(0)\n\
         except OSError as e:\n print(e.errno)",
    );
    let line = event_of(&events, "security_kernel_module_request");
    policy.delete();

    assert_ne!(errno, 0, "without its module the family is unsupported");
    assert!(
        line.contains("{\"string_arg\":\"net-pf-35\"}"),
        "arg 0 is the module name: {line}"
    );
    assert!(
        line.contains("\"action\":\"KPROBE_ACTION_OVERRIDE\""),
        "{line}"
    );
    let modules = fs::read_to_string("/proc/modules").unwrap_or_default();
    assert!(
        !modules.lines().any(|l| l.starts_with("phonet ")),
        "the denied request loaded nothing"
    );
}

/// `security_sk_alloc` → `sk_alloc_security(sk, family, priority)`: allocating an AF_INET6
/// socket is denied to python. The kernel turns the failed allocation into ENOBUFS
/// (`inet6_create`); an AF_INET socket is allowed.
#[test]
fn an_inet6_socket_allocation_is_denied_to_python_and_the_event_carries_the_family() {
    let a = agent();
    let events = a.json_stream();
    let socket = |family: &str| {
        python_errno(
            None,
            &format!(
                "import socket\ntry:\n socket.socket(socket.{family}, socket.SOCK_DGRAM); \
                 print(0)\nexcept OSError as e:\n print(e.errno)"
            ),
        )
    };
    let policy = a.add_policy(&fixture("deny-inet6-socket-alloc-of-python.yaml"));
    let denied = socket("AF_INET6");
    let allowed = socket("AF_INET");
    let line = event_of(&events, "security_sk_alloc");
    policy.delete();

    const ENOBUFS: i32 = 105;
    assert_eq!(denied, ENOBUFS, "AF_INET6 socket by python");
    assert_eq!(allowed, 0, "an AF_INET socket is allowed");
    assert!(
        line.contains("{\"int_arg\":10,\"label\":\"family\"}"),
        "arg 1 is the family: {line}"
    );
}

/// `sys_socket` (`syscall: true`) → `socket_create(family, type, protocol, kern)`: the
/// CVE-2026-31431 mitigation, an AF_ALG socket, is denied to python before the kernel looks
/// the family up; the event names the syscall's entry point and carries the labelled
/// arguments; an AF_INET socket is allowed, and deleting the policy lifts the denial.
#[test]
fn an_af_alg_socket_is_denied_to_python_by_a_sys_socket_policy_enforced_at_socket_create() {
    let a = agent();
    let events = a.json_stream();
    // AF_ALG sockets are SOCK_SEQPACKET; the allowed AF_INET one is a datagram socket.
    let socket = |family: &str, ty: &str| {
        python_errno(
            None,
            &format!(
                "import socket\ntry:\n socket.socket({family}, socket.{ty}); \
                 print(0)\nexcept OSError as e:\n print(e.errno)"
            ),
        )
    };
    let policy = a.add_policy(&fixture("deny-af-alg-sockets-of-python.yaml"));
    let denied = socket("38", "SOCK_SEQPACKET");
    let allowed = socket("socket.AF_INET", "SOCK_DGRAM");
    let line = event_of(&events, "__x64_sys_socket");
    policy.delete();
    let after = socket("38", "SOCK_SEQPACKET");

    assert_eq!(denied, EPERM, "AF_ALG socket by python");
    assert_eq!(allowed, 0, "an AF_INET socket is allowed");
    assert_ne!(after, EPERM, "the deleted policy no longer denies");
    assert!(
        line.contains("{\"int_arg\":38,\"label\":\"domain\"}")
            && line.contains("{\"int_arg\":5,\"label\":\"type\"}"),
        "args 0 and 1 are the domain and the type: {line}"
    );
    assert!(
        line.contains("\"action\":\"KPROBE_ACTION_OVERRIDE\""),
        "{line}"
    );
}

/// `security_kernel_read_file` → `kernel_read_file(file, id, contents)` and
/// `security_kernel_load_data` → `kernel_load_data(id, contents)`: python's `finit_module(2)`
/// of a file and `init_module(2)` of a buffer are denied before the kernel reads either (it
/// would refuse the non-module later, with ENOEXEC, as it does once the policy is deleted);
/// the read's event carries the file and the module id.
#[test]
fn loading_a_module_from_a_file_or_from_memory_is_denied_to_python_at_the_kernel_read_hooks() {
    let a = agent();
    let events = a.json_stream();
    let dir = scratch_dir("module-load");
    let file = dir.join("not-a-module.ko");
    fs::write(&file, vec![0u8; 256]).expect("writing the file");
    let load = |how: &str| {
        let call = match how {
            "file" => format!(
                "fd = os.open('{}', os.O_RDONLY)\nr = libc.syscall({}, fd, b'', 0)",
                file.display(),
                nix::libc::SYS_finit_module
            ),
            _ => format!(
                "buf = ctypes.create_string_buffer(256)\nr = libc.syscall({}, buf, 256, b'')",
                nix::libc::SYS_init_module
            ),
        };
        python_errno(
            None,
            &format!(
                "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n{call}\n\
                 print(0 if r == 0 else ctypes.get_errno())"
            ),
        )
    };
    let policy = a.add_policy(&fixture("deny-module-loading-of-python.yaml"));
    let from_file = load("file");
    let from_memory = load("memory");
    let line = event_of(&events, "security_kernel_read_file");
    event_of(&events, "security_kernel_load_data");
    policy.delete();
    let after = (load("file"), load("memory"));

    assert_eq!(from_file, EPERM, "finit_module by python");
    assert_eq!(from_memory, EPERM, "init_module by python");
    assert!(
        after.0 != EPERM && after.1 != EPERM,
        "the deleted policy no longer denies: {after:?}"
    );
    assert!(
        line.contains(&format!("{{\"file_arg\":{{\"path\":\"{}\"", file.display()))
            && line.contains("{\"int_arg\":2,\"label\":\"id\"}"),
        "args 0 and 1 are the file and the module id: {line}"
    );
}

/// `lsmhooks: capset` with a `kernel_cap_t` argument and `CapabilityMask` (Tetragon's
/// deny-privileged-containers example, for python): a capset(2) that keeps CAP_SYS_ADMIN
/// in the effective set is denied, one that drops it is allowed; the event carries the
/// effective set as Tetragon's 16-digit hex.
#[test]
fn a_capset_keeping_cap_sys_admin_effective_is_denied_to_python_and_the_event_has_the_set() {
    let a = agent();
    let events = a.json_stream();
    let capset = |drop_sys_admin: bool| {
        python_errno(
            None,
            &format!(
                "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n\
                 class Hdr(ctypes.Structure): _fields_ = [('v', ctypes.c_uint32), ('pid', ctypes.c_int)]\n\
                 class Data(ctypes.Structure): _fields_ = [('eff', ctypes.c_uint32), ('perm', ctypes.c_uint32), ('inh', ctypes.c_uint32)]\n\
                 hdr = Hdr(0x20080522, 0)\ndata = (Data * 2)()\n\
                 assert libc.capget(ctypes.byref(hdr), data) == 0\n\
                 if {}: data[0].eff &= ~(1 << 21)\n\
                 r = libc.capset(ctypes.byref(hdr), data)\n\
                 print(0 if r == 0 else ctypes.get_errno())",
                if drop_sys_admin { "True" } else { "False" }
            ),
        )
    };
    let policy = a.add_policy(&fixture("deny-cap-sys-admin-capset-of-python.yaml"));
    let kept = capset(false);
    let dropped = capset(true);
    let line = event_of(&events, "capset");
    policy.delete();

    assert_eq!(kept, EPERM, "capset keeping CAP_SYS_ADMIN by python");
    assert_eq!(dropped, 0, "capset dropping CAP_SYS_ADMIN is allowed");
    // The test runs as root with python's capabilities: its effective set is python's.
    let status = fs::read_to_string("/proc/self/status").expect("status");
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(str::trim)
        .expect("CapEff");
    assert!(
        line.contains(&format!(
            "{{\"kernel_cap_t_arg\":\"{eff}\",\"label\":\"effective\"}}"
        )),
        "arg 2 is the effective set {eff}: {line}"
    );
}
