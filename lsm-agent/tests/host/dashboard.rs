//! The Grafana dashboard and docs/metrics.md against the metrics the agent exports
//! (`lsm_agent::metrics::METRICS`, the table registration uses): every metric a PromQL
//! expression names must be exported, with the labels the expression uses, and every exported
//! metric must be documented.

use std::{collections::BTreeSet, path::PathBuf};

use lsm_agent::metrics::{METRICS, Metric, find};
use regex::Regex;
use serde_json::Value;

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["instance", "job"];

fn repo_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&repo_file("deploy/grafana/lsm-agent-dashboard.json"))
        .expect("the dashboard is valid JSON")
}

/// Every PromQL string of the dashboard: panel targets (`expr`) and variable queries.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

fn promql() -> Vec<String> {
    let mut out = Vec::new();
    queries(&dashboard(), &mut out);
    // The data source variable's query is the plugin type, not PromQL.
    out.retain(|q| q != "prometheus");
    out
}

fn allowed(metrics: &[&Metric], label: &str) -> bool {
    TARGET_LABELS.contains(&label) || metrics.iter().any(|m| m.labels.contains(&label))
}

#[test]
fn every_metric_the_dashboard_queries_is_exported_with_its_labels() {
    let name_re = Regex::new(r"\blsm_agent_[a-z0-9_]+\b").unwrap();
    let selector_re = Regex::new(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}").unwrap();
    let matcher_re = Regex::new(r#"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*""#).unwrap();
    let grouping_re = Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap();
    let label_values_re = Regex::new(
        r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)",
    )
    .unwrap();

    let exprs = promql();
    assert!(exprs.len() >= 20, "only {} queries found", exprs.len());
    let mut used = BTreeSet::new();
    for expr in &exprs {
        let names: Vec<&str> = name_re.find_iter(expr).map(|m| m.as_str()).collect();
        assert!(!names.is_empty(), "{expr:?} queries no lsm-agent metric");
        let mut metrics = Vec::new();
        for n in &names {
            let m = find(n).unwrap_or_else(|| panic!("{expr:?}: {n} is not exported"));
            metrics.push(m);
            used.insert(*n);
        }
        // Selectors: only our metrics, and only labels they have.
        for cap in selector_re.captures_iter(expr) {
            let metric = find(&cap[1]).unwrap_or_else(|| {
                panic!("{expr:?}: selector of {}, which is not exported", &cap[1])
            });
            for m in matcher_re.captures_iter(&cap[2]) {
                assert!(
                    allowed(&[metric], &m[1]),
                    "{expr:?}: {} has no label {}",
                    metric.name,
                    &m[1]
                );
            }
        }
        for cap in grouping_re.captures_iter(expr) {
            for label in cap[1].split(',').map(str::trim).filter(|l| !l.is_empty()) {
                assert!(
                    allowed(&metrics, label),
                    "{expr:?}: grouping by {label}, which none of its metrics has"
                );
            }
        }
        for cap in label_values_re.captures_iter(expr) {
            let metric = find(&cap[1]).unwrap_or_else(|| panic!("{expr:?}: not exported"));
            assert!(
                allowed(&[metric], &cap[2]),
                "{expr:?}: no label {}",
                &cap[2]
            );
        }
    }
    // Not vacuous: the dashboard shows most of what is exported, and what it was made for.
    assert!(used.len() >= 15, "the dashboard uses only {used:?}");
    for required in [
        "lsm_agent_policy_actions_total",
        "lsm_agent_operations_denied_by_binary_total",
        "lsm_agent_events_total",
        "lsm_agent_ringbuf_events_lost_total",
        "lsm_agent_subscriber_events_dropped_total",
        "lsm_agent_tracingpolicy_loaded",
        "lsm_agent_dns_resolution_failures_total",
    ] {
        assert!(used.contains(required), "no panel shows {required}");
    }
    // Counters are only useful through rate()/increase().
    for expr in &exprs {
        for n in name_re.find_iter(expr).map(|m| m.as_str()) {
            if n.ends_with("_total") {
                assert!(
                    expr.contains("rate(") || expr.contains("increase("),
                    "{expr:?}: counter {n} used without rate() or increase()"
                );
            }
        }
    }
}

#[test]
fn dashboard_panels_are_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "lsm-agent");
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        let id = p["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} used twice");
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "panel {id} has no title");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "panel {title:?}");
        }
        let pos = &p["gridPos"];
        let (x, w) = (pos["x"].as_u64().unwrap(), pos["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {title:?} is wider than the grid");
    }
}

#[test]
fn docs_describe_every_metric_with_its_tetragon_counterpart() {
    let docs = repo_file("docs/metrics.md");
    for m in METRICS {
        let row = docs
            .lines()
            .find(|l| l.starts_with('|') && l.contains(&format!("`{}`", m.name)))
            .unwrap_or_else(|| panic!("docs/metrics.md has no table row for {}", m.name));
        let counterpart = if m.tetragon == "none" {
            "none".to_owned()
        } else {
            format!("`{}`", m.tetragon)
        };
        assert!(
            row.contains(&counterpart),
            "docs/metrics.md: the row of {} does not name {counterpart}",
            m.name
        );
        for label in m.labels {
            assert!(
                row.contains(&format!("`{label}`")),
                "docs/metrics.md: the row of {} does not list its label {label}",
                m.name
            );
        }
    }
}
