//! YAML text → [`ir::Policy`]: the entry points. The text is deserialized into the serde model
//! of Tetragon's `TracingPolicy` CRD ([`super::model`]), then validated and translated to the
//! LSM hooks the agent enforces at ([`super::validate`]); errors and warnings are placed in
//! the source by [`super::locate`].
//!
//! The serde model accepts every field of the Tetragon schema (unknown fields are rejected,
//! as Tetragon does). Fields the agent does not implement are rejected during validation with
//! an error that names them, never silently dropped: a policy that loads must mean what it
//! says.

use std::path::Path;

use super::env;
use super::error::PolicyError;
use super::ir;
use super::locate::Source;
use super::model as raw;
use super::validate::convert;

/// Parses and validates one policy document. `file` is only used in errors and warnings.
///
/// The text is taken as it is: `${VAR}` references are not expanded. This is what a server
/// receiving a policy over gRPC must do, since the client's environment is not its own.
pub fn parse_policy(source: &str, file: &Path) -> Result<ir::Policy, PolicyError> {
    parse_mapped(source, file, &|line, column| (line, column))
}

/// Like [`parse_policy`], but first expands `${NAME}` references with `lookup` (see
/// [`super::env`]). An unset variable is an error at its `${`; errors and warnings found
/// after expansion are reported at their position in `source`, not in the expanded text.
pub fn parse_policy_with_env(
    source: &str,
    file: &Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<ir::Policy, PolicyError> {
    let expansion = env::expand_env(source, file, lookup)?;
    if !expansion.changed() {
        return parse_policy(source, file);
    }
    parse_mapped(expansion.text(), file, &|line, column| {
        expansion.original_position(line, column)
    })
}

/// Reads a policy file and parses it with `${VAR}` expanded from the process environment,
/// as the agent's `--tracing-policy` and `lsmctl tracingpolicy check` load files.
pub fn parse_policy_file(path: &Path) -> Result<ir::Policy, PolicyError> {
    let source = std::fs::read_to_string(path)
        .map_err(|e| PolicyError::new(path, "", format!("cannot read policy file: {e}")))?;
    parse_policy_with_env(&source, path, |name| std::env::var(name).ok())
}

/// Maps a 1-based (line, column) of the parsed text to the one reported to the user.
type PosMap<'a> = &'a dyn Fn(usize, usize) -> (usize, usize);

fn remap(mut e: PolicyError, map: PosMap<'_>) -> PolicyError {
    if let (Some(line), Some(column)) = (e.line, e.column) {
        let (line, column) = map(line, column);
        e.line = Some(line);
        e.column = Some(column);
    }
    e
}

fn parse_mapped(source: &str, file: &Path, map: PosMap<'_>) -> Result<ir::Policy, PolicyError> {
    let (policy, warnings) = parse_located(source, file).map_err(|e| remap(e, map))?;
    let warnings = warnings
        .into_iter()
        .map(|w| remap(w, map).to_string())
        .collect();
    Ok(ir::Policy { warnings, ..policy })
}

/// The policy and its warnings, with positions in `source`.
fn parse_located(source: &str, file: &Path) -> Result<(ir::Policy, Vec<PolicyError>), PolicyError> {
    let src = Source::new(source, file);
    // Tetragon dispatches on `kind` before the strict parse, so an unknown kind is reported
    // as such even if the rest of the document would not parse.
    let head: raw::Head = serde_yaml::from_str(source).map_err(|e| {
        let mut e = src.serde_error(e);
        // serde names the helper struct; say what the document should have been instead.
        e.message = e.message.replace(
            "struct Head",
            "a mapping with apiVersion, kind, metadata and spec",
        );
        e
    })?;
    let kind = match head.kind.as_deref() {
        Some("TracingPolicy") => ir::PolicyKind::TracingPolicy,
        Some("TracingPolicyNamespaced") => ir::PolicyKind::TracingPolicyNamespaced,
        Some(other) => return Err(src.error("kind", format!("unknown CRD kind: {other}"))),
        // Tetragon refuses such a file too (its CRD defaults and validators are per kind).
        None => {
            return Err(src.error(
                "kind",
                "missing kind (expected TracingPolicy or TracingPolicyNamespaced)",
            ));
        }
    };
    let doc: raw::Policy = serde_yaml::from_str(source).map_err(|e| {
        let mut e = src.serde_error(e);
        // Test suites (Tetragon's among them) keep policies with `{{.Pid}}` to fill in; in
        // YAML that is a mapping, and serde's complaint about it says nothing of the cause.
        if let Some(placeholder) = template_placeholder(source, e.line) {
            e.message = format!(
                "{} (the file has the template placeholder {placeholder}: fill it in before \
                 loading)",
                e.message
            );
        }
        e
    })?;

    let mut warnings = Vec::new();
    let policy =
        convert(&doc, kind, &mut warnings).map_err(|inv| src.error(inv.path, inv.message))?;
    let warnings = warnings
        .into_iter()
        .map(|inv| src.error(inv.path, inv.message))
        .collect();
    Ok((policy, warnings))
}

/// The `{{...}}` template placeholder on line `line` (1-based) of `source`, if any.
fn template_placeholder(source: &str, line: Option<usize>) -> Option<&str> {
    let text = source.lines().nth(line?.checked_sub(1)?)?;
    let start = text.find("{{")?;
    let len = text[start..].find("}}")? + 2;
    Some(&text[start..start + len])
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tetragon_quirks;
