//! The serde model of Tetragon's `TracingPolicy` CRD. Field names are Tetragon's JSON names;
//! every struct rejects unknown fields, as Tetragon's CRD schema does.
// Many fields are only read to be rejected, or are accepted and ignored.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

/// Just enough to dispatch on `kind` before the strict parse.
#[derive(Deserialize)]
pub struct Head {
    pub kind: Option<String>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(rename = "apiVersion")]
    pub api_version: Option<String>,
    pub kind: String,
    pub metadata: Option<Metadata>,
    pub spec: Option<Spec>,
}

/// Kubernetes `ObjectMeta`, as written in manifests and as returned by `kubectl get -o yaml`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
    pub self_link: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub creation_timestamp: Option<Value>,
    pub deletion_timestamp: Option<Value>,
    pub deletion_grace_period_seconds: Option<i64>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub owner_references: Option<Vec<Value>>,
    pub finalizers: Option<Vec<String>>,
    pub managed_fields: Option<Vec<Value>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Spec {
    pub kprobes: Option<Vec<Kprobe>>,
    pub tracepoints: Option<Vec<Tracepoint>>,
    pub lsmhooks: Option<Vec<LsmHookSpec>>,
    pub uprobes: Option<Vec<Uprobe>>,
    pub usdts: Option<Vec<Usdt>>,
    /// Kprobe specs attached with fentry: read as kprobes marked [`Kprobe::fentry`].
    #[serde(default, deserialize_with = "fentries")]
    pub fentries: Option<Vec<Kprobe>>,
    /// Raw tracepoints (not in Tetragon's CRD; its examples use them).
    pub rawtracepoints: Option<Vec<Tracepoint>>,
    pub loader: Option<bool>,
    pub pod_selector: Option<LabelSelector>,
    pub container_selector: Option<LabelSelector>,
    pub host_selector: Option<LabelSelector>,
    pub node_selector: Option<LabelSelector>,
    pub lists: Option<Vec<List>>,
    pub enforcers: Option<Vec<Enforcer>>,
    /// The old name of `enforcers` (with `syscalls` for `calls`), in Tetragon's examples.
    pub killers: Option<Vec<Killer>>,
    pub options: Option<Vec<OptionSpec>>,
    pub selectors_macros: Option<BTreeMap<String, Selector>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kprobe {
    /// A function, or `list:NAME` for each member of `spec.lists` NAME (see
    /// [`super::lists`]).
    pub call: String,
    /// CRD default true; irrelevant for the `security_*` calls the agent translates.
    pub syscall: Option<bool>,
    #[serde(rename = "return")]
    pub ret: Option<bool>,
    pub message: Option<String>,
    pub args: Option<Vec<Arg>>,
    pub data: Option<Vec<Arg>>,
    pub return_arg: Option<Arg>,
    pub return_arg_action: Option<String>,
    pub selectors: Option<Vec<Selector>>,
    pub tags: Option<Vec<String>>,
    pub ignore: Option<KprobeIgnore>,
    /// Set for the entries of `spec.fentries`: Tetragon attaches them with fentry/fexit
    /// instead of kprobe/kretprobe, with the same meaning.
    #[serde(skip)]
    pub fentry: bool,
}

/// `spec.fentries`: the same fields as kprobes, marked so that validation treats them as
/// kprobes attached with fentry (Tetragon gives them the same meaning).
fn fentries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<Kprobe>>, D::Error> {
    let mut fentries: Option<Vec<Kprobe>> = Option::deserialize(d)?;
    for f in fentries.iter_mut().flatten() {
        f.fentry = true;
    }
    Ok(fentries)
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KprobeIgnore {
    pub call_not_found: Option<bool>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Tracepoint {
    pub subsystem: Option<String>,
    pub event: Option<String>,
    pub message: Option<String>,
    pub args: Option<Vec<Arg>>,
    pub selectors: Option<Vec<Selector>>,
    pub tags: Option<Vec<String>>,
    pub raw: Option<bool>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LsmHookSpec {
    pub hook: String,
    pub message: Option<String>,
    pub args: Option<Vec<Arg>>,
    pub selectors: Option<Vec<Selector>>,
    pub tags: Option<Vec<String>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Uprobe {
    pub path: Option<String>,
    pub btf_path: Option<String>,
    pub symbols: Option<Vec<String>>,
    /// One symbol; the older spelling of `symbols: [X]`.
    pub symbol: Option<String>,
    /// Resolve `path` inside each selected container's root filesystem.
    pub resolve_path_in_container: Option<bool>,
    pub offsets: Option<Vec<Value>>,
    pub addrs: Option<Vec<Value>>,
    pub ref_ctr_offsets: Option<Vec<Value>>,
    pub message: Option<String>,
    pub selectors: Option<Vec<Selector>>,
    pub args: Option<Vec<Arg>>,
    pub data: Option<Vec<Arg>>,
    pub tags: Option<Vec<String>>,
    #[serde(rename = "return")]
    pub ret: Option<bool>,
    pub return_arg: Option<Arg>,
    pub binary_digests: Option<Vec<Value>>,
    pub ignore: Option<UprobeIgnore>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UprobeIgnore {
    pub digest_verification_failure: Option<bool>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Usdt {
    pub path: Option<String>,
    pub btf_path: Option<String>,
    pub provider: Option<String>,
    pub name: Option<String>,
    pub tags: Option<Vec<String>>,
    pub message: Option<String>,
    pub args: Option<Vec<Arg>>,
    pub selectors: Option<Vec<Selector>>,
}

/// `KProbeArg` (`args[]`, `data[]`, `returnArg`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Arg {
    /// Tetragon's examples leave it out of `returnArg` (the return value has no position);
    /// Go's zero value makes that 0.
    #[serde(default)]
    pub index: u32,
    /// CRD default `auto`.
    #[serde(rename = "type")]
    pub ty: Option<String>,
    pub resolve: Option<String>,
    pub size_arg_index: Option<u32>,
    pub return_copy: Option<bool>,
    pub max_data: Option<bool>,
    pub label: Option<String>,
    pub source: Option<String>,
    pub btf_type: Option<String>,
    pub btf_type_module: Option<String>,
    /// Number of elements of an array type (`int32_arr`).
    pub size: Option<u32>,
    /// A path of struct members to follow from the argument (`mm.owner.comm`), by BTF.
    pub extract_param: Option<String>,
    /// The type of the value `extractParam` ends at.
    pub overwrite_type: Option<String>,
}

/// The parts shared by `kprobes[]` and `lsmhooks[]` that become an `ir::Hook`.
pub struct HookBody<'a> {
    pub args: &'a Option<Vec<Arg>>,
    pub selectors: &'a Option<Vec<Selector>>,
    pub message: &'a Option<String>,
    pub tags: &'a Option<Vec<String>>,
}

/// `body()` for every hook section with these four fields, so each is validated by one
/// function.
macro_rules! hook_body {
    ($($spec:ty),*) => {$(
        impl $spec {
            pub fn body(&self) -> HookBody<'_> {
                HookBody {
                    args: &self.args,
                    selectors: &self.selectors,
                    message: &self.message,
                    tags: &self.tags,
                }
            }
        }
    )*};
}
hook_body!(Kprobe, LsmHookSpec, Tracepoint, Uprobe, Usdt);

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    pub label: Option<String>,
    #[serde(rename = "matchPIDs")]
    pub match_pids: Option<Vec<PidSelector>>,
    pub match_args: Option<Vec<ArgSelector>>,
    pub match_data: Option<Vec<ArgSelector>>,
    pub match_actions: Option<Vec<Action>>,
    pub match_return_args: Option<Vec<ArgSelector>>,
    pub match_return_actions: Option<Vec<Action>>,
    pub match_binaries: Option<Vec<BinarySelector>>,
    pub match_parent_binaries: Option<Vec<BinarySelector>>,
    pub match_namespaces: Option<Vec<NamespaceSelector>>,
    pub match_namespace_changes: Option<Vec<NamespaceChangesSelector>>,
    pub match_capabilities: Option<Vec<CapabilitiesSelector>>,
    pub match_capability_changes: Option<Vec<CapabilitiesSelector>>,
    pub match_workloads: Option<Workloads>,
    pub macros: Option<Vec<String>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PidSelector {
    pub operator: Option<String>,
    pub values: Option<Vec<u32>>,
    #[serde(rename = "isNamespacePID")]
    pub is_namespace_pid: Option<bool>,
    pub follow_forks: Option<bool>,
}

/// `matchArgs`, `matchData`, `matchReturnArgs`. Values are strings in Tetragon; an
/// unquoted YAML number is read as its text, so `- 4` and `- "4"` mean the same.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ArgSelector {
    pub index: Option<u32>,
    pub args: Option<Vec<u32>>,
    pub operator: Option<String>,
    pub values: Option<Vec<String>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BinarySelector {
    pub operator: Option<String>,
    pub values: Option<Vec<String>>,
    pub follow_children: Option<bool>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceSelector {
    pub namespace: Option<String>,
    pub operator: Option<String>,
    pub values: Option<Vec<String>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespaceChangesSelector {
    pub operator: Option<String>,
    pub values: Option<Vec<String>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CapabilitiesSelector {
    #[serde(rename = "type")]
    pub ty: Option<String>,
    pub operator: Option<String>,
    pub is_namespace_capability: Option<bool>,
    pub values: Option<Vec<String>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Workloads {
    pub pod_selector: Option<LabelSelector>,
    pub container_selector: Option<LabelSelector>,
    pub host_selector: Option<LabelSelector>,
}

/// `ActionSelector`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Action {
    pub action: String,
    pub arg_fd: Option<u32>,
    pub arg_name: Option<u32>,
    pub arg_url: Option<String>,
    pub arg_fqdn: Option<String>,
    pub arg_error: Option<i32>,
    pub arg_sig: Option<u32>,
    pub arg_sock: Option<u32>,
    pub rate_limit: Option<String>,
    pub rate_limit_scope: Option<String>,
    pub kernel_stack_trace: Option<bool>,
    pub user_stack_trace: Option<bool>,
    pub ima_hash: Option<bool>,
    pub arg_regs: Option<Vec<String>>,
    /// Registers to set (`rax:0x123`) for the uprobe `Regs` action.
    pub arg_reg: Option<Vec<String>>,
    pub arg_new_symbol: Option<String>,
    pub arg_new_addr: Option<Value>,
    pub arg_new_offset: Option<Value>,
    pub arg_index: Option<u32>,
    pub arg_value: Option<Value>,
}

/// Kubernetes `LabelSelector`.
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelector {
    pub match_labels: Option<BTreeMap<String, String>>,
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    pub operator: String,
    pub values: Option<Vec<String>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct List {
    pub name: String,
    pub values: Option<Vec<String>>,
    #[serde(rename = "type")]
    pub ty: Option<String>,
    pub pattern: Option<String>,
    pub validated: Option<bool>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Enforcer {
    pub calls: Vec<String>,
}

/// `spec.killers[]`: the old form of an enforcer.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Killer {
    pub syscalls: Option<Vec<String>>,
    pub calls: Option<Vec<String>>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OptionSpec {
    pub name: String,
    pub value: Option<String>,
}
