//! Many pods at once, for benchmarks: [`super::FakePod`] makes several kubectl round trips
//! per pod (about a second each under TCG), which 1,000 pods cannot afford. A fleet is created
//! with a few `kubectl create` of generated `List`s run side by side (one process per vCPU)
//! and its cgroups with plain `mkdir`s: each pod's cgroup and one container scope in it, laid
//! out as [`super::cgroup`] lays out a fake pod's. No container is reported in the status: the
//! pod's cgroup entry stands for its containers.
//!
//! Dropping the fleet removes its cgroups and deletes its pods and namespaces, also when the
//! benchmark panics halfway through creating it.

use std::{
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use serde_yaml::{Mapping, Value};

use super::{
    cgroup,
    cluster::{Cluster, NODE, k8s_fixture},
};

/// One pod of a fleet.
#[derive(Debug, Clone)]
pub struct FleetPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub pod_cgroup: PathBuf,
    /// The app container's scope, `cri-containerd-<64 hex>.scope`.
    pub container_cgroup: PathBuf,
}

impl FleetPod {
    /// `program args…` as a process of the pod's container (it joins the container's cgroup
    /// before its first exec).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args);
        cgroup::place_in(&mut cmd, &self.container_cgroup);
        cmd
    }
}

/// How long the parts of [`Fleet::create`] took.
#[derive(Debug, Clone, Copy)]
pub struct FleetTimings {
    /// The `kubectl create`s, from the first start to the last exit.
    pub api: Duration,
    /// Every pod and container cgroup's `mkdir`.
    pub cgroups: Duration,
}

/// Pods bound to [`NODE`] in some namespaces, with their cgroups.
pub struct Fleet<'c> {
    cluster: &'c Cluster,
    namespaces: Vec<String>,
    pub pods: Vec<FleetPod>,
    /// Every cgroup made, in creation order (removed in reverse).
    made: Vec<PathBuf>,
    torn_down: bool,
}

/// Creates the namespaces that do not exist yet, in one `kubectl apply`.
pub fn ensure_namespaces(cluster: &Cluster, names: &[String]) {
    let items = names
        .iter()
        .map(|n| {
            let mut meta = Mapping::new();
            meta.insert("name".into(), n.as_str().into());
            object("Namespace", meta, None)
        })
        .collect();
    cluster.kubectl_ok(
        &["apply", "--validate=false", "-o", "name", "-f", "-"],
        Some(&list(items)),
    );
}

fn object(kind: &str, metadata: Mapping, spec: Option<Value>) -> Value {
    let mut m = Mapping::new();
    m.insert("apiVersion".into(), "v1".into());
    m.insert("kind".into(), kind.into());
    m.insert("metadata".into(), Value::Mapping(metadata));
    if let Some(spec) = spec {
        m.insert("spec".into(), spec);
    }
    Value::Mapping(m)
}

fn list(items: Vec<Value>) -> String {
    let mut m = Mapping::new();
    m.insert("apiVersion".into(), "v1".into());
    m.insert("kind".into(), "List".into());
    m.insert("items".into(), Value::Sequence(items));
    serde_yaml::to_string(&Value::Mapping(m)).expect("a List serializes")
}

/// The pod of `vm-tests/fixtures/k8s/pod.yaml` named `name` in `namespace`.
fn pod_object(template: &str, namespace: &str, name: &str) -> Value {
    let text = template.replace("NAME", name).replace("NODE", NODE);
    let mut pod: Value = serde_yaml::from_str(&text).expect("pod fixture is YAML");
    pod["metadata"]["namespace"] = namespace.into();
    pod
}

impl<'c> Fleet<'c> {
    /// `per_namespace` pods named `bench-<n>` in each of `namespaces` (created if missing),
    /// with `parallel` kubectl processes; then each pod's cgroup and container scope.
    pub fn create(
        cluster: &'c Cluster,
        namespaces: &[String],
        per_namespace: usize,
        parallel: usize,
    ) -> (Fleet<'c>, FleetTimings) {
        ensure_namespaces(cluster, namespaces);
        // The guard exists before anything is created: a panic from here on cleans up.
        let mut fleet = Fleet {
            cluster,
            namespaces: namespaces.to_vec(),
            pods: Vec::new(),
            made: Vec::new(),
            torn_down: false,
        };
        let template = std::fs::read_to_string(k8s_fixture("pod.yaml")).expect("pod fixture");
        let groups: Vec<String> = namespaces
            .chunks(namespaces.len().div_ceil(parallel.max(1)))
            .map(|chunk| {
                list(
                    chunk
                        .iter()
                        .flat_map(|ns| {
                            (0..per_namespace)
                                .map(|i| pod_object(&template, ns, &format!("bench-{i}")))
                        })
                        .collect(),
                )
            })
            .collect();

        let start = Instant::now();
        let outputs: Vec<String> = thread::scope(|s| {
            let handles: Vec<_> = groups
                .iter()
                .map(|g| {
                    s.spawn(move || {
                        cluster.kubectl_ok(
                            &[
                                "create",
                                "--validate=false",
                                "-f",
                                "-",
                                "-o",
                                "jsonpath={.metadata.namespace} {.metadata.name} {.metadata.uid}{\"\\n\"}",
                            ],
                            Some(g),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("kubectl create thread"))
                .collect()
        });
        let api = start.elapsed();
        for line in outputs.iter().flat_map(|o| o.lines()) {
            let [namespace, name, uid] = line.split_whitespace().collect::<Vec<_>>()[..] else {
                panic!("odd line from kubectl create: {line:?}");
            };
            assert_eq!(uid.len(), 36, "pod {namespace}/{name}: odd uid {uid:?}");
            let hex: String = uid.chars().filter(|c| *c != '-').collect();
            let pod_cgroup = cgroup::pod_cgroup(uid);
            fleet.pods.push(FleetPod {
                namespace: namespace.to_string(),
                name: name.to_string(),
                uid: uid.to_string(),
                container_cgroup: cgroup::container_cgroup(
                    &pod_cgroup,
                    &format!("{hex}{}", "c".repeat(32)),
                ),
                pod_cgroup,
            });
        }
        assert_eq!(
            fleet.pods.len(),
            namespaces.len() * per_namespace,
            "kubectl create reported another number of pods"
        );

        // The QoS slices a node has anyway, before the timed part.
        if let Some(qos) = fleet.pods.first().and_then(|p| p.pod_cgroup.parent()) {
            cgroup::create(qos);
        }
        let start = Instant::now();
        for i in 0..fleet.pods.len() {
            for dir in [
                fleet.pods[i].pod_cgroup.clone(),
                fleet.pods[i].container_cgroup.clone(),
            ] {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
                fleet.made.push(dir);
            }
        }
        let cgroups = start.elapsed();
        (fleet, FleetTimings { api, cgroups })
    }

    fn teardown(&mut self) -> Vec<String> {
        if std::mem::replace(&mut self.torn_down, true) {
            return Vec::new();
        }
        let mut errors = Vec::new();
        for dir in self.made.drain(..).rev() {
            if let Err(e) = cgroup::remove(&dir) {
                errors.push(e);
            }
        }
        for ns in &self.namespaces {
            // One DELETE of the collection, at once: no kubelet confirms a graceful deletion.
            let out = self.cluster.kubectl(
                &[
                    "delete",
                    "--raw",
                    &format!("/api/v1/namespaces/{ns}/pods?gracePeriodSeconds=0"),
                ],
                None,
            );
            if !out.status.success() {
                errors.push(format!(
                    "deleting the pods of {ns}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        // Without a controller-manager the namespaces stay Terminating until the API server's
        // data is purged; their pods are gone already.
        let mut args = vec!["delete", "namespace", "--wait=false", "--ignore-not-found"];
        args.extend(self.namespaces.iter().map(String::as_str));
        let out = self.cluster.kubectl(&args, None);
        if !out.status.success() {
            errors.push(format!(
                "deleting namespaces {:?}: {}",
                self.namespaces,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        self.pods.clear();
        errors
    }

    /// Removes the cgroups and deletes the pods now, asserting success.
    pub fn delete(mut self) {
        let errors = self.teardown();
        assert!(errors.is_empty(), "removing the fleet: {errors:?}");
    }
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        let errors = self.teardown();
        if errors.is_empty() {
            return;
        }
        if thread::panicking() {
            eprintln!("cleaning up after a failed benchmark: {errors:?}");
        } else {
            panic!("removing the fleet: {errors:?}");
        }
    }
}
