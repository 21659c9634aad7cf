//! Where a problem in a policy text is written: maps YAML paths such as
//! `spec.kprobes[0].selectors[2].matchArgs[0].operator` to a line and column, and places
//! every [`PolicyError`] of a policy text ([`Source`]).
//!
//! serde forgets positions once a document is deserialized, so validation errors only know
//! the path of the offending node. This module re-reads the source with `yaml-rust2`'s event
//! parser, which reports a marker for every node, and records where each path starts.
//! Errors of the deserialization itself keep the position serde_yaml reports.
//!
//! Why not a deserializer that keeps positions (`serde-saphyr` and its `Spanned<T>`)? A
//! derived `Spanned` field gives where the value starts, while errors here point at the key
//! (`operator:`); keys only have positions through hand-written visitors. Its errors carry no
//! YAML path, and its messages differ from serde_yaml's (`expected mapping start`, `while
//! parsing a block mapping, did not find expected key`) that the documented error lines and
//! their tests use. `serde_yaml_ng` and `serde_norway` keep serde_yaml's API (a position for
//! the error only, none for values), so they would not replace this module either.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::path::Path;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::error::PolicyError;

/// A 1-based position in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn from_marker(m: Marker) -> Self {
        // yaml-rust2 counts lines from 1 but columns from 0.
        Position {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone)]
struct Node {
    /// Where the mapping key starts, for nodes that are mapping values.
    key: Option<Position>,
    /// Where the node itself starts.
    value: Position,
}

/// The positions of every node of the first document of a YAML text.
#[derive(Debug, Default)]
pub struct Locator {
    nodes: HashMap<String, Node>,
    /// The innermost collection still open when a syntax error stopped indexing.
    open_at_error: Option<String>,
}

impl Locator {
    /// Indexes `source`. A syntax error stops indexing; nodes before it are still found.
    pub fn new(source: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(source);
        // A syntax error has already been reported by serde_yaml; keep what was indexed, and
        // remember which collection was being read so the error can name a YAML path.
        let open_at_error = match parser.load(&mut builder, false) {
            Ok(()) => None,
            Err(_) => builder
                .stack
                .iter()
                .rev()
                .map(|f| match f {
                    Frame::Mapping { path, .. } | Frame::Sequence { path, .. } => path,
                })
                .find(|p| !p.is_empty())
                .cloned(),
        };
        Locator {
            nodes: builder.nodes,
            open_at_error,
        }
    }

    /// For a text with a syntax error: the YAML path of the innermost non-root collection
    /// that was open when the parser gave up (the mapping or list the mistake is in).
    pub fn syntax_error_path(&self) -> Option<&str> {
        self.open_at_error.as_deref()
    }

    /// Where the node at `path` is written: the key for mapping entries (so errors point at
    /// `operator:` rather than its value), the item itself for sequence entries. A path that
    /// is not in the document (e.g. a defaulted field) falls back to its nearest ancestor.
    pub fn position(&self, path: &str) -> Option<Position> {
        let mut p = path;
        loop {
            if let Some(node) = self.nodes.get(p) {
                return Some(node.key.unwrap_or(node.value));
            }
            if p.is_empty() {
                return None;
            }
            p = parent(p);
        }
    }

    /// The YAML path of the innermost node written at or before `line:column`: the node
    /// whose start is the closest one not after that position (the deeper path on a tie, e.g.
    /// a sequence and its first item). Used to name the node an error found in the raw text
    /// (such as an unset `${VAR}`) is in; `None` before the first node.
    pub fn path_at(&self, line: usize, column: usize) -> Option<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| (n.value.line, n.value.column) <= (line, column))
            .max_by(|(pa, a), (pb, b)| {
                (a.value.line, a.value.column, pa.len()).cmp(&(
                    b.value.line,
                    b.value.column,
                    pb.len(),
                ))
            })
            .map(|(p, _)| p.clone())
            .filter(|p| !p.is_empty())
    }

    /// Where the value at exactly `path` starts, without falling back to ancestors.
    pub fn value_position(&self, path: &str) -> Option<Position> {
        self.nodes.get(path).map(|n| n.value)
    }
}

/// Convenience for a single lookup: `(line, column)` of `path` in `source`.
pub fn locate(source: &str, path: &str) -> Option<(usize, usize)> {
    Locator::new(source)
        .position(path)
        .map(|p| (p.line, p.column))
}

/// `a.b[1].c` → `a.b[1]` → `a.b` → `a` → ``.
fn parent(path: &str) -> &str {
    let cut = if path.ends_with(']') {
        path.rfind('[')
    } else {
        path.rfind('.')
    };
    match cut {
        Some(i) => &path[..i],
        None => "",
    }
}

enum Frame {
    Mapping {
        path: String,
        /// The key just read, waiting for its value.
        pending_key: Option<(String, Position)>,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    nodes: HashMap<String, Node>,
    /// Set once the first document's root has been closed; later documents are ignored.
    done: bool,
}

impl Builder {
    /// Registers a node starting at `pos` and returns its path, or `None` when the node is a
    /// mapping key (keys are remembered until their value arrives).
    fn node(&mut self, scalar: Option<&str>, pos: Position) -> Option<String> {
        self.first_child_at(pos);
        let (path, key) = match self.stack.last_mut() {
            None => (String::new(), None),
            Some(Frame::Sequence { path, next }) => {
                let p = format!("{path}[{next}]");
                *next += 1;
                (p, None)
            }
            Some(Frame::Mapping { path, pending_key }) => match pending_key.take() {
                None => {
                    // A complex (non-scalar) key has no usable name; its children get a
                    // path nobody asks for.
                    let name = scalar.unwrap_or("?").to_string();
                    let parent_path = path.clone();
                    *pending_key = Some((name.clone(), pos));
                    if scalar.is_some() {
                        return None;
                    }
                    return Some(join(&parent_path, "?"));
                }
                Some((name, key_pos)) => (join(path, &name), Some(key_pos)),
            },
        };
        self.nodes
            .entry(path.clone())
            .or_insert(Node { key, value: pos });
        Some(path)
    }
}

impl Builder {
    /// Block collections are reported where the scanner noticed them, which can be after
    /// their first key; the first child's position is where the collection is written.
    fn first_child_at(&mut self, pos: Position) {
        let path = match self.stack.last() {
            Some(Frame::Mapping {
                path,
                pending_key: None,
            }) => path,
            Some(Frame::Sequence { path, next: 0 }) => path,
            _ => return,
        };
        if let Some(node) = self.nodes.get_mut(path)
            && (pos.line, pos.column) < (node.value.line, node.value.column)
        {
            node.value = pos;
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.done {
            return;
        }
        let pos = Position::from_marker(mark);
        match ev {
            Event::Scalar(ref s, ..) => {
                self.node(Some(s), pos);
            }
            Event::Alias(_) => {
                self.node(None, pos);
            }
            Event::SequenceStart(..) => {
                let path = self.node(None, pos).unwrap_or_default();
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingStart(..) => {
                let path = self.node(None, pos).unwrap_or_default();
                self.stack.push(Frame::Mapping {
                    path,
                    pending_key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
                if self.stack.is_empty() {
                    self.done = true;
                }
            }
            Event::DocumentEnd => self.done = true,
            _ => {}
        }
    }
}

/// A policy text being parsed. Every [`PolicyError`] found in it gets its line and column
/// here: serde_yaml's own errors from the position serde_yaml reports, validation errors and
/// warnings (which only know a YAML path) from the [`Locator`].
pub(crate) struct Source<'a> {
    text: &'a str,
    file: &'a Path,
    /// Built on first use: a policy without problems is never indexed.
    locator: OnceCell<Locator>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(text: &'a str, file: &'a Path) -> Self {
        Source {
            text,
            file,
            locator: OnceCell::new(),
        }
    }

    fn locator(&self) -> &Locator {
        self.locator.get_or_init(|| Locator::new(self.text))
    }

    /// A problem with the node at `path`, placed where that node (or, if it is not written,
    /// its nearest ancestor) is.
    pub(crate) fn error(&self, path: impl Into<String>, message: impl Into<String>) -> PolicyError {
        let e = PolicyError::new(self.file, path, message);
        match self.locator().position(&e.path) {
            Some(p) => e.at(p.line, p.column),
            None => e,
        }
    }

    /// serde_yaml renders errors as `<path>: <message> at line L column C` and has no other
    /// way to give the path and the message; split that back into the parts of a
    /// [`PolicyError`].
    pub(crate) fn serde_error(&self, err: serde_yaml::Error) -> PolicyError {
        let mut text = err.to_string();
        let mut e = PolicyError::new(self.file, "", "");
        if let Some(loc) = err.location() {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            if let Some(stripped) = text.strip_suffix(&suffix) {
                text = stripped.to_string();
            } else {
                // Syntax errors go on after the position ("..., while parsing a block mapping at
                // ..."); the position is already in front, so drop the repetition.
                text = text.replacen(&suffix, "", 1);
            }
            e = e.at(loc.line(), loc.column());
        }
        // A path has no spaces; messages such as "invalid type: ..." do.
        if let Some((path, msg)) = text.split_once(": ")
            && !path.is_empty()
            && !path.contains(char::is_whitespace)
            && !path.contains('`')
        {
            e.path = path.to_string();
            e.message = msg.to_string();
        } else {
            e.message = text;
            // A syntax error has no path from serde; name the collection it was found in.
            if e.line.is_some()
                && let Some(p) = self.locator().syntax_error_path()
            {
                e.path = p.to_string();
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testutil::fixture;

    /// A kprobe policy with a bad operator; the tests below count its lines and columns.
    const DOC: &str = fixture!("kprobe-unknown-operator-foo.yaml");

    #[test]
    fn mapping_entries_point_at_their_key() {
        let l = Locator::new(DOC);
        assert_eq!(
            l.position("spec.kprobes[0].selectors[0].matchArgs[0].operator"),
            Some(Position { line: 9, column: 9 })
        );
        assert_eq!(l.position("kind"), Some(Position { line: 2, column: 1 }));
    }

    #[test]
    fn sequence_items_point_at_the_item() {
        let l = Locator::new(DOC);
        assert_eq!(
            l.position("spec.kprobes[0].selectors[0].matchArgs[0].values[1]"),
            Some(Position {
                line: 12,
                column: 11
            })
        );
    }

    #[test]
    fn values_can_be_located_exactly() {
        let l = Locator::new(DOC);
        assert_eq!(
            l.value_position("spec.kprobes[0].call"),
            Some(Position {
                line: 5,
                column: 11
            })
        );
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let l = Locator::new(DOC);
        assert_eq!(
            l.position("spec.kprobes[0].selectors[0].matchActions[0].action"),
            l.position("spec.kprobes[0].selectors[0]")
        );
        // A mapping inside a sequence is reported at its first key.
        assert_eq!(locate(DOC, "spec.kprobes[0].args"), Some((5, 5)));
    }

    #[test]
    fn path_at_names_the_innermost_node() {
        let l = Locator::new(DOC);
        assert_eq!(
            l.path_at(12, 11).as_deref(),
            Some("spec.kprobes[0].selectors[0].matchArgs[0].values[1]")
        );
        assert_eq!(
            l.path_at(12, 13).as_deref(),
            Some("spec.kprobes[0].selectors[0].matchArgs[0].values[1]")
        );
        assert_eq!(l.path_at(5, 15).as_deref(), Some("spec.kprobes[0].call"));
        assert_eq!(l.path_at(1, 1), None);
    }

    #[test]
    fn syntax_errors_name_the_open_collection() {
        let l = Locator::new(
            "spec:\n  lsmhooks:\n  - hook: x\n    args:\n    - index: 0\n     type: file\n",
        );
        assert_eq!(l.syntax_error_path(), Some("spec.lsmhooks[0]"));
        assert_eq!(Locator::new(DOC).syntax_error_path(), None);
    }

    #[test]
    fn syntax_errors_keep_what_was_indexed() {
        let l = Locator::new("kind: TracingPolicy\nspec: [\n");
        assert_eq!(l.position("kind"), Some(Position { line: 1, column: 1 }));
    }

    #[test]
    fn flow_style_is_indexed() {
        let l = Locator::new("spec: {options: [{name: a, value: b}]}\n");
        assert_eq!(
            l.position("spec.options[0].value"),
            Some(Position {
                line: 1,
                column: 28
            })
        );
    }
}
