//! The agent's ClusterRole grants what its watchers use (proven by pods.rs and policies.rs,
//! which watch with its token) and nothing that writes or reads beyond that.

use crate::cluster::cluster;

const AGENT: &str = "system:serviceaccount:lsm-agent:lsm-agent";

fn can_i(verb: &str, resource: &str) -> bool {
    let out = cluster().kubectl(
        &["auth", "can-i", verb, resource, "-A", "--as", AGENT],
        None,
    );
    let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match answer.as_str() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {verb} {resource}: {other:?} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn the_agent_may_read_what_it_watches() {
    for (verb, resource) in [
        ("get", "pods"),
        ("list", "pods"),
        ("watch", "pods"),
        ("get", "nodes"),
        ("list", "nodes"),
        ("watch", "nodes"),
        ("list", "tracingpolicies.cilium.io"),
        ("watch", "tracingpolicies.cilium.io"),
        ("get", "tracingpoliciesnamespaced.cilium.io"),
        ("watch", "tracingpoliciesnamespaced.cilium.io"),
    ] {
        assert!(can_i(verb, resource), "{verb} {resource} should be allowed");
    }
}

#[test]
fn the_agent_may_not_write_or_read_other_resources() {
    for (verb, resource) in [
        ("create", "pods"),
        ("delete", "pods"),
        ("patch", "pods/status"),
        ("update", "nodes"),
        ("patch", "nodes"),
        ("patch", "nodes/status"),
        ("list", "secrets"),
        ("get", "configmaps"),
        ("create", "tracingpolicies.cilium.io"),
        ("delete", "tracingpoliciesnamespaced.cilium.io"),
        ("update", "tracingpolicies.cilium.io/status"),
    ] {
        assert!(!can_i(verb, resource), "{verb} {resource} should be denied");
    }
}
