use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn expr(key: &str, operator: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
    LabelSelectorRequirement {
        key: key.to_string(),
        operator: operator.to_string(),
        values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
    }
}

fn sel(match_labels: &[(&str, &str)], exprs: Vec<LabelSelectorRequirement>) -> LabelSelector {
    LabelSelector {
        match_labels: (!match_labels.is_empty()).then(|| labels(match_labels)),
        match_expressions: (!exprs.is_empty()).then_some(exprs),
    }
}

fn matches(s: &LabelSelector, l: &[(&str, &str)]) -> bool {
    Selector::new(Some(s)).expect("valid").matches(&labels(l))
}

#[test]
fn a_null_selector_matches_nothing_and_an_empty_one_everything() {
    let null = Selector::new(None).expect("valid");
    assert!(!null.matches(&labels(&[])));
    assert!(!null.matches(&labels(&[("app", "x")])));
    let empty = Selector::new(Some(&LabelSelector::default())).expect("valid");
    assert!(empty.is_everything());
    assert!(empty.matches(&labels(&[])));
    assert!(empty.matches(&labels(&[("app", "x")])));
    let empty_lists = LabelSelector {
        match_labels: Some(BTreeMap::new()),
        match_expressions: Some(vec![]),
    };
    assert!(
        Selector::new(Some(&empty_lists))
            .expect("valid")
            .is_everything()
    );
}

#[test]
fn match_labels_must_all_be_equal() {
    let s = sel(&[("app", "web"), ("tier", "front")], vec![]);
    assert!(matches(
        &s,
        &[("app", "web"), ("tier", "front"), ("x", "y")]
    ));
    assert!(!matches(&s, &[("app", "web")]));
    assert!(!matches(&s, &[("app", "web"), ("tier", "back")]));
}

#[test]
fn in_requires_the_key_with_one_of_the_values() {
    let s = sel(&[], vec![expr("env", "In", Some(&["prod", "staging"]))]);
    assert!(matches(&s, &[("env", "prod")]));
    assert!(matches(&s, &[("env", "staging")]));
    assert!(!matches(&s, &[("env", "dev")]));
    assert!(!matches(&s, &[]), "a missing key is not In");
}

#[test]
fn not_in_matches_a_missing_key_as_kubernetes_does() {
    let s = sel(&[], vec![expr("env", "NotIn", Some(&["prod"]))]);
    assert!(matches(&s, &[]));
    assert!(matches(&s, &[("env", "dev")]));
    assert!(!matches(&s, &[("env", "prod")]));
}

#[test]
fn exists_and_does_not_exist_look_at_the_key_only() {
    let exists = sel(&[], vec![expr("debug", "Exists", None)]);
    assert!(matches(&exists, &[("debug", "")]));
    assert!(!matches(&exists, &[]));
    let absent = sel(&[], vec![expr("debug", "DoesNotExist", Some(&[]))]);
    assert!(matches(&absent, &[]));
    assert!(!matches(&absent, &[("debug", "1")]));
}

#[test]
fn labels_and_expressions_are_anded() {
    let s = sel(
        &[("app", "web")],
        vec![
            expr("env", "In", Some(&["prod"])),
            expr("canary", "DoesNotExist", None),
        ],
    );
    assert!(matches(&s, &[("app", "web"), ("env", "prod")]));
    assert!(!matches(
        &s,
        &[("app", "web"), ("env", "prod"), ("canary", "1")]
    ));
    assert!(!matches(&s, &[("app", "db"), ("env", "prod")]));
}

#[test]
fn malformed_expressions_are_errors_that_name_the_expression() {
    let cases = [
        (expr("a", "In", None), "needs at least one value"),
        (expr("a", "NotIn", Some(&[])), "needs at least one value"),
        (expr("a", "Exists", Some(&["x"])), "takes no values"),
        (expr("a", "DoesNotExist", Some(&["x"])), "takes no values"),
        (expr("a", "in", Some(&["x"])), "unknown operator"),
        (expr("a", "Equals", Some(&["x"])), "unknown operator"),
    ];
    for (e, want) in cases {
        let s = sel(&[], vec![expr("ok", "Exists", None), e.clone()]);
        let err = Selector::new(Some(&s)).expect_err("invalid").to_string();
        assert!(err.starts_with("matchExpressions[1]"), "{e:?}: {err}");
        assert!(err.contains(want), "{e:?}: {err}");
    }
}

#[test]
fn pod_labels_carry_the_synthetic_namespace_label() {
    let l = pod_selector_labels(&labels(&[("app", "x")]), "kube-system");
    assert_eq!(
        l.get(NAMESPACE_LABEL).map(String::as_str),
        Some("kube-system")
    );
    assert_eq!(l.get("app").map(String::as_str), Some("x"));
    let by_ns = sel(
        &[],
        vec![expr(NAMESPACE_LABEL, "In", Some(&["kube-system"]))],
    );
    assert!(Selector::new(Some(&by_ns)).expect("valid").matches(&l));
}

#[test]
fn the_pods_own_label_cannot_fake_its_namespace() {
    let l = pod_selector_labels(&labels(&[(NAMESPACE_LABEL, "kube-system")]), "default");
    assert_eq!(l.get(NAMESPACE_LABEL).map(String::as_str), Some("default"));
}

#[test]
fn container_fields_are_name_and_the_repo_of_the_image_id() {
    let f = container_selector_fields(
        "main",
        "docker.io/library/ubuntu@sha256:aadf9a3f5eda81295050d13dabe851b26a67597e424a908f25a63f589dfed48f",
    );
    assert_eq!(f.get("name").map(String::as_str), Some("main"));
    assert_eq!(
        f.get("repo").map(String::as_str),
        Some("docker.io/library/ubuntu")
    );
    assert_eq!(image_repo(""), "", "not reported yet");
    assert_eq!(image_repo("sha256:abc"), "", "an ID without a repo");
    assert_eq!(image_repo("a@b@c"), "");
    let by_repo = sel(&[("repo", "docker.io/library/ubuntu")], vec![]);
    assert!(Selector::new(Some(&by_repo)).expect("valid").matches(&f));
}

#[test]
fn no_node_selector_selects_every_node() {
    let node = labels(&[("kubernetes.io/hostname", "n1")]);
    assert_eq!(node_selected(None, &node), Ok(true));
    assert_eq!(
        node_selected(Some(&LabelSelector::default()), &node),
        Ok(true)
    );
    let other = sel(&[("kubernetes.io/hostname", "n2")], vec![]);
    assert_eq!(node_selected(Some(&other), &node), Ok(false));
    let bad = sel(&[], vec![expr("x", "In", None)]);
    assert!(node_selected(Some(&bad), &node).is_err());
}

// --- Scope: the combination rules. ---

fn scope(
    ns: Option<&str>,
    pod: Option<&LabelSelector>,
    container: Option<&LabelSelector>,
    host: Option<&LabelSelector>,
) -> Scope {
    Scope::new(
        ns,
        PolicySelectors {
            pod,
            container,
            host,
        },
    )
    .expect("valid scope")
}

#[test]
fn a_policy_without_selectors_covers_hosts_and_all_pods() {
    let s = scope(None, None, None, None);
    assert_eq!(s, Scope::Everything);
    assert!(s.covers_host());
    assert!(s.covers_pod("any", &labels(&[])));
    assert!(s.covers_container("c", ""));
}

#[test]
fn all_three_selectors_empty_means_no_filtering() {
    let e = LabelSelector::default();
    assert_eq!(scope(None, Some(&e), Some(&e), Some(&e)), Scope::Everything);
}

#[test]
fn a_pod_selector_alone_covers_all_containers_of_matching_pods_and_no_host() {
    let by_app = sel(&[("app", "web")], vec![]);
    let s = scope(None, Some(&by_app), None, None);
    assert!(!s.covers_host());
    assert!(s.covers_pod("ns1", &labels(&[("app", "web")])));
    assert!(!s.covers_pod("ns1", &labels(&[("app", "db")])));
    assert!(s.covers_container("anything", ""));
    assert!(s.covers_all_containers());
}

#[test]
fn a_container_selector_alone_covers_matching_containers_of_every_pod() {
    let by_name = sel(&[("name", "sidecar")], vec![]);
    let s = scope(None, None, Some(&by_name), None);
    assert!(!s.covers_host());
    assert!(s.covers_pod("any", &labels(&[])));
    assert!(s.covers_container("sidecar", ""));
    assert!(!s.covers_container("main", ""));
    assert!(!s.covers_all_containers());
}

#[test]
fn a_namespaced_policy_covers_every_container_of_its_namespace_only() {
    let s = scope(Some("default"), None, None, None);
    assert!(!s.covers_host());
    assert!(s.covers_pod("default", &labels(&[])));
    assert!(!s.covers_pod("kube-system", &labels(&[])));
    assert!(s.covers_all_containers());
}

#[test]
fn a_namespaced_policy_with_a_pod_selector_needs_both() {
    let by_app = sel(&[("app", "xwing")], vec![]);
    let s = scope(Some("default"), Some(&by_app), None, None);
    assert!(s.covers_pod("default", &labels(&[("app", "xwing")])));
    assert!(!s.covers_pod("other", &labels(&[("app", "xwing")])));
    assert!(!s.covers_pod("default", &labels(&[("app", "tie")])));
}

#[test]
fn host_selector_empty_adds_host_processes() {
    let e = LabelSelector::default();
    let alone = scope(None, None, None, Some(&e));
    assert!(alone.covers_host());
    assert!(!alone.covers_pod("default", &labels(&[])), "hosts only");
    let by_app = sel(&[("app", "web")], vec![]);
    let both = scope(None, Some(&by_app), None, Some(&e));
    assert!(both.covers_host());
    assert!(both.covers_pod("x", &labels(&[("app", "web")])));
    assert!(!both.covers_pod("x", &labels(&[])));
}

#[test]
fn host_selector_with_labels_or_in_a_namespaced_policy_is_rejected() {
    let with_labels = sel(&[("a", "b")], vec![]);
    let err = Scope::new(
        None,
        PolicySelectors {
            host: Some(&with_labels),
            ..Default::default()
        },
    );
    assert_eq!(err, Err(SelectorError::HostSelectorLabels));
    let e = LabelSelector::default();
    let err = Scope::new(
        Some("default"),
        PolicySelectors {
            host: Some(&e),
            ..Default::default()
        },
    );
    assert_eq!(err, Err(SelectorError::HostSelectorNamespaced));
}

#[test]
fn a_cluster_policy_selects_namespaces_through_the_synthetic_label() {
    let kube_system = sel(
        &[],
        vec![expr(NAMESPACE_LABEL, "In", Some(&["kube-system"]))],
    );
    let s = scope(None, Some(&kube_system), None, None);
    assert!(s.covers_pod("kube-system", &labels(&[])));
    assert!(!s.covers_pod("default", &labels(&[])));
}

#[test]
fn an_invalid_pod_selector_makes_the_scope_invalid() {
    let bad = sel(&[], vec![expr("x", "Exists", Some(&["v"]))]);
    assert!(
        Scope::new(
            None,
            PolicySelectors {
                pod: Some(&bad),
                ..Default::default()
            }
        )
        .is_err()
    );
}
