use super::*;

fn fixture(text: &str) -> Pod {
    serde_yaml::from_str(text).expect("fixture is a Pod")
}

fn info(text: &str) -> PodInfo {
    pod_info(&fixture(text)).expect("converts")
}

const DEPLOYMENT: &str = include_str!("../testdata/pod-deployment.yaml");
const STATIC: &str = include_str!("../testdata/pod-static-mirror.yaml");
const CRONJOB: &str = include_str!("../testdata/pod-cronjob.yaml");
const BARE: &str = include_str!("../testdata/pod-bare.yaml");
const DAEMONSET: &str = include_str!("../testdata/pod-daemonset.yaml");
const REPLICASET: &str = include_str!("../testdata/pod-replicaset-no-hash.yaml");

#[test]
fn a_deployment_pod_carries_identity_labels_and_its_deployment() {
    let p = info(DEPLOYMENT);
    assert_eq!(p.uid, "7d3f1c2a-5b6e-4f70-8a9b-0c1d2e3f4a5b");
    assert_eq!(
        (p.namespace.as_str(), p.name.as_str()),
        ("default", "deathstar-6f87496d7b-x2x9q")
    );
    assert_eq!(p.labels.get("org").map(String::as_str), Some("empire"));
    assert_eq!(
        p.annotations.get("example.com/note").map(String::as_str),
        Some("kept")
    );
    assert_eq!(
        (p.workload.as_str(), p.workload_kind.as_str()),
        ("deathstar", "Deployment")
    );
    assert_eq!(p.static_hash, None);
}

#[test]
fn containers_join_spec_and_status_in_init_regular_order() {
    let p = info(DEPLOYMENT);
    let names: Vec<&str> = p.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["init-db", "deathstar", "sidecar"]);
    let main = p.container_by_name("deathstar").expect("main");
    assert_eq!(
        main.id.as_deref(),
        Some("b".repeat(64).as_str()),
        "runtime prefix stripped"
    );
    assert_eq!(
        main.status_id,
        Some(format!("containerd://{}", "b".repeat(64))),
        "kept as reported for events"
    );
    assert_eq!(main.image, "quay.io/cilium/starwars:v2.1");
    assert!(main.image_id.starts_with("quay.io/cilium/starwars@sha256:"));
    let started = main.started_at.expect("running");
    let secs = started
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs();
    assert_eq!(secs, 1_714_558_830, "2024-05-01T10:20:30Z");
    let init = p.container_by_name("init-db").expect("init");
    assert_eq!(init.id.as_deref(), Some("a".repeat(64).as_str()));
    assert_eq!(init.started_at, None, "terminated, not running");
    assert_eq!(
        init.image, "docker.io/library/busybox:1.36",
        "status image wins"
    );
    let waiting = p.container_by_name("sidecar").expect("sidecar");
    assert_eq!(waiting.id, None, "no ID before the runtime creates it");
    assert_eq!(waiting.status_id, None);
    assert_eq!(waiting.image, "envoyproxy/envoy:v1.30");
}

#[test]
fn a_pod_without_status_lists_its_spec_containers_without_ids() {
    let p = info(BARE);
    assert_eq!(p.containers.len(), 1);
    assert_eq!(p.containers[0].name, "spaceship");
    assert_eq!(p.containers[0].image, "quay.io/cilium/json-mock:v1.3.8");
    assert_eq!(p.containers[0].id, None);
}

#[test]
fn a_pod_without_owner_is_its_own_workload() {
    let p = info(BARE);
    assert_eq!(
        (p.workload.as_str(), p.workload_kind.as_str()),
        ("xwing", "Pod")
    );
}

#[test]
fn a_static_pod_mirror_keeps_its_config_hash_and_is_its_own_workload() {
    let p = info(STATIC);
    assert_eq!(
        p.static_hash.as_deref(),
        Some("8f3e0b9d2c7a41e6b5d4c3a2918f7e6d")
    );
    assert_eq!(p.cgroup_uid(), "8f3e0b9d2c7a41e6b5d4c3a2918f7e6d");
    // No generated name: the Node owner is not taken as a workload.
    assert_eq!(
        (p.workload.as_str(), p.workload_kind.as_str()),
        ("etcd-node-1", "Pod")
    );
    assert_eq!(
        p.containers[0].id.as_deref(),
        Some("c".repeat(64).as_str()),
        "cri-o:// stripped too"
    );
}

#[test]
fn a_cronjob_pod_names_its_cronjob() {
    let p = info(CRONJOB);
    assert_eq!(
        (p.workload.as_str(), p.workload_kind.as_str()),
        ("nightly-backup", "CronJob")
    );
}

#[test]
fn the_controller_owner_is_the_workload_not_the_first_owner() {
    let p = info(DAEMONSET);
    assert_eq!(
        (p.workload.as_str(), p.workload_kind.as_str()),
        ("fluentd", "DaemonSet")
    );
}

#[test]
fn a_replicaset_without_template_hash_stays_a_replicaset() {
    let p = info(REPLICASET);
    assert_eq!(
        (p.workload.as_str(), p.workload_kind.as_str()),
        ("web-rs", "ReplicaSet")
    );
}

#[test]
fn cron_job_names_need_8_to_10_digits() {
    assert_eq!(cron_job_name("a-12345678"), Some("a"));
    assert_eq!(cron_job_name("a-b-1234567890"), Some("a-b"));
    assert_eq!(cron_job_name("a-1234567"), None);
    assert_eq!(cron_job_name("a-12345678901"), None);
    assert_eq!(cron_job_name("a-1234567x"), None);
    assert_eq!(cron_job_name("-12345678"), None);
    assert_eq!(cron_job_name("12345678"), None);
}

#[test]
fn a_pod_without_uid_is_not_converted() {
    let mut pod = fixture(BARE);
    pod.metadata.uid = None;
    assert_eq!(pod_info(&pod), None);
    let mut pod = fixture(BARE);
    pod.metadata.namespace = Some(String::new());
    assert_eq!(pod_info(&pod), None);
}

#[test]
fn runtime_prefixes_are_stripped() {
    assert_eq!(strip_runtime_prefix("containerd://abc"), Some("abc"));
    assert_eq!(strip_runtime_prefix("docker://abc"), Some("abc"));
    assert_eq!(strip_runtime_prefix("abc"), Some("abc"));
    assert_eq!(strip_runtime_prefix("containerd://"), None);
    assert_eq!(strip_runtime_prefix(""), None);
}
