//! Configuration errors that point at the file, line and field at fault.

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem, located in its source file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    /// The file that was read.
    pub file: PathBuf,
    /// 1-based line, when the problem can be located.
    pub line: Option<usize>,
    /// Dotted field path such as `services[0].endpoints[1].weight`; empty for syntax errors.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.field.is_empty() && self.field != "." {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl ConfigError {
    pub(super) fn io(path: &Path, e: std::io::Error) -> Self {
        Self { file: path.to_owned(), line: None, field: String::new(), message: format!("cannot read: {e}") }
    }

    pub(super) fn empty(path: &Path) -> Self {
        Self {
            file: path.to_owned(),
            line: None,
            field: String::new(),
            message: "is empty (no setting, only blank lines or comments): refused".to_owned(),
        }
    }

    pub(super) fn from_toml(path: &Path, text: &str, field: String, e: &toml::de::Error) -> Self {
        let line = e.span().map(|span| line_of(text, span.start));
        Self { file: path.to_owned(), line, field, message: e.message().trim().to_owned() }
    }

    pub(super) fn from_violation(path: &Path, text: &str, v: Violation) -> Self {
        let line = locate(text, &v.path);
        Self { file: path.to_owned(), line, field: render_path(&v.path), message: v.message }
    }
}

/// One broken rule, with the path of the field that breaks it.
#[derive(Debug)]
pub(crate) struct Violation {
    pub path: Vec<Segment>,
    pub message: String,
}

/// One step of a field path: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(&'static str),
    Index(usize),
}

fn render_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Finds the line of the deepest item along `path` that exists in the document.
fn locate(text: &str, path: &[Segment]) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut item = doc.as_item();
    let mut span = None;
    for seg in path {
        let next = match seg {
            Segment::Key(k) => item.get(*k),
            Segment::Index(i) => item.get(*i),
        };
        match next {
            Some(next) => {
                item = next;
                span = next.span().or(span);
            }
            None => break,
        }
    }
    span.map(|s| line_of(text, s.start))
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}
