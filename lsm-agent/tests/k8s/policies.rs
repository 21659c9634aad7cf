//! The CRDs and the TracingPolicy watcher against the API server: the guide's policies apply
//! unchanged (after envsubst) with kubectl, both kinds are seen created, replaced and deleted,
//! `nodeSelector` is evaluated against this node's labels, and status updates send nothing.

use std::path::Path;

use lsm_agent::k8s::policies::{PolicyEvent, PolicyKind, watch_policies};
use lsm_agent::policy::parse::parse_policy;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::cluster::{cluster, recv_until, workspace};
use crate::helm::strict_dry_run;

const NODE: &str = "node-policies";
const NS: &str = "policies-test";

fn quickstart(name: &str) -> String {
    let path = workspace()
        .join("../shared/testdata/tetragon-quickstart")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `envsubst` of the guide's two variables.
fn envsubst(text: &str, pod_cidr: &str) -> String {
    text.replace("${PODCIDR}", pod_cidr)
        .replace("${SERVICECIDR}", "10.96.0.0/12")
}

fn is_apply(e: &PolicyEvent, kind: PolicyKind, name: &str) -> bool {
    matches!(e, PolicyEvent::Apply { key, .. } if key.kind == kind && key.name == name)
}

fn yaml_of(e: &PolicyEvent) -> &str {
    match e {
        PolicyEvent::Apply { yaml, .. } => yaml,
        other => panic!("not an Apply: {other:?}"),
    }
}

#[tokio::test]
async fn the_guides_policies_apply_unchanged_and_the_schema_rejects_bad_selectors() {
    let c = cluster();
    c.kubectl_ok(&["create", "namespace", "quickstart-dry-run"], None);
    let client = c.admin_client().await;
    for name in [
        "file_monitoring.yaml",
        "file_monitoring_enforce.yaml",
        "lsm_bprm_check.yaml",
        "lsm_file_open.yaml",
        "network_egress_cluster.yaml",
        "network_egress_cluster_enforce.yaml",
    ] {
        let text = envsubst(&quickstart(name), "10.244.0.0/16");
        // As the guide does it (see helm.rs for why --validate=false).
        c.kubectl_ok(
            &[
                "apply",
                "-n",
                "quickstart-dry-run",
                "--dry-run=server",
                "--validate=false",
                "-f",
                "-",
            ],
            Some(&text),
        );
        let doc: Value = serde_yaml::from_str(&text).expect("YAML");
        strict_dry_run(&client, &doc, "quickstart-dry-run").await;
    }
    for (fixture, why) in [
        (
            include_str!("fixtures/tp-host-selector-labels.yaml"),
            "hostSelector may only be absent or {}",
        ),
        (
            include_str!("fixtures/tp-bad-operator.yaml"),
            "Unsupported value: \"Equals\"",
        ),
    ] {
        let out = c.kubectl(
            &["apply", "--dry-run=server", "--validate=false", "-f", "-"],
            Some(fixture),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(why), "{stderr}");
    }
}

#[tokio::test]
async fn the_policy_watcher_sees_both_kinds_come_change_and_go() {
    let c = cluster();
    c.kubectl_ok(&["create", "namespace", NS], None);
    c.kubectl_ok(
        &["apply", "--validate=false", "-f", "-"],
        Some(include_str!("fixtures/node.yaml")),
    );

    let (tx, mut rx) = mpsc::channel(64);
    let agent = c.agent_client().await;
    let watcher = tokio::spawn(async move { watch_policies(agent, NODE, tx).await });
    let mut seen = Vec::new();
    // Each kind's watcher reports its own initial list, in whichever order they finish.
    let mut synced = std::collections::BTreeSet::new();
    recv_until(&mut rx, &mut seen, "Synced of both kinds", |e| {
        if let PolicyEvent::Synced { kind } = e {
            synced.insert(*kind);
        }
        synced.len() == PolicyKind::ALL.len()
    })
    .await;

    // The guide's namespaced egress policy, `kubectl apply -n` after envsubst.
    let egress = quickstart("network_egress_cluster_enforce.yaml");
    let egress_name = "enforce-network-activity-outside-cluster-cidr-range";
    c.kubectl_ok(
        &["apply", "-n", NS, "--validate=false", "-f", "-"],
        Some(&envsubst(&egress, "10.244.0.0/16")),
    );
    let ns_kind = PolicyKind::TracingPolicyNamespaced;
    let i = recv_until(&mut rx, &mut seen, "egress applied", |e| {
        is_apply(e, ns_kind, egress_name)
    })
    .await;
    let key = seen[i].key().expect("key").clone();
    assert_eq!(key.namespace.as_deref(), Some(NS));
    let yaml = yaml_of(&seen[i]);
    assert!(yaml.contains("10.244.0.0/16"), "{yaml}");
    let parsed = parse_policy(yaml, Path::new("crd"));
    assert!(
        parsed.is_ok(),
        "the parser takes the watcher's text: {parsed:?}\n{yaml}"
    );

    // A cluster-wide policy from the guide.
    c.kubectl_ok(
        &["apply", "--validate=false", "-f", "-"],
        Some(&quickstart("lsm_file_open.yaml")),
    );
    let tp = PolicyKind::TracingPolicy;
    let i = recv_until(&mut rx, &mut seen, "lsm-file-open applied", |e| {
        is_apply(e, tp, "lsm-file-open")
    })
    .await;
    assert_eq!(seen[i].key().expect("key").namespace, None);
    assert!(parse_policy(yaml_of(&seen[i]), Path::new("crd")).is_ok());

    // A status update sends nothing: the next event is the replacement below.
    c.kubectl_ok(
        &[
            "patch",
            "tracingpolicynamespaced",
            egress_name,
            "-n",
            NS,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"state":"enforcing"}}"#,
        ],
        None,
    );
    // Replaced: the same object with another pod CIDR.
    c.kubectl_ok(
        &["apply", "-n", NS, "--validate=false", "-f", "-"],
        Some(&envsubst(&egress, "10.250.0.0/16")),
    );
    let before = seen.len();
    let i = recv_until(&mut rx, &mut seen, "egress replaced", |e| {
        is_apply(e, ns_kind, egress_name)
    })
    .await;
    assert_eq!(
        i,
        before,
        "a status update was sent as a change: {:#?}",
        &seen[before..]
    );
    let yaml = yaml_of(&seen[i]);
    assert!(
        yaml.contains("10.250.0.0/16") && !yaml.contains("10.244.0.0/16"),
        "{yaml}"
    );

    // nodeSelector: this node's labels select one policy and not the other.
    c.kubectl_ok(
        &["apply", "--validate=false", "-f", "-"],
        Some(include_str!("fixtures/tp-node-selected.yaml")),
    );
    recv_until(&mut rx, &mut seen, "node-selected applied", |e| {
        is_apply(e, tp, "k8s-test-node-selected")
    })
    .await;
    c.kubectl_ok(
        &["apply", "--validate=false", "-f", "-"],
        Some(include_str!("fixtures/tp-other-nodes.yaml")),
    );
    recv_until(&mut rx, &mut seen, "other-nodes skipped", |e| {
        matches!(e, PolicyEvent::Skip { key, reason } if key.name == "k8s-test-other-nodes" && reason.contains(NODE))
    })
    .await;
    // Editing the selector so that it no longer matches turns the Apply into a Skip.
    c.kubectl_ok(
        &[
            "patch",
            "tracingpolicy",
            "k8s-test-node-selected",
            "--type=merge",
            "-p",
            r#"{"spec":{"nodeSelector":{"matchLabels":{"lsm-agent.io/enforce":"false"}}}}"#,
        ],
        None,
    );
    recv_until(
        &mut rx,
        &mut seen,
        "node-selected skipped",
        |e| matches!(e, PolicyEvent::Skip { key, .. } if key.name == "k8s-test-node-selected"),
    )
    .await;

    // Deleted, both kinds.
    c.kubectl_ok(
        &["delete", "tracingpolicynamespaced", egress_name, "-n", NS],
        None,
    );
    recv_until(
        &mut rx,
        &mut seen,
        "egress deleted",
        |e| matches!(e, PolicyEvent::Delete { key: k } if *k == key),
    )
    .await;
    c.kubectl_ok(
        &[
            "delete",
            "tracingpolicy",
            "lsm-file-open",
            "k8s-test-node-selected",
            "k8s-test-other-nodes",
        ],
        None,
    );
    for name in [
        "lsm-file-open",
        "k8s-test-node-selected",
        "k8s-test-other-nodes",
    ] {
        recv_until(
            &mut rx,
            &mut seen,
            &format!("{name} deleted"),
            |e| matches!(e, PolicyEvent::Delete { key } if key.kind == tp && key.name == name),
        )
        .await;
    }
    watcher.abort();
}
