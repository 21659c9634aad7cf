//! Generic kprobes, kretprobes and tracepoints: Tetragon kprobe calls without an LSM hook,
//! and `spec.tracepoints`, are observed by the generic programs on the function or the
//! tracepoint itself, with the same selectors and maps as the LSM programs. They post
//! events and `Sigkill` after the fact; they never deny. Runs inside the VM only
//! (vm-tests/run.sh); one agent serves every test.

use std::{
    fs,
    io::{Read, Write},
    net::TcpListener,
    path::Path,
    sync::{MutexGuard, mpsc},
    time::Duration,
};

use vm_tests::*;

fn agent() -> MutexGuard<'static, Agent> {
    shared_agent(&[])
}

fn python(script: &str) -> std::process::Output {
    run(Path::new("/usr/bin/python3"), &["-c", script])
}

/// Whether JSON event line `l` is a `process_kprobe` of policy `policy` (lsmctl's own process
/// events name the policy file in their arguments, so the name alone is not enough).
fn kprobe_of(l: &str, policy: &str) -> bool {
    l.contains("\"process_kprobe\"") && l.contains(&format!("\"policy_name\":\"{policy}\""))
}

/// The `process_kprobe` events of policy `policy` the stream has had.
fn kprobes_of(events: &EventStream, policy: &str) -> Vec<String> {
    events
        .lines()
        .into_iter()
        .filter(|l| kprobe_of(l, policy))
        .collect()
}

/// `lsmctl tracingpolicy add FILE`, which must fail: what it printed.
fn add_refused(a: &Agent, file: &Path) -> String {
    let out = a.lsmctl(&["tracingpolicy", "add", file.to_str().expect("utf-8")]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(exit_code(&out), 0, "{} was added: {text}", file.display());
    text
}

/// Fixture `name` with each `(from, to)` of `edits` applied, added with `lsmctl`, which must
/// refuse it: what it printed.
fn refused_variant(a: &Agent, name: &str, edits: &[(&str, &str)]) -> String {
    let mut yaml = fs::read_to_string(fixture(name)).expect("fixture");
    for (from, to) in edits {
        assert!(yaml.contains(from), "{name} has {from:?}");
        yaml = yaml.replace(from, to);
    }
    let file = scratch_dir("variants").join(name);
    fs::write(&file, yaml).expect("policy file");
    add_refused(a, &file)
}

#[test]
fn bpf_lsm_is_active_in_the_guest() {
    assert_bpf_lsm_active();
}

/// `sys_setuid` with `syscall: true`: the argument comes from the user's registers; only the
/// call the selector names posts, with the value.
#[test]
fn a_syscall_kprobe_posts_the_named_call_with_its_integer_argument() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-setuid-syscall.yaml"));
    let named = python("import os; os.setuid(4242)");
    let other = python("import os; os.setuid(4241)");
    let line = events.expect("the sys_setuid event", |l| {
        l.contains("\"function_name\":\"sys_setuid\"") && l.contains("observe-setuid-4242")
    });
    policy.delete();

    assert_eq!(exit_code(&named), 0, "{named:?}");
    assert_eq!(exit_code(&other), 0, "{other:?}");
    assert!(line.contains("\"process_kprobe\""), "{line}");
    assert!(
        line.contains("{\"int_arg\":4242,\"label\":\"uid\"}"),
        "the event carries the uid: {line}"
    );
    assert!(line.contains("\"action\":\"KPROBE_ACTION_POST\""), "{line}");
    assert!(
        !events
            .lines()
            .iter()
            .any(|l| l.contains("observe-setuid-4242") && l.contains("\"int_arg\":4241")),
        "setuid(4241) posts no event"
    );
}

/// `Sigkill` on a call without an LSM hook: the process dies (137) after the call, before it
/// returns to user space; the event says Sigkill.
#[test]
fn a_sigkill_kprobe_on_a_call_without_an_lsm_hook_kills_the_caller() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("kill-on-setuid-4243.yaml"));
    let killed = python("import os; os.setuid(4243); print('alive')");
    let spared = python("import os; os.setuid(4244); print('alive')");
    let line = events.expect("the Sigkill event", |l| {
        l.contains("kill-on-setuid-4243") && l.contains("\"function_name\":\"sys_setuid\"")
    });
    policy.delete();

    assert_eq!(exit_code(&killed), 137, "{killed:?}");
    assert!(
        killed.stdout.is_empty(),
        "killed before it returned: {killed:?}"
    );
    assert_eq!(exit_code(&spared), 0, "{spared:?}");
    assert!(
        line.contains("\"action\":\"KPROBE_ACTION_SIGKILL\""),
        "{line}"
    );
}

/// `raw_syscalls/sys_enter` with `matchArgs` on field 4 (`id`): only getpid (39 on x86_64)
/// posts, as a `process_tracepoint` with the syscall number.
#[test]
fn a_raw_syscalls_tracepoint_posts_only_the_named_syscall_number() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-raw-sys-enter-getpid.yaml"));
    let out = python("import os; os.getpid(); os.getppid()");
    let line = events.expect("the sys_enter event", |l| {
        l.contains("\"process_tracepoint\"") && l.contains("observe-getpid")
    });
    policy.delete();

    assert_eq!(exit_code(&out), 0, "{out:?}");
    assert!(line.contains("\"subsys\":\"raw_syscalls\""), "{line}");
    assert!(line.contains("\"event\":\"sys_enter\""), "{line}");
    assert!(
        line.contains("{\"label\":\"id\",\"long_arg\":\"39\"}"),
        "the event carries the syscall number: {line}"
    );
    let others: Vec<String> = events
        .lines()
        .into_iter()
        .filter(|l| {
            l.contains("\"process_tracepoint\"")
                && l.contains("observe-getpid")
                && !l.contains("\"long_arg\":\"39\"")
        })
        .collect();
    assert!(others.is_empty(), "only getpid posts: {others:?}");
}

/// A raw tracepoint (`raw: true`): its `TP_PROTO` arguments, read as a kprobe's (here the
/// `linux_binprm` of `sched_process_exec`), filter the event and are in it; a policy reading
/// past the tracepoint's arguments is refused, naming how many it has.
#[test]
fn a_raw_tracepoint_posts_its_tp_proto_arguments() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-exec-raw-tracepoint.yaml"));
    let dir = scratch_dir("rawtp");
    let prog = dir.join("lsm-vmtest-rawtp");
    fs::copy("/usr/bin/true", &prog).expect("copy true");
    let other = dir.join("lsm-vmtest-other");
    fs::copy("/usr/bin/true", &other).expect("copy true");
    let ran = run(&other, &[]);
    let out = run(&prog, &[]);
    let line = events.expect("the sched_process_exec event", |l| {
        l.contains("\"process_tracepoint\"") && l.contains("observe-exec-raw-tracepoint")
    });
    events.settle(Duration::from_secs(2), Duration::from_secs(10));
    policy.delete();

    assert_eq!(exit_code(&ran), 0, "{ran:?}");
    assert_eq!(exit_code(&out), 0, "{out:?}");
    assert!(line.contains("\"subsys\":\"sched\""), "{line}");
    assert!(line.contains("\"event\":\"sched_process_exec\""), "{line}");
    assert!(
        line.contains(&format!(
            "{{\"linux_binprm_arg\":{{\"path\":\"{}\"",
            prog.display()
        )),
        "the event carries the program: {line}"
    );
    let posted: Vec<String> = events
        .lines()
        .into_iter()
        .filter(|l| {
            l.contains("\"process_tracepoint\"") && l.contains("observe-exec-raw-tracepoint")
        })
        .collect();
    assert_eq!(posted.len(), 1, "only the named program posts: {posted:?}");

    let text = refused_variant(
        &a,
        "observe-exec-raw-tracepoint.yaml",
        &[
            ("index: 2", "index: 3"),
            (
                "name: observe-exec-raw-tracepoint",
                "name: raw-tp-past-its-args",
            ),
        ],
    );
    assert!(
        text.contains("sched_process_exec") && text.contains("past its 3 TP_PROTO argument(s)"),
        "{text}"
    );
}

/// `InMap` with a `list:` of syscalls on `raw_syscalls/sys_enter`: python's dup and dup2
/// post, each with its number, and its getpid (a number outside the list) does not.
#[test]
fn an_in_map_filter_on_a_syscall_list_posts_only_the_listed_syscalls() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-dup-syscalls-in-a-list.yaml"));
    let (dup, dup2, getpid) = (
        nix::libc::SYS_dup,
        nix::libc::SYS_dup2,
        nix::libc::SYS_getpid,
    );
    let out = python(&format!(
        "import ctypes; libc = ctypes.CDLL(None); libc.syscall({getpid}); \
         libc.syscall({dup}, 0); libc.syscall({dup2}, 0, 9)"
    ));
    let has = |l: &str, id: i64| l.contains(&format!("{{\"label\":\"id\",\"long_arg\":\"{id}\"}}"));
    let of_policy =
        |l: &str| l.contains("\"process_tracepoint\"") && l.contains("observe-dup-syscalls");
    events.expect("the dup event", |l| of_policy(l) && has(l, dup));
    events.expect("the dup2 event", |l| of_policy(l) && has(l, dup2));
    policy.delete();

    assert_eq!(exit_code(&out), 0, "{out:?}");
    let others: Vec<String> = events
        .lines()
        .into_iter()
        .filter(|l| of_policy(l) && !has(l, dup) && !has(l, dup2))
        .collect();
    assert!(
        others.is_empty(),
        "only the listed syscalls post: {others:?}"
    );
}

/// A `sock` argument at a kprobe (`tcp_close`), with `DAddr` and `Family` on it: python's
/// loopback TCP connection posts its client and server sockets' closes, each with the
/// connection as Tetragon's `sock_arg`; the listening socket (peer 0.0.0.0) does not.
#[test]
fn a_sock_argument_carries_the_connection_and_network_operators_match_it() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-tcp-close-to-loopback.yaml"));
    let out = python(
        "import socket\nsrv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen()\n\
         c = socket.create_connection(srv.getsockname()); s, _ = srv.accept()\n\
         print(srv.getsockname()[1], c.getsockname()[1])\nc.close(); s.close(); srv.close()",
    );
    assert_eq!(exit_code(&out), 0, "{out:?}");
    let ports = String::from_utf8_lossy(&out.stdout);
    let (server, client) = ports
        .trim()
        .split_once(' ')
        .expect("python printed both ports");
    // The policy's kprobe events (not the process events of lsmctl, whose arguments name it).
    let of_policy = |l: &str| kprobe_of(l, "observe-tcp-close-to-loopback");
    let conn = |sport: &str, dport: &str| {
        format!("\"daddr\":\"127.0.0.1\",\"dport\":{dport},\"family\":\"AF_INET\"")
            + &format!(",\"protocol\":\"IPPROTO_TCP\",\"saddr\":\"127.0.0.1\",\"sport\":{sport}")
    };
    let client_side = conn(client, server);
    let server_side = conn(server, client);
    events.expect("the client's close", |l| {
        of_policy(l) && l.contains(&client_side)
    });
    events.expect("the server's close", |l| {
        of_policy(l) && l.contains(&server_side)
    });
    policy.delete();

    let listener: Vec<String> = events
        .lines()
        .into_iter()
        .filter(|l| of_policy(l) && l.contains("\"daddr\":\"0.0.0.0\""))
        .collect();
    assert!(
        listener.is_empty(),
        "the listening socket has no peer: {listener:?}"
    );
}

/// An `skb` argument at a kprobe (`ip_output`), with `DAddr` and `Protocol` on the packet:
/// a UDP datagram to 127.0.0.2 posts with the packet as Tetragon's `skb_arg` (and the
/// socket as `sock_arg`); one to 127.0.0.3 does not.
#[test]
fn an_skb_argument_carries_the_packet_and_network_operators_match_it() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-udp-packets-to-127-0-0-2.yaml"));
    let out = python(
        "import socket\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         u.sendto(b'x', ('127.0.0.3', 9)); u.sendto(b'lsm-vmtest', ('127.0.0.2', 9))",
    );
    assert_eq!(exit_code(&out), 0, "{out:?}");
    let of_policy = |l: &str| kprobe_of(l, "observe-udp-packets-to-127-0-0-2");
    let line = events.expect("the datagram to 127.0.0.2", of_policy);
    policy.delete();

    assert!(
        line.contains("\"skb_arg\":{\"daddr\":\"127.0.0.2\",\"dport\":9,\"family\":\"AF_INET\""),
        "the packet's destination: {line}"
    );
    assert!(line.contains("\"protocol\":\"IPPROTO_UDP\""), "{line}");
    assert!(line.contains("\"sock_arg\":{"), "the socket: {line}");
    let others: Vec<String> = events
        .lines()
        .into_iter()
        // The script in the process's arguments names 127.0.0.3 too: look at the packet.
        .filter(|l| of_policy(l) && !l.contains("\"skb_arg\":{\"daddr\":\"127.0.0.2\""))
        .collect();
    assert!(others.is_empty(), "only 127.0.0.2 posts: {others:?}");
}

/// `State` on a kprobe's `sock` (`tcp_set_state`): the server's socket of a loopback
/// connection, leaving TCP_SYN_RECV for TCP_ESTABLISHED, posts; the client's, leaving
/// TCP_SYN_SENT, does not.
#[test]
fn the_state_operator_matches_the_tcp_state_of_a_kprobes_socket() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-tcp-accepts-on-loopback.yaml"));
    let out = python(
        "import socket\nl = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen(1)\n\
         port = l.getsockname()[1]\nc = socket.create_connection(('127.0.0.1', port))\n\
         s, _ = l.accept(); s.close(); c.close()\nprint(port)",
    );
    assert_eq!(exit_code(&out), 0, "{out:?}");
    let port = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let of_policy = |l: &str| kprobe_of(l, "observe-tcp-accepts-on-loopback");
    let server = format!("\"sport\":{port},");
    let line = events.expect("the server's socket established", |l| {
        of_policy(l) && l.contains(&server)
    });
    policy.delete();

    assert!(line.contains("\"int_arg\":1"), "the new state: {line}");
    let client = format!("\"dport\":{port},");
    let others: Vec<String> = events
        .lines()
        .into_iter()
        .filter(|l| of_policy(l) && l.contains(&client))
        .collect();
    assert!(
        others.is_empty(),
        "the client's socket does not post: {others:?}"
    );
}

/// A port operator at a kprobe (`SPort` on `inet_csk_listen_start`'s sock): listening on
/// port 31337 posts, listening on 31338 does not.
#[test]
fn a_port_operator_matches_the_local_port_of_a_kprobes_socket() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-listens-on-port-31337.yaml"));
    let out = python(
        "import socket\nfor port in (31338, 31337):\n    \
         l = socket.socket(); l.bind(('127.0.0.1', port)); l.listen(1); l.close()",
    );
    assert_eq!(exit_code(&out), 0, "{out:?}");
    let of_policy = |l: &str| kprobe_of(l, "observe-listens-on-port-31337");
    events.expect("the listen on 31337", |l| {
        of_policy(l) && l.contains("\"sport\":31337,")
    });
    policy.delete();

    let others: Vec<String> = events
        .lines()
        .into_iter()
        .filter(|l| of_policy(l) && !l.contains("\"sport\":31337,"))
        .collect();
    assert!(others.is_empty(), "only port 31337 posts: {others:?}");
}

/// `GetUrl`: opening the canary file posts an event whose action is GetUrl, and the agent
/// fetches the selector's URL (here a listener of this test on loopback).
#[test]
fn a_get_url_action_fetches_the_url_when_its_selector_posts() {
    let a = agent();
    let listener = TcpListener::bind("127.0.0.1:18080").expect("the canary's port");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n");
            let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("get-url-on-canary-open.yaml"));
    let canary = "/tmp/lsm-vmtest-geturl-canary";
    fs::write(canary, "x").expect("canary file");
    let read = fs::read(canary);
    let request = rx.recv_timeout(Duration::from_secs(60));
    let line = events.expect("the canary's open", |l| {
        kprobe_of(l, "get-url-on-canary-open")
    });
    policy.delete();
    let _ = fs::remove_file(canary);

    assert!(read.is_ok(), "GetUrl does not deny: {read:?}");
    assert!(
        line.contains("\"action\":\"KPROBE_ACTION_GETURL\""),
        "{line}"
    );
    let request = request.expect("the agent fetched the URL within 60 s");
    assert!(
        request.starts_with("GET /canary?id=7 HTTP/1.1\r\n"),
        "{request}"
    );
}

/// A `module` argument (`do_init_module`): loading the `dummy` module posts its name and
/// its signature check as Tetragon's `module_arg`.
#[test]
fn a_module_argument_carries_the_modules_name_and_signature_check() {
    let a = agent();
    let modprobe = Path::new("/sbin/modprobe");
    // Unloaded first, so that the load below initializes it.
    let _ = run(modprobe, &["-r", "dummy"]);
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-module-loads.yaml"));
    let out = run(modprobe, &["dummy"]);
    assert_eq!(exit_code(&out), 0, "{out:?}");
    let line = events.expect("the dummy module's init", |l| {
        l.contains("\"policy_name\":\"observe-module-loads\"")
            && l.contains("\"module_arg\":{\"name\":\"dummy\"")
    });
    policy.delete();
    let _ = run(modprobe, &["-r", "dummy"]);

    // Debian's kernels check module signatures, and sign their modules.
    assert!(
        line.contains("\"module_arg\":{\"name\":\"dummy\",\"signature_ok\":true}"),
        "{line}"
    );
}

/// BPF object and perf event arguments: a helper that creates an array map, loads a socket
/// filter and opens a kprobe PMU event posts each as Tetragon's `bpf_map_arg`,
/// `bpf_attr_arg` (the load the verifier checks), `bpf_prog_arg` and `perf_event_arg`, and
/// the compact line of `bpf_check` is tetra's `bpf_load` with the type, name and count.
#[test]
fn bpf_object_arguments_carry_the_maps_and_programs_type_sizes_and_name() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-bpf-objects.yaml"));
    let mark = a.lines().len();
    let helper = bin("vmtest-bpfobj");
    let bpf = run(&helper, &["bpf"]);
    let perf = run(&helper, &["perf"]);
    let with = |what: &str, member: &str, name: &str| {
        events.expect(what, |l| {
            l.contains("\"policy_name\":\"observe-bpf-objects\"")
                && l.contains(member)
                && l.contains(name)
        })
    };
    let map = with("the map", "\"bpf_map_arg\"", "lsm_vmtest_map");
    let attr = with("the load", "\"bpf_attr_arg\"", "lsm_vmtest_prog");
    let prog = with("the program", "\"bpf_prog_arg\"", "lsm_vmtest_prog");
    let event = with("the perf event", "\"perf_event_arg\"", "vfs_read");
    let compact = a.lines_since(mark);
    policy.delete();

    assert_eq!(exit_code(&bpf), 0, "{bpf:?}");
    assert_eq!(exit_code(&perf), 0, "{perf:?}");
    for (line, want) in [
        (
            &map,
            "\"bpf_map_arg\":{\"KeySize\":4,\"MapName\":\"lsm_vmtest_map\",\
             \"MapType\":\"BPF_MAP_TYPE_ARRAY\",\"MaxEntries\":3,\"ValueSize\":8}",
        ),
        (
            &attr,
            "\"bpf_attr_arg\":{\"InsnCnt\":2,\"ProgName\":\"lsm_vmtest_prog\",\
             \"ProgType\":\"BPF_PROG_TYPE_SOCKET_FILTER\"}",
        ),
        (
            &prog,
            "\"bpf_prog_arg\":{\"InsnCnt\":2,\"ProgName\":\"lsm_vmtest_prog\",\
             \"ProgType\":\"BPF_PROG_TYPE_SOCKET_FILTER\"}",
        ),
        (&event, "\"KprobeFunc\":\"vfs_read\""),
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
    assert!(
        compact.iter().any(|l| l.contains("bpf_load")
            && l.ends_with("BPF_PROG_TYPE_SOCKET_FILTER lsm_vmtest_prog instruction count 2")),
        "tetra's bpf_load line: {compact:?}"
    );
}

/// A flood of observation events (every file read posted) saturates the ring buffer, and
/// every denial made in the middle of it still reaches a `getevents` stream: the ring keeps
/// a reserve for enforcement events, and the reader never drops them.
#[test]
fn denials_reach_the_event_stream_while_observation_events_flood_the_ring_buffer() {
    const ROUNDS: u32 = 20;
    let a = agent();
    let canary = Path::new("/tmp/lsm-vmtest-flood-canary");
    fs::write(canary, "canary").expect("canary");
    let data = scratch_dir("flood").join("data");
    fs::write(&data, "x").expect("data");
    let log = results_dir().join("agent.log");
    let lost_before = fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("events lost: ring buffer full")
        .count();
    let deny = a.add_policy(&fixture(
        "deny-open-of-tmp-lsm-vmtest-flood-canary-eperm.yaml",
    ));
    let denials = a.json_stream_filtered(&["--policy-names", "vmtest-flood-canary"]);
    let helper = bin("vmtest-flood");
    let (file, canary_s) = (
        data.to_str().expect("utf-8"),
        canary.to_str().expect("utf-8"),
    );
    // One denial until the stream shows it: the stream is live from then on.
    denials.wait_for(
        "the first denial",
        || {
            let _ = run(&helper, &[file, canary_s, "1", "0"]);
        },
        |l| l.contains("lsm-vmtest-flood-canary"),
    );
    // The probing may have made a denial more than the one it saw: its event can still be
    // on its way. Counted from when the stream has been quiet for 2 s.
    let seen_before = denials.settle(Duration::from_secs(2), Duration::from_secs(60));
    let flood = a.add_policy(&fixture("file-permission-post.yaml"));
    let out = run(&helper, &[file, canary_s, &ROUNDS.to_string(), "5000"]);
    flood.delete();
    // The stats logger reports the kernel's losses every 10 s.
    let start = std::time::Instant::now();
    let saturated = loop {
        let lost = fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("events lost: ring buffer full")
            .count();
        if lost > lost_before || start.elapsed() > Duration::from_secs(15) {
            break lost > lost_before;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let want = seen_before + ROUNDS as usize;
    let start = std::time::Instant::now();
    while denials.lines().len() < want && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let got = denials.lines().len() - seen_before;
    deny.delete();
    let _ = fs::remove_file(canary);

    assert_eq!(exit_code(&out), 0, "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("denied {ROUNDS}"),
        "every open of the canary was denied"
    );
    assert!(
        saturated,
        "the flood overflowed the ring buffer (agent log)"
    );
    assert_eq!(
        got, ROUNDS as usize,
        "every denial made during the flood was streamed"
    );
}

/// `kiocb` and `iov_iter` arguments (`tty_write`): a write to a pty posts the file written
/// and the bytes, which the selector's Prefix matched.
#[test]
fn a_tty_write_carries_its_file_and_the_bytes_of_its_iov_iter() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-tty-writes.yaml"));
    let helper = bin("vmtest-bpfobj");
    let posted = run(&helper, &["tty", "lsm-vmtest-tty-1"]);
    let other = run(&helper, &["tty", "other-text"]);
    let line = events.expect("the tty write", |l| {
        l.contains("\"policy_name\":\"observe-tty-writes\"")
    });
    // A second marker after the unmatched write: had it posted, it would be before this.
    let after = run(&helper, &["tty", "lsm-vmtest-tty-2"]);
    events.expect("the second tty write", |l| {
        l.contains("\"policy_name\":\"observe-tty-writes\"")
            && l.contains("bHNtLXZtdGVzdC10dHktMg==")
    });
    let posted_writes = events
        .lines()
        .iter()
        .filter(|l| l.contains("\"policy_name\":\"observe-tty-writes\""))
        .count();
    policy.delete();

    for out in [&posted, &other, &after] {
        assert_eq!(exit_code(out), 0, "{out:?}");
    }
    // base64 of lsm-vmtest-tty-1
    for want in [
        "\"path\":\"/dev/ptmx\"",
        "\"bytes_arg\":\"bHNtLXZtdGVzdC10dHktMQ==\"",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
    assert_eq!(
        posted_writes, 2,
        "the write the Prefix does not match posts nothing"
    );
}

/// Socket tracking: `sk_alloc`'s returned socket is tracked by its creator
/// (`returnArgAction: TrackSock`), so a datagram a forked child sends on the parent's socket
/// is posted as the parent's, and the returned socket is the kretprobe's `sock_arg`.
#[test]
fn a_tracked_socket_posts_its_events_as_the_process_that_created_it() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-udp-sends-of-tracked-sockets.yaml"));
    let out = python(
        "import os, socket\nu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         u.connect(('127.0.0.2', 9))\nchild = os.fork()\nif child == 0:\n    \
         u.send(b'lsm-vmtest'); os._exit(0)\nos.waitpid(child, 0)\n\
         print(os.getpid(), child)",
    );
    assert_eq!(exit_code(&out), 0, "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<&str> = stdout.split_whitespace().collect();
    let [parent, child] = pids[..] else {
        panic!("the script prints the parent's and the child's pid: {stdout:?}");
    };
    let line = events.expect("the datagram to 127.0.0.2", |l| {
        kprobe_of(l, "observe-udp-sends-of-tracked-sockets")
            && l.contains("\"function_name\":\"udp_sendmsg\"")
    });
    policy.delete();

    assert!(
        line.contains(&format!("\"pid\":{parent},")),
        "posted as the creator {parent}, not the sender {child}: {line}"
    );
    assert!(
        !line.contains(&format!("\"pid\":{child},")),
        "not the sender {child}: {line}"
    );
    assert!(
        line.contains("\"sock_arg\":{\"daddr\":\"127.0.0.2\""),
        "the connected socket: {line}"
    );
}

/// A kretprobe on `sys_openat`: the selector matches the path (a user string) and the
/// return value (`matchReturnArgs` < 0); the event carries both.
#[test]
fn a_kretprobe_posts_failed_opens_with_the_return_value() {
    let a = agent();
    let events = a.json_stream();
    let present = "/tmp/lsm-vmtest-generic-present";
    fs::write(present, "x").expect("test file");
    let missing = "/tmp/lsm-vmtest-generic-missing";
    let _ = fs::remove_file(missing);
    let policy = a.add_policy(&fixture("observe-openat-return.yaml"));
    let failed = fs::File::open(missing);
    let opened = fs::File::open(present);
    let line = events.expect("the kretprobe event", |l| {
        l.contains("observe-openat-return") && l.contains(missing)
    });
    policy.delete();

    assert!(failed.is_err() && opened.is_ok());
    assert!(line.contains("\"function_name\":\"sys_openat\""), "{line}");
    assert!(
        line.contains(&format!("{{\"string_arg\":\"{missing}\"}}")),
        "the event carries the path: {line}"
    );
    assert!(
        line.contains("\"return\":{\"int_arg\":-2}"),
        "the event carries -ENOENT: {line}"
    );
    assert!(
        !events
            .lines()
            .iter()
            .any(|l| l.contains("observe-openat-return") && l.contains(present)),
        "a successful open posts no event"
    );
}

/// Argument types: `file` (`fd_install`'s `struct file *`) and `fd` (`sys_close`'s
/// descriptor, resolved in the caller's table): the events carry the full path. In a chroot
/// it is the path the process sees, as `bpf_d_path` gives it: whether `file_open` cached it
/// (`HookConfig::open_paths`, which the compiler's unit test checks) or the dentry walk
/// found it.
#[test]
fn file_and_fd_arguments_carry_the_full_path_as_the_process_sees_it() {
    let a = agent();
    let events = a.json_stream();
    let installed = "/tmp/lsm-vmtest-generic-fd-install";
    let closed = "/tmp/lsm-vmtest-generic-fd-close";
    fs::write(installed, "x").expect("test file");
    fs::write(closed, "x").expect("test file");
    let in_jail = "/tmp/lsm-vmtest-generic-fd-chroot";
    let jail = busybox_chroot("fd-chroot", in_jail);
    let p1 = a.add_policy(&fixture("observe-fd-install-file.yaml"));
    let p2 = a.add_policy(&fixture("observe-close-fd.yaml"));
    drop(fs::File::open(installed).expect("open"));
    drop(fs::File::open(closed).expect("open"));
    let jailed = std::process::Command::new("/usr/sbin/chroot")
        .arg(&jail)
        .args(["/bin/busybox", "cat", in_jail])
        .output()
        .expect("running chroot");
    assert!(jailed.status.success(), "{jailed:?}");
    let install = events.expect("the fd_install event", |l| {
        l.contains("observe-fd-install") && l.contains(installed)
    });
    let close = events.expect("the sys_close event", |l| {
        l.contains("observe-close-fd") && l.contains(closed)
    });
    let jailed = events.expect("the fd_install event in the chroot", |l| {
        l.contains("observe-fd-install") && l.contains(in_jail)
    });
    p1.delete();
    p2.delete();
    assert!(
        jailed.contains(&format!("{{\"file_arg\":{{\"path\":\"{in_jail}\"}}}}")),
        "{jailed}"
    );

    assert!(
        install.contains(&format!("{{\"file_arg\":{{\"path\":\"{installed}\"}}}}")),
        "{install}"
    );
    assert!(
        close.contains(&format!("{{\"file_arg\":{{\"path\":\"{closed}\"}}}}")),
        "{close}"
    );
}

/// A user string and an integer of a syscall, a `linux_binprm` and a `dentry`: each event
/// carries its value in Tetragon's member for the type.
#[test]
fn string_integer_binprm_and_dentry_arguments_carry_their_values() {
    let a = agent();
    let events = a.json_stream();
    let dir = scratch_dir("argtypes");
    let made = dir.join("lsm-vmtest-argtypes-dir");
    let exe = dir.join("lsm-vmtest-argtypes-true");
    fs::copy("/usr/bin/true", &exe).expect("copying true");
    let policy = a.add_policy(&fixture("observe-string-binprm-dentry-args.yaml"));
    let script = format!(
        "import os; os.mkdir('{0}', 0o750); os.rmdir('{0}')",
        made.display()
    );
    let py = python(&script);
    let ran = std::process::Command::new(&exe).status();
    let (made, exe) = (made.display().to_string(), exe.display().to_string());
    let mkdir = events.expect("the sys_mkdir event", |l| {
        l.contains("\"function_name\":\"sys_mkdir\"") && l.contains(&made)
    });
    let exec = events.expect("the bprm_creds_for_exec event", |l| {
        l.contains("security_bprm_creds_for_exec") && l.contains(&exe)
    });
    let rmdir = events.expect("the vfs_rmdir event", |l| {
        l.contains("\"function_name\":\"vfs_rmdir\"") && l.contains("lsm-vmtest-argtypes-dir")
    });
    policy.delete();

    assert_eq!(exit_code(&py), 0, "{py:?}");
    assert!(ran.expect("the copy of true runs").success());
    assert!(
        mkdir.contains(&format!(
            "{{\"label\":\"pathname\",\"string_arg\":\"{made}\"}}"
        )),
        "{mkdir}"
    );
    assert!(
        mkdir.contains("{\"label\":\"mode\",\"uint_arg\":488}"),
        "mode 0o750 as asked, before the umask: {mkdir}"
    );
    assert!(
        exec.contains(&format!("{{\"linux_binprm_arg\":{{\"path\":\"{exe}\"")),
        "{exec}"
    );
    assert!(
        rmdir.contains("\"path_arg\":{\"path\":\"") && rmdir.contains("/lsm-vmtest-argtypes-dir\""),
        "{rmdir}"
    );
}

/// `char_buf` arguments: what a write passes (its length from argument 3, `sizeArgIndex`),
/// matched with `Prefix` on its bytes, and what a read returned (`returnCopy`: read when the
/// call returns, as many bytes as it returned). Tetragon's JSON has bytes in base64.
#[test]
fn char_buf_arguments_carry_the_bytes_written_and_the_bytes_read() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-write-and-read-buffers.yaml"));
    let py = python(
        "import os\nr, w = os.pipe()\nos.write(w, b'lsm-vmtest-buffer-\\x00\\x01abc')\n\
         os.write(w, b'other-buffer')\nprint(len(os.read(r, 777)))",
    );
    // base64 of b"lsm-vmtest-buffer-\x00\x01abc", of both writes, and of the second alone.
    let (first, both, second) = (
        "bHNtLXZtdGVzdC1idWZmZXItAAFhYmM=",
        "bHNtLXZtdGVzdC1idWZmZXItAAFhYmNvdGhlci1idWZmZXI=",
        "b3RoZXItYnVmZmVy",
    );
    let write = events.expect("the sys_write event", |l| {
        l.contains("\"function_name\":\"sys_write\"") && l.contains(first)
    });
    let read = events.expect("the sys_read event", |l| {
        l.contains("\"function_name\":\"sys_read\"") && l.contains("observe-write-and-read")
    });
    policy.delete();

    assert_eq!(exit_code(&py), 0, "{py:?}");
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "35", "{py:?}");
    assert!(
        write.contains(&format!(
            "{{\"bytes_arg\":\"{first}\"}},{{\"size_arg\":\"23\"}}"
        )),
        "the write's bytes and length: {write}"
    );
    assert!(
        read.contains(&format!(
            "{{\"bytes_arg\":\"{both}\"}},{{\"size_arg\":\"777\"}}"
        )),
        "the 35 bytes the read returned, and its count: {read}"
    );
    assert!(
        !events
            .lines()
            .iter()
            .any(|l| l.contains("sys_write") && l.contains(second)),
        "a write that does not start with the prefix posts nothing"
    );
}

/// `int32_arr` with `returnCopy`: the array a call fills (`pipe2`'s two file descriptors),
/// read when it returns, as Tetragon's `int32_list_arg`.
#[test]
fn an_int32_array_argument_carries_the_values_the_call_wrote() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-pipe2-fds.yaml"));
    let py = python("import os\nr, w = os.pipe2(os.O_NONBLOCK)\nprint(r, w)\nos.pipe2(0)");
    let ev = events.expect("the sys_pipe2 event", |l| kprobe_of(l, "observe-pipe2-fds"));
    events.settle(Duration::from_secs(2), Duration::from_secs(10));
    policy.delete();

    assert_eq!(exit_code(&py), 0, "{py:?}");
    let fds: Vec<&str> = std::str::from_utf8(&py.stdout)
        .expect("python's output")
        .split_whitespace()
        .collect();
    assert_eq!(fds.len(), 2, "{py:?}");
    let values = format!(
        "{{\"int32_list_arg\":{{\"values\":[{},{}]}},\"label\":\"pipefd\"}}",
        fds[0], fds[1]
    );
    assert!(ev.contains(&values), "the two descriptors, {values}: {ev}");
    assert!(
        ev.contains("{\"int_arg\":2048,\"label\":\"flags\"}"),
        "{ev}"
    );
    let posted = kprobes_of(&events, "observe-pipe2-fds");
    assert_eq!(
        posted.len(),
        1,
        "the pipe2 without O_NONBLOCK posts nothing: {posted:?}"
    );
}

/// `dns`: the query a UDP send to port 53 carries, matched on its name (case folded) and
/// shown as `dns_arg`; a query for another name, and a datagram that is no DNS query, post
/// nothing. The script listens on port 53 itself, so that no ICMP error fails its sends.
#[test]
fn a_dns_argument_carries_the_query_and_filters_on_its_name() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-dns-queries-for-lsm-vmtest.yaml"));
    let py = python(
        "import socket, struct\n\
         def q(name, qtype):\n\
         \x20   labels = b''.join(bytes([len(l)]) + l.encode() for l in name.split('.'))\n\
         \x20   return struct.pack('>HHHHHH', 0x1234, 0x0100, 1, 0, 0, 0) + labels + b'\\0' + struct.pack('>HH', qtype, 1)\n\
         r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         r.bind(('127.0.0.1', 53))\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.connect(('127.0.0.1', 53))\n\
         s.send(q('other.example.org', 1))\n\
         s.send(b'not a dns message, lsm-vmtest.example')\n\
         s.send(q('WWW.Lsm-Vmtest.Example', 28))\n",
    );
    let ev = events.expect("the udp_sendmsg event", |l| {
        kprobe_of(l, "observe-dns-queries-for-lsm-vmtest")
    });
    events.settle(Duration::from_secs(2), Duration::from_secs(10));
    policy.delete();

    assert_eq!(exit_code(&py), 0, "{py:?}");
    for want in [
        "\"query_name\":\"www.lsm-vmtest.example\"",
        "\"query_type\":28",
        "\"query_type_str\":\"AAAA\"",
        "\"query_class\":1",
        "\"tx_id\":4660",
        "\"flags\":256",
        "\"parsed\":true",
        "\"label\":\"dns\"",
        "\"dport\":53",
    ] {
        assert!(ev.contains(want), "{want}: {ev}");
    }
    let posted = kprobes_of(&events, "observe-dns-queries-for-lsm-vmtest");
    assert_eq!(
        posted.len(),
        1,
        "only the query for the name posts: {posted:?}"
    );

    // With Sigkill: a datagram that is no query is not "unresolved" (which an enforcing
    // selector matches), so its sender lives; the query for the name kills.
    let yaml = fs::read_to_string(fixture("observe-dns-queries-for-lsm-vmtest.yaml"))
        .expect("fixture")
        .replace(
            "name: observe-dns-queries-for-lsm-vmtest",
            "name: kill-dns-queries-for-lsm-vmtest",
        )
        .replace(
            "        values: [\"lsm-vmtest.example\"]",
            "        values: [\"lsm-vmtest.example\"]\n      matchActions:\n      - action: Sigkill",
        );
    let policy = a.add_policy_yaml("kill-dns-queries-for-lsm-vmtest", &yaml);
    let send = |payload: &str| {
        python(&format!(
            "import socket\n\
             r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             r.bind(('127.0.0.1', 53))\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             s.connect(('127.0.0.1', 53))\n\
             s.send({payload})\n"
        ))
    };
    let other = send("b'not a dns message, lsm-vmtest.example'");
    let query = send(
        "b'\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x03www\\x0alsm-vmtest\\x07example\\x00\\x00\\x01\\x00\\x01'",
    );
    policy.delete();
    assert_eq!(exit_code(&other), 0, "{other:?}");
    assert_eq!(exit_code(&query), 137, "{query:?}");
}

/// `cred` (`commit_creds`' new credentials): the event carries them as Tetragon's
/// `process_credentials_arg` (the JSON has its keys in order).
#[test]
fn a_cred_argument_carries_the_credentials_being_installed() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("observe-commit-creds-cred.yaml"));
    let out = run(
        Path::new("/usr/bin/setpriv"),
        &[
            "--regid",
            "4247",
            "--reuid",
            "4246",
            "--clear-groups",
            "/usr/bin/true",
        ],
    );
    // setpriv installs credentials more than once (the uid, then the gid, then the caps):
    // the event of the step that set both ids.
    let line = events.expect("the commit_creds event", |l| {
        l.contains("observe-commit-creds-cred")
            && l.contains("\"gid\":4247,\"sgid\":4247,\"suid\":4246,\"uid\":4246")
    });
    policy.delete();

    assert_eq!(exit_code(&out), 0, "{out:?}");
    assert!(
        line.contains(
            "\"egid\":4247,\"euid\":4246,\"fsgid\":4247,\"fsuid\":4246,\"gid\":4247,\
             \"sgid\":4247,\"suid\":4246,\"uid\":4246,\"user_ns\":{"
        ),
        "{line}"
    );
    assert!(line.contains("{\"process_credentials_arg\":{"), "{line}");
}

/// A function the kernel does not have fails the policy with a message naming it, and what
/// was loaded keeps working.
#[test]
fn a_missing_function_is_a_load_error_naming_it() {
    let a = agent();
    let text = refused_variant(
        &a,
        "observe-setuid-syscall.yaml",
        &[
            ("name: observe-setuid-4242", "name: observe-missing-fn"),
            ("call: sys_setuid", "call: lsm_vmtest_no_such_function"),
            ("syscall: true", "syscall: false"),
        ],
    );
    assert!(
        text.contains("lsm_vmtest_no_such_function"),
        "the error names the function: {text}"
    );
}

/// `Override` at a kprobe needs the kernel's error injection (`bpf_override_return`), which
/// Debian's 6.1 and 6.12 do not have: adding the policy fails naming the missing option, the
/// link it would refuse still works, and the agent goes on serving. With `return: true` the
/// override goes to the function's entry, as in Tetragon, and fails the same way.
#[test]
fn an_override_kprobe_policy_is_refused_where_the_kernel_has_no_error_injection() {
    let a = agent();
    for f in [
        "override-hardlinks-to-lsm-vmtest-secret.yaml",
        "override-hardlinks-to-lsm-vmtest-secret-return.yaml",
    ] {
        let text = add_refused(&a, &fixture(f));
        assert!(
            text.contains("sys_linkat") && text.contains("CONFIG_BPF_KPROBE_OVERRIDE"),
            "{f}: the error names the call and the kernel option: {text}"
        );
    }
    // Both in /tmp: a hard link stays on one file system.
    let secret = Path::new("/tmp/lsm-vmtest-secret-override");
    fs::write(secret, "x").expect("secret file");
    let link = Path::new("/tmp/lsm-vmtest-override-link");
    let _ = fs::remove_file(link);
    let linked = fs::hard_link(secret, link);
    let _ = fs::remove_file(link);
    let _ = fs::remove_file(secret);
    assert!(linked.is_ok(), "nothing was loaded: {linked:?}");
    let list = a.lsmctl(&["tracingpolicy", "list"]);
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains("override-hardlinks"),
        "the refused policy is not listed"
    );
}

/// `resolve`: struct members followed from an argument by the kernel's BTF. At LSM hook
/// `bprm_creds_from_file`, `mm.owner.real_parent.comm` of the exec's `linux_binprm` names
/// the exec-ing process's parent: an exec by a child of a shell named `lsmvt-resolve` is
/// denied (EPERM) and the event carries the name, while the same exec under another shell
/// runs. At the kprobe on `wake_up_new_task`, `real_parent.comm` of the new task names the
/// process that forked it. A member the kernel does not have is refused, named.
#[test]
fn a_resolved_member_is_matched_enforced_and_carried_by_the_event() {
    let a = agent();
    let events = a.json_stream();
    let name = "deny-exec-by-child-of-lsmvt-resolve";
    let policy = a.add_policy(&fixture(&format!("{name}-eperm.yaml")));
    let dir = scratch_dir("resolve");
    let shell = dir.join("lsmvt-resolve");
    fs::copy("/usr/bin/dash", &shell).expect("copy dash");
    let script = "/usr/bin/true; echo status=$?";
    // The shell's parent is this thread, whose name the current-task path reads.
    let me = fs::read_to_string("/proc/thread-self/comm").expect("own comm");
    let denied = run(&shell, &["-c", script]);
    let allowed = run(Path::new("/usr/bin/dash"), &["-c", script]);
    let lsm = events.expect("the bprm_creds_from_file event", |l| {
        l.contains("\"process_lsm\"")
            && l.contains("\"function_name\":\"bprm_creds_from_file\"")
            && l.contains(name)
    });
    let fork = events.expect("the wake_up_new_task event", |l| {
        kprobe_of(l, name) && l.contains("\"function_name\":\"wake_up_new_task\"")
    });
    events.settle(Duration::from_secs(2), Duration::from_secs(10));
    policy.delete();

    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        text(&denied).contains("status=126"),
        "the exec under lsmvt-resolve is denied: {denied:?}"
    );
    assert!(
        text(&allowed).contains("status=0"),
        "the exec under dash runs: {allowed:?}"
    );
    for line in [&lsm, &fork] {
        assert!(
            line.contains("{\"string_arg\":\"lsmvt-resolve\"}"),
            "the event carries the resolved name: {line}"
        );
    }
    assert!(
        lsm.contains("\"action\":\"KPROBE_ACTION_OVERRIDE\""),
        "{lsm}"
    );
    assert!(
        fork.contains(&format!("{{\"string_arg\":\"{}\"}}", me.trim_end())),
        "argument 1 starts at the current task (the shell), whose parent is {me}: {fork}"
    );
    assert!(
        fork.contains(&format!("{{\"int_arg\":{}}}", std::process::id())),
        "argument 2, a 4-byte integer, is the pid of the shell's parent (this test): {fork}"
    );
    let others: Vec<String> = events
        .lines()
        .into_iter()
        .filter(|l| {
            l.contains(&format!("\"policy_name\":\"{name}\""))
                && !l.contains("\"string_arg\":\"lsmvt-resolve\"")
        })
        .collect();
    assert!(
        others.is_empty(),
        "only the named parent's children post: {others:?}"
    );

    let text = refused_variant(
        &a,
        &format!("{name}-eperm.yaml"),
        &[
            (
                "resolve: \"real_parent.comm\"",
                "resolve: \"real_parent.lsmvt_nope\"",
            ),
            (&format!("name: {name}"), "name: resolve-missing-member"),
        ],
    );
    assert!(
        text.contains("wake_up_new_task") && text.contains("has no member lsmvt_nope"),
        "{text}"
    );
}

/// `resolve` at a hook whose program is hand-written (`bprm_check_security`, as in
/// Tetragon's `lsm_track_grandparent.yml`): the hook entry runs at the hook's twin, a
/// generic-reader program on the same LSM hook, which posts the exec by a child of
/// `lsmvt-resolve` with the parent's name; the hand-written program keeps denying for
/// another policy on the same hook.
#[test]
fn resolve_at_a_hook_with_a_hand_written_program_runs_at_its_twin() {
    let a = agent();
    let events = a.json_stream();
    let name = "observe-exec-by-child-of-lsmvt-resolve";
    let twin = a.add_policy(&fixture(&format!("{name}-at-bprm-check.yaml")));
    let deny = a.add_policy(&fixture("deny-exec-of-lsm-vmtest-blocked-eperm.yaml"));
    let dir = scratch_dir("resolve-twin");
    let shell = dir.join("lsmvt-resolve");
    fs::copy("/usr/bin/dash", &shell).expect("copy dash");
    let blocked = dir.join("lsm-vmtest-blocked");
    fs::copy("/usr/bin/true", &blocked).expect("copy true");
    let posted = run(&shell, &["-c", "/usr/bin/true; echo status=$?"]);
    let denied = std::process::Command::new(&blocked).status();
    let line = events.expect("the bprm_check_security event", |l| {
        l.contains("\"process_lsm\"") && l.contains(name)
    });
    events.settle(Duration::from_secs(2), Duration::from_secs(10));
    twin.delete();
    deny.delete();

    let out = String::from_utf8_lossy(&posted.stdout);
    assert!(out.contains("status=0"), "only posted: {posted:?}");
    assert!(
        line.contains("{\"string_arg\":\"lsmvt-resolve\"}"),
        "the event carries the resolved name: {line}"
    );
    assert!(
        line.contains("\"function_name\":\"bprm_check_security\""),
        "{line}"
    );
    let err = denied.expect_err("the exec of lsm-vmtest-blocked is denied");
    assert_eq!(err.raw_os_error(), Some(1), "EPERM: {err}");
    let posts = events
        .lines()
        .into_iter()
        .filter(|l| l.contains("\"process_lsm\"") && l.contains(name))
        .count();
    assert_eq!(posts, 1, "one exec by a child of lsmvt-resolve posts, once");
}

/// A read of a file kept open by a process in a `chroot` is matched by the path the process
/// sees, also when its verdict is decided after the open: here the open happens before any
/// policy wants its path (no file policy is loaded, so `file_open` caches none), and the
/// policy comes before the read, whose path the dentry walk finds. The walk stops at the
/// process's root as `bpf_d_path` does; up to the mount tree's root it would put the chroot's
/// directory in front, and the read would not match.
#[test]
fn a_chrooted_read_of_a_file_opened_before_the_policy_is_matched_by_the_path_it_sees() {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::process::{Command, Stdio};
    let a = agent();
    let prefix = "/tmp/lsm-vmtest-walk-root/";
    let seen = format!("{prefix}jailed");
    let jail = busybox_chroot("walk-jail", &seen);
    // Opens the file and says so; then, at each line it is sent, reads it (to stderr: the
    // chroot has no /dev) and says whether the read went through.
    let try_read = "if /bin/busybox cat <&3 >&2; then echo read; else echo denied; fi";
    let script = format!("exec 3<{seen} && echo opened; read go; {try_read}; read go; {try_read}");
    let mut shell = Reaped(
        Command::new("/usr/sbin/chroot")
            .arg(&jail)
            .args(["/bin/busybox", "sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running chroot"),
    );
    let mut lines = BufReader::new(shell.0.stdout.take().expect("piped stdout")).lines();
    let mut next = || lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(next(), "opened");
    let mut stdin = shell.0.stdin.take().expect("piped stdin");
    writeln!(stdin, "go").expect("telling the shell to read");
    assert_eq!(next(), "read", "no policy yet: the read goes through");

    let yaml = substitute(
        &fixture("deny-reads-under-lsm-vmtest-verdict-eperm.yaml"),
        &[("NAME", "walk-root"), ("PREFIX", prefix)],
    );
    let policy = a.add_policy_yaml("walk-root", &yaml);
    writeln!(stdin, "go").expect("telling the shell to read");
    let second = next();
    policy.delete();
    assert_eq!(
        second, "denied",
        "the read of {seen} (as the chrooted process sees it) is denied"
    );
}
