//! The Kubernetes manifest in deploy/kubernetes: the agent accepts the DaemonSet's arguments,
//! the policies of its ConfigMap pass the check, and metrics are exposed on :2112.

use std::{fs, path::PathBuf, process::Command};

use serde::Deserialize;
use serde_yaml::Value;

fn manifest() -> Vec<Value> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/lsm-agent.yaml");
    let text = fs::read_to_string(&path).expect("manifest");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("YAML document"))
        .collect()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} in the manifest"))
}

#[test]
fn the_daemonset_arguments_and_configmap_policies_pass_the_agents_check() {
    let docs = manifest();
    let ds = kind(&docs, "DaemonSet");
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect();
    assert!(args.contains(&"--metrics-server=:2112".to_string()));

    // The ConfigMap's files stand in for the mounted policy directory.
    let cm = kind(&docs, "ConfigMap");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = 0;
    for (name, body) in cm["data"].as_mapping().expect("data") {
        let name = name.as_str().expect("file name");
        fs::write(dir.path().join(name), body.as_str().expect("policy text")).expect("write");
        n += 1;
    }
    assert!(n >= 1, "the ConfigMap ships a policy");
    let args: Vec<String> = args
        .into_iter()
        .map(|a| match a.strip_prefix("--tracing-policy-dir=") {
            Some(_) => format!("--tracing-policy-dir={}", dir.path().display()),
            None => a,
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_lsm-agent"))
        .args(&args)
        .arg("--check")
        .output()
        .expect("running lsm-agent");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_metrics_port_is_exposed_and_scraped() {
    let docs = manifest();
    let ds = kind(&docs, "DaemonSet");
    let port = &ds["spec"]["template"]["spec"]["containers"][0]["ports"][0];
    assert_eq!(port["name"].as_str(), Some("metrics"));
    assert_eq!(port["containerPort"].as_u64(), Some(2112));
    let svc = kind(&docs, "Service");
    assert_eq!(
        svc["spec"]["ports"][0]["targetPort"].as_str(),
        Some("metrics")
    );
    assert_eq!(
        svc["metadata"]["annotations"]["prometheus.io/port"].as_str(),
        Some("2112")
    );
    assert_eq!(
        svc["spec"]["selector"], ds["spec"]["template"]["metadata"]["labels"],
        "the Service selects the agent's pods"
    );
}
