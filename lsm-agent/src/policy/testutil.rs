//! Helpers shared by the policy unit tests: parsing shortcuts, the fixture policies in
//! `testdata/policies/`, and the Tetragon quickstart policies in `../shared`.

use std::path::{Path, PathBuf};

use super::error::PolicyError;
use super::ir::{self, AddrValue, ArgType, FilterKind, NetField, NumOp, StrOp};
use super::parse::parse_policy;

/// The text of a policy in the workspace's `testdata/policies/` directory.
macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/policies/",
            $name
        ))
    };
}
pub(crate) use fixture;

/// A policy of Tetragon's quickstart (read-only test data in `../shared`, beside the
/// workspace root).
pub(crate) fn quickstart(name: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = workspace.join("../shared/testdata/tetragon-quickstart");
    let file = dir.join(name);
    assert!(
        file.is_file(),
        "Tetragon quickstart policy {} not found: the tests need shared/ beside the \
             workspace root",
        file.display()
    );
    file
}

pub(crate) fn parse(yaml: &str) -> Result<ir::Policy, PolicyError> {
    parse_policy(yaml, Path::new("test.yaml"))
}

pub(crate) fn parse_ok(yaml: &str) -> ir::Policy {
    match parse(yaml) {
        Ok(p) => p,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

pub(crate) fn parse_err(yaml: &str) -> PolicyError {
    match parse(yaml) {
        Ok(p) => panic!("unexpected success: {p:?}"),
        Err(e) => e,
    }
}

/// `file-permission-post.yaml`: a `security_file_permission` kprobe declaring `file` (0) and
/// `int` (1), with one selector that posts.
pub(crate) const FILE_PERMISSION_POST: &str = fixture!("file-permission-post.yaml");

/// `socket-connect-post.yaml`: a `security_socket_connect` kprobe declaring `sock` (0),
/// `sockaddr` (1) and `int` (2), with one selector that posts.
pub(crate) const SOCKET_CONNECT_POST: &str = fixture!("socket-connect-post.yaml");

/// `policy` (one of the `*-post.yaml` fixtures) with its selector replaced by `selector`,
/// YAML indented for a `selectors:` list item body (6 spaces). Lines keep their numbers.
fn replace_selector(policy: &str, selector: &str) -> String {
    const POST: &str = "    - matchActions: [{action: Post}]\n";
    let head = policy
        .strip_suffix(POST)
        .expect("the fixture ends with its Post selector");
    format!("{head}    - {}\n", selector.trim_start())
}

/// [`FILE_PERMISSION_POST`] with `selector` as its selector.
pub(crate) fn with_selector(selector: &str) -> String {
    replace_selector(FILE_PERMISSION_POST, selector)
}

pub(crate) fn str_filter(f: &ir::ArgFilter) -> (StrOp, bool, Vec<String>) {
    match &f.kind {
        FilterKind::Str {
            op,
            negated,
            values,
        } => (
            *op,
            *negated,
            values
                .iter()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect(),
        ),
        other => panic!("not a string filter: {other:?}"),
    }
}

pub(crate) fn num_filter(f: &ir::ArgFilter) -> (NumOp, Vec<u64>) {
    match &f.kind {
        FilterKind::Num { op, values } => (*op, values.clone()),
        other => panic!("not a numeric filter: {other:?}"),
    }
}

pub(crate) const INT32: ArgType = ArgType::Int {
    width: 4,
    signed: true,
};

pub(crate) const UINT32: ArgType = ArgType::Int {
    width: 4,
    signed: false,
};

pub(crate) fn sel0(p: &ir::Policy) -> &ir::Selector {
    &p.hooks[0].selectors[0]
}

/// [`SOCKET_CONNECT_POST`] with `selector` as its selector.
pub(crate) fn with_net_selector(selector: &str) -> String {
    replace_selector(SOCKET_CONNECT_POST, selector)
}

/// One matchArgs filter on argument `index` of the socket_connect policy.
pub(crate) fn net_filter_yaml(index: u32, operator: &str, values: &[&str]) -> String {
    let values = values
        .iter()
        .map(|v| format!("\"{v}\""))
        .collect::<Vec<_>>()
        .join(", ");
    with_net_selector(&format!(
        "
      matchArgs:
      - index: {index}
        operator: \"{operator}\"
        values: [{values}]"
    ))
}

pub(crate) fn net_filter(index: u32, operator: &str, values: &[&str]) -> FilterKind {
    let p = parse_ok(&net_filter_yaml(index, operator, values));
    p.hooks[0].selectors[0].match_args[0].kind.clone()
}

pub(crate) fn net_err(index: u32, operator: &str, values: &[&str]) -> PolicyError {
    parse_err(&net_filter_yaml(index, operator, values))
}

pub(crate) fn net(s: &str) -> AddrValue {
    AddrValue::Net(s.parse().expect("test network"))
}

pub(crate) fn addr_filter(field: NetField, negated: bool, values: &[&str]) -> FilterKind {
    FilterKind::Addr {
        field,
        negated,
        values: values.iter().map(|v| net(v)).collect(),
    }
}

pub(crate) fn port_filter(field: NetField, negated: bool, ranges: &[(u16, u16)]) -> FilterKind {
    FilterKind::Port {
        field,
        negated,
        ranges: ranges.to_vec(),
    }
}

pub(crate) const MATCH_ARG0: &str = "spec.kprobes[0].selectors[0].matchArgs[0]";

pub(crate) fn quickstart_net_env(name: &str) -> Option<String> {
    match name {
        "PODCIDR" => Some("10.0.0.0/16".to_string()),
        "SERVICECIDR" => Some("10.96.0.0/12".to_string()),
        _ => None,
    }
}

/// A selector with the given `(index, operator, value)` filters.
pub(crate) fn net_filters_yaml(filters: &[(u32, &str, &str)]) -> String {
    let body: String = filters
        .iter()
        .map(|(i, op, v)| {
            format!(
                "
      - index: {i}
        operator: {op}
        values: [\"{v}\"]"
            )
        })
        .collect();
    with_net_selector(&format!("\n      matchArgs:{body}"))
}
