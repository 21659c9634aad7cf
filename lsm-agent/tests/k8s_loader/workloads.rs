//! The workloads (this node's pods joined with their cgroups) against the API server, with a
//! directory tree standing in for cgroupfs: scoped policies applied with kubectl load and
//! cover the cgroups of the pods they select; a `podSelector` follows `kubectl label` both
//! ways; a namespaced policy covers its namespace's pods only; a deleted pod leaves the
//! workloads; `nodeSelector` follows this Node's labels.
//!
//! The checks are on the compiled image the owner enforces (its `cgroups` entries): no kernel.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use lsm_agent::agent::{AgentHandle, PolicyState};
use lsm_agent::k8s::workloads::{Options, PodIndex, watch_and_send};
use lsm_agent::policy::compile::MapImage;
use lsm_shared::CGROUP_HOST;
use tokio::task::JoinHandle;

use crate::cluster::cluster;
use crate::loader::{Recorder, apply, covers, start_agent, start_loader_on, until};

const NODE: &str = "node-workloads";
const NS: &str = "workloads-test";
const OTHER_NS: &str = "workloads-other";
const POD_SELECTED: &str = "k8s-workloads-pod-selected";
const NAMESPACED: &str = "k8s-workloads-namespaced";

/// Creates this test's Node once per test binary (see `loader::node`).
fn node() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| apply(include_str!("fixtures/node-workloads.yaml")));
}

/// Polls the enforced image until `pred` holds; returns how long that took.
async fn until_image(
    agent: &AgentHandle,
    what: &str,
    pred: impl Fn(&MapImage) -> bool,
) -> Duration {
    let start = Instant::now();
    let deadline = start + Duration::from_secs(30);
    loop {
        let img = agent.image();
        if pred(&img) {
            return start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; cgroups: {:#?}",
            img.cgroups
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn create_pod(namespace: &str, name: &str) -> String {
    let c = cluster();
    let pod = include_str!("fixtures/workloads-pod.yaml")
        .replace("NODE", NODE)
        .replace("NAME", name);
    c.kubectl_ok(
        &["apply", "-n", namespace, "--validate=false", "-f", "-"],
        Some(&pod),
    );
    c.kubectl_ok(
        &[
            "get",
            "pod",
            name,
            "-n",
            namespace,
            "-o",
            "jsonpath={.metadata.uid}",
        ],
        None,
    )
}

/// Makes the pod's cgroup as the kubelet's systemd driver names it; returns its id.
fn mkdir_pod_cgroup(root: &Path, uid: &str) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let dir = root.join(format!(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        uid.replace('-', "_")
    ));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::metadata(&dir).expect("stat").ino()
}

/// The workloads of an agent on [`NODE`] whose cgroup tree is `root`. The rescan is far
/// off, so what the test sees within its deadlines came through inotify.
fn start_workloads(agent: &AgentHandle, root: PathBuf, index: PodIndex) -> JoinHandle<()> {
    let agent = agent.clone();
    tokio::spawn(async move {
        let client = cluster().agent_client().await;
        let opts = Options {
            cgroup_root: root,
            rescan: Duration::from_secs(3600),
            ..Options::default()
        };
        let _ = watch_and_send(
            client,
            NODE.into(),
            agent,
            index,
            opts,
            tokio::sync::watch::channel(false).0,
        )
        .await;
    })
}

#[tokio::test]
async fn scoped_policies_cover_the_pods_they_select_and_follow_their_labels() {
    node();
    let c = cluster();
    c.kubectl_ok(&["create", "namespace", NS], None);
    c.kubectl_ok(&["create", "namespace", OTHER_NS], None);
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().join("cgroup");
    std::fs::create_dir_all(root.join("kubepods.slice/kubepods-besteffort.slice")).expect("mkdir");

    let recorder = Recorder::default();
    let agent = start_agent(&recorder).await;
    let loader = start_loader_on(&agent, NODE).await;
    let index = PodIndex::new(tmp.path().join("proc"));
    let workloads = start_workloads(&agent, root.clone(), index.clone());

    // The pods exist before their cgroups, as with a kubelet.
    let uid = create_pod(NS, "ywing");
    let other_uid = create_pod(OTHER_NS, "ywing");
    apply(include_str!("fixtures/workloads-namespaced.yaml"));
    apply(include_str!("fixtures/workloads-pod-selector.yaml"));
    for name in [NAMESPACED, POD_SELECTED] {
        until(&agent, name, &format!("{name} enforcing"), |p| {
            p.is_some_and(|p| p.state == PolicyState::Enabled)
        })
        .await;
    }

    let id = mkdir_pod_cgroup(&root, &uid);
    let other = mkdir_pod_cgroup(&root, &other_uid);
    let took = until_image(
        &agent,
        "the new pod cgroup in scope of the namespaced policy",
        |img| covers(img, NAMESPACED, id),
    )
    .await;
    eprintln!("pod cgroup created → enforced image: {took:?}");
    let img = agent.image();
    assert!(img.cgroups.contains_key(&other), "the other pod is listed");
    assert!(!covers(&img, NAMESPACED, other), "another namespace's pod");
    assert!(!covers(&img, NAMESPACED, CGROUP_HOST), "host processes");
    assert!(!covers(&img, POD_SELECTED, id), "not labelled yet");
    let pod = index.pod_of(id, 1).expect("the index knows the pod");
    assert_eq!((pod.namespace.as_str(), pod.name.as_str()), (NS, "ywing"));

    c.kubectl_ok(
        &["label", "pod", "ywing", "-n", NS, "lsm-agent-test=selected"],
        None,
    );
    until_image(&agent, "the labelled pod in scope", |img| {
        covers(img, POD_SELECTED, id)
    })
    .await;
    let img = agent.image();
    assert!(!covers(&img, POD_SELECTED, other) && !covers(&img, POD_SELECTED, CGROUP_HOST));
    c.kubectl_ok(
        &["label", "pod", "ywing", "-n", NS, "lsm-agent-test-"],
        None,
    );
    until_image(&agent, "the unlabelled pod out of scope", |img| {
        !covers(img, POD_SELECTED, id) && covers(img, NAMESPACED, id)
    })
    .await;

    // Deleted: its cgroup (still there, no kubelet removes it) is no pod's any more.
    c.kubectl_ok(
        &[
            "delete",
            "pod",
            "ywing",
            "-n",
            NS,
            "--grace-period=0",
            "--force",
        ],
        None,
    );
    until_image(&agent, "the deleted pod out of the workloads", |img| {
        !img.cgroups.contains_key(&id)
    })
    .await;
    assert!(agent.image().cgroups.contains_key(&other));

    c.kubectl_ok(&["delete", "tracingpolicy", POD_SELECTED], None);
    c.kubectl_ok(
        &["delete", "tracingpolicynamespaced", NAMESPACED, "-n", NS],
        None,
    );
    for name in [POD_SELECTED, NAMESPACED] {
        until(&agent, name, &format!("{name} gone"), |p| p.is_none()).await;
    }
    workloads.abort();
    loader.abort();
}

#[tokio::test]
async fn node_selector_follows_a_change_of_this_nodes_labels() {
    node();
    let c = cluster();
    let recorder = Recorder::default();
    let agent = start_agent(&recorder).await;
    let loader = start_loader_on(&agent, NODE).await;
    let name = "k8s-workloads-node-selected";
    let label = "lsm-agent-test/relabel";

    apply(include_str!("fixtures/workloads-node-selected.yaml"));
    until(&agent, name, "skipped: the node lacks the label", |p| {
        p.is_some_and(|p| p.state == PolicyState::Skipped)
    })
    .await;
    c.kubectl_ok(&["label", "node", NODE, &format!("{label}=yes")], None);
    until(&agent, name, "loaded once the node has the label", |p| {
        p.is_some_and(|p| p.state == PolicyState::Enabled)
    })
    .await;
    c.kubectl_ok(&["label", "node", NODE, &format!("{label}-")], None);
    until(&agent, name, "skipped again", |p| {
        p.is_some_and(|p| p.state == PolicyState::Skipped)
    })
    .await;
    c.kubectl_ok(&["delete", "tracingpolicy", name], None);
    until(&agent, name, "gone", |p| p.is_none()).await;
    loader.abort();
}
