use std::path::Path;

use super::*;

const CLUSTER: &str = include_str!("../testdata/tp-cluster-from-api.yaml");
const NAMESPACED: &str = include_str!("../testdata/tp-namespaced-node-selector.yaml");
const BAD_SELECTOR: &str = include_str!("../testdata/tp-bad-node-selector.yaml");

fn object(text: &str) -> DynamicObject {
    serde_yaml::from_str(text).expect("fixture is an object")
}

fn key_of(kind: PolicyKind, obj: &DynamicObject) -> PolicyKey {
    policy_key(kind, obj).expect("named")
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn never_read() -> Result<BTreeMap<String, String>, String> {
    panic!("the Node is read only for a policy with a nodeSelector")
}

#[test]
fn the_policy_text_keeps_identity_and_spec_and_drops_server_fields() {
    let obj = object(CLUSTER);
    let yaml = policy_yaml(PolicyKind::TracingPolicy, &obj);
    let doc: Value = serde_yaml::from_str(&yaml).expect("YAML");
    assert_eq!(doc["apiVersion"], "cilium.io/v1alpha1");
    assert_eq!(doc["kind"], "TracingPolicy");
    assert_eq!(doc["metadata"]["name"], "block-shadow-reads");
    assert_eq!(
        doc["metadata"]["uid"],
        "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"
    );
    assert_eq!(doc["metadata"]["generation"], 3);
    assert_eq!(doc["metadata"]["labels"]["team"], "security");
    for gone in [
        "resourceVersion",
        "managedFields",
        "annotations",
        "creationTimestamp",
    ] {
        assert!(doc["metadata"].get(gone).is_none(), "{gone} in {yaml}");
    }
    assert!(doc.get("status").is_none(), "{yaml}");
    assert_eq!(doc["spec"]["lsmhooks"][0]["hook"], "file_open");
}

#[test]
fn the_policy_text_is_accepted_by_the_policy_parser() {
    for (kind, text) in [
        (PolicyKind::TracingPolicy, CLUSTER),
        (PolicyKind::TracingPolicyNamespaced, NAMESPACED),
    ] {
        let yaml = policy_yaml(kind, &object(text));
        let parsed = crate::policy::parse::parse_policy(&yaml, Path::new("crd"));
        assert!(parsed.is_ok(), "{yaml}\n{:?}", parsed.err());
    }
}

#[test]
fn the_text_does_not_change_with_resource_version_or_status() {
    let a = object(CLUSTER);
    let mut b = a.clone();
    b.metadata.resource_version = Some("9999".into());
    b.data["status"] = serde_json::json!({"state": "error"});
    assert_eq!(
        policy_yaml(PolicyKind::TracingPolicy, &a),
        policy_yaml(PolicyKind::TracingPolicy, &b)
    );
}

#[test]
fn keys_name_the_namespace_of_namespaced_policies_only() {
    let ns = object(NAMESPACED);
    let key = key_of(PolicyKind::TracingPolicyNamespaced, &ns);
    assert_eq!(key.namespace.as_deref(), Some("default"));
    assert_eq!(
        key.to_string(),
        "TracingPolicyNamespaced default/shadow-in-default"
    );
    let cluster = key_of(PolicyKind::TracingPolicy, &object(CLUSTER));
    assert_eq!(cluster.namespace, None);
    assert_eq!(cluster.to_string(), "TracingPolicy block-shadow-reads");
    let mut no_ns = ns.clone();
    no_ns.metadata.namespace = None;
    assert_eq!(
        policy_key(PolicyKind::TracingPolicyNamespaced, &no_ns),
        None
    );
}

#[test]
fn a_policy_without_node_selector_applies_without_reading_the_node() {
    let obj = object(CLUSTER);
    let key = key_of(PolicyKind::TracingPolicy, &obj);
    let event = decide(
        key.clone(),
        PolicyKind::TracingPolicy,
        &obj,
        "n1",
        never_read,
    );
    assert!(matches!(event, PolicyEvent::Apply { key: k, .. } if k == key));
}

#[test]
fn the_node_selector_applies_or_skips_by_node_labels() {
    let obj = object(NAMESPACED);
    let kind = PolicyKind::TracingPolicyNamespaced;
    let key = key_of(kind, &obj);
    let on = decide(key.clone(), kind, &obj, "n1", || {
        Ok(labels(&[("lsm-agent.io/enforce", "true")]))
    });
    assert!(matches!(on, PolicyEvent::Apply { .. }), "{on:?}");
    let off = decide(key.clone(), kind, &obj, "n1", || Ok(labels(&[])));
    match off {
        PolicyEvent::Skip { key: k, reason } => {
            assert_eq!(k, key);
            assert!(reason.contains("node n1"), "{reason}");
        }
        other => panic!("expected Skip, got {other:?}"),
    }
}

#[test]
fn node_selector_errors_fail_open() {
    let obj = object(NAMESPACED);
    let kind = PolicyKind::TracingPolicyNamespaced;
    let unreadable = decide(key_of(kind, &obj), kind, &obj, "n1", || {
        Err("forbidden".into())
    });
    assert!(
        matches!(unreadable, PolicyEvent::Apply { .. }),
        "{unreadable:?}"
    );
    let bad = object(BAD_SELECTOR);
    let kind = PolicyKind::TracingPolicy;
    let invalid = decide(key_of(kind, &bad), kind, &bad, "n1", || Ok(labels(&[])));
    assert!(matches!(invalid, PolicyEvent::Apply { .. }), "{invalid:?}");
}

fn apply(name: &str, yaml: &str) -> PolicyEvent {
    PolicyEvent::Apply {
        key: PolicyKey {
            kind: PolicyKind::TracingPolicy,
            namespace: None,
            name: name.into(),
        },
        yaml: yaml.into(),
    }
}

#[test]
fn only_changes_are_sent_again() {
    let mut state = Emitted::default();
    assert_eq!(state.changed(apply("a", "1")), Some(apply("a", "1")));
    assert_eq!(state.changed(apply("a", "1")), None, "same text");
    assert_eq!(state.changed(apply("a", "2")), Some(apply("a", "2")));
    let key = apply("a", "").key().cloned().expect("key");
    let skip = PolicyEvent::Skip {
        key: key.clone(),
        reason: "r".into(),
    };
    assert_eq!(
        state.changed(skip.clone()),
        Some(skip),
        "apply → skip is a change"
    );
    assert_eq!(
        state.deleted(key.clone()),
        Some(PolicyEvent::Delete { key: key.clone() })
    );
    assert_eq!(
        state.deleted(key),
        None,
        "unknown objects are not deleted twice"
    );
}

#[test]
fn a_relist_deletes_what_disappeared_meanwhile() {
    let mut state = Emitted::default();
    state.changed(apply("a", "1"));
    state.changed(apply("b", "1"));
    // Watch lost; re-list finds only b.
    state.relisted.clear();
    state
        .relisted
        .insert(apply("b", "").key().cloned().expect("key"));
    assert_eq!(state.changed(apply("b", "1")), None);
    let gone = state.forget_unlisted();
    assert_eq!(
        gone,
        vec![PolicyEvent::Delete {
            key: apply("a", "").key().cloned().expect("key")
        }]
    );
    assert!(state.forget_unlisted().is_empty());
}
