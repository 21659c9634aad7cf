//! Network enforcement at `socket_connect`. The guest has no network device to the outside
//! and keeps it so: "outside the cluster" is the documentation ranges (198.51.100.0/24,
//! 203.0.113.0/24, 2001:db8::/32), which have no route, and "inside" is an address of the pod
//! CIDR put on the loopback device. An allowed connect to an outside address therefore fails
//! with "Network is unreachable"; a denied one with EPERM (Override) or SIGKILL (Sigkill).

use std::{
    fs,
    net::{TcpListener, UdpSocket},
    os::unix::{net::UnixListener, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    sync::OnceLock,
    thread,
    time::{Duration, Instant},
};

use vm_tests::*;

const PODCIDR: &str = "10.0.0.0/16";
const SERVICECIDR: &str = "10.96.0.0/12";
/// An address inside the pod CIDR, put on `lo`.
const POD_ADDR: &str = "10.0.0.5";
const POD_ADDR6: &str = "fd00::5";
const DNS_PORT: u16 = 5353;

/// The TCP port of the agent's API in this suite (the tests reach it on its unix socket).
const API_PORT: u16 = 54399;

fn agent() -> std::sync::MutexGuard<'static, Agent> {
    network();
    shared_agent_with_args(&[
        "--dns-server".to_string(),
        format!("127.0.0.1:{DNS_PORT}"),
        "--server-address".to_string(),
        format!("localhost:{API_PORT}"),
    ])
}

/// Puts the "inside" addresses on the loopback device, once.
fn network() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &format!("{POD_ADDR}/32"), "dev", "lo"],
            vec![
                "-6",
                "addr",
                "add",
                &format!("{POD_ADDR6}/128"),
                "dev",
                "lo",
            ],
        ] {
            let out = Command::new("ip").args(&args).output().expect("ip");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() || err.contains("File exists"),
                "ip {args:?}: {err}"
            );
        }
    });
}

/// Runs `vmtest-connect proto target`.
fn connect(proto: &str, target: &str) -> Output {
    run(&bin("vmtest-connect"), &[proto, target])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn assert_connected(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: expected a connection, got {:?} {}",
        out.status,
        stdout(out)
    );
}

fn assert_eperm(out: &Output, what: &str) {
    assert_eq!(
        stdout(out),
        "error: Operation not permitted (os error 1) (errno 1)",
        "{what}: expected EPERM"
    );
}

fn assert_unreachable(out: &Output, what: &str) {
    let s = stdout(out);
    assert!(
        s.contains("errno 101"),
        "{what}: expected the connect to be allowed and fail with ENETUNREACH, got {s} ({:?})",
        out.status
    );
}

fn assert_killed(out: &Output, what: &str) {
    assert_eq!(
        out.status.signal(),
        Some(9),
        "{what}: expected SIGKILL, got {:?} {}",
        out.status,
        stdout(out)
    );
}

/// The upstream quickstart policy after `envsubst`.
fn quickstart_enforce() -> String {
    substitute(
        &quickstart("network_egress_cluster_enforce.yaml"),
        &[("PODCIDR", PODCIDR), ("SERVICECIDR", SERVICECIDR)],
    )
}

/// A TCP listener on `addr` (port chosen by the kernel); returns it and `ip:port`.
fn listener(addr: &str) -> (TcpListener, String) {
    let l = TcpListener::bind(format!("{addr}:0")).expect("listen");
    let a = l.local_addr().expect("addr").to_string();
    (l, a)
}

#[test]
fn quickstart_egress_policy_kills_outside_connects_and_lets_cluster_ones_through() {
    let mut a = agent();
    let yaml = quickstart_enforce();
    let policy = a.add_policy_yaml("quickstart-network", &yaml);
    let (_l1, local) = listener("127.0.0.1");
    let (_l2, pod) = listener(POD_ADDR);

    let outside = connect("tcp", "198.51.100.1:443");
    let lo = connect("tcp", &local);
    let inside = connect("tcp", &pod);
    policy.delete();

    assert_killed(&outside, "198.51.100.1:443");
    assert_connected(&lo, "127.0.0.1");
    assert_connected(&inside, "pod address");
    let exe = bin("vmtest-connect").display().to_string();
    a.expect_lines(&[
        format!("🔌 connect | {exe} tcp 0.0.0.0:0 -> 198.51.100.1:443"),
        format!("💥 exit    | {exe} tcp 198.51.100.1:443 SIGKILL"),
    ]);
}

#[test]
fn ipv6_destinations_outside_the_allowed_networks_are_denied() {
    let a = agent();
    let policy = a.add_policy(&fixture(
        "deny-tcp-connect-outside-loopback-and-fd00-eperm.yaml",
    ));
    let (_l1, local6) = listener("[::1]");
    let (_l2, pod6) = listener(&format!("[{POD_ADDR6}]"));
    let outside = connect("tcp", "[2001:db8::1]:443");
    let mapped_outside = connect("tcp", "[::ffff:198.51.100.1]:443");
    let lo = connect("tcp", &local6);
    let inside = connect("tcp", &pod6);
    policy.delete();
    assert_eperm(&outside, "2001:db8::1");
    assert_eperm(&mapped_outside, "v4-mapped 198.51.100.1 is IPv4 outside");
    assert_connected(&lo, "::1");
    assert_connected(&inside, "fd00::5");
}

#[test]
fn port_and_protocol_selectors_pick_the_connection() {
    let a = agent();
    let policy = a.add_policy(&fixture(
        "deny-udp-port-9999-and-privileged-ports-of-203-0-113-eperm.yaml",
    ));
    let udp_9999 = connect("udp", "127.0.0.1:9999");
    let udp_9998 = connect("udp", "127.0.0.1:9998");
    let tcp_9999 = connect("tcp", "127.0.0.1:9999");
    let priv_outside = connect("tcp", "203.0.113.9:80");
    let unpriv_outside = connect("tcp", "203.0.113.9:8080");
    policy.delete();
    assert_eperm(&udp_9999, "UDP to port 9999");
    assert_connected(&udp_9998, "UDP to port 9998");
    assert!(
        stdout(&tcp_9999).contains("errno 111"),
        "TCP to 9999 is allowed (and refused): {}",
        stdout(&tcp_9999)
    );
    assert_eperm(&priv_outside, "privileged port in 203.0.113.0/24");
    assert_unreachable(&unpriv_outside, "unprivileged port");
}

#[test]
fn a_tcp_connect_policy_never_touches_udp_or_unix_sockets() {
    let a = agent();
    let policy = a.add_policy(&fixture("deny-every-tcp-connect-eperm.yaml"));
    let dir = scratch_dir("net-unix");
    let path = dir.join("sock");
    let _unix = UnixListener::bind(&path).expect("unix listener");
    let _udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let (_l, local) = listener("127.0.0.1");
    let tcp = connect("tcp", &local);
    let udp = connect("udp", "127.0.0.1:53");
    let unix = connect("unix", &path.display().to_string());
    // The agent's own API keeps working under the policy: its unix socket, and its TCP
    // port on both loopback addresses (a connect there is exempt from every policy).
    let listed = a.lsmctl(&["tracingpolicy", "list"]);
    let over_tcp: Vec<_> = ["127.0.0.1", "[::1]"]
        .iter()
        .map(|host| {
            let out = Command::new(bin("lsmctl"))
                .args(["--server-address", &format!("{host}:{API_PORT}")])
                .args(["tracingpolicy", "list"])
                .output()
                .expect("lsmctl");
            (host, out)
        })
        .collect();
    // The same port on a loopback address the agent does not serve is still denied: the
    // exemption is the agent's API, not the port.
    let elsewhere = connect("tcp", &format!("127.0.0.2:{API_PORT}"));
    policy.delete();
    assert_eperm(&tcp, "TCP is matched");
    assert_connected(&udp, "UDP is not");
    assert_connected(&unix, "unix is not");
    assert!(listed.status.success(), "lsmctl works under the policy");
    for (host, out) in over_tcp {
        assert!(
            out.status.success(),
            "lsmctl over TCP to {host} works under the policy: {out:?}"
        );
    }
    assert_eperm(&elsewhere, "the API port elsewhere is matched");
}

/// dnsmasq on 127.0.0.1:5353 answering from a hosts file with a 1 s TTL.
struct DnsServer {
    child: Child,
    hosts: PathBuf,
}

impl DnsServer {
    fn start(hosts_line: &str) -> DnsServer {
        let dir = scratch_dir("net-dns");
        let hosts = dir.join("hosts");
        fs::write(&hosts, format!("{hosts_line}\n")).expect("hosts");
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                &format!("--port={DNS_PORT}"),
                &format!("--addn-hosts={}", hosts.display()),
                "--local-ttl=1",
                "--user=root",
                &format!("--pid-file={}", dir.join("pid").display()),
            ])
            .spawn()
            .expect("dnsmasq (setup installs dnsmasq-base)");
        thread::sleep(Duration::from_millis(500));
        DnsServer { child, hosts }
    }

    /// Rewrites the hosts file and makes dnsmasq re-read it.
    fn change(&self, hosts_line: &str) {
        fs::write(&self.hosts, format!("{hosts_line}\n")).expect("hosts");
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP);
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` for up to `secs` seconds.
fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(300));
    }
    cond()
}

#[test]
fn a_dns_name_is_enforced_and_follows_record_changes() {
    let a = agent();
    let dns = DnsServer::start("198.51.100.7 blocked.test");
    // Another policy that denies every UDP connect of other programs: the agent's own DNS
    // queries are exempt and keep working.
    let no_udp = a.add_policy(&fixture("deny-every-udp-connect-eperm.yaml"));
    let by_name = a.add_policy(&fixture("deny-tcp-connect-to-dns-blocked-test-eperm.yaml"));
    let first = eventually(20, || {
        stdout(&connect("tcp", "198.51.100.7:80")).contains("errno 1)")
    });
    let other_before = connect("tcp", "198.51.100.8:80");
    dns.change("198.51.100.8 blocked.test");
    let moved = eventually(30, || {
        stdout(&connect("tcp", "198.51.100.8:80")).contains("errno 1)")
    });
    let old_released = connect("tcp", "198.51.100.7:80");
    by_name.delete();
    no_udp.delete();
    drop(dns);
    assert!(first, "the resolved address of blocked.test is denied");
    assert_unreachable(&other_before, "another address is not");
    assert!(moved, "after the record changed, the new address is denied");
    assert_unreachable(&old_released, "the old address is released");
}

/// `NotifyEnforcer` with an enforcer on the same call (Tetragon's CVE-2026-65960 policy, without
/// its data entry): the connect to 127.0.0.1:54321 is denied with EPERM at the socket_connect
/// LSM hook, a connect to another port goes through, and the event reports the action as
/// Tetragon does, `KPROBE_ACTION_NOTIFYENFORCER`.
#[test]
fn notify_enforcer_denies_at_the_lsm_hook_and_the_event_names_it() {
    let a = agent();
    let events = a.json_stream();
    let policy = a.add_policy(&fixture("notify-enforcer-at-socket-connect.yaml"));
    let denied = connect("tcp", "127.0.0.1:54321");
    let (_l, local) = listener("127.0.0.1");
    let other = connect("tcp", &local);
    let line = events.expect("the NotifyEnforcer event", |l| {
        l.contains("\"policy_name\":\"notify-enforcer-connect\"") && l.contains("54321")
    });
    policy.delete();
    assert_eperm(&denied, "127.0.0.1:54321");
    assert_connected(&other, "another port");
    assert!(
        line.contains("\"action\":\"KPROBE_ACTION_NOTIFYENFORCER\""),
        "{line}"
    );
}

/// `data` and `matchData` (the shape of Tetragon's CVE-2026-65960 policy): the effective uid
/// is read from the current task (`cred.euid.val`) at the `socket_connect` LSM hook, so the
/// same connect to 127.0.0.1:54321 goes through for root and is denied with EPERM for uid
/// 65534, whose event carries the value as `data` labelled `euid`.
#[test]
fn match_data_on_the_tasks_euid_denies_the_connect_of_a_non_root_process_only() {
    let a = agent();
    let events = a.json_stream();
    let helper = scratch_dir("match-data").join("vmtest-connect");
    fs::copy(bin("vmtest-connect"), &helper).expect("copying the helper");
    let listener = TcpListener::bind("127.0.0.1:54321").expect("listening on 127.0.0.1:54321");
    let policy = a.add_policy(&fixture(
        "notify-enforcer-for-non-root-at-socket-connect.yaml",
    ));
    let as_root = run(&helper, &["tcp", "127.0.0.1:54321"]);
    let as_nobody = run(
        Path::new("/usr/bin/setpriv"),
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            helper.to_str().expect("utf-8"),
            "tcp",
            "127.0.0.1:54321",
        ],
    );
    let line = events.expect("the event of the denied connect", |l| {
        l.contains("\"policy_name\":\"notify-enforcer-non-root-connect\"")
    });
    policy.delete();
    drop(listener);
    assert_connected(&as_root, "root (euid 0)");
    assert_eperm(&as_nobody, "uid 65534");
    for want in [
        "\"data\":[{\"label\":\"euid\",\"uint_arg\":65534}]",
        "\"action\":\"KPROBE_ACTION_NOTIFYENFORCER\"",
        "\"function_name\":\"security_socket_connect\"",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
    events.settle(Duration::from_secs(2), Duration::from_secs(10));
    let posted = events
        .lines()
        .iter()
        .filter(|l| l.contains("\"policy_name\":\"notify-enforcer-non-root-connect\""))
        .count();
    assert_eq!(
        posted,
        1,
        "root's connect posts nothing: {:#?}",
        events.lines()
    );
}
