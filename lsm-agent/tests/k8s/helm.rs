//! The Helm chart (deploy/helm/lsm-agent) rendered without helm, by a renderer for the small
//! subset of Go templates the chart uses (value references, `if`/`end`, `toYaml`, `nindent`,
//! `indent`, `quote`, pipelines, `{{-`/`-}}` trimming); anything else is an error, so the
//! chart cannot drift into syntax this test would misrender.
//!
//! Checked: the default rendering is deploy/kubernetes/lsm-agent.yaml (minus its Namespace),
//! and every rendered object passes a server-side dry run.

use std::path::Path;

use serde_json::{Map, Value, json};

use crate::cluster::{cluster, workspace};

/// Renders one template with `ctx` (`{"Values": …, "Release": …, "Chart": …}`).
pub fn render(template: &str, ctx: &Value) -> Result<String, String> {
    let mut out = String::new();
    // Stack of "is this branch emitting" for nested `if`s.
    let mut emitting: Vec<bool> = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    while !rest.is_empty() {
        let (text, action) = match rest.find("{{") {
            Some(i) => (&rest[..i], Some(&rest[i + 2..])),
            None => (rest, None),
        };
        let mut text = text;
        if trim_next {
            text = text.trim_start();
        }
        let Some(after) = action else {
            if emitting.iter().all(|e| *e) {
                out.push_str(text);
            }
            break;
        };
        let end = after.find("}}").ok_or("unclosed {{")?;
        let mut body = &after[..end];
        rest = &after[end + 2..];
        if let Some(b) = body.strip_prefix("- ") {
            text = text.trim_end();
            body = b;
        }
        trim_next = false;
        if let Some(b) = body.strip_suffix(" -") {
            trim_next = true;
            body = b;
        }
        if emitting.iter().all(|e| *e) {
            out.push_str(text);
        }
        let body = body.trim();
        if let Some(cond) = body.strip_prefix("if ") {
            let value = pipeline(cond, ctx)?;
            emitting.push(truthy(&value));
        } else if body == "end" {
            emitting.pop().ok_or("`end` without `if`")?;
        } else if emitting.iter().all(|e| *e) {
            out.push_str(&as_text(&pipeline(body, ctx)?));
        }
    }
    if !emitting.is_empty() {
        return Err("`if` without `end`".into());
    }
    Ok(out)
}

fn pipeline(expr: &str, ctx: &Value) -> Result<Value, String> {
    let mut piped: Option<Value> = None;
    for command in expr.split('|') {
        let words: Vec<&str> = command.split_whitespace().collect();
        let (name, args) = words.split_first().ok_or("empty command")?;
        let mut args: Vec<Value> = args
            .iter()
            .map(|a| argument(a, ctx))
            .collect::<Result<_, _>>()?;
        args.extend(piped.take());
        piped = Some(if name.starts_with('.') {
            if !args.is_empty() {
                return Err(format!("{name} takes no arguments"));
            }
            lookup(name, ctx)?
        } else {
            function(name, &args)?
        });
    }
    piped.ok_or_else(|| "empty action".into())
}

fn argument(word: &str, ctx: &Value) -> Result<Value, String> {
    if word.starts_with('.') {
        return lookup(word, ctx);
    }
    word.parse::<i64>()
        .map(Value::from)
        .map_err(|_| format!("unsupported argument {word:?}"))
}

/// `.Values.a.b`; a missing key is an error (helm would print `<no value>`).
fn lookup(path: &str, ctx: &Value) -> Result<Value, String> {
    let mut v = ctx;
    for key in path.trim_start_matches('.').split('.') {
        v = v.get(key).ok_or_else(|| format!("no value at {path}"))?;
    }
    Ok(v.clone())
}

fn function(name: &str, args: &[Value]) -> Result<Value, String> {
    let int = |v: &Value| {
        v.as_u64()
            .map(|n| n as usize)
            .ok_or(format!("{name}: not a number"))
    };
    match (name, args) {
        ("toYaml", [v]) => {
            let text = serde_yaml::to_string(v).map_err(|e| e.to_string())?;
            Ok(Value::String(text.trim_end_matches('\n').to_string()))
        }
        ("indent", [n, v]) => Ok(Value::String(indent(int(n)?, &as_text(v)))),
        ("nindent", [n, v]) => Ok(Value::String(format!("\n{}", indent(int(n)?, &as_text(v))))),
        ("quote", [v]) => Ok(Value::String(
            serde_json::to_string(&as_text(v)).map_err(|e| e.to_string())?,
        )),
        _ => Err(format!(
            "unsupported function {name} with {} argument(s)",
            args.len()
        )),
    }
}

fn indent(n: usize, text: &str) -> String {
    let pad = " ".repeat(n);
    format!("{pad}{}", text.replace('\n', &format!("\n{pad}")))
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// `base` with `over` merged in as Helm merges values: maps key by key, `null` removes a key,
/// anything else replaces.
fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else {
                    merge(b.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn chart_dir() -> std::path::PathBuf {
    workspace().join("deploy/helm/lsm-agent")
}

fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// All templates rendered (in name order) into their YAML documents.
pub fn render_chart(release: &str, namespace: &str, values_override: Option<&Value>) -> Vec<Value> {
    let dir = chart_dir();
    let mut values = yaml_file(&dir.join("values.yaml"));
    if let Some(over) = values_override {
        merge(&mut values, over);
    }
    let ctx = json!({
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace},
        "Chart": yaml_file(&dir.join("Chart.yaml")),
    });
    let mut names: Vec<_> = std::fs::read_dir(dir.join("templates"))
        .expect("templates/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    names.sort();
    let mut docs = Vec::new();
    for path in names {
        let template = std::fs::read_to_string(&path).expect("template");
        let text = render(&template, &ctx).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        docs.extend(
            documents(&text)
                .unwrap_or_else(|e| panic!("{} renders invalid YAML: {e}\n{text}", path.display())),
        );
    }
    docs
}

fn documents(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(text)
        .map(Value::deserialize)
        .filter(|d| !matches!(d, Ok(Value::Null)))
        .collect()
}

fn to_yaml_stream(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml::to_string(d).expect("YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

fn key(doc: &Value) -> String {
    format!(
        "{}/{}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}

// --- The renderer itself. ---

#[test]
fn the_renderer_follows_go_template_trimming_and_pipelines() {
    let ctx = json!({"Values": {"list": ["a", "b"], "empty": {}, "port": 2112, "s": "x"}});
    let t = "k:\n  {{- toYaml .Values.list | nindent 2 }}\n{{- if .Values.empty }}\nno\n{{- end }}\np: {{ .Values.port | quote }} {{ .Values.s }}\n";
    assert_eq!(
        render(t, &ctx).expect("renders"),
        "k:\n  - a\n  - b\np: \"2112\" x\n"
    );
    assert!(
        render("{{ .Values.missing }}", &ctx).is_err(),
        "missing values are errors"
    );
    assert!(
        render("{{ default 1 .Values.s }}", &ctx).is_err(),
        "unsupported functions too"
    );
    assert!(render("{{ if .Values.s }}", &ctx).is_err(), "unclosed if");
}

// --- The chart. ---

#[test]
fn the_plain_manifest_is_the_chart_rendered_with_default_values() {
    let rendered = render_chart("lsm-agent", "lsm-agent", None);
    let path = workspace().join("deploy/kubernetes/lsm-agent.yaml");
    let manifest = documents(&std::fs::read_to_string(&path).expect("manifest")).expect("YAML");
    let (namespaces, objects): (Vec<Value>, Vec<Value>) =
        manifest.into_iter().partition(|d| d["kind"] == "Namespace");
    assert_eq!(
        namespaces.len(),
        1,
        "the plain manifest creates its namespace"
    );
    assert_eq!(namespaces[0]["metadata"]["name"], "lsm-agent");
    let mut want: Vec<(String, &Value)> = rendered.iter().map(|d| (key(d), d)).collect();
    let mut have: Vec<(String, &Value)> = objects.iter().map(|d| (key(d), d)).collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    have.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        want == have,
        "deploy/kubernetes/lsm-agent.yaml is out of step with the chart; its objects should be \
         (after the Namespace):\n{}",
        to_yaml_stream(&rendered)
    );
}

#[test]
fn the_chart_renders_each_object_once_with_values_applied() {
    let over: Value =
        serde_yaml::from_str(include_str!("fixtures/values-custom.yaml")).expect("values");
    let docs = render_chart("edge", "security", Some(&over));
    let kinds: Vec<String> = docs.iter().map(key).collect();
    for want in [
        "ServiceAccount/edge",
        "ClusterRole/edge",
        "ClusterRoleBinding/edge",
        "ConfigMap/edge-policies",
        "DaemonSet/edge",
        "Service/edge-metrics",
    ] {
        assert_eq!(
            kinds.iter().filter(|k| *k == want).count(),
            1,
            "{want} in {kinds:?}"
        );
    }
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "registry.example.com/lsm-agent:v9");
    assert_eq!(c["ports"][0]["containerPort"], 9100);
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--metrics-server=:9100"), "{args:?}");
    assert_eq!(
        args.last(),
        Some(&"--export-filename=/var/run/lsm-agent/events.log"),
        "extraArgs appended"
    );
    assert_eq!(pod["nodeSelector"]["lsm-agent.io/bpf-lsm"], "true");
    assert!(
        pod.get("tolerations").is_none(),
        "empty tolerations are left out"
    );
    assert_eq!(ds["metadata"]["namespace"], "security");
    let svc = docs
        .iter()
        .find(|d| d["kind"] == "Service")
        .expect("Service");
    assert_eq!(svc["metadata"]["annotations"]["prometheus.io/port"], "9100");
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("ConfigMap");
    let data = cm["data"].as_object().expect("data");
    // Helm merges maps: the default policy stays unless set to null.
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        ["block-shadow.yaml", "only.yaml"]
    );
    let crb = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRoleBinding")
        .expect("binding");
    assert_eq!(
        crb["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "edge", "namespace": "security"})
    );
}

#[test]
fn the_daemonset_has_what_the_agent_needs_on_a_node() {
    let docs = render_chart("lsm-agent", "lsm-agent", None);
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true);
    let env = &c["env"][0];
    assert_eq!(env["name"], "NODE_NAME");
    assert_eq!(env["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    // On the agent's unix socket (a hostPath), which no egress policy can block.
    assert_eq!(
        c["readinessProbe"]["exec"]["command"],
        json!([
            "lsmctl",
            "--server-address",
            "unix:///var/run/lsm-agent/lsm-agent.sock",
            "status"
        ])
    );
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["requests"]["memory"].is_string());
    let volumes: Map<String, Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("name").to_string(), v.clone()))
        .collect();
    for (host, mount) in [
        ("/sys/fs/bpf", "/sys/fs/bpf"),
        ("/sys/kernel/btf", "/sys/kernel/btf"),
        ("/sys/kernel/security", "/sys/kernel/security"),
        ("/sys/fs/cgroup", "/sys/fs/cgroup"),
        ("/proc", "/procRoot"),
    ] {
        let (name, _) = volumes
            .iter()
            .find(|(_, v)| v["hostPath"]["path"] == host)
            .unwrap_or_else(|| panic!("no hostPath volume for {host}"));
        let mounted = c["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .any(|m| m["name"] == name.as_str() && m["mountPath"] == mount);
        assert!(mounted, "{host} is not mounted at {mount}");
    }
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"], ds["spec"]["template"]["metadata"]["labels"],
        "the DaemonSet selects its own pods"
    );
}

/// `kubectl apply --dry-run=server` of every rendered object, and a strict server-side apply
/// dry run (unknown fields are errors).
///
/// kubectl runs with `--validate=false`: the shared kube-apiserver build serves an OpenAPI
/// document kubectl cannot read, and kubectl's own validation needs it. The strict dry run
/// below puts back the check that flag drops.
#[tokio::test]
async fn every_rendered_object_passes_a_server_side_dry_run() {
    let c = cluster();
    let over: Value =
        serde_yaml::from_str(include_str!("fixtures/values-custom.yaml")).expect("values");
    let client = c.admin_client().await;
    for (ns, values) in [("chart-default", None), ("chart-custom", Some(&over))] {
        c.kubectl_ok(&["create", "namespace", ns], None);
        let docs = render_chart("dry", ns, values);
        let stream = to_yaml_stream(&docs);
        let out = c.kubectl_ok(
            &[
                "apply",
                "--dry-run=server",
                "--validate=false",
                "-n",
                ns,
                "-f",
                "-",
            ],
            Some(&stream),
        );
        assert_eq!(out.matches("(server dry run)").count(), docs.len(), "{out}");
        for doc in &docs {
            strict_dry_run(&client, doc, ns).await;
        }
    }
}

/// Server-side apply with `dryRun=All` and `fieldValidation=Strict`.
pub async fn strict_dry_run(client: &kube::Client, doc: &Value, namespace: &str) {
    use kube::api::{Api, DynamicObject, Patch, PatchParams, ValidationDirective};
    use kube::discovery::{self, Scope};
    let (group, version) = match doc["apiVersion"]
        .as_str()
        .expect("apiVersion")
        .split_once('/')
    {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            doc["apiVersion"].as_str().expect("apiVersion").to_string(),
        ),
    };
    let gvk =
        kube::api::GroupVersionKind::gvk(&group, &version, doc["kind"].as_str().expect("kind"));
    let (resource, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .expect("discovery");
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let params = PatchParams {
        dry_run: true,
        force: true,
        field_manager: Some("lsm-agent-test".into()),
        field_validation: Some(ValidationDirective::Strict),
    };
    let name = doc["metadata"]["name"].as_str().expect("name");
    if let Err(e) = api.patch(name, &params, &Patch::Apply(doc)).await {
        panic!("{} rejected by a strict dry run: {e}", key(doc));
    }
}
