//! `matchActions[]`: the actions the agent can take at an LSM hook.

use super::{Invalid, VResult, invalid};
use crate::policy::ir;
use crate::policy::model as raw;
use crate::policy::values::parse_rate_limit;

/// The action, or `None` for one that needs nothing done: `FollowFD`, `UnfollowFD` and
/// `CopyFD` kept older Tetragon's map from descriptors to file names (Tetragon has removed
/// them); lsm-agent reads an `fd` argument's file from the task's descriptor table at each
/// call, so policies written for those versions load with a warning.
/// `at_lsm`: the hook is an LSM hook, whose return the kernel takes as an errno only.
pub(super) fn convert_action(
    apath: &str,
    a: &raw::Action,
    at_lsm: bool,
    warnings: &mut Vec<Invalid>,
) -> VResult<Option<ir::Action>> {
    let name = a.action.to_ascii_lowercase();
    let rate_limit_set = a.rate_limit.as_deref().is_some_and(|r| !r.is_empty());
    if name != "post" && rate_limit_set {
        return Err(invalid(
            format!("{apath}.rateLimit"),
            "rateLimit is only valid with the Post action",
        ));
    }
    let action = match name.as_str() {
        "post" => {
            let rate_limit_ms = match a.rate_limit.as_deref() {
                None | Some("") => None,
                Some(r) => parse_rate_limit(r).ok_or_else(|| {
                    invalid(
                        format!("{apath}.rateLimit"),
                        format!(
                            "invalid rateLimit \"{r}\" (expected a number of seconds, \
                             optionally followed by s, m or h: the time during which the \
                             same event is not posted again; a count per period such as \
                             5/minute is refused by Tetragon too)"
                        ),
                    )
                })?,
            };
            let rate_limit_scope = match a
                .rate_limit_scope
                .as_deref()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                None | Some("") | Some("thread") => ir::RateLimitScope::Thread,
                Some("process") => ir::RateLimitScope::Process,
                Some("global") => ir::RateLimitScope::Global,
                Some(other) => {
                    return Err(invalid(
                        format!("{apath}.rateLimitScope"),
                        format!(
                            "unknown rateLimitScope \"{other}\" (expected thread, process or global)"
                        ),
                    ));
                }
            };
            // kernelStackTrace, userStackTrace and imaHash only add data to the event; the
            // agent does not collect it yet but the Post itself is honoured.
            for (set, field, what) in [
                (
                    a.kernel_stack_trace,
                    "kernelStackTrace",
                    "kernel stack traces",
                ),
                (a.user_stack_trace, "userStackTrace", "user stack traces"),
                (a.ima_hash, "imaHash", "IMA hashes"),
            ] {
                if set == Some(true) {
                    warnings.push(invalid(
                        format!("{apath}.{field}"),
                        format!(
                            "{what} are not captured by lsm-agent yet: the event is \
                             posted without them"
                        ),
                    ));
                }
            }
            ir::Action::Post {
                rate_limit_ms,
                rate_limit_scope,
            }
        }
        "nopost" => ir::Action::NoPost,
        "sigkill" => ir::Action::Sigkill,
        "override" => {
            let err = a.arg_error.ok_or_else(|| {
                invalid(
                    apath,
                    "Override needs argError (e.g. argError: -1 for EPERM)",
                )
            })?;
            // At a function's entry (bpf_override_return) any value is returned as written,
            // as in Tetragon: some functions mean something by a positive return.
            let error = if (-4095..=0).contains(&err) || (!at_lsm && err != 0) {
                err
            } else {
                warnings.push(invalid(
                    format!("{apath}.argError"),
                    format!(
                        "argError {err} is outside [-4095, 0]; using -1 (EPERM) as Tetragon \
                         does at LSM hooks"
                    ),
                ));
                -1
            };
            ir::Action::Override { error }
        }
        "signal" => {
            let sig = a
                .arg_sig
                .ok_or_else(|| invalid(apath, "Signal needs argSig (e.g. argSig: 9)"))?;
            if !(1..=64).contains(&sig) {
                return Err(invalid(
                    format!("{apath}.argSig"),
                    format!("argSig {sig} is not a signal number (1..=64)"),
                ));
            }
            ir::Action::Signal { signal: sig }
        }
        "followfd" | "unfollowfd" | "copyfd" => {
            warnings.push(invalid(
                format!("{apath}.action"),
                format!(
                    "action {} is not needed (and removed from Tetragon): an fd argument's \
                     file is read from the task's descriptor table at each call; ignored",
                    a.action
                ),
            ));
            return Ok(None);
        }
        "tracksock" | "untracksock" => {
            // Tetragon's argSock defaults to 0, the first argument.
            let pos = a.arg_sock.unwrap_or(0);
            // A declared argument's index for now: the selector maps it to its position.
            ir::Action::SockTrack {
                pos,
                track: name == "tracksock",
            }
        }
        "geturl" => {
            let url = a.arg_url.as_deref().unwrap_or_default();
            let ok = url
                .parse::<http::Uri>()
                .ok()
                .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
            if ok.is_none() {
                return Err(invalid(
                    format!("{apath}.argUrl"),
                    format!("GetUrl needs argUrl, an http:// or https:// URL (got \"{url}\")"),
                ));
            }
            ir::Action::Request(ir::UserRequest::GetUrl(url.to_string()))
        }
        "dnslookup" => {
            let fqdn = a
                .arg_fqdn
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('.');
            // hickory's name parser: labels of letters, digits, '-' and '_', 63 bytes each.
            let valid = !fqdn.is_empty()
                && hickory_resolver::proto::rr::Name::from_ascii(fqdn)
                    .is_ok_and(|n| !n.is_wildcard());
            if !valid {
                return Err(invalid(
                    format!("{apath}.argFqdn"),
                    format!(
                        "DnsLookup needs argFqdn, a domain name (got \"{}\")",
                        a.arg_fqdn.as_deref().unwrap_or_default()
                    ),
                ));
            }
            ir::Action::Request(ir::UserRequest::DnsLookup(fqdn.to_string()))
        }
        "set" => {
            let pos = a
                .arg_index
                .ok_or_else(|| invalid(apath, "Set needs argIndex, the probe argument to write"))?;
            if pos as usize >= lsm_shared::MAX_ARGS {
                return Err(invalid(
                    format!("{apath}.argIndex"),
                    format!(
                        "argIndex {pos}: lsm-agent reads a probe's first {} arguments",
                        lsm_shared::MAX_ARGS
                    ),
                ));
            }
            let value = a.arg_value.as_ref().and_then(set_value).ok_or_else(|| {
                invalid(
                    format!("{apath}.argValue"),
                    "Set needs argValue, an integer to write into the argument",
                )
            })?;
            ir::Action::Set { pos, value }
        }
        "notifyenforcer" => {
            if a.arg_error.is_none() && a.arg_sig.is_none() {
                return Err(invalid(
                    apath,
                    "NotifyEnforcer needs argError or argSig (e.g. argError: -1 for EPERM)",
                ));
            }
            let error = match a.arg_error {
                Some(e) if (-4095..0).contains(&e) => e,
                // Tetragon's enforcer returns argError as written; at an LSM hook the
                // kernel takes an errno only.
                Some(e) => {
                    warnings.push(invalid(
                        format!("{apath}.argError"),
                        format!(
                            "argError {e} is not a negative errno; using -1 (EPERM) as at \
                             LSM hooks"
                        ),
                    ));
                    -1
                }
                // A signal alone: the operation goes on, as in Tetragon.
                None => 0,
            };
            if let Some(sig) = a.arg_sig
                && !(1..=64).contains(&sig)
            {
                return Err(invalid(
                    format!("{apath}.argSig"),
                    format!("argSig {sig} is not a signal number (1..=64)"),
                ));
            }
            ir::Action::NotifyEnforcer {
                error,
                signal: a.arg_sig,
            }
        }
        // Regs rewrites a uprobe's registers.
        "cleanupenforcernotification" | "regs" => {
            return Err(invalid(
                format!("{apath}.action"),
                format!(
                    "action {} is not supported yet by lsm-agent (supported: Post, NoPost, \
                     Sigkill, Override, Signal, Set, TrackSock, UntrackSock, GetUrl, DnsLookup)",
                    a.action
                ),
            ));
        }
        _ => {
            return Err(invalid(
                format!("{apath}.action"),
                format!(
                    "unknown action \"{}\" (expected one of Post, NoPost, Sigkill, Override, \
                     Signal, Set, TrackSock, UntrackSock, GetUrl, DnsLookup)",
                    a.action
                ),
            ));
        }
    };
    Ok(Some(action))
}

/// `argValue` of `Set`: an integer (negative ones as their two's complement), or one
/// written as a string.
fn set_value(v: &serde_yaml::Value) -> Option<u64> {
    match v {
        serde_yaml::Value::Number(n) => n.as_u64().or_else(|| n.as_i64().map(|i| i as u64)),
        serde_yaml::Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>()
                .ok()
                .or_else(|| s.parse::<i64>().ok().map(|i| i as u64))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::ir::{Action, RateLimitScope};
    use crate::policy::testutil::*;

    #[test]
    fn set_is_an_action_of_usdt_probes_only() {
        let e = parse_err(&with_selector(
            "matchActions: [{action: Set, argIndex: 0, argValue: 1}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchActions[0].action"
        );
        assert!(
            e.message.contains("only valid in spec.usdts"),
            "{}",
            e.message
        );
    }

    #[test]
    fn set_needs_an_argument_index_and_an_integer_value() {
        let p = parse_ok(fixture!("set-usdt-argument.yaml"));
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [Action::Set { pos: 0, value: 32 }]
        );
        let yaml = fixture!("set-usdt-argument.yaml");
        let e = parse_err(&yaml.replace("        argIndex: 0\n", ""));
        assert!(e.message.contains("Set needs argIndex"), "{}", e.message);
        let e = parse_err(&yaml.replace("argValue: 32", "argValue: [1]"));
        assert!(e.path.ends_with(".argValue"), "{}", e.path);
        let e = parse_err(&yaml.replace("argIndex: 0", "argIndex: 5"));
        assert!(e.path.ends_with(".argIndex"), "{}", e.path);
    }

    #[test]
    fn override_arg_error_is_forced_into_errno_range_with_a_warning() {
        let yaml = with_selector("matchActions: [{action: Override, argError: -5000}]");
        let p = parse_ok(&yaml);
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [Action::Override { error: -1 }]
        );
        assert_eq!(p.warnings.len(), 1);
        assert!(
            p.warnings[0].contains("argError -5000"),
            "{}",
            p.warnings[0]
        );
        assert!(
            p.warnings[0].starts_with("test.yaml:15:"),
            "{}",
            p.warnings[0]
        );

        let p = parse_ok(&yaml.replace("-5000", "1"));
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [Action::Override { error: -1 }]
        );
        let p = parse_ok(&yaml.replace("-5000", "-13"));
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [Action::Override { error: -13 }]
        );
        assert!(p.warnings.is_empty());
        let e = parse_err(&yaml.replace(", argError: -5000", ""));
        assert!(e.message.contains("needs argError"), "{}", e.message);
    }

    #[test]
    fn action_names_are_case_insensitive() {
        let yaml = with_selector(
            "matchActions: [{action: sigkill}, {action: NOPOST}, {action: signal, argSig: 19}]",
        );
        let p = parse_ok(&yaml);
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [
                Action::Sigkill,
                Action::NoPost,
                Action::Signal { signal: 19 }
            ]
        );
        let p = parse_ok(&with_selector(
            "matchActions: [{action: oVeRrIdE, argError: -13}]",
        ));
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [Action::Override { error: -13 }]
        );
    }

    #[test]
    fn signal_needs_a_valid_signal_number() {
        let e = parse_err(&with_selector("matchActions: [{action: Signal}]"));
        assert!(e.message.contains("needs argSig"), "{}", e.message);
        let e = parse_err(&with_selector(
            "matchActions: [{action: Signal, argSig: 65}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchActions[0].argSig"
        );
    }

    #[test]
    fn post_rate_limit_is_converted_to_milliseconds() {
        for (text, ms) in [
            ("5", 5_000),
            ("10s", 10_000),
            ("2m", 120_000),
            ("1h", 3_600_000),
        ] {
            let yaml = with_selector(&format!(
                "matchActions: [{{action: Post, rateLimit: \"{text}\", kernelStackTrace: true}}]"
            ));
            let p = parse_ok(&yaml);
            assert_eq!(
                p.hooks[0].selectors[0].actions,
                [Action::Post {
                    rate_limit_ms: Some(ms),
                    rate_limit_scope: RateLimitScope::Thread,
                }],
                "{text}"
            );
        }
        let e = parse_err(&with_selector(
            "matchActions: [{action: Post, rateLimit: 5d}]",
        ));
        assert!(e.message.contains("invalid rateLimit"), "{}", e.message);
        let e = parse_err(&with_selector(
            "matchActions: [{action: Sigkill, rateLimit: 5s}]",
        ));
        assert!(
            e.message.contains("only valid with the Post"),
            "{}",
            e.message
        );
    }

    #[test]
    fn rate_limit_scope_accepts_thread_process_and_global() {
        for (text, scope) in [
            ("thread", RateLimitScope::Thread),
            ("process", RateLimitScope::Process),
            ("Global", RateLimitScope::Global),
        ] {
            let p = parse_ok(&with_selector(&format!(
                "matchActions: [{{action: Post, rateLimit: 1m, rateLimitScope: {text}}}]"
            )));
            assert_eq!(
                p.hooks[0].selectors[0].actions,
                [Action::Post {
                    rate_limit_ms: Some(60_000),
                    rate_limit_scope: scope,
                }]
            );
        }
        let e = parse_err(&with_selector(
            "matchActions: [{action: Post, rateLimit: 1m, rateLimitScope: pod}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchActions[0].rateLimitScope"
        );
    }

    #[test]
    fn unimplemented_and_unknown_actions_are_rejected() {
        let e = parse_err(&with_selector(
            "matchActions: [{action: CleanupEnforcerNotification}]",
        ));
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchActions[0].action"
        );
        assert!(
            e.message
                .contains("action CleanupEnforcerNotification is not supported yet by lsm-agent"),
            "{}",
            e.message
        );
        let e = parse_err(&with_selector("matchActions: [{action: Regs}]"));
        assert!(
            e.message.contains("action Regs is not supported yet"),
            "{}",
            e.message
        );
        let e = parse_err(&with_selector("matchActions: [{action: Explode}]"));
        assert!(e.message.contains("unknown action"), "{}", e.message);
    }

    #[test]
    fn get_url_and_dns_lookup_carry_a_valid_url_or_name() {
        use crate::policy::ir::UserRequest;
        let p = parse_ok(&with_selector(
            "matchActions: [{action: GetUrl, argUrl: \"https://canary.example/hit?id=7\"}]",
        ));
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [Action::Request(UserRequest::GetUrl(
                "https://canary.example/hit?id=7".into()
            ))]
        );
        let p = parse_ok(&with_selector(
            "matchActions: [{action: DnsLookup, argFqdn: \"canary.example.\"}]",
        ));
        assert_eq!(
            p.hooks[0].selectors[0].actions,
            [Action::Request(UserRequest::DnsLookup(
                "canary.example".into()
            ))]
        );
        for bad in [
            "{action: GetUrl}",
            "{action: GetUrl, argUrl: \"ftp://x/\"}",
            "{action: GetUrl, argUrl: \"not a url\"}",
        ] {
            let e = parse_err(&with_selector(&format!("matchActions: [{bad}]")));
            assert!(
                e.path.ends_with("matchActions[0].argUrl"),
                "{bad}: {}",
                e.path
            );
        }
        let e = parse_err(&with_selector(
            "matchActions: [{action: DnsLookup, argFqdn: \"bad name\"}]",
        ));
        assert!(e.path.ends_with("argFqdn"), "{}", e.path);
    }
}
