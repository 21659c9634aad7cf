use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use lsm_shared::{CGROUP_HOST, HOOK_FILE_OPEN};

use super::*;
use crate::policy::compile::{CompileEnv, MapImage, compile_with};
use crate::policy::testutil::parse_ok;

const NAMESPACED: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/policies/namespaced-deny-passwd-open-in-default.yaml"
));
const POD_SELECTOR: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/policies/pod-selector-xwing-main-container-and-hosts.yaml"
));
const CLUSTER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/policies/deny-etc-passwd-open.yaml"
));

const KUBEPODS: u64 = 100;
const XWING_POD: u64 = 200;
const XWING_MAIN: u64 = 201;
const XWING_SIDECAR: u64 = 202;
const OTHER_NS_POD: u64 = 300;

fn pod(namespace: &str, name: &str, labels: &[(&str, &str)]) -> Arc<PodView> {
    Arc::new(PodView {
        namespace: namespace.into(),
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

fn node() -> Workloads {
    let xwing = pod("default", "xwing", &[("app", "xwing")]);
    let tiefighter = pod("empire", "tiefighter", &[("app", "xwing")]);
    let container = |pod: &Arc<PodView>, name: &str| CgroupOwner::Container {
        pod: pod.clone(),
        name: name.into(),
        image_id: String::new(),
    };
    Workloads {
        enabled: true,
        cgroups: BTreeMap::from([
            (KUBEPODS, CgroupOwner::PodParent),
            (XWING_POD, CgroupOwner::Pod(xwing.clone())),
            (XWING_MAIN, container(&xwing, "main")),
            (XWING_SIDECAR, container(&xwing, "sidecar")),
            (OTHER_NS_POD, CgroupOwner::Pod(tiefighter)),
        ]),
        dirs: BTreeMap::new(),
    }
}

fn compile(yaml: &str, workloads: Workloads) -> MapImage {
    let p = parse_ok(yaml);
    let env = CompileEnv {
        workloads,
        ..CompileEnv::default()
    };
    compile_with(&[(1, &p)], &MapImage::default(), &env).expect("compiles")
}

/// The selectors of the file_open hook listed for `cgroup`, or `None` without an entry.
fn listed(img: &MapImage, cgroup: u64) -> Option<u64> {
    img.cgroups
        .get(&cgroup)
        .map(|e| e.selectors[HOOK_FILE_OPEN as usize])
}

#[test]
fn a_namespaced_policy_applies_to_the_cgroups_of_its_namespace_pods_only() {
    let img = compile(NAMESPACED, node());
    let scoped = img.hook_cfg[&HOOK_FILE_OPEN].scoped;
    assert_ne!(scoped, 0);
    assert_eq!(listed(&img, XWING_POD), Some(scoped));
    assert_eq!(listed(&img, XWING_MAIN), Some(scoped));
    assert_eq!(listed(&img, XWING_SIDECAR), Some(scoped));
    assert_eq!(listed(&img, OTHER_NS_POD), Some(0));
    assert_eq!(listed(&img, CGROUP_HOST), Some(0), "host processes are out");
    assert_eq!(listed(&img, KUBEPODS), Some(0), "unknown pods are out");
}

#[test]
fn pod_container_and_host_selectors_combine_as_tetragon_does() {
    let img = compile(POD_SELECTOR, node());
    let scoped = img.hook_cfg[&HOOK_FILE_OPEN].scoped;
    assert_eq!(listed(&img, XWING_MAIN), Some(scoped));
    assert_eq!(listed(&img, XWING_SIDECAR), Some(0), "containerSelector");
    // The pod cgroup cannot stand for its containers when only some are selected.
    assert_eq!(listed(&img, XWING_POD), Some(0));
    assert_eq!(
        listed(&img, OTHER_NS_POD),
        Some(0),
        "a pod with no container listed"
    );
    assert_eq!(
        listed(&img, CGROUP_HOST),
        Some(scoped),
        "hostSelector: {{}}"
    );
}

#[test]
fn an_unscoped_policy_needs_no_cgroup_entries() {
    let img = compile(CLUSTER, node());
    assert_eq!(img.hook_cfg[&HOOK_FILE_OPEN].scoped, 0);
    assert!(img.cgroups.is_empty());
}

#[test]
fn without_kubernetes_a_namespaced_policy_applies_node_wide() {
    let img = compile(
        NAMESPACED,
        Workloads {
            enabled: false,
            ..node()
        },
    );
    assert_eq!(img.hook_cfg[&HOOK_FILE_OPEN].scoped, 0);
    assert!(img.cgroups.is_empty());
}

#[test]
fn a_label_change_moves_the_pod_in_and_out_of_a_pod_selector_policy() {
    let mut workloads = node();
    let relabelled = pod("default", "xwing", &[("app", "tiefighter")]);
    workloads.cgroups.insert(
        XWING_MAIN,
        CgroupOwner::Container {
            pod: relabelled,
            name: "main".into(),
            image_id: String::new(),
        },
    );
    let img = compile(POD_SELECTOR, workloads);
    assert_eq!(listed(&img, XWING_MAIN), Some(0));
    let img = compile(POD_SELECTOR, node());
    assert_ne!(listed(&img, XWING_MAIN), Some(0));
}

const IN_CONTAINER: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/policies/uprobe-in-each-alliance-container.yaml"
));

/// `org: alliance` on the xwing pod, whose containers are listed; every cgroup has a
/// directory named after its id.
fn alliance_node() -> Workloads {
    let mut w = node();
    w.dirs = w
        .cgroups
        .keys()
        .map(|id| (*id, PathBuf::from(format!("/cg/{id}"))))
        .collect();
    let xwing = pod("default", "xwing", &[("org", "alliance")]);
    for owner in w.cgroups.values_mut() {
        match owner {
            CgroupOwner::Pod(p) | CgroupOwner::Container { pod: p, .. } if p.name == "xwing" => {
                *p = xwing.clone();
            }
            _ => {}
        }
    }
    w
}

#[test]
fn a_uprobe_resolved_in_containers_lists_the_selected_pods_cgroups_for_the_loader() {
    let img = compile(IN_CONTAINER, alliance_node());
    let (&hook, _) = img.probes.iter().next().expect("one uprobe hook");
    assert_eq!(
        img.containers.get(&hook),
        Some(
            &[XWING_POD, XWING_MAIN, XWING_SIDECAR]
                .map(|id| PathBuf::from(format!("/cg/{id}")))
                .into()
        ),
        "the xwing pod's cgroups only: not the host, the other pod or kubepods"
    );
}

#[test]
fn a_uprobe_resolved_in_containers_attaches_nowhere_without_kubernetes() {
    let img = compile(
        IN_CONTAINER,
        Workloads {
            enabled: false,
            ..alliance_node()
        },
    );
    assert_eq!(img.containers.len(), 1);
    assert!(img.containers.values().all(|c| c.is_empty()));
}

#[test]
fn a_uprobe_on_the_node_has_no_container_list() {
    let yaml = IN_CONTAINER.replace("resolvePathInContainer: true", "");
    let img = compile(&yaml, alliance_node());
    assert!(img.containers.is_empty());
}
