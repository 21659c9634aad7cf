//! The pods of this node (field selector `spec.nodeName`), converted to [`PodInfo`] and sent as
//! [`PodEvent`]s for the [`super::identity::IdentityStore`].
//!
//! Workloads are derived from the pod alone, as Tetragon does (no extra API calls): a pod
//! with a generated name takes its controller's kind and name, a ReplicaSet with the pod's
//! `pod-template-hash` becomes its Deployment, a Job named `<name>-<8 to 10 digits>` its
//! CronJob, an OpenShift ReplicationController with a `deploymentconfig` label its
//! DeploymentConfig; any other pod is its own workload, of kind `Pod`.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::identity::{ContainerInfo, PodEvent, PodInfo};

/// The annotation of a static pod's mirror that holds the kubelet's config hash.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Watches this node's pods until `tx` is closed, sending every add, update and delete.
///
/// After each (re)list, pods that disappeared while the watch was down are sent as
/// [`PodEvent::Deleted`], and [`PodEvent::Synced`] tells that the store is complete. Errors
/// are logged and the watch is retried with backoff.
pub async fn watch_pods(client: Client, node_name: &str, tx: mpsc::Sender<PodEvent>) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node_name}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut known: HashSet<String> = HashSet::new();
    let mut relisted: HashSet<String> = HashSet::new();
    while let Some(event) = stream.next().await {
        let mut out = Vec::new();
        match event {
            Ok(watcher::Event::Init) => relisted.clear(),
            Ok(watcher::Event::InitApply(pod)) => {
                if let Some(info) = converted(&pod) {
                    relisted.insert(info.uid.clone());
                    known.insert(info.uid.clone());
                    out.push(PodEvent::Applied(info));
                }
            }
            Ok(watcher::Event::InitDone) => {
                for uid in known.difference(&relisted) {
                    out.push(PodEvent::Deleted { uid: uid.clone() });
                }
                known = std::mem::take(&mut relisted);
                out.push(PodEvent::Synced);
            }
            Ok(watcher::Event::Apply(pod)) => {
                if let Some(info) = converted(&pod) {
                    known.insert(info.uid.clone());
                    out.push(PodEvent::Applied(info));
                }
            }
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(uid) = pod.metadata.uid.filter(|u| known.remove(u)) {
                    out.push(PodEvent::Deleted { uid });
                }
            }
            Err(e) => warn!(error = %e, node = node_name, "pod watch failed; retrying"),
        }
        for event in out {
            if tx.send(event).await.is_err() {
                debug!("pod watcher stopped: receiver gone");
                return;
            }
        }
    }
}

fn converted(pod: &Pod) -> Option<PodInfo> {
    let info = pod_info(pod);
    if info.is_none() {
        warn!(
            name = pod.metadata.name.as_deref().unwrap_or(""),
            "pod without name, namespace or uid ignored"
        );
    }
    info
}

/// Our view of a pod; `None` when it lacks a name, namespace or UID (never from a real API
/// server).
pub fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let meta = &pod.metadata;
    let labels = meta.labels.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    let (workload, workload_kind) = workload(pod);
    let static_hash = annotations
        .get(MIRROR_ANNOTATION)
        .filter(|h| !h.is_empty())
        .cloned();
    Some(PodInfo {
        uid: meta.uid.clone().filter(|s| !s.is_empty())?,
        namespace: meta.namespace.clone().filter(|s| !s.is_empty())?,
        name: meta.name.clone().filter(|s| !s.is_empty())?,
        labels,
        annotations,
        workload,
        workload_kind,
        static_hash,
        containers: containers(pod),
    })
}

/// The workload name and kind (see the module documentation).
pub fn workload(pod: &Pod) -> (String, String) {
    let meta = &pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let own = (name, "Pod".to_string());
    if meta.generate_name.as_deref().is_none_or(str::is_empty) {
        return own;
    }
    let Some(owner) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
    else {
        return own;
    };
    let label = |k: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(k))
            .filter(|v| !v.is_empty())
    };
    let (name, kind) = match owner.kind.as_str() {
        "ReplicaSet" => match label("pod-template-hash")
            .and_then(|hash| owner.name.strip_suffix(hash.as_str()))
            .and_then(|n| n.strip_suffix('-'))
        {
            Some(deployment) => (deployment.to_string(), "Deployment"),
            None => (owner.name.clone(), "ReplicaSet"),
        },
        "ReplicationController" => match label("deploymentconfig") {
            Some(dc) => (dc.clone(), "DeploymentConfig"),
            None => (owner.name.clone(), "ReplicationController"),
        },
        "Job" => match cron_job_name(&owner.name) {
            Some(cron) => (cron.to_string(), "CronJob"),
            None => (owner.name.clone(), "Job"),
        },
        other => (owner.name.clone(), other),
    };
    if name.is_empty() {
        return (own.0, kind.to_string());
    }
    (name, kind.to_string())
}

/// `nightly` for the Job `nightly-28999440`: a CronJob names its Jobs with the scheduled time
/// in minutes (8 to 10 digits).
fn cron_job_name(job: &str) -> Option<&str> {
    let (name, digits) = job.rsplit_once('-')?;
    let ok = !name.is_empty()
        && (8..=10).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then_some(name)
}

/// Containers from the spec (init, regular, ephemeral) joined with their statuses by name.
fn containers(pod: &Pod) -> Vec<ContainerInfo> {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut specs: Vec<(String, String)> = Vec::new();
    if let Some(spec) = spec {
        let regular = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers);
        specs.extend(regular.map(|c| (c.name.clone(), c.image.clone().unwrap_or_default())));
        specs.extend(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default())),
        );
    }
    let statuses: BTreeMap<&str, &ContainerStatus> = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
                .chain(s.ephemeral_container_statuses.iter().flatten())
        })
        .map(|s| (s.name.as_str(), s))
        .collect();
    specs
        .into_iter()
        .map(|(name, spec_image)| {
            let st = statuses.get(name.as_str());
            let status_id = st
                .and_then(|s| s.container_id.as_deref())
                .filter(|id| strip_runtime_prefix(id).is_some());
            ContainerInfo {
                id: status_id.and_then(strip_runtime_prefix).map(str::to_string),
                status_id: status_id.map(str::to_string),
                image: st
                    .map(|s| s.image.clone())
                    .filter(|i| !i.is_empty())
                    .unwrap_or(spec_image),
                image_id: st.map(|s| s.image_id.clone()).unwrap_or_default(),
                started_at: st
                    .and_then(|s| s.state.as_ref()?.running.as_ref()?.started_at.as_ref())
                    .and_then(|t| system_time(t.0)),
                name,
            }
        })
        .collect()
}

/// `abc…` for `containerd://abc…` (also `cri-o://`, `docker://`); `None` when empty.
pub fn strip_runtime_prefix(container_id: &str) -> Option<&str> {
    let id = container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id);
    (!id.is_empty()).then_some(id)
}

fn system_time(t: k8s_openapi::jiff::Timestamp) -> Option<SystemTime> {
    let secs = u64::try_from(t.as_second()).ok()?;
    let nanos = u32::try_from(t.subsec_nanosecond()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests;
