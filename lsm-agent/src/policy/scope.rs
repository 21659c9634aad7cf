//! Label selectors as Tetragon evaluates them for `podSelector`, `containerSelector` and
//! `nodeSelector`, and the rules that combine a policy's selectors into its scope
//! (`tetragon-compat.md` §1.10).
//!
//! Matching itself is kube's ([`kube::core::Selector`]); what is added here is Tetragon's
//! meaning of an absent selector, the synthetic namespace label, the container's field map,
//! and validation (an `In` without values is an error, not a selector that matches nothing).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::SelectorExt as _;

/// The label Tetragon adds to every pod's labels, holding the pod's namespace, so that a
/// cluster-wide policy can select namespaces with `podSelector`.
pub const NAMESPACE_LABEL: &str = "k8s:io.kubernetes.pod.namespace";

/// A selector that cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("matchExpressions[{index}]: operator {operator:?} needs at least one value")]
    NoValues { index: usize, operator: String },
    #[error("matchExpressions[{index}]: operator {operator:?} takes no values")]
    UnexpectedValues { index: usize, operator: String },
    #[error(
        "matchExpressions[{index}]: unknown operator {operator:?} (In, NotIn, Exists, DoesNotExist)"
    )]
    Operator { index: usize, operator: String },
    #[error("hostSelector may only be null or {{}} (it takes no labels)")]
    HostSelectorLabels,
    #[error("hostSelector is not allowed in a TracingPolicyNamespaced")]
    HostSelectorNamespaced,
}

/// A label selector ready to match.
#[derive(Debug, Clone, PartialEq)]
pub enum Selector {
    /// An absent (`null`) selector: matches nothing.
    Nothing,
    /// `{}` (everything) or a list of requirements that must all hold.
    Requirements(kube::core::Selector),
}

impl Selector {
    /// The selector `{}`.
    pub fn everything() -> Self {
        Selector::Requirements(kube::core::Selector::default())
    }

    /// Checks and converts a selector as written in a policy; `None` is `null`.
    pub fn new(selector: Option<&LabelSelector>) -> Result<Self, SelectorError> {
        let Some(selector) = selector else {
            return Ok(Selector::Nothing);
        };
        for (index, req) in selector.match_expressions.iter().flatten().enumerate() {
            let has_values = req.values.as_ref().is_some_and(|v| !v.is_empty());
            let operator = req.operator.clone();
            match req.operator.as_str() {
                "In" | "NotIn" if !has_values => {
                    return Err(SelectorError::NoValues { index, operator });
                }
                "Exists" | "DoesNotExist" if has_values => {
                    return Err(SelectorError::UnexpectedValues { index, operator });
                }
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                _ => return Err(SelectorError::Operator { index, operator }),
            }
        }
        // Checked above, so kube's conversion has nothing left to reject.
        kube::core::Selector::try_from(selector.clone())
            .map(Selector::Requirements)
            .map_err(|_| SelectorError::Operator {
                index: 0,
                operator: String::new(),
            })
    }

    /// True for `{}`.
    pub fn is_everything(&self) -> bool {
        matches!(self, Selector::Requirements(s) if s.selects_all())
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Selector::Nothing => false,
            Selector::Requirements(s) => s.matches(labels),
        }
    }
}

/// A pod's labels as `podSelector` sees them: its own plus [`NAMESPACE_LABEL`].
pub fn pod_selector_labels(
    labels: &BTreeMap<String, String>,
    namespace: &str,
) -> BTreeMap<String, String> {
    let mut all = labels.clone();
    all.insert(NAMESPACE_LABEL.to_string(), namespace.to_string());
    all
}

/// The map `containerSelector` matches: the container's `name`, and its image `repo` (the
/// part of the status `imageID` before `@`, empty until the runtime reports it), as Tetragon
/// builds it.
pub fn container_selector_fields(name: &str, image_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("name".to_string(), name.to_string()),
        ("repo".to_string(), image_repo(image_id).to_string()),
    ])
}

/// `docker.io/library/ubuntu` for `docker.io/library/ubuntu@sha256:…`; empty when the image ID
/// is not a `repo@digest` pair.
pub fn image_repo(image_id: &str) -> &str {
    match image_id.split('@').collect::<Vec<_>>().as_slice() {
        [repo, _digest] => repo,
        _ => "",
    }
}

/// Whether this node loads a policy with this `nodeSelector`: no selector means every node
/// (unlike pod and container selectors, where `null` is "nothing").
pub fn node_selected(
    node_selector: Option<&LabelSelector>,
    node_labels: &BTreeMap<String, String>,
) -> Result<bool, SelectorError> {
    match node_selector {
        None => Ok(true),
        Some(s) => Ok(Selector::new(Some(s))?.matches(node_labels)),
    }
}

/// Which workloads a policy applies to, from its kind, namespace and selectors.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// No filtering: host processes and every pod.
    Everything,
    Filtered {
        /// `TracingPolicyNamespaced`: only pods of this namespace.
        namespace: Option<String>,
        pods: Selector,
        containers: Selector,
        /// Processes outside any pod (`hostSelector: {}`).
        hosts: bool,
    },
}

/// The selectors of a policy's spec, as written (`None` for an absent field).
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicySelectors<'a> {
    pub pod: Option<&'a LabelSelector>,
    pub container: Option<&'a LabelSelector>,
    pub host: Option<&'a LabelSelector>,
}

impl Scope {
    /// Tetragon's combination rules: with no selector a `TracingPolicy` applies everywhere
    /// and a `TracingPolicyNamespaced` to every container of its namespace's pods; a pod
    /// selector without a container selector means all its containers, and the reverse; a
    /// host selector may only be `{}` (add host processes) or absent.
    pub fn new(namespace: Option<&str>, sel: PolicySelectors<'_>) -> Result<Self, SelectorError> {
        if namespace.is_some() && sel.host.is_some() {
            return Err(SelectorError::HostSelectorNamespaced);
        }
        let hosts = match sel.host {
            None => false,
            Some(h) if Selector::new(Some(h))?.is_everything() => true,
            Some(_) => return Err(SelectorError::HostSelectorLabels),
        };
        let selector = |s: Option<&LabelSelector>| match s {
            None => Ok(Selector::everything()),
            Some(s) => Selector::new(Some(s)),
        };
        let (pods, containers) = match (sel.pod, sel.container) {
            (None, None) if namespace.is_some() => (Selector::everything(), Selector::everything()),
            (None, None) if !hosts => return Ok(Scope::Everything),
            // `hostSelector: {}` alone: host processes only.
            (None, None) => (Selector::Nothing, Selector::Nothing),
            (p, c) => (selector(p)?, selector(c)?),
        };
        if namespace.is_none() && hosts && pods.is_everything() && containers.is_everything() {
            return Ok(Scope::Everything);
        }
        Ok(Scope::Filtered {
            namespace: namespace.map(str::to_string),
            pods,
            containers,
            hosts,
        })
    }

    /// Whether a process outside any pod is in scope.
    pub fn covers_host(&self) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Filtered { hosts, .. } => *hosts,
        }
    }

    /// Whether a pod (namespace and own labels) is in scope for some container.
    pub fn covers_pod(&self, namespace: &str, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Filtered {
                namespace: ns,
                pods,
                ..
            } => {
                ns.as_deref().is_none_or(|ns| ns == namespace)
                    && pods.matches(&pod_selector_labels(labels, namespace))
            }
        }
    }

    /// Whether a container of a covered pod is in scope (name and status `imageID`).
    pub fn covers_container(&self, name: &str, image_id: &str) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Filtered { containers, .. } => {
                containers.matches(&container_selector_fields(name, image_id))
            }
        }
    }

    /// True when every container of a covered pod is in scope, so the pod's cgroup can stand
    /// for all of them (before their IDs are known).
    pub fn covers_all_containers(&self) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Filtered { containers, .. } => containers.is_everything(),
        }
    }
}

#[cfg(test)]
mod tests;
