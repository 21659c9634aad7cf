//! `lsmctl tracingpolicy check` over `testdata/policies/tetragon-quirks/`: one small policy
//! per spelling or feature found in Tetragon's example policies, each either accepted or
//! refused with a located message that names the feature.

use std::path::{Path, PathBuf};

use crate::policy::check::check_files;

fn quirks_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/policies/tetragon-quirks")
}

/// What `check` must say about one fixture.
enum Expect {
    /// Accepted, with this many hooks and warnings containing these texts (in order).
    Accepted {
        hooks: usize,
        warnings: &'static [&'static str],
    },
    /// Refused: the error starts with `file:line:col: path: ` and contains `message`.
    Refused {
        at: &'static str,
        message: &'static str,
    },
}
use Expect::*;

const EXPECTED: &[(&str, Expect)] = &[
    (
        "file-value-quirks.yaml",
        Accepted {
            hooks: 1,
            warnings: &["matchActions[0].kernelStackTrace: kernel stack traces are not captured"],
        },
    ),
    (
        "sock-operator-spellings.yaml",
        Accepted {
            hooks: 1,
            warnings: &[],
        },
    ),
    (
        "fentry-as-kprobe.yaml",
        Accepted {
            hooks: 1,
            warnings: &[],
        },
    ),
    (
        "syscall-numbers.yaml",
        Accepted {
            hooks: 0,
            warnings: &[
                "20:5: spec.lists[3]: generated_ftrace list \"ftrace\": its functions are resolved \
                 when the policy is loaded",
                "spec: the policy has no kprobes, tracepoints, uprobes, usdts or lsmhooks",
            ],
        },
    ),
    (
        "fentry-unknown-operator.yaml",
        Refused {
            at: "16:9: spec.fentries[0].selectors[0].matchArgs[0].operator",
            message: "unknown operator \"StartsWith\"",
        },
    ),
    (
        "missing-kind.yaml",
        Refused {
            at: "2:1: kind",
            message: "missing kind",
        },
    ),
    (
        "template-placeholder.yaml",
        Refused {
            at: "14:11: spec.kprobes[0].selectors[0].matchPIDs[0].values[0]",
            message: "template placeholder {{.Pid}}",
        },
    ),
    (
        "uprobe-all-fields.yaml",
        // The first uprobe loads; the second (resolvePathInContainer, loaded) stops at the
        // first action lsm-agent lacks.
        Refused {
            at: "24:9: spec.uprobes[1].selectors[0].matchActions[0].action",
            message: "action Regs is not supported yet by lsm-agent",
        },
    ),
    (
        "rawtracepoints.yaml",
        // The first form of raw tracepoints: a tracepoint with raw: true.
        Accepted {
            hooks: 1,
            warnings: &[],
        },
    ),
    (
        "killers.yaml",
        Refused {
            at: "11:3: spec.killers",
            message: "not supported by lsm-agent: killers",
        },
    ),
    (
        "extract-param.yaml",
        Accepted {
            hooks: 1,
            warnings: &[],
        },
    ),
    (
        "rate-limit-per-minute.yaml",
        Refused {
            at: "20:9: spec.kprobes[0].selectors[0].matchActions[0].rateLimit",
            message: "invalid rateLimit \"5/minute\"",
        },
    ),
    (
        "match-arg-undeclared-index.yaml",
        Refused {
            at: "16:9: spec.kprobes[0].selectors[0].matchArgs[0].index",
            message: "arg index 1 is not declared in args",
        },
    ),
    (
        "follow-fd-actions.yaml",
        Accepted {
            hooks: 2,
            warnings: &[
                "spec.kprobes[0].selectors[0].matchActions[0].action: action FollowFD is not needed",
                "spec.kprobes[1].selectors[0].matchActions[0].action: action UnfollowFD is not needed",
            ],
        },
    ),
    (
        "return-arg-action-post.yaml",
        Accepted {
            hooks: 2,
            warnings: &[],
        },
    ),
    (
        "return-arg-action-track-sock.yaml",
        Refused {
            at: "13:5: spec.kprobes[0].returnArgAction",
            message: "need return: true and a returnArg of type sock",
        },
    ),
    (
        "pipe-list-call.yaml",
        // The list expands to a generic syscall kretprobe per member (the int32_arr's
        // returnCopy reads it at the return), and fd_install.
        Accepted {
            hooks: 3,
            warnings: &[],
        },
    ),
];

#[test]
fn every_quirk_fixture_is_accepted_or_refused_at_the_feature() {
    let dir = quirks_dir();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("tetragon-quirks fixtures")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = EXPECTED.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "every fixture has an expectation here");

    for (name, expect) in EXPECTED {
        if *name == "pipe-list-call.yaml" && !cfg!(target_arch = "x86_64") {
            continue; // its syscalls are x86_64's
        }
        let file = dir.join(name);
        let report = check_files(std::slice::from_ref(&file), |_| None);
        let result = &report.files[0].policy;
        match (expect, result) {
            (Accepted { hooks, warnings }, Ok(p)) => {
                assert_eq!(p.hooks.len(), *hooks, "{name}");
                assert_eq!(p.warnings.len(), warnings.len(), "{name}: {:?}", p.warnings);
                for (w, needle) in p.warnings.iter().zip(warnings.iter()) {
                    assert!(w.contains(needle), "{name}: {w}");
                }
                assert!(report.ok(), "{name}: {:?}", report.diagnostics());
            }
            (Refused { at, message }, Err(e)) => {
                let text = e.to_string();
                let prefix = format!("{}:{at}: ", file.display());
                assert!(text.starts_with(&prefix), "{name}: {text}\nwanted {prefix}");
                assert!(text.contains(message), "{name}: {text}");
            }
            (Accepted { .. }, Err(e)) => panic!("{name}: refused: {e}"),
            (Refused { .. }, Ok(_)) => panic!("{name}: accepted"),
        }
    }
}

/// What the accepted spellings mean, not only that they are accepted.
mod meaning {
    use crate::policy::ir::{Action, FilterKind, NumOp, RateLimitScope, SockAttr, StrOp};
    use crate::policy::testutil::*;

    #[test]
    fn extract_param_is_resolve_and_overwrite_type_the_type_of_the_member_reached() {
        let p = parse_ok(fixture!("tetragon-quirks/extract-param.yaml"));
        let a = &p.hooks[0].args[0];
        let r = a.resolve.as_ref().expect("a resolve path");
        assert_eq!(r.members, ["mm", "owner", "real_parent", "comm"]);
        assert!(!r.current_task);
        assert_eq!(a.type_name, "string");
    }

    #[test]
    fn nul_terminated_hex_unquoted_and_case_variant_values_mean_what_tetragon_reads() {
        let p = parse_ok(fixture!("tetragon-quirks/file-value-quirks.yaml"));
        let sels = &p.hooks[0].selectors;
        // "/etc/passwd\0": Tetragon trims trailing NULs of string values.
        assert_eq!(
            str_filter(&sels[0].match_args[0]),
            (StrOp::Equal, false, vec!["/etc/passwd".to_string()])
        );
        // Unquoted hex and decimal numbers.
        assert_eq!(
            num_filter(&sels[0].match_args[1]),
            (NumOp::Mask, vec![2, 4])
        );
        assert_eq!(
            num_filter(&sels[1].match_args[0]),
            (NumOp::GreaterThan, vec![0])
        );
        // Several actions in one selector; "1m" is 60 s; SigKill's argError is ignored as
        // Tetragon ignores it; a selector of actions only.
        assert_eq!(
            sels[0].actions,
            [
                Action::Post {
                    rate_limit_ms: Some(60_000),
                    rate_limit_scope: RateLimitScope::Thread
                },
                Action::Override { error: -1 }
            ]
        );
        assert_eq!(sels[1].actions, [Action::Sigkill]);
        assert!(sels[2].match_args.is_empty());
        assert_eq!(sels[2].actions, [Action::NoPost]);
    }

    #[test]
    fn socket_operators_in_either_case_take_names_or_numbers() {
        let p = parse_ok(fixture!("tetragon-quirks/sock-operator-spellings.yaml"));
        let sels = &p.hooks[0].selectors;
        let attr = |f: &crate::policy::ir::ArgFilter| match &f.kind {
            FilterKind::SockAttr { attr, values } => (*attr, values.clone()),
            other => panic!("not a socket attribute filter: {other:?}"),
        };
        assert_eq!(attr(&sels[0].match_args[0]), (SockAttr::Protocol, vec![17]));
        assert_eq!(
            attr(&sels[0].match_args[1]),
            (SockAttr::Family, vec![2, 10])
        );
        assert_eq!(attr(&sels[1].match_args[0]), (SockAttr::Family, vec![2]));
        // An unquoted `rateLimit: 5` is 5 seconds.
        assert_eq!(
            sels[0].actions,
            [Action::Post {
                rate_limit_ms: Some(5_000),
                rate_limit_scope: RateLimitScope::Thread
            }]
        );
        assert_eq!(
            sels[1].actions,
            [Action::Override { error: -1 }, Action::Sigkill]
        );
    }
}
