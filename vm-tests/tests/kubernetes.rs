//! The Kubernetes story of the getting-started guide, inside the VM: a real kube-apiserver
//! (with etcd) runs in the guest, the agent watches it (`--enable-k8s-api`), policies arrive as
//! TracingPolicy objects through `kubectl apply`, and a fake kubelet binds pods to the agent's
//! node, lays out their cgroups as the kubelet and containerd do and runs commands in their
//! containers.
//!
//! "Outside the cluster" is as in the network suite: 198.51.100.1 has no route in the guest,
//! so an allowed connect fails with ENETUNREACH (curl exits 7) and a denied one is killed at
//! the hook before any packet.

use std::{
    fs,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    thread,
    time::Duration,
};

use vm_tests::{
    k8s::{Cluster, ContainerRoot, FakePod, NODE, cgroup, cluster, wait_until},
    *,
};

const PODCIDR: &str = "10.0.0.0/16";
const SERVICECIDR: &str = "10.96.0.0/12";
/// A namespace the guide's policies are not applied in.
const OTHER_NS: &str = "lsm-vmtest-other";
/// How long a policy object may take to be loaded (or unloaded) after kubectl returns.
const POLICY_TIMEOUT: Duration = Duration::from_secs(180);
/// The guard policies' target, the second value an edit adds, and the pod selector's target.
const TARGET_A: &str = "/tmp/lsm-vmtest-k8s-a";
const TARGET_B: &str = "/tmp/lsm-vmtest-k8s-b";
const SELECTOR_TARGET: &str = "/tmp/lsm-vmtest-k8s-selector-target";
const OUTSIDE_URL: &str = "http://198.51.100.1/";

/// The shared agent, watching the guest's API server as node [`NODE`]; the API server is up
/// (with the CRDs and the Node) before the agent starts.
fn agent() -> std::sync::MutexGuard<'static, Agent> {
    let c = cluster();
    for (path, text) in [
        (TARGET_A, "a\n"),
        (TARGET_B, "b\n"),
        (SELECTOR_TARGET, "s\n"),
    ] {
        fs::write(path, text).expect("target file");
    }
    shared_agent_with_args(&[
        "--enable-k8s-api".into(),
        "--k8s-kubeconfig-path".into(),
        c.kubeconfig().display().to_string(),
        "--node-name".into(),
        NODE.into(),
    ])
}

/// The row of `tracingpolicy list` naming `name` (empty when not listed).
fn policy_row(a: &Agent, name: &str) -> String {
    let out = a.lsmctl(&["tracingpolicy", "list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .unwrap_or_default()
        .to_string()
}

/// Waits until the agent lists policy `name` as enabled.
fn wait_enabled(a: &Agent, name: &str) {
    let mut row = String::new();
    let start = std::time::Instant::now();
    while !row.contains("enabled") {
        assert!(
            start.elapsed() < POLICY_TIMEOUT,
            "policy {name} not enabled after {POLICY_TIMEOUT:?}; listed as {row:?}"
        );
        thread::sleep(Duration::from_millis(300));
        row = policy_row(a, name);
    }
}

fn wait_unlisted(a: &Agent, name: &str) {
    wait_until(
        &format!("policy {name} to be unloaded"),
        POLICY_TIMEOUT,
        || policy_row(a, name).is_empty(),
    );
}

fn read_text(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A guard policy with its second value replaced by [`TARGET_B`] (the edit).
fn edited(text: &str) -> String {
    let unused = "\"/tmp/lsm-vmtest-k8s-unused\"";
    assert!(text.contains(unused), "the guard policy must name {unused}");
    text.replace(unused, &format!("\"{TARGET_B}\""))
}

fn host_cat(path: &str) -> i32 {
    exit_code(&run(Path::new("/usr/bin/cat"), &[path]))
}

fn pod_cat(pod: &FakePod, path: &str) -> i32 {
    exit_code(&pod.run("/usr/bin/cat", &[path]))
}

fn kubectl_get(c: &Cluster, ns: &str, what: &str, jsonpath: &str) -> String {
    c.kubectl_ok(
        &["get", "-n", ns, what, "-o", &format!("jsonpath={jsonpath}")],
        None,
    )
}

#[test]
fn the_guest_api_server_serves_the_tracing_policy_crds_from_deploy_and_this_node() {
    let c = cluster();
    for crd in [
        "tracingpolicies.cilium.io",
        "tracingpoliciesnamespaced.cilium.io",
    ] {
        let established = c.kubectl_ok(
            &[
                "get",
                "crd",
                crd,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Established\")].status}",
            ],
            None,
        );
        assert_eq!(established, "True", "{crd} is not established");
    }
    let node = c.kubectl_ok(
        &["get", "node", NODE, "-o", "jsonpath={.metadata.name}"],
        None,
    );
    assert_eq!(node, NODE);
}

#[test]
fn the_fake_kubelet_binds_the_pod_to_this_node_lays_out_its_cgroups_and_runs_commands_in_its_container()
 {
    let c = cluster();
    let pod = FakePod::create(c, "default", "lsm-vmtest-layout");
    let target = format!("pod/{}", pod.name);
    assert_eq!(
        kubectl_get(c, "default", &target, "{.spec.nodeName} {.status.phase}"),
        format!("{NODE} Pending")
    );
    let pod_cg = cgroup::proc_path(pod.pod_cgroup());
    assert_eq!(
        pod_cg,
        format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
            pod.uid.replace('-', "_")
        )
    );
    assert!(
        pod.pod_cgroup().is_dir(),
        "the pod cgroup exists at admission"
    );
    assert!(
        !pod.container_cgroup().exists(),
        "no container scope before containerd starts one"
    );

    pod.start_container();
    let out = pod.run("/usr/bin/cat", &["/proc/self/cgroup"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("0::{pod_cg}/cri-containerd-{}.scope\n", pod.container_id),
        "the command's first exec runs in the container's scope"
    );
    let mut sleeper = pod.spawn("/usr/bin/sleep", &["600"]);
    assert_eq!(
        cgroup::pids(pod.container_cgroup()),
        vec![sleeper.id() as i32]
    );

    pod.report_running();
    assert_eq!(
        kubectl_get(
            c,
            "default",
            &target,
            "{.status.phase} {.status.containerStatuses[0].name} {.status.containerStatuses[0].containerID}"
        ),
        format!("Running spaceship containerd://{}", pod.container_id)
    );

    let pod_dir = pod.pod_cgroup().to_path_buf();
    drop(pod);
    let status = sleeper.wait().expect("sleeper");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the container's processes are killed with it"
    );
    assert!(!pod_dir.exists(), "the pod cgroup is removed");
    let left = c.kubectl_ok(
        &[
            "get",
            "-n",
            "default",
            "pod",
            "lsm-vmtest-layout",
            "--ignore-not-found",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(left, "", "the Pod object is deleted");
}

#[test]
fn a_cluster_wide_tracing_policy_object_enforces_when_applied_changes_without_a_gap_when_edited_and_stops_when_deleted()
 {
    let a = agent();
    let c = cluster();
    let v1 = read_text(&fixture(
        "k8s-guard-deny-cat-open-of-k8s-target-eperm-without-event.yaml",
    ));
    let policy = c.apply(None, &v1);
    wait_enabled(&a, "k8s-guard");
    assert_eq!(
        host_cat(TARGET_A),
        1,
        "applied: cat may not open the target"
    );
    assert_eq!(host_cat(TARGET_B), 0, "the first version does not name B");

    let (leaks, attempts) = forbidden_reads_during(|| {
        c.reapply(&policy, &edited(&v1));
        wait_until("the edit to enforce", POLICY_TIMEOUT, || {
            host_cat(TARGET_B) == 1
        });
    });
    eprintln!("{attempts} forbidden opens attempted across the edit");
    assert!(attempts >= 5, "only {attempts} attempts across the edit");
    assert_eq!(leaks, 0, "a forbidden open succeeded across the edit");

    policy.delete();
    wait_unlisted(&a, "k8s-guard");
    assert_eq!(
        host_cat(TARGET_A),
        0,
        "deleted: the target is readable again"
    );
}

/// Runs `during` while another thread keeps running `cat TARGET_A` (host process); returns
/// how many of those reads succeeded and how many were attempted.
fn forbidden_reads_during(during: impl FnOnce()) -> (u32, u32) {
    forbidden_reads_by(|| host_cat(TARGET_A), during)
}

fn forbidden_reads_by(read: impl Fn() -> i32 + Send + Sync, during: impl FnOnce()) -> (u32, u32) {
    let done = Arc::new(AtomicBool::new(false));
    let attempts = AtomicU32::new(0);
    let leaks = AtomicU32::new(0);
    thread::scope(|s| {
        s.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                attempts.fetch_add(1, Ordering::Relaxed);
                if read() == 0 {
                    leaks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        // Set `done` even when `during` panics, so that the scope can end.
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _done = Done(&done);
        during();
        // A few more reads after the switch.
        thread::sleep(Duration::from_secs(1));
    });
    (leaks.into_inner(), attempts.into_inner())
}

#[test]
fn the_guides_egress_policy_applied_in_default_kills_curl_in_default_xwing_only() {
    let mut a = agent();
    let c = cluster();
    let xwing = FakePod::running(c, "default", "xwing");
    let other = FakePod::running(c, OTHER_NS, "xwing");
    xwing.wait_until_known(&mut a);
    other.wait_until_known(&mut a);
    // As the guide does: `envsubst < network_egress_cluster_enforce.yaml | kubectl apply -n default -f -`.
    let yaml = substitute(
        &quickstart("network_egress_cluster_enforce.yaml"),
        &[("PODCIDR", PODCIDR), ("SERVICECIDR", SERVICECIDR)],
    );
    let policy = c.apply(Some("default"), &yaml);
    wait_enabled(&a, "enforce-network-activity-outside-cluster-cidr-range");

    let mark = a.mark();
    let host = run(Path::new("/usr/bin/curl"), &[OUTSIDE_URL]);
    let in_other = other.run("/usr/bin/curl", &[OUTSIDE_URL]);
    let in_xwing = xwing.run("/usr/bin/curl", &[OUTSIDE_URL]);
    a.expect_lines_from(
        "default/xwing",
        &[
            "🔌 connect | /usr/bin/curl tcp 0.0.0.0:0 -> 198.51.100.1:80".into(),
            format!("💥 exit    | /usr/bin/curl {OUTSIDE_URL} SIGKILL"),
        ],
    );
    policy.delete();

    assert_eq!(exit_code(&in_xwing), 137, "curl in default/xwing is killed");
    assert_eq!(
        exit_code(&host),
        7,
        "a host curl connects (unreachable: exit 7), not killed"
    );
    assert_eq!(
        exit_code(&in_other),
        7,
        "curl in {OTHER_NS}/xwing connects (unreachable: exit 7), not killed"
    );
    let others: Vec<String> = a
        .lines_since(mark)
        .into_iter()
        // Every process's exit is reported; a kill ends with SIGKILL.
        .filter(|l| l.starts_with("🔌") || (l.starts_with("💥") && l.ends_with("SIGKILL")))
        .filter(|l| compact_source(l) != Some("default/xwing"))
        .collect();
    assert!(
        others.is_empty(),
        "only default/xwing's connect and kill are reported: {others:#?}"
    );
}

#[test]
fn the_guides_file_policy_as_an_object_kills_cat_etc_shadow_in_default_xwing_and_leaves_host_writes_under_etc_alone()
 {
    let mut a = agent();
    let c = cluster();
    let host_file = "/etc/lsm-vmtest-k8s-host.conf";
    // Written before the policy exists, in the guest's private /etc overlay.
    fs::write(host_file, "original\n").expect("guest /etc is writable");
    let xwing = FakePod::running(c, "default", "xwing");
    xwing.wait_until_known(&mut a);
    let policy = c.apply(
        Some("default"),
        &read_text(&quickstart("file_monitoring_enforce.yaml")),
    );
    wait_enabled(&a, "file-monitoring-filtered");

    let in_pod = xwing.run("/usr/bin/cat", &["/etc/shadow"]);
    let host_write = sh(
        &scratch_dir("k8s-etc"),
        &format!("bash -c 'echo host >> {host_file}'"),
    );
    let host_read = run(Path::new("/usr/bin/cat"), &["/etc/shadow"]);
    a.expect_lines_from(
        "default/xwing",
        &[
            "🚀 process | /usr/bin/cat /etc/shadow".into(),
            "📚 read    | /usr/bin/cat /etc/shadow".into(),
            "💥 exit    | /usr/bin/cat /etc/shadow SIGKILL".into(),
        ],
    );
    policy.delete();

    assert_eq!(
        exit_code(&in_pod),
        137,
        "cat /etc/shadow in the pod is killed"
    );
    assert!(in_pod.stdout.is_empty(), "no byte of /etc/shadow is read");
    assert_eq!(
        exit_code(&host_write),
        0,
        "a host write under /etc is allowed: {}",
        String::from_utf8_lossy(&host_write.stderr)
    );
    assert_eq!(read_text(Path::new(host_file)), "original\nhost\n");
    assert_eq!(
        exit_code(&host_read),
        0,
        "a host read of /etc/shadow is allowed"
    );
}

#[test]
fn a_pod_selector_policy_follows_kubectl_label_both_ways() {
    let mut a = agent();
    let c = cluster();
    let xwing = FakePod::running(c, "default", "xwing");
    xwing.wait_until_known(&mut a);
    let policy = c.apply(
        None,
        &read_text(&fixture(
            "k8s-pod-selector-guarded-deny-cat-open-eperm.yaml",
        )),
    );
    wait_enabled(&a, "k8s-pod-selector-guard");
    assert_eq!(pod_cat(&xwing, SELECTOR_TARGET), 0, "not labelled: allowed");

    xwing.label("lsm-vmtest/guarded=true");
    wait_until("the label to select the pod", POLICY_TIMEOUT, || {
        pod_cat(&xwing, SELECTOR_TARGET) == 1
    });
    assert_eq!(
        host_cat(SELECTOR_TARGET),
        0,
        "a pod selector never selects host processes"
    );

    xwing.label("lsm-vmtest/guarded-");
    wait_until(
        "the removed label to release the pod",
        POLICY_TIMEOUT,
        || pod_cat(&xwing, SELECTOR_TARGET) == 0,
    );
    policy.delete();
}

#[test]
fn a_process_started_in_a_pod_cgroup_before_the_status_has_its_container_id_is_in_scope_from_its_first_exec()
 {
    let mut a = agent();
    let c = cluster();
    let policy = c.apply(
        Some("default"),
        &read_text(&quickstart("file_monitoring_enforce.yaml")),
    );
    wait_enabled(&a, "file-monitoring-filtered");
    // Admitted, sandbox running, the agent has seen the Pod: no container ID anywhere yet.
    let xwing = FakePod::create(c, "default", "xwing");
    xwing.wait_until_known(&mut a);
    assert_eq!(
        kubectl_get(c, "default", "pod/xwing", "{.status.containerStatuses}"),
        "",
        "the status has no container yet"
    );

    xwing.start_container();
    let first = xwing.run("/usr/bin/cat", &["/etc/shadow"]);
    a.expect_lines_from(
        "default/xwing",
        &[
            "🚀 process | /usr/bin/cat /etc/shadow".into(),
            "💥 exit    | /usr/bin/cat /etc/shadow SIGKILL".into(),
        ],
    );
    xwing.report_running();
    let after_status = xwing.run("/usr/bin/cat", &["/etc/shadow"]);
    policy.delete();

    assert_eq!(
        exit_code(&first),
        137,
        "the container's first exec, before any containerID, is in scope"
    );
    assert!(first.stdout.is_empty(), "no byte of /etc/shadow is read");
    assert_eq!(
        exit_code(&after_status),
        137,
        "and stays so after the status"
    );
}

#[test]
fn editing_a_namespaced_policy_object_changes_enforcement_in_the_pod_without_a_gap_and_deleting_it_lifts_it()
 {
    let mut a = agent();
    let c = cluster();
    let xwing = FakePod::running(c, "default", "xwing");
    xwing.wait_until_known(&mut a);
    let v1 = read_text(&fixture(
        "k8s-guard-namespaced-deny-cat-open-of-k8s-target-eperm-without-event.yaml",
    ));
    let policy = c.apply(Some("default"), &v1);
    wait_enabled(&a, "k8s-guard-ns");
    assert_eq!(pod_cat(&xwing, TARGET_A), 1, "applied: denied in the pod");
    assert_eq!(
        pod_cat(&xwing, TARGET_B),
        0,
        "the first version does not name B"
    );
    assert_eq!(host_cat(TARGET_A), 0, "host processes are out of scope");

    let (leaks, attempts) = forbidden_reads_by(
        || pod_cat(&xwing, TARGET_A),
        || {
            c.reapply(&policy, &edited(&v1));
            wait_until("the edit to enforce in the pod", POLICY_TIMEOUT, || {
                pod_cat(&xwing, TARGET_B) == 1
            });
        },
    );
    eprintln!("{attempts} forbidden opens in the pod attempted across the edit");
    assert!(attempts >= 5, "only {attempts} attempts across the edit");
    assert_eq!(
        leaks, 0,
        "a forbidden open in the pod succeeded across the edit"
    );
    assert_eq!(
        host_cat(TARGET_B),
        0,
        "the edit does not reach host processes"
    );

    policy.delete();
    wait_unlisted(&a, "k8s-guard-ns");
    assert_eq!(
        pod_cat(&xwing, TARGET_A),
        0,
        "deleted: readable in the pod again"
    );
}

#[test]
fn getevents_pods_and_namespace_filters_show_only_the_selected_pods_events() {
    let mut a = agent();
    let c = cluster();
    let xwing = FakePod::running(c, "default", "xwing");
    let tiefighter = FakePod::running(c, "default", "tiefighter");
    let deathstar = FakePod::running(c, OTHER_NS, "deathstar");
    for pod in [&xwing, &tiefighter, &deathstar] {
        pod.wait_until_known(&mut a);
    }
    let by_pod = a.stream(&["--pods", "xwing"]);
    let by_ns = a.stream(&["--namespace", "default"]);
    let tag = |what: &str| format!("lsm-vmtest-filter-{what}");
    // Both streams are live once an exec in default/xwing shows up in them.
    for s in [&by_pod, &by_ns] {
        s.wait_for(
            "an exec in default/xwing",
            || {
                xwing.run("/usr/bin/true", &[&tag("live")]);
            },
            |l| l.ends_with(&tag("live")),
        );
    }
    let mark = a.mark();
    run(Path::new("/usr/bin/true"), &[&tag("host")]);
    tiefighter.run("/usr/bin/true", &[&tag("tiefighter")]);
    deathstar.run("/usr/bin/true", &[&tag("deathstar")]);
    xwing.run("/usr/bin/true", &[&tag("xwing")]);
    // Every exec is in the unfiltered stream, each with its own source: the filters below
    // have something to leave out.
    a.expect_lines(&[format!("🚀 process | /usr/bin/true {}", tag("xwing"))]);
    let all = a.lines_since(mark);
    for (what, source) in [
        ("host", None),
        ("tiefighter", Some("default/tiefighter")),
        ("deathstar", Some("lsm-vmtest-other/deathstar")),
    ] {
        let line = all
            .iter()
            .find(|l| l.ends_with(&tag(what)))
            .unwrap_or_else(|| panic!("no exec of {what} in the unfiltered stream: {all:#?}"));
        if let Some(source) = source {
            assert_eq!(compact_source(line), Some(source), "{line}");
        }
    }
    by_pod.wait_for("the last xwing exec", || {}, |l| l.ends_with(&tag("xwing")));
    by_ns.wait_for("the last xwing exec", || {}, |l| l.ends_with(&tag("xwing")));

    let pod_lines = by_pod.lines();
    let stray: Vec<&String> = pod_lines
        .iter()
        .filter(|l| compact_source(l) != Some("default/xwing"))
        .collect();
    assert!(stray.is_empty(), "--pods xwing showed: {stray:#?}");
    let ns_lines = by_ns.lines();
    let stray: Vec<&String> = ns_lines
        .iter()
        .filter(|l| !compact_source(l).is_some_and(|s| s.starts_with("default/")))
        .collect();
    assert!(stray.is_empty(), "--namespace default showed: {stray:#?}");
    assert!(
        ns_lines.iter().any(|l| l.ends_with(&tag("tiefighter"))),
        "--namespace default shows default/tiefighter's exec: {ns_lines:#?}"
    );
}

/// `resolvePathInContainer`: the policy's path names a file inside the selected pods'
/// containers, which the node does not have. The agent finds the container's root through
/// its process and attaches there; the file's calls in the pod are posted with the policy's
/// path and the pod. The same file run by a node process is filtered out by the pod
/// selector, and a node copy run in the pod is not the container's file. Once the container's
/// processes are gone the agent detaches (its log says so), and attaches again when the
/// container has a process again.
#[test]
fn a_uprobe_resolved_in_the_pods_container_posts_the_containers_calls_only() {
    const IN_CONTAINER: &str = "/lsm-vmtest-app/vmtest-uprobe";
    let mut a = agent();
    let c = cluster();
    let pod = FakePod::running(c, "default", "lsm-ric");
    pod.wait_until_known(&mut a);
    let mut root = ContainerRoot::new("lsm-ric");
    let on_node = root.install("vmtest-uprobe", IN_CONTAINER);
    let node_copy = scratch_dir("lsm-ric-node").join("vmtest-uprobe");
    fs::copy(bin("vmtest-uprobe"), &node_copy).expect("copying the helper");
    let root_dir = root.path().to_str().expect("utf-8").to_string();
    let chroot_run = |text: &str| pod.run("/usr/sbin/chroot", &[&root_dir, IN_CONTAINER, text]);
    // The container's long-running process, whose root the agent resolves the path in.
    let init = Reaped(
        pod.command("/usr/sbin/chroot")
            .args([root_dir.as_str(), "/bin/sleep", "600"])
            .spawn()
            .expect("spawning the container's process"),
    );

    let events = a.json_stream();
    let policy = c.apply(
        None,
        &read_text(&fixture("uprobe-in-each-alliance-container.yaml")),
    );
    wait_enabled(&a, "uprobe-in-alliance-containers");
    events.wait_for(
        "the uprobe event of the container's call",
        || {
            let out = chroot_run("lsm-vmtest-ric-pod");
            assert_eq!(exit_code(&out), 0, "{out:?}");
        },
        |l| l.contains("\"process_uprobe\"") && l.contains("lsm-vmtest-ric-pod"),
    );
    let node_run = run(&on_node, &["lsm-vmtest-ric-node-process"]);
    let copy_run = pod.run(
        node_copy.to_str().expect("utf-8"),
        &["lsm-vmtest-ric-node-file"],
    );
    let after = chroot_run("lsm-vmtest-ric-after");
    events.expect("the event of the call after them", |l| {
        l.contains("\"process_uprobe\"") && l.contains("lsm-vmtest-ric-after")
    });
    for out in [&node_run, &copy_run, &after] {
        assert_eq!(exit_code(out), 0, "{out:?}");
    }
    let lines = events.lines();
    let line = lines
        .iter()
        .find(|l| l.contains("\"process_uprobe\"") && l.contains("lsm-vmtest-ric-pod"))
        .expect("seen above");
    for want in [
        format!("\"path\":\"{IN_CONTAINER}\""),
        "\"symbol\":\"lsm_vmtest_uprobe_target\"".to_string(),
        "\"policy_name\":\"uprobe-in-alliance-containers\"".to_string(),
        "\"name\":\"lsm-ric\"".to_string(),
    ] {
        assert!(line.contains(&want), "{want} in {line}");
    }
    for text in ["lsm-vmtest-ric-node-process", "lsm-vmtest-ric-node-file"] {
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("\"process_uprobe\"") && l.contains(text)),
            "{text} posted nothing: {lines:#?}"
        );
    }

    // The container's processes are gone: the agent detaches from its file (it looks every
    // 2 s), and attaches again when the container has a process again.
    drop(init);
    let log = results_dir().join("agent.log");
    let detached = format!("uprobe {IN_CONTAINER}:lsm_vmtest_uprobe_target: detached from file");
    wait_until(
        "the agent to detach from the gone container's file",
        POLICY_TIMEOUT,
        || fs::read_to_string(&log).is_ok_and(|t| t.contains(&detached)),
    );
    let _again = Reaped(
        pod.command("/usr/sbin/chroot")
            .args([root_dir.as_str(), "/bin/sleep", "600"])
            .spawn()
            .expect("spawning the container's next process"),
    );
    events.wait_for(
        "the event of a call after the container's process came back",
        || {
            chroot_run("lsm-vmtest-ric-back");
        },
        |l| l.contains("\"process_uprobe\"") && l.contains("lsm-vmtest-ric-back"),
    );
    policy.delete();
    wait_unlisted(&a, "uprobe-in-alliance-containers");
}
