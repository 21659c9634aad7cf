//! The `TracingPolicy` (cluster) and `TracingPolicyNamespaced` CRDs (`cilium.io/v1alpha1`),
//! watched and turned into [`PolicyEvent`]s that carry the policy as YAML text, ready for
//! [`crate::policy::parse::parse_policy`].
//!
//! `spec.nodeSelector` decides whether this node loads a policy; like Tetragon, an error
//! (unreadable Node, malformed selector) loads it rather than silently dropping it. This
//! Node is watched (by name), and every policy with a `nodeSelector` is decided again when
//! its labels change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::policy::scope as selector;

pub const GROUP: &str = "cilium.io";
pub const VERSION: &str = "v1alpha1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    TracingPolicy,
    TracingPolicyNamespaced,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 2] = [
        PolicyKind::TracingPolicy,
        PolicyKind::TracingPolicyNamespaced,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::TracingPolicy => "TracingPolicy",
            PolicyKind::TracingPolicyNamespaced => "TracingPolicyNamespaced",
        }
    }

    /// The resource name in the API paths (and in `<plural>.cilium.io`).
    pub fn plural(self) -> &'static str {
        match self {
            PolicyKind::TracingPolicy => "tracingpolicies",
            PolicyKind::TracingPolicyNamespaced => "tracingpoliciesnamespaced",
        }
    }

    pub fn api_resource(self) -> ApiResource {
        let gvk = GroupVersionKind::gvk(GROUP, VERSION, self.as_str());
        ApiResource::from_gvk_with_plural(&gvk, self.plural())
    }
}

/// Which object: kind, namespace (namespaced kind only) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {ns}/{}", self.kind.as_str(), self.name),
            None => write!(f, "{} {}", self.kind.as_str(), self.name),
        }
    }
}

/// A change to the policies this node should enforce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyEvent {
    /// Load this policy, or replace the one with the same key.
    Apply { key: PolicyKey, yaml: String },
    /// The policy exists but `nodeSelector` does not select this node: unload any version of
    /// it and list it as skipped.
    Skip { key: PolicyKey, reason: String },
    /// The object is gone.
    Delete { key: PolicyKey },
    /// All objects of this kind have been listed (first list or re-list after a lost watch).
    Synced { kind: PolicyKind },
}

impl PolicyEvent {
    pub fn key(&self) -> Option<&PolicyKey> {
        match self {
            PolicyEvent::Apply { key, .. }
            | PolicyEvent::Skip { key, .. }
            | PolicyEvent::Delete { key } => Some(key),
            PolicyEvent::Synced { .. } => None,
        }
    }
}

/// The object's key; `None` without a name (or, namespaced kind, without a namespace).
pub fn policy_key(kind: PolicyKind, obj: &DynamicObject) -> Option<PolicyKey> {
    let name = obj.metadata.name.clone().filter(|n| !n.is_empty())?;
    let namespace = match kind {
        PolicyKind::TracingPolicy => None,
        PolicyKind::TracingPolicyNamespaced => {
            Some(obj.metadata.namespace.clone().filter(|n| !n.is_empty())?)
        }
    };
    Some(PolicyKey {
        kind,
        namespace,
        name,
    })
}

/// The policy document the parser reads: `apiVersion`, `kind`, the identifying part of
/// `metadata` (no `resourceVersion`, `managedFields` or annotations, so that the text only
/// changes when the policy does) and `spec`; `status` is left out.
pub fn policy_yaml(kind: PolicyKind, obj: &DynamicObject) -> String {
    let meta = &obj.metadata;
    let mut metadata = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            metadata.insert(k.to_string(), v);
        }
    };
    put("name", meta.name.clone().map(Value::String));
    put("namespace", meta.namespace.clone().map(Value::String));
    put("uid", meta.uid.clone().map(Value::String));
    put("generation", meta.generation.map(Value::from));
    put(
        "labels",
        meta.labels.as_ref().filter(|l| !l.is_empty()).map(|l| {
            Value::Object(
                l.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect(),
            )
        }),
    );
    let mut doc = Map::new();
    doc.insert(
        "apiVersion".into(),
        Value::String(format!("{GROUP}/{VERSION}")),
    );
    doc.insert("kind".into(), Value::String(kind.as_str().to_string()));
    doc.insert("metadata".into(), Value::Object(metadata));
    if let Some(spec) = obj.data.get("spec") {
        doc.insert("spec".into(), spec.clone());
    }
    // A JSON value always has a YAML form.
    serde_yaml::to_string(&Value::Object(doc)).unwrap_or_default()
}

/// The object's `spec.nodeSelector`: `Ok(None)` when absent or null.
fn node_selector(obj: &DynamicObject) -> Result<Option<LabelSelector>, serde_json::Error> {
    match obj.data.get("spec").and_then(|s| s.get("nodeSelector")) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some),
    }
}

/// Apply or Skip for an object. `node_labels` is `Err` when the Node could not be read; it is
/// only consulted for a policy with a `nodeSelector`.
pub fn decide(
    key: PolicyKey,
    kind: PolicyKind,
    obj: &DynamicObject,
    node_name: &str,
    node_labels: impl FnOnce() -> Result<BTreeMap<String, String>, String>,
) -> PolicyEvent {
    let apply = |key| PolicyEvent::Apply {
        key,
        yaml: policy_yaml(kind, obj),
    };
    let selector = match node_selector(obj) {
        Ok(None) => return apply(key),
        Ok(Some(s)) => s,
        Err(e) => {
            warn!(policy = %key, error = %e, "malformed spec.nodeSelector; loading the policy on this node");
            return apply(key);
        }
    };
    let labels = match node_labels() {
        Ok(l) => l,
        Err(e) => {
            warn!(policy = %key, node = node_name, error = %e, "cannot read this Node's labels for spec.nodeSelector; loading the policy");
            return apply(key);
        }
    };
    match selector::node_selected(Some(&selector), &labels) {
        Ok(true) => apply(key),
        Ok(false) => PolicyEvent::Skip {
            key,
            reason: format!("spec.nodeSelector does not select node {node_name}"),
        },
        Err(e) => {
            warn!(policy = %key, error = %e, "invalid spec.nodeSelector; loading the policy on this node");
            apply(key)
        }
    }
}

/// Watches both kinds until `tx` is closed. Objects deleted while a watch was down are sent as
/// [`PolicyEvent::Delete`] after the re-list; an object whose policy text and node decision
/// did not change (e.g. a status update) sends nothing. Errors (such as the CRDs not being
/// installed yet) are logged and the watches retried with backoff.
pub async fn watch_policies(client: Client, node_name: &str, tx: mpsc::Sender<PolicyEvent>) {
    let (labels_tx, labels) = watch::channel(None);
    let watch = |kind| watch_kind(client.clone(), kind, node_name, labels.clone(), tx.clone());
    tokio::select! {
        // Runs until dropped.
        () = watch_node(client.clone(), node_name, labels_tx) => {}
        _ = futures_util::future::join(
            watch(PolicyKind::TracingPolicy),
            watch(PolicyKind::TracingPolicyNamespaced),
        ) => {}
    }
}

/// This Node's labels as far as known: `None` before the first answer, `Err` when the Node
/// cannot be read (policies with a `nodeSelector` then load, as Tetragon's fail open).
pub type NodeLabels = Option<Result<BTreeMap<String, String>, String>>;

/// Keeps `out` at this Node's labels; only label changes are sent (the kubelet updates the
/// Node's status all the time).
pub async fn watch_node(client: Client, node_name: &str, out: watch::Sender<NodeLabels>) {
    let api: Api<Node> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut listed = false;
    let set = |labels: Result<BTreeMap<String, String>, String>| {
        out.send_if_modified(|now| {
            let changed = now.as_ref() != Some(&labels);
            if changed {
                if now.is_some() {
                    info!(node = node_name, labels = ?labels, "this Node's labels changed; nodeSelector decided again");
                }
                *now = Some(labels);
            }
            changed
        });
    };
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Init) => listed = false,
            Ok(watcher::Event::InitApply(n)) | Ok(watcher::Event::Apply(n)) => {
                listed = true;
                set(Ok(n.metadata.labels.unwrap_or_default()));
            }
            Ok(watcher::Event::InitDone) if !listed => set(Err(format!("no Node {node_name}"))),
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Delete(_)) => set(Err(format!("Node {node_name} deleted"))),
            Err(e) => {
                warn!(node = node_name, error = %e, "Node watch failed; retrying");
                // Fail open only while nothing is known: later, the last labels stand.
                if out.borrow().is_none() {
                    set(Err(e.to_string()));
                }
            }
        }
    }
}

async fn watch_kind(
    client: Client,
    kind: PolicyKind,
    node_name: &str,
    mut labels: watch::Receiver<NodeLabels>,
    tx: mpsc::Sender<PolicyEvent>,
) {
    let api: Api<DynamicObject> = Api::all_with(client, &kind.api_resource());
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut state = Emitted::default();
    loop {
        let mut out = Vec::new();
        tokio::select! {
            event = stream.next() => {
                let Some(event) = event else { return };
                match event {
                    Ok(watcher::Event::Init) => state.relisted.clear(),
                    Ok(watcher::Event::InitApply(obj)) | Ok(watcher::Event::Apply(obj)) => {
                        if let Some(key) = checked_key(kind, &obj) {
                            state.relisted.insert(key.clone());
                            let selected = matches!(node_selector(&obj), Ok(Some(_)));
                            if selected {
                                // Decided with the Node's labels, not before they are known.
                                let _ = labels.wait_for(Option::is_some).await;
                            }
                            let now = current(&labels);
                            let event = decide(key.clone(), kind, &obj, node_name, || now);
                            if selected {
                                state.selected.insert(key, obj);
                            } else {
                                state.selected.remove(&key);
                            }
                            out.extend(state.changed(event));
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        out.extend(state.forget_unlisted());
                        out.push(PolicyEvent::Synced { kind });
                    }
                    Ok(watcher::Event::Delete(obj)) => {
                        if let Some(key) = checked_key(kind, &obj) {
                            out.extend(state.deleted(key));
                        }
                    }
                    Err(e) => {
                        warn!(kind = kind.as_str(), error = %e, "TracingPolicy watch failed; retrying")
                    }
                }
            }
            changed = labels.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = current(&labels);
                let mut keys: Vec<&PolicyKey> = state.selected.keys().collect();
                keys.sort();
                let decided: Vec<PolicyEvent> = keys
                    .into_iter()
                    .map(|key| {
                        let now = now.clone();
                        decide(key.clone(), kind, &state.selected[key], node_name, || now)
                    })
                    .collect();
                out.extend(decided.into_iter().filter_map(|e| state.changed(e)));
            }
        }
        for event in out {
            if tx.send(event).await.is_err() {
                debug!(
                    kind = kind.as_str(),
                    "policy watcher stopped: receiver gone"
                );
                return;
            }
        }
    }
}

fn current(labels: &watch::Receiver<NodeLabels>) -> Result<BTreeMap<String, String>, String> {
    labels
        .borrow()
        .clone()
        .unwrap_or_else(|| Err("this Node's labels are not known yet".into()))
}

fn checked_key(kind: PolicyKind, obj: &DynamicObject) -> Option<PolicyKey> {
    let key = policy_key(kind, obj);
    if key.is_none() {
        warn!(
            kind = kind.as_str(),
            "object without name or namespace ignored"
        );
    }
    key
}

/// What was last sent per object, to send only changes and to find objects deleted while the
/// watch was down.
#[derive(Default)]
struct Emitted {
    last: HashMap<PolicyKey, PolicyEvent>,
    /// Keys seen since the last `Init` (complete at `InitDone`).
    relisted: HashSet<PolicyKey>,
    /// The objects with a `nodeSelector`, decided again when the Node's labels change.
    selected: HashMap<PolicyKey, DynamicObject>,
}

impl Emitted {
    fn changed(&mut self, event: PolicyEvent) -> Option<PolicyEvent> {
        let key = event.key()?.clone();
        if self.last.get(&key) == Some(&event) {
            return None;
        }
        self.last.insert(key, event.clone());
        Some(event)
    }

    fn deleted(&mut self, key: PolicyKey) -> Option<PolicyEvent> {
        self.relisted.remove(&key);
        self.selected.remove(&key);
        self.last.remove(&key).map(|_| PolicyEvent::Delete { key })
    }

    fn forget_unlisted(&mut self) -> Vec<PolicyEvent> {
        let mut gone: Vec<PolicyKey> = self
            .last
            .keys()
            .filter(|k| !self.relisted.contains(*k))
            .cloned()
            .collect();
        gone.sort();
        gone.into_iter().filter_map(|k| self.deleted(k)).collect()
    }
}

#[cfg(test)]
mod tests;
