//! The agent's TracingPolicy loader against the API server: objects applied with kubectl
//! become loaded policies of the agent (behind a recording map writer instead of the kernel),
//! are replaced without a gap, keep their previous version when a new one is broken, are
//! unloaded when deleted or gone from a re-list, and are listed but not enforced when not for
//! this node. Policies for some workloads load, scoped to them (never to host processes).
//!
//! Every test's loader sees every policy object of the shared API server, so the tests only
//! look at their own objects (names `k8s-loader-*`, entries under `/k8s-loader-test/`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lsm_agent::agent::{
    self, Agent, AgentHandle, CrdKind, MapWriter, PolicyState, PolicyStatus, Source,
};
use lsm_agent::bpf::BpfError;
use lsm_agent::k8s::loader::watch_and_load;
use lsm_agent::policy::{compile::MapImage, ir::HostNs, workloads::Workloads};
use tokio::task::JoinHandle;

use crate::cluster::cluster;

const NODE: &str = "node-policies";

/// Records every image the owner writes.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<MapImage>>>);

impl MapWriter for Recorder {
    fn apply(&mut self, img: &MapImage) -> Result<(), BpfError> {
        self.0.lock().expect("images").push(img.clone());
        Ok(())
    }
}

impl Recorder {
    pub fn images(&self) -> Vec<MapImage> {
        self.0.lock().expect("images").clone()
    }
}

/// Whether `img` holds a string entry containing `marker`.
pub fn has(img: &MapImage, marker: &str) -> bool {
    img.str_eq
        .keys()
        .any(|(_, _, v)| v.windows(marker.len()).any(|w| w == marker.as_bytes()))
}

/// An agent behind an owner, with the loader watching the API server as the agent's
/// ServiceAccount. Scoping is on, as in the agent with Kubernetes (no pod listed here).
async fn start(recorder: &Recorder) -> (AgentHandle, JoinHandle<()>) {
    let handle = start_agent(recorder).await;
    let loader = start_loader(&handle).await;
    (handle, loader)
}

/// The agent alone (no loader).
pub async fn start_agent(recorder: &Recorder) -> AgentHandle {
    let (owner, handle) = agent::owner(Agent::new(Box::new(recorder.clone()), HostNs::default()));
    tokio::spawn(owner.run());
    let scoping = Workloads {
        enabled: true,
        ..Default::default()
    };
    handle.set_workloads(scoping).await.expect("agent running");
    handle
}

async fn start_loader(agent: &AgentHandle) -> JoinHandle<()> {
    start_loader_on(agent, NODE).await
}

/// The loader of the agent of node `node`.
pub async fn start_loader_on(agent: &AgentHandle, node: &str) -> JoinHandle<()> {
    let client = cluster().agent_client().await;
    let agent = agent.clone();
    let node = node.to_string();
    tokio::spawn(async move {
        let _ = watch_and_load(client, node, agent, tokio::sync::watch::channel(false).0).await;
    })
}

pub fn apply(fixture: &str) {
    cluster().kubectl_ok(&["apply", "--validate=false", "-f", "-"], Some(fixture));
}

fn ours(status: &[PolicyStatus], name: &str) -> Option<PolicyStatus> {
    status
        .iter()
        .find(|p| p.name == name && matches!(p.source, Source::Kubernetes(_)))
        .cloned()
}

/// Polls the policy list until `pred` holds for the entry `name` (`None`: not listed).
pub async fn until(
    agent: &AgentHandle,
    name: &str,
    what: &str,
    pred: impl Fn(Option<&PolicyStatus>) -> bool,
) -> Option<PolicyStatus> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = agent.status().await.expect("agent running");
        let p = ours(&st, name);
        if pred(p.as_ref()) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; policies: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates this node once per test binary: the tests run in parallel, and two concurrent
/// `kubectl apply`s of a new object race (both try to create it, one gets AlreadyExists).
fn node() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| apply(include_str!("../k8s/fixtures/node.yaml")));
}

#[tokio::test]
async fn a_tracingpolicy_loads_is_replaced_gaplessly_keeps_its_version_when_broken_and_unloads_on_delete()
 {
    node();
    let recorder = Recorder::default();
    let (agent, loader) = start(&recorder).await;
    let name = "k8s-loader-test";
    let (v1, v2) = ("/k8s-loader-test/v1", "/k8s-loader-test/v2");

    apply(include_str!("fixtures/loader-v1.yaml"));
    let p = until(&agent, name, "v1 enforcing", |p| {
        p.is_some_and(|p| p.state == PolicyState::Enabled)
    })
    .await
    .expect("listed");
    assert!(has(&agent.image(), v1), "the enforced image has v1's entry");
    assert_eq!(p.namespace, "");
    assert!(
        matches!(&p.source, Source::Kubernetes(o) if o.kind == CrdKind::TracingPolicy && o.name == name && o.namespace.is_none())
    );

    apply(include_str!("fixtures/loader-v2.yaml"));
    until(&agent, name, "v2 enforcing", |_| has(&agent.image(), v2)).await;
    assert!(!has(&agent.image(), v1), "v1 is gone once v2 enforces");

    // A broken version: listed as an error at the object's position, v2 keeps enforcing.
    apply(include_str!("fixtures/loader-broken.yaml"));
    let p = until(&agent, name, "broken version reported", |p| {
        p.is_some_and(|p| p.state == PolicyState::Error)
    })
    .await
    .expect("listed");
    let error = p.error.expect("error text");
    assert!(
        error.contains("previous one enforcing")
            && error.contains("<TracingPolicy k8s-loader-test>:"),
        "{error}"
    );
    assert!(error.contains("Equals"), "{error}");
    assert!(
        has(&agent.image(), v2),
        "the previous version still enforces"
    );
    assert!(agent.load_errors().await.expect("agent")["kubernetes"] >= 1);

    cluster().kubectl_ok(&["delete", "tracingpolicy", name], None);
    until(&agent, name, "unloaded", |p| p.is_none()).await;
    assert!(!has(&agent.image(), v2) && !has(&agent.image(), v1));

    // Gapless: from v1's first image to the deletion, every image enforces v1 or v2, and the
    // switch to v2 is one write that no longer has v1.
    let images = recorder.images();
    let first = images.iter().position(|i| has(i, v1)).expect("v1 written");
    let last = images
        .iter()
        .rposition(|i| has(i, v1) || has(i, v2))
        .expect("v2 written");
    for (n, img) in images[first..=last].iter().enumerate() {
        assert!(
            has(img, v1) || has(img, v2),
            "image {n} after v1 enforces neither"
        );
    }
    let switch = images.iter().position(|i| has(i, v2)).expect("v2 written");
    assert!(has(&images[switch - 1], v1) && !has(&images[switch], v1));
    assert!(
        images.iter().all(|i| !has(i, "/k8s-loader-test/broken")),
        "nothing of the broken version reached the kernel"
    );
    loader.abort();
}

#[tokio::test]
async fn policies_not_for_this_node_are_listed_and_not_enforced_and_scoped_ones_spare_the_host() {
    node();
    let c = cluster();
    c.kubectl_ok(&["create", "namespace", "loader-test"], None);
    let recorder = Recorder::default();
    let (agent, loader) = start(&recorder).await;

    apply(include_str!("fixtures/loader-skipped.yaml"));
    let p = until(&agent, "k8s-loader-skipped", "skipped", |p| p.is_some())
        .await
        .expect("listed");
    assert_eq!(p.state, PolicyState::Skipped);
    assert!(p.error.expect("reason").contains(NODE));

    apply(include_str!("fixtures/loader-namespaced.yaml"));
    let p = until(
        &agent,
        "k8s-loader-namespaced",
        "namespaced enforcing",
        |p| p.is_some_and(|p| p.state == PolicyState::Enabled),
    )
    .await
    .expect("listed");
    assert_eq!(p.namespace, "loader-test");
    assert!(
        matches!(&p.source, Source::Kubernetes(o) if o.kind == CrdKind::TracingPolicyNamespaced)
    );
    assert!(has(&agent.image(), "/k8s-loader-test/namespaced"));
    assert!(!covers(
        &agent.image(),
        "k8s-loader-namespaced",
        lsm_shared::CGROUP_HOST
    ));

    apply(include_str!("fixtures/loader-pod-selector.yaml"));
    until(
        &agent,
        "k8s-loader-pod-selected",
        "pod-selected enforcing",
        |p| p.is_some_and(|p| p.state == PolicyState::Enabled),
    )
    .await;
    assert!(!covers(
        &agent.image(),
        "k8s-loader-pod-selected",
        lsm_shared::CGROUP_HOST
    ));

    for img in recorder.images() {
        assert!(
            !has(&img, "/k8s-loader-test/skipped"),
            "a skipped policy reached the kernel"
        );
    }
    c.kubectl_ok(
        &[
            "delete",
            "tracingpolicy",
            "k8s-loader-skipped",
            "k8s-loader-pod-selected",
        ],
        None,
    );
    c.kubectl_ok(
        &[
            "delete",
            "tracingpolicynamespaced",
            "k8s-loader-namespaced",
            "-n",
            "loader-test",
        ],
        None,
    );
    for name in [
        "k8s-loader-skipped",
        "k8s-loader-pod-selected",
        "k8s-loader-namespaced",
    ] {
        until(&agent, name, &format!("{name} gone"), |p| p.is_none()).await;
    }
    loader.abort();
}

/// Whether some selector of policy `name` applies to the processes of cgroup `id` (an id
/// without entry: none does; scoped selectors only, which is what these policies have).
pub fn covers(img: &MapImage, name: &str, id: u64) -> bool {
    let Some(entry) = img.cgroups.get(&id) else {
        return false;
    };
    img.slots.iter().any(|(&idx, slot)| {
        let (hook, bit) = (
            idx / lsm_shared::MAX_SELECTORS,
            idx % lsm_shared::MAX_SELECTORS,
        );
        slot.policy_name == name
            && entry
                .selectors
                .get(hook as usize)
                .is_some_and(|m| m & (1 << bit) != 0)
    })
}

#[tokio::test]
async fn a_relist_unloads_policies_deleted_while_no_watcher_ran() {
    node();
    let recorder = Recorder::default();
    let (agent, loader) = start(&recorder).await;
    apply(include_str!("fixtures/loader-kept.yaml"));
    apply(include_str!("fixtures/loader-vanished.yaml"));
    for name in ["k8s-loader-kept", "k8s-loader-vanished"] {
        until(&agent, name, &format!("{name} enforcing"), |p| {
            p.is_some_and(|p| p.state == PolicyState::Enabled)
        })
        .await;
    }

    // The watcher stops (as after a lost connection); the object is deleted meanwhile.
    loader.abort();
    let _ = loader.await;
    cluster().kubectl_ok(&["delete", "tracingpolicy", "k8s-loader-vanished"], None);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        has(&agent.image(), "/k8s-loader-test/vanished"),
        "nothing unloads it without a watcher"
    );

    let loader = start_loader(&agent).await;
    until(
        &agent,
        "k8s-loader-vanished",
        "vanished unloaded after the re-list",
        |p| p.is_none(),
    )
    .await;
    assert!(!has(&agent.image(), "/k8s-loader-test/vanished"));
    assert!(
        has(&agent.image(), "/k8s-loader-test/kept"),
        "the listed one stays"
    );
    cluster().kubectl_ok(&["delete", "tracingpolicy", "k8s-loader-kept"], None);
    until(&agent, "k8s-loader-kept", "kept deleted", |p| p.is_none()).await;
    loader.abort();
}
