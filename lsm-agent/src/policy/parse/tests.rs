//! Whole documents: the Tetragon quickstart policies, document-level errors, `${VAR}`
//! expansion and reading files.

use std::path::Path;

use super::*;
use crate::policy::ir::{
    Action, ArgType, BinaryFilter, FilterKind, HookOrigin, LsmHook, NetField, NumOp, PolicyKind,
    PolicyMode, RateLimitScope, StrOp, Target,
};
use crate::policy::testutil::*;

#[test]
fn quickstart_file_monitoring_translates_three_kprobes_to_lsm_hooks() {
    let p = parse_policy_file(&quickstart("file_monitoring.yaml")).expect("parses");
    assert_eq!(p.name, "file-monitoring-filtered");
    assert_eq!(p.kind, PolicyKind::TracingPolicy);
    assert_eq!(p.namespace, None);
    assert_eq!(p.mode, PolicyMode::Enforce);
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    let lsm: Vec<LsmHook> = p
        .hooks
        .iter()
        .map(|h| h.target.lsm().expect("an LSM hook"))
        .collect();
    assert_eq!(
        lsm,
        [
            LsmHook::FilePermission,
            LsmHook::MmapFile,
            LsmHook::PathTruncate
        ]
    );
    let counts: Vec<usize> = p.hooks.iter().map(|h| h.selectors.len()).collect();
    assert_eq!(counts, [3, 2, 1]);

    let perm = &p.hooks[0];
    assert_eq!(
        perm.origin,
        HookOrigin::Kprobe {
            call: "security_file_permission".into()
        }
    );
    assert_eq!(perm.spec_index, 0);
    assert_eq!(perm.args[0].ty, ArgType::File);
    assert_eq!(perm.args[1].ty, INT32);
    assert_eq!(perm.args[1].type_name, "int");
    let sel = &perm.selectors[0];
    assert_eq!(sel.index, 0);
    assert!(sel.actions.is_empty());
    assert_eq!(sel.match_binaries, None);
    let (op, neg, values) = str_filter(&sel.match_args[0]);
    assert_eq!((op, neg), (StrOp::Prefix, false));
    assert_eq!(values.len(), 9);
    assert_eq!(values[0], "/boot");
    assert_eq!(num_filter(&sel.match_args[1]), (NumOp::Equal, vec![4]));
    let (op, _, values) = str_filter(&perm.selectors[1].match_args[0]);
    assert_eq!((op, values.len()), (StrOp::Postfix, 10));
    assert_eq!(
        num_filter(&perm.selectors[2].match_args[1]),
        (NumOp::Equal, vec![2])
    );
}

#[test]
fn quickstart_mmap_file_flags_move_to_lsm_argument_3() {
    let p = parse_policy_file(&quickstart("file_monitoring.yaml")).expect("parses");
    let mmap = &p.hooks[1];
    let idx: Vec<(u32, u32)> = mmap
        .args
        .iter()
        .map(|a| (a.spec_index, a.lsm_index))
        .collect();
    assert_eq!(idx, [(0, 0), (1, 1), (2, 3)]);
    assert_eq!(mmap.args[1].ty, UINT32);
    assert_eq!(mmap.args[2].ty, UINT32);
    let sel = &mmap.selectors[0];
    assert_eq!(sel.match_args.len(), 3);
    assert_eq!(str_filter(&sel.match_args[0]).2.len(), 19);
    assert_eq!(sel.match_args[1].lsm_index, 1);
    assert_eq!(num_filter(&sel.match_args[1]), (NumOp::Equal, vec![1]));
    assert_eq!(sel.match_args[2].spec_index, 2);
    assert_eq!(sel.match_args[2].lsm_index, 3);
    assert_eq!(num_filter(&sel.match_args[2]), (NumOp::Mask, vec![1]));
    assert_eq!(
        num_filter(&mmap.selectors[1].match_args[1]),
        (NumOp::Mask, vec![2])
    );
    let trunc = &p.hooks[2];
    assert_eq!(trunc.args[0].ty, ArgType::Path);
    assert_eq!(str_filter(&trunc.selectors[0].match_args[0]).2.len(), 13);
}

#[test]
fn quickstart_file_monitoring_enforce_is_namespaced_and_sigkills_in_every_selector() {
    let p = parse_policy_file(&quickstart("file_monitoring_enforce.yaml")).expect("parses");
    assert_eq!(p.kind, PolicyKind::TracingPolicyNamespaced);
    assert_eq!(p.namespace, None);
    assert_eq!(p.warnings.len(), 1);
    assert!(
        p.warnings[0].contains("applies to every process on the node"),
        "{}",
        p.warnings[0]
    );
    assert!(p.warnings[0].starts_with(&format!(
        "{}:2:1: kind: ",
        quickstart("file_monitoring_enforce.yaml").display()
    )));
    let counts: Vec<usize> = p.hooks.iter().map(|h| h.selectors.len()).collect();
    assert_eq!(counts, [3, 2, 1]);
    for h in &p.hooks {
        for s in &h.selectors {
            assert_eq!(s.actions, [Action::Sigkill]);
        }
    }
}

#[test]
fn quickstart_lsm_file_open_uses_the_lsm_hook_directly() {
    let p = parse_policy_file(&quickstart("lsm_file_open.yaml")).expect("parses");
    assert_eq!(p.name, "lsm-file-open");
    assert_eq!(p.hooks.len(), 1);
    let h = &p.hooks[0];
    assert_eq!(h.target, Target::Lsm(LsmHook::FileOpen));
    assert_eq!(h.origin, HookOrigin::LsmHook);
    assert_eq!(h.selectors.len(), 1);
    let s = &h.selectors[0];
    assert_eq!(
        s.match_binaries,
        Some(BinaryFilter {
            op: StrOp::Equal,
            negated: false,
            values: vec![b"/usr/bin/cat".to_vec()],
            follow_children: false,
        })
    );
    assert_eq!(
        str_filter(&s.match_args[0]),
        (
            StrOp::Equal,
            false,
            vec!["/etc/passwd".to_string(), "/etc/shadow".to_string()]
        )
    );
    assert!(s.actions.is_empty());
}

#[test]
fn quickstart_lsm_bprm_check_overrides_and_posts() {
    let p = parse_policy_file(&quickstart("lsm_bprm_check.yaml")).expect("parses");
    let h = &p.hooks[0];
    assert_eq!(h.target, Target::Lsm(LsmHook::BprmCheckSecurity));
    assert_eq!(h.args[0].ty, ArgType::LinuxBinprm);
    let s = &h.selectors[0];
    let b = s.match_binaries.as_ref().expect("matchBinaries");
    assert_eq!(b.values.len(), 2);
    assert_eq!(
        str_filter(&s.match_args[0]),
        (
            StrOp::Postfix,
            false,
            vec!["contrib/tester-progs/nop".to_string()]
        )
    );
    assert_eq!(
        s.actions,
        [
            Action::Override { error: -1 },
            Action::Post {
                rate_limit_ms: None,
                rate_limit_scope: RateLimitScope::Thread,
            }
        ]
    );
}

#[test]
fn quickstart_network_policies_parse_into_tcp_only_socket_connect_with_not_daddr() {
    for (name, kind, actions) in [
        (
            "network_egress_cluster.yaml",
            PolicyKind::TracingPolicy,
            vec![],
        ),
        (
            "network_egress_cluster_enforce.yaml",
            PolicyKind::TracingPolicyNamespaced,
            vec![Action::Sigkill],
        ),
    ] {
        let src = std::fs::read_to_string(quickstart(name)).expect("quickstart file");
        let p = parse_policy_with_env(&src, &quickstart(name), quickstart_net_env)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(p.kind, kind, "{name}");
        assert_eq!(p.hooks.len(), 1, "{name}");
        let h = &p.hooks[0];
        assert_eq!(h.target, Target::Lsm(LsmHook::SocketConnect), "{name}");
        assert_eq!(
            h.origin,
            HookOrigin::Kprobe {
                call: "tcp_connect".into()
            }
        );
        assert!(h.tcp_only, "{name}");
        assert_eq!(h.args.len(), 1);
        assert_eq!(h.args[0].ty, ArgType::Sock);
        assert_eq!(h.args[0].type_name, "sock");
        assert_eq!(h.args[0].lsm_index, 0);
        assert_eq!(h.selectors.len(), 1);
        let s = &h.selectors[0];
        assert_eq!(s.match_args.len(), 1);
        assert_eq!(
            s.match_args[0].kind,
            addr_filter(
                NetField::Dest,
                true,
                &["127.0.0.1/32", "10.0.0.0/16", "10.96.0.0/12"]
            ),
            "{name}"
        );
        assert_eq!(s.actions, actions, "{name}");
    }
}

#[test]
fn unknown_field_is_rejected_with_its_line() {
    let yaml = with_selector(
        "
      matchArgs:
      - index: 0
        operatr: Equal
        values: [\"/etc\"]",
    );
    let e = parse_err(&yaml);
    assert_eq!(e.line, Some(17));
    assert!(
        e.message.contains("unknown field `operatr`"),
        "{}",
        e.message
    );
    assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[0]");
}

#[test]
fn unknown_top_level_field_is_rejected() {
    let yaml =
        with_selector("matchActions: [{action: Post}]").replace("spec:\n", "spek: 1\nspec:\n");
    let e = parse_err(&yaml);
    assert_eq!(e.line, Some(5));
    assert!(e.message.contains("unknown field `spek`"), "{}", e.message);
}

#[test]
fn a_document_that_is_not_a_mapping_is_rejected_clearly() {
    let e = parse_err("- a\n- b\n");
    assert_eq!(
        e.message,
        "invalid type: sequence, expected a mapping with apiVersion, kind, metadata and spec"
    );
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let e = parse_err("kind: TracingPolicy\nspec: [\n");
    assert!(e.line.is_some(), "{e}");
    let e = parse_err(
        "kind: TracingPolicy\nspec:\n  lsmhooks:\n  - hook: file_open\n    args:\n    - \
             index: 0\n     type: file\n",
    );
    assert_eq!((e.line, e.column), (Some(7), Some(6)), "{e}");
    assert_eq!(e.path, "spec.lsmhooks[0]", "{e}");
    assert!(
        e.message
            .starts_with("did not find expected key, while parsing"),
        "{e}"
    );
}

#[test]
fn unknown_kind_is_rejected_like_tetragon() {
    let yaml = with_selector("matchActions: [{action: Post}]")
        .replace("kind: TracingPolicy", "kind: NetworkPolicy");
    let e = parse_err(&yaml);
    assert_eq!(e.message, "unknown CRD kind: NetworkPolicy");
    assert_eq!((e.line, e.column), (Some(2), Some(1)));
}

#[test]
fn env_references_are_expanded_before_parsing() {
    let yaml = with_selector(
        "
      matchArgs:
      - index: 0
        operator: Prefix
        values:
        - \"${ROOT}/shadow\"",
    );
    let p = parse_policy_with_env(&yaml, Path::new("test.yaml"), |n| {
        (n == "ROOT").then(|| "/etc".to_string())
    })
    .expect("expands and parses");
    let FilterKind::Str { values, .. } = &p.hooks[0].selectors[0].match_args[0].kind else {
        panic!("string filter expected");
    };
    assert_eq!(values, &[b"/etc/shadow".to_vec()]);
}

#[test]
fn parse_policy_does_not_expand_env_references() {
    // gRPC AddTracingPolicy: the server must not use its own environment.
    let yaml = with_selector(
        "
      matchArgs:
      - index: 0
        operator: Equal
        values:
        - \"${HOME}\"",
    );
    let p = parse_ok(&yaml);
    let FilterKind::Str { values, .. } = &p.hooks[0].selectors[0].match_args[0].kind else {
        panic!("string filter expected");
    };
    assert_eq!(values, &[b"${HOME}".to_vec()]);
}

#[test]
fn unset_env_variable_is_an_error_at_its_position() {
    let src = std::fs::read_to_string(quickstart("network_egress_cluster_enforce.yaml"))
        .expect("quickstart file");
    let e = parse_policy_with_env(&src, Path::new("net.yaml"), |n| {
        (n == "SERVICECIDR").then(|| "10.96.0.0/12".to_string())
    })
    .expect_err("PODCIDR unset");
    assert_eq!(e.message, "environment variable PODCIDR is not set");
    assert_eq!((e.line, e.column), (Some(18), Some(11)));
    assert_eq!(
        e.path,
        "spec.kprobes[0].selectors[0].matchArgs[0].values[1]"
    );
    assert!(
        e.to_string().starts_with(
            "net.yaml:18:11: spec.kprobes[0].selectors[0].matchArgs[0].values[1]: \
                 environment variable PODCIDR is not set"
        ),
        "{e}"
    );
}

#[test]
fn network_quickstart_parses_once_its_cidrs_are_expanded() {
    let src = std::fs::read_to_string(quickstart("network_egress_cluster_enforce.yaml"))
        .expect("quickstart file");
    let p = parse_policy_with_env(&src, Path::new("net.yaml"), quickstart_net_env)
        .unwrap_or_else(|e| panic!("{e}"));
    let FilterKind::Addr { values, .. } = &p.hooks[0].selectors[0].match_args[0].kind else {
        panic!("address filter expected");
    };
    assert_eq!(values[1], net("10.0.0.0/16"));
    assert_eq!(values[2], net("10.96.0.0/12"));
    // A bad expansion is reported at the reference in the file as written.
    let e = parse_policy_with_env(&src, Path::new("net.yaml"), |n| {
        (n == "PODCIDR" || n == "SERVICECIDR").then(|| "10.0.0.0/40".to_string())
    })
    .expect_err("bad CIDR");
    assert_eq!(
        e.path,
        "spec.kprobes[0].selectors[0].matchArgs[0].values[1]"
    );
    assert_eq!((e.line, e.column), (Some(18), Some(11)));
    assert!(e.message.starts_with("invalid CIDR \"10.0.0.0/40\""), "{e}");
}

#[test]
fn errors_after_expansion_point_into_the_original_text() {
    // The value grows from 7 to 13 characters; the operator error is on a later line and
    // the bad value after the reference on the same line.
    let yaml = with_selector(
        "
      matchArgs:
      - index: 1
        operator: Equal
        values: [${N}, zz]",
    );
    let lookup = |n: &str| (n == "N").then(|| "0x00000000001".to_string());
    let e = parse_policy_with_env(&yaml, Path::new("test.yaml"), lookup)
        .expect_err("zz is not an integer");
    let raw = parse_err(&yaml.replace("${N}", "1")).line;
    assert_eq!(e.line, raw);
    let line = yaml.lines().nth(e.line.expect("line") - 1).expect("line");
    assert_eq!(e.column, line.find("zz").map(|c| c + 1), "{e}");
}

#[test]
fn reading_a_missing_file_is_a_policy_error() {
    let e = parse_policy_file(Path::new("/nonexistent/policy.yaml")).expect_err("missing");
    assert_eq!(e.file, Path::new("/nonexistent/policy.yaml"));
    assert!(
        e.message.contains("cannot read policy file"),
        "{}",
        e.message
    );
}

#[test]
fn deny_etc_passwd_open_fixture_makes_file_open_of_etc_passwd_fail_with_eperm() {
    // The agent's tests share this fixture; they rely on it meaning exactly this.
    let p = parse_ok(fixture!("deny-etc-passwd-open.yaml"));
    assert_eq!(p.name, "lsm-file-open");
    assert_eq!(p.mode, PolicyMode::Enforce);
    assert_eq!(p.hooks.len(), 1);
    let h = &p.hooks[0];
    assert_eq!(
        (&h.target, &h.origin),
        (&Target::Lsm(LsmHook::FileOpen), &HookOrigin::LsmHook)
    );
    assert_eq!(h.selectors.len(), 1);
    let s = &h.selectors[0];
    assert_eq!(
        str_filter(&s.match_args[0]),
        (StrOp::Equal, false, vec!["/etc/passwd".to_string()])
    );
    assert_eq!(s.actions, [Action::Override { error: -1 }]);
}
