//! The error a policy fails to load with: where (file, line, column, YAML path) and why.

use std::fmt;
use std::path::{Path, PathBuf};

/// A policy that cannot be loaded. Displays as
/// `policies/x.yaml:12:9: spec.kprobes[0].call: unsupported call "tcp_connect" (...)`;
/// parts that are unknown are left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Rendered(self))]
pub struct PolicyError {
    /// The policy file (or a pseudo name such as `<grpc>` for policies without a file).
    pub file: PathBuf,
    /// 1-based line of the offending YAML node, if known.
    pub line: Option<usize>,
    /// 1-based column of the offending YAML node, if known.
    pub column: Option<usize>,
    /// YAML path such as `spec.kprobes[0].selectors[2].matchArgs[0].operator`; may be empty.
    pub path: String,
    pub message: String,
}

impl PolicyError {
    /// An error without a position.
    pub fn new(file: &Path, path: impl Into<String>, message: impl Into<String>) -> Self {
        PolicyError {
            file: file.to_path_buf(),
            line: None,
            column: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// Adds the 1-based line and column.
    pub fn at(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn line(&self) -> Option<usize> {
        self.line
    }

    pub fn column(&self) -> Option<usize> {
        self.column
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Display helper: thiserror's format string cannot express the optional parts.
struct Rendered<'a>(&'a PolicyError);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = self.0;
        write!(f, "{}", e.file.display())?;
        if let Some(line) = e.line {
            write!(f, ":{line}")?;
            if let Some(column) = e.column {
                write!(f, ":{column}")?;
            }
        }
        if !e.path.is_empty() {
            write!(f, ": {}", e.path)?;
        }
        write!(f, ": {}", e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_file_line_column_path_and_message() {
        let e = PolicyError::new(
            Path::new("policies/x.yaml"),
            "spec.kprobes[0].selectors[0].matchArgs[0].operator",
            "unknown operator \"Foo\"",
        )
        .at(12, 9);
        assert_eq!(
            e.to_string(),
            "policies/x.yaml:12:9: spec.kprobes[0].selectors[0].matchArgs[0].operator: \
             unknown operator \"Foo\""
        );
    }

    #[test]
    fn display_leaves_out_unknown_position_and_empty_path() {
        let e = PolicyError::new(Path::new("p.yaml"), "", "cannot read");
        assert_eq!(e.to_string(), "p.yaml: cannot read");
    }

    #[test]
    fn is_a_std_error() {
        fn takes(_: &dyn std::error::Error) {}
        takes(&PolicyError::new(Path::new("p.yaml"), "", "x"));
    }
}
