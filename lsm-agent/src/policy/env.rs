//! `${NAME}` expansion of policy files, as Tetragon's documentation does with `envsubst`
//! before `kubectl apply` (e.g. `${PODCIDR}` in the network quickstart policy).
//!
//! Unlike `envsubst`, an unset variable is an error: an empty string in a filter value would
//! silently change what the policy matches. Only `${NAME}` with NAME = `[A-Za-z_][A-Za-z0-9_]*`
//! is expanded; `$$`, a lone `$` and `$NAME` are left alone, so shell snippets and regexes in
//! messages survive. Lines whose first non-blank character is `#` are full-line comments and
//! are not expanded: they mean nothing to the policy, so an unset variable there is harmless.

use std::path::Path;

use super::error::PolicyError;
use super::locate::Locator;

/// The expanded text and what is needed to map positions in it back to the original file.
#[derive(Debug, Clone)]
pub struct Expansion {
    text: String,
    /// Substitutions in order, as char offsets.
    subs: Vec<Sub>,
    /// Char offset of the start of every line of the original text.
    orig_lines: Vec<usize>,
    /// Char offset of the start of every line of the expanded text.
    new_lines: Vec<usize>,
}

#[derive(Debug, Clone, Copy)]
struct Sub {
    orig_start: usize,
    orig_len: usize,
    new_start: usize,
    new_len: usize,
}

impl Expansion {
    /// The text with every `${NAME}` replaced.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether anything was replaced.
    pub fn changed(&self) -> bool {
        !self.subs.is_empty()
    }

    /// Maps a 1-based (line, column) in [`Self::text`] to the original file, so that errors
    /// found after expansion point at what the user wrote. A position inside an expanded
    /// value maps to its `${`.
    pub fn original_position(&self, line: usize, column: usize) -> (usize, usize) {
        if self.subs.is_empty() {
            return (line, column);
        }
        let Some(&line_start) = self.new_lines.get(line.saturating_sub(1)) else {
            return (line, column);
        };
        let off = line_start + column.saturating_sub(1);
        let mut orig = off;
        for s in &self.subs {
            if off < s.new_start {
                break;
            }
            if off < s.new_start + s.new_len {
                orig = s.orig_start;
                break;
            }
            orig = off - (s.new_start + s.new_len) + s.orig_start + s.orig_len;
        }
        offset_to_position(&self.orig_lines, orig)
    }
}

/// Char offsets of line starts.
fn line_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    for (i, c) in text.chars().enumerate() {
        if c == '\n' {
            starts.push(i + 1);
        }
    }
    starts
}

fn offset_to_position(lines: &[usize], off: usize) -> (usize, usize) {
    // partition_point: number of line starts <= off, i.e. the 1-based line.
    let line = lines.partition_point(|&s| s <= off).max(1);
    (line, off - lines[line - 1] + 1)
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// If `chars[i..]` starts with `${NAME}`, returns NAME and the length of the reference.
fn reference_at(chars: &[char], i: usize) -> Option<(String, usize)> {
    if chars.get(i) != Some(&'$') || chars.get(i + 1) != Some(&'{') {
        return None;
    }
    let start = i + 2;
    if !chars.get(start).copied().is_some_and(is_name_start) {
        return None;
    }
    let mut end = start;
    while chars.get(end).copied().is_some_and(is_name_char) {
        end += 1;
    }
    if chars.get(end) != Some(&'}') {
        return None;
    }
    Some((chars[start..end].iter().collect(), end + 1 - i))
}

/// Expands `${NAME}` in `source` with `lookup`. An unset variable is an error at the file,
/// line and column of its `${`, with the YAML path of the node it is in when that is known.
pub fn expand_env(
    source: &str,
    file: &Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Expansion, PolicyError> {
    let chars: Vec<char> = source.chars().collect();
    let mut text = String::with_capacity(source.len());
    let mut subs = Vec::new();
    // (name, char offset) of unset variables, in order.
    let mut unset: Vec<(String, usize)> = Vec::new();
    let mut new_len = 0usize;
    let mut i = 0;
    let mut line_start = true;
    let mut in_comment = false;
    while i < chars.len() {
        let c = chars[i];
        if line_start && !c.is_whitespace() {
            in_comment = c == '#';
            line_start = false;
        }
        if c == '\n' {
            line_start = true;
            in_comment = false;
        }
        if !in_comment {
            if c == '$' && chars.get(i + 1) == Some(&'$') {
                // `$$` stays as written and keeps a following `{` from being read as a
                // reference: `$${X}` is left exactly as written.
                text.push_str("$$");
                new_len += 2;
                i += 2;
                continue;
            }
            if let Some((name, len)) = reference_at(&chars, i) {
                match lookup(&name) {
                    Some(value) => {
                        let vlen = value.chars().count();
                        subs.push(Sub {
                            orig_start: i,
                            orig_len: len,
                            new_start: new_len,
                            new_len: vlen,
                        });
                        text.push_str(&value);
                        new_len += vlen;
                    }
                    None => {
                        if !unset.iter().any(|(n, _)| *n == name) {
                            unset.push((name, i));
                        }
                    }
                }
                i += len;
                continue;
            }
        }
        text.push(c);
        new_len += 1;
        i += 1;
    }
    let orig_lines = line_starts(source);
    if let Some((name, off)) = unset.first() {
        let (line, column) = offset_to_position(&orig_lines, *off);
        let mut message = format!("environment variable {name} is not set");
        if unset.len() > 1 {
            let others: Vec<&str> = unset[1..].iter().map(|(n, _)| n.as_str()).collect();
            message.push_str(&format!(" (also unset: {})", others.join(", ")));
        }
        let path = Locator::new(source)
            .path_at(line, column)
            .unwrap_or_default();
        return Err(PolicyError::new(file, path, message).at(line, column));
    }
    let new_lines = line_starts(&text);
    Ok(Expansion {
        text,
        subs,
        orig_lines,
        new_lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "PODCIDR" => Some("10.0.0.0/8".into()),
            "EMPTY" => Some(String::new()),
            "MULTI" => Some("a\nb".into()),
            "X" => Some("long-value".into()),
            _ => None,
        }
    }

    fn expand(s: &str) -> Result<Expansion, PolicyError> {
        expand_env(s, Path::new("p.yaml"), vars)
    }

    #[test]
    fn references_are_replaced() {
        let e = expand("a: ${PODCIDR}\nb: x${PODCIDR}y${EMPTY}\n").expect("expands");
        assert_eq!(e.text(), "a: 10.0.0.0/8\nb: x10.0.0.0/8y\n");
        assert!(e.changed());
    }

    #[test]
    fn dollar_forms_that_are_not_references_stay() {
        for s in [
            "a: $$\n",
            "a: $${PODCIDR}\n",
            "a: $PODCIDR\n",
            "a: ${1X}\n",
            "a: ${A-b}\n",
            "a: ${\n",
            "a: $\n",
            "a: cost$\n",
        ] {
            let e = expand(s).expect("no reference");
            assert_eq!(e.text(), s);
            assert!(!e.changed());
        }
    }

    #[test]
    fn unset_variable_is_an_error_at_its_dollar() {
        let src = "spec:\n  kprobes:\n  - call: x\n    message: \"at ${NOPE} and ${NOPE2}\"\n";
        let e = expand(src).expect_err("unset");
        assert_eq!((e.line, e.column), (Some(4), Some(18)));
        assert_eq!(e.path, "spec.kprobes[0].message");
        assert_eq!(
            e.message,
            "environment variable NOPE is not set (also unset: NOPE2)"
        );
        assert_eq!(
            e.to_string(),
            "p.yaml:4:18: spec.kprobes[0].message: environment variable NOPE is not set (also \
             unset: NOPE2)"
        );
    }

    #[test]
    fn full_line_comments_are_not_expanded() {
        let e = expand("# uses ${NOPE}\n  # ${PODCIDR}\na: 1 # ${PODCIDR}\n").expect("ok");
        assert_eq!(
            e.text(),
            "# uses ${NOPE}\n  # ${PODCIDR}\na: 1 # 10.0.0.0/8\n"
        );
    }

    #[test]
    fn positions_map_back_to_the_original_text() {
        let e = expand("a: ${X} zz\nb: ${MULTI}\nc: q\n").expect("ok");
        assert_eq!(e.text(), "a: long-value zz\nb: a\nb\nc: q\n");
        // Before any substitution.
        assert_eq!(e.original_position(1, 2), (1, 2));
        // Inside the value: the `${`.
        assert_eq!(e.original_position(1, 6), (1, 4));
        // After it on the same line: shifted back by the length difference.
        assert_eq!(e.original_position(1, 15), (1, 9));
        // Lines after a multi-line value.
        assert_eq!(e.original_position(4, 4), (3, 4));
        assert_eq!(e.original_position(3, 1), (2, 4));
    }

    #[test]
    fn non_ascii_text_counts_columns_in_characters() {
        let e = expand("m: \"é ${NOPE}\"\n").expect_err("unset");
        assert_eq!(e.column, Some(7));
    }
}
