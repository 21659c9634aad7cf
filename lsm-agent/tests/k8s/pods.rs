//! The pod watcher against the API server: only this node's pods, the initial list, a status
//! patch with the container ID (the kubelet's part, played here), a label change, a delete.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use lsm_agent::k8s::identity::{IdentityStore, PodEvent};
use lsm_agent::k8s::pods::watch_pods;
use serde_json::json;
use tokio::sync::mpsc;

use crate::cluster::{cluster, recv_until};

const NODE: &str = "node-pods";
const NS: &str = "pods-test";
const CONTAINER_ID: &str = "5f0e1d2c3b4a59687766554433221100ffeeddccbbaa99887766554433221100";

fn pod(fixture: &str, node: &str) -> Pod {
    serde_yaml::from_str(&fixture.replace("NODE", node)).expect("pod fixture")
}

fn applied<'a>(e: &'a PodEvent, name: &str) -> Option<&'a lsm_agent::k8s::identity::PodInfo> {
    match e {
        PodEvent::Applied(p) if p.name == name => Some(p),
        _ => None,
    }
}

#[tokio::test]
async fn the_pod_watcher_follows_this_nodes_pods_only() {
    let c = cluster();
    c.kubectl_ok(&["create", "namespace", NS], None);
    let admin = c.admin_client().await;
    let pods: Api<Pod> = Api::namespaced(admin, NS);
    let pp = PostParams::default();
    let deathstar = pods
        .create(&pp, &pod(include_str!("fixtures/pod-deathstar.yaml"), NODE))
        .await
        .expect("create deathstar");
    let tie = pods
        .create(
            &pp,
            &pod(
                include_str!("fixtures/pod-tiefighter.yaml"),
                "node-elsewhere",
            ),
        )
        .await
        .expect("create tiefighter");

    // The watcher runs with the agent's ServiceAccount.
    let (tx, mut rx) = mpsc::channel(64);
    let agent = c.agent_client().await;
    let watcher = tokio::spawn(async move { watch_pods(agent, NODE, tx).await });
    let mut seen = Vec::new();
    let mut store = IdentityStore::new();

    // The initial list: the existing pod of this node, then Synced.
    let i = recv_until(&mut rx, &mut seen, "Synced", |e| {
        matches!(e, PodEvent::Synced)
    })
    .await;
    let listed: Vec<&PodEvent> = seen[..i].iter().collect();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let ds = applied(listed[0], "deathstar-6f87496d7b-x2x9q").expect("deathstar listed");
    assert_eq!(Some(&ds.uid), deathstar.metadata.uid.as_ref());
    assert_eq!(
        (ds.workload.as_str(), ds.workload_kind.as_str()),
        ("deathstar", "Deployment")
    );
    for e in seen.drain(..) {
        store.apply(e);
    }

    // A new pod: known (by UID) before any container ID exists.
    let xwing = pods
        .create(&pp, &pod(include_str!("fixtures/pod-xwing.yaml"), NODE))
        .await
        .expect("create xwing");
    let uid = xwing.metadata.uid.clone().expect("uid");
    let i = recv_until(&mut rx, &mut seen, "xwing added", |e| {
        applied(e, "xwing").is_some()
    })
    .await;
    let added = applied(&seen[i], "xwing").expect("xwing");
    assert_eq!(added.namespace, NS);
    assert_eq!(added.containers[0].id, None);
    store.apply(seen[i].clone());
    let cgroup = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{CONTAINER_ID}.scope",
        uid.replace('-', "_")
    );
    let id = store
        .resolve_cgroup(&cgroup)
        .expect("the pod's cgroup resolves before its status");
    assert_eq!((id.pod.name.as_str(), id.container), ("xwing", None));

    // The kubelet reports the running container.
    let status: serde_json::Value = serde_json::from_str(
        &include_str!("fixtures/status-running.json").replace("CONTAINER_ID", CONTAINER_ID),
    )
    .expect("status patch");
    pods.patch_status("xwing", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status patch");
    let i = recv_until(&mut rx, &mut seen, "xwing's container ID", |e| {
        applied(e, "xwing").is_some_and(|p| p.containers[0].id.is_some())
    })
    .await;
    let change = store.apply(seen[i].clone()).expect("a change");
    assert_eq!(change.containers_added(), vec![CONTAINER_ID]);
    let id = store.resolve_cgroup(&cgroup).expect("resolves");
    let container = id.container.expect("the container is known now");
    assert_eq!(container.name, "spaceship");
    assert!(container.started_at.is_some());
    assert_eq!(
        store.container(CONTAINER_ID).map(|(p, _)| p.uid.as_str()),
        Some(uid.as_str())
    );

    // A label change.
    let relabel = json!({"metadata": {"labels": {"class": "xwing-mk2"}}});
    pods.patch("xwing", &PatchParams::default(), &Patch::Merge(&relabel))
        .await
        .expect("label patch");
    let i = recv_until(&mut rx, &mut seen, "xwing relabelled", |e| {
        applied(e, "xwing")
            .is_some_and(|p| p.labels.get("class").map(String::as_str) == Some("xwing-mk2"))
    })
    .await;
    let change = store.apply(seen[i].clone()).expect("a change");
    assert!(change.labels_changed());

    // Deleted (no kubelet to finish a graceful delete: immediately).
    pods.delete("xwing", &DeleteParams::default().grace_period(0))
        .await
        .expect("delete");
    let i = recv_until(
        &mut rx,
        &mut seen,
        "xwing deleted",
        |e| matches!(e, PodEvent::Deleted { uid: u } if *u == uid),
    )
    .await;
    store.apply(seen[i].clone());
    assert!(store.pod(&uid).is_none());
    assert!(store.container(CONTAINER_ID).is_none());

    let tie_uid = tie.metadata.uid.expect("uid");
    assert!(
        !seen.iter().any(|e| match e {
            PodEvent::Applied(p) => p.uid == tie_uid,
            PodEvent::Deleted { uid } => *uid == tie_uid,
            PodEvent::Synced => false,
        }),
        "a pod of another node was reported: {seen:#?}"
    );
    watcher.abort();
}
