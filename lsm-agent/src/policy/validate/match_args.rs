//! One `matchArgs[]` filter: the argument it applies to, its operator and its values.

use super::operators::{
    ArgOp, SUPPORTED_ARG_OPERATORS, classify, operator_hint, operator_name, parse_operator,
};
use super::{Invalid, VResult, invalid};
use crate::policy::ir;
use crate::policy::lists::Lists;
use crate::policy::model as raw;
use crate::policy::values::net::{addr_values, port_values, sock_attr_values};
use crate::policy::values::{cap_values, numeric_values, set_values, string_values};

pub(super) fn convert_match_arg(
    mpath: &str,
    m: &raw::ArgSelector,
    args: &[ir::ArgSpec],
    lists: &Lists,
    warnings: &mut Vec<Invalid>,
) -> VResult<ir::ArgFilter> {
    // `args` (positions in the hook's `args` list) takes precedence over `index`.
    let arg = match m.args.as_deref() {
        Some([]) | None => {
            let index = m.index.unwrap_or(0);
            args.iter().find(|a| a.spec_index == index).ok_or_else(|| {
                invalid(
                    format!("{mpath}.index"),
                    format!("arg index {index} is not declared in args"),
                )
            })?
        }
        Some([pos]) => args.get(*pos as usize).ok_or_else(|| {
            invalid(
                format!("{mpath}.args[0]"),
                format!(
                    "args position {pos} is out of range (the hook declares {} args)",
                    args.len()
                ),
            )
        })?,
        Some(_) => {
            return Err(invalid(
                format!("{mpath}.args"),
                "more than one entry in args is not supported yet by lsm-agent",
            ));
        }
    };

    let opath = format!("{mpath}.operator");
    let op_text = m
        .operator
        .as_deref()
        .ok_or_else(|| invalid(mpath, "missing operator"))?;
    let op = parse_operator(op_text).ok_or_else(|| {
        invalid(
            &opath,
            format!("unknown operator \"{op_text}\" (expected one of {SUPPORTED_ARG_OPERATORS})"),
        )
    })?;
    let kind = classify(op, arg.ty).map_err(|why| {
        invalid(
            &opath,
            format!(
                "{why} (argument {} is of type {}; {})",
                arg.spec_index,
                arg.type_name,
                operator_hint(arg.ty)
            ),
        )
    })?;

    let values = m.values.as_deref().unwrap_or_default();
    let vpath = format!("{mpath}.values");
    let privileged = matches!(
        kind,
        ArgOp::Port {
            privileged: true,
            ..
        }
    );
    if values.is_empty() && !privileged {
        return Err(invalid(
            if m.values.is_some() {
                vpath
            } else {
                mpath.to_string()
            },
            format!("operator {} needs at least one value", operator_name(op)),
        ));
    }
    let kind = match kind {
        ArgOp::Str(op, negated) => ir::FilterKind::Str {
            op,
            negated,
            values: string_values(&vpath, values, op)?,
        },
        ArgOp::Num(op) if arg.ty == ir::ArgType::Caps => ir::FilterKind::Num {
            op,
            values: cap_values(&vpath, values)?,
        },
        ArgOp::Num(op @ (ir::NumOp::InMap | ir::NumOp::NotInMap)) => ir::FilterKind::Num {
            op,
            values: set_values(&vpath, values, arg, lists)?,
        },
        ArgOp::Num(op) => ir::FilterKind::Num {
            op,
            values: numeric_values(&vpath, values, op, arg)?,
        },
        ArgOp::Addr(field, negated) => ir::FilterKind::Addr {
            field,
            negated,
            values: addr_values(&vpath, values)?,
        },
        ArgOp::Port {
            field,
            negated,
            privileged: true,
        } => {
            // Tetragon takes no values for these and ignores any given.
            if !values.is_empty() {
                warnings.push(invalid(
                    &vpath,
                    format!(
                        "values ignored: {} matches the privileged ports 0-1023 and takes no \
                         values",
                        operator_name(op)
                    ),
                ));
            }
            ir::FilterKind::Port {
                field,
                negated,
                ranges: vec![PRIVILEGED_PORTS],
            }
        }
        ArgOp::Port { field, negated, .. } => ir::FilterKind::Port {
            field,
            negated,
            ranges: port_values(&vpath, values)?,
        },
        ArgOp::SockAttr(attr) => ir::FilterKind::SockAttr {
            attr,
            values: sock_attr_values(&vpath, values, attr)?,
        },
    };
    Ok(ir::ArgFilter {
        spec_index: arg.spec_index,
        lsm_index: arg.lsm_index,
        ty: arg.ty,
        kind,
    })
}

/// The ports of Tetragon's `*PortPriv` operators.
const PRIVILEGED_PORTS: (u16, u16) = (0, 1023);

#[cfg(test)]
mod tests {
    use crate::policy::ir::{ArgType, NetField, NumOp};
    use crate::policy::testutil::*;

    #[test]
    fn match_arg_index_must_be_declared() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 3
        operator: Equal
        values: [\"1\"]",
        );
        let e = parse_err(&yaml);
        assert_eq!(e.path, "spec.kprobes[0].selectors[0].matchArgs[0].index");
        assert_eq!(e.message, "arg index 3 is not declared in args");
        assert_eq!((e.line, e.column), (Some(16), Some(9)));
    }

    #[test]
    fn match_args_args_form_picks_the_declared_arg_by_position() {
        let yaml = with_selector(
            "
      matchArgs:
      - args: [1]
        operator: Equal
        values: [\"4\"]",
        );
        let p = parse_ok(&yaml);
        assert_eq!(p.hooks[0].selectors[0].match_args[0].spec_index, 1);
        let e = parse_err(&yaml.replace("args: [1]", "args: [0, 1]"));
        assert!(e.message.contains("not supported yet"), "{}", e.message);
    }

    #[test]
    fn empty_value_list_is_rejected() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 0
        operator: Prefix
        values: []",
        );
        let e = parse_err(&yaml);
        assert!(
            e.message.contains("needs at least one value"),
            "{}",
            e.message
        );
    }

    #[test]
    fn network_value_operators_need_at_least_one_value() {
        for op in [
            "DAddr", "NotSAddr", "DPort", "NotSPort", "Protocol", "Family",
        ] {
            let e = net_err(0, op, &[]);
            assert_eq!(e.path, format!("{MATCH_ARG0}.values"), "{op}");
            assert_eq!(e.message, format!("operator {op} needs at least one value"));
        }
        let e = parse_err(&with_net_selector(
            "
      matchArgs:
      - index: 1
        operator: SAddr",
        ));
        assert_eq!(e.path, MATCH_ARG0);
        assert_eq!(e.message, "operator SAddr needs at least one value");
    }

    #[test]
    fn bad_integer_value_is_rejected_at_the_value() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: Equal
        values:
        - \"4\"
        - \"four\"",
        );
        let e = parse_err(&yaml);
        assert_eq!(
            e.path,
            "spec.kprobes[0].selectors[0].matchArgs[0].values[1]"
        );
        assert_eq!(e.line, Some(20));
        assert!(
            e.message.contains("invalid integer \"four\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn unquoted_numbers_in_values_keep_their_text() {
        let yaml = with_selector(
            "
      matchArgs:
      - index: 1
        operator: Equal
        values: [010, 0x10]",
        );
        let p = parse_ok(&yaml);
        assert_eq!(
            num_filter(&p.hooks[0].selectors[0].match_args[0]),
            (NumOp::Equal, vec![8, 16])
        );
    }

    #[test]
    fn privileged_port_operators_match_ports_0_to_1023_without_values() {
        for (spellings, field, negated) in [
            (
                ["DPortPriv", "dportpriv", "DportPriv"],
                NetField::Dest,
                false,
            ),
            (
                ["NotDPortPriv", "notdportpriv", "NotDportPriv"],
                NetField::Dest,
                true,
            ),
            (
                ["SPortPriv", "sportpriv", "SportPriv"],
                NetField::Source,
                false,
            ),
            (
                ["NotSPortPriv", "notsportpriv", "NotSportPriv"],
                NetField::Source,
                true,
            ),
        ] {
            for op in spellings {
                // No `values` key at all, as Tetragon's examples write it.
                let p = parse_ok(&with_net_selector(&format!(
                    "
      matchArgs:
      - index: 0
        operator: {op}"
                )));
                assert!(p.warnings.is_empty(), "{:?}", p.warnings);
                assert_eq!(
                    p.hooks[0].selectors[0].match_args[0].kind,
                    port_filter(field, negated, &[(0, 1023)]),
                    "{op}"
                );
            }
        }
    }

    #[test]
    fn values_of_a_privileged_port_operator_are_ignored_with_a_warning() {
        let p = parse_ok(&net_filter_yaml(0, "DPortPriv", &["8080"]));
        assert_eq!(
            p.hooks[0].selectors[0].match_args[0].kind,
            port_filter(NetField::Dest, false, &[(0, 1023)])
        );
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(
            p.warnings[0].contains(&format!(
                "{MATCH_ARG0}.values: values ignored: DPortPriv matches the privileged ports \
                 0-1023 and takes no values"
            )),
            "{}",
            p.warnings[0]
        );
    }

    #[test]
    fn network_filters_keep_their_argument_positions() {
        let p = parse_ok(&net_filters_yaml(&[
            (1, "SAddr", "10.0.0.1"),
            (2, "eq", "16"),
        ]));
        let f = &p.hooks[0].selectors[0].match_args;
        assert_eq!(
            (f[0].spec_index, f[0].lsm_index, f[0].ty),
            (1, 1, ArgType::Sockaddr)
        );
        assert_eq!((f[1].spec_index, f[1].lsm_index), (2, 2));
        assert_eq!(num_filter(&f[1]), (NumOp::Equal, vec![16]));
    }
}
