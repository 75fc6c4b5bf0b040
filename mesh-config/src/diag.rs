//! Findings about config: where (file, line, field path), what (kind and name), how bad.
//!
//! One line each, as `meshctl analyze` prints them:
//! `FILE:LINE: error|warning|note: KIND NS/NAME: FIELD: message`.

use std::fmt;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    /// Informational: something was skipped or noted; nothing is wrong.
    Note,
    /// Accepted, but probably not what the user meant.
    Warning,
    /// Rejected: the config is not used.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A mapping member.
    Key(String),
    /// A sequence element.
    Index(usize),
}

/// A field path such as `spec.http[0].match[0].uri.regex`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(Vec<Seg>);

impl FieldPath {
    /// The empty path (the whole document).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// From segments.
    pub fn from_segments(segs: Vec<Seg>) -> Self {
        Self(segs)
    }

    /// The segments.
    pub fn segments(&self) -> &[Seg] {
        &self.0
    }

    /// This path with a member appended.
    #[must_use]
    pub fn key(&self, k: impl Into<String>) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(k.into()));
        p
    }

    /// This path with an index appended.
    #[must_use]
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }

    /// `other` appended to this path.
    #[must_use]
    pub fn join(&self, other: &FieldPath) -> Self {
        let mut p = self.clone();
        p.0.extend(other.0.iter().cloned());
        p
    }

    /// Parse the dotted form (`spec.http[0].route`); bracketed keys (`labels[a.b/c]`) too.
    pub fn parse(s: &str) -> Self {
        let mut segs = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('[') {
                let end = r.find(']').unwrap_or(r.len());
                let inner = &r[..end];
                segs.push(inner.parse().map_or_else(|_| Seg::Key(inner.to_string()), Seg::Index));
                rest = r.get(end + 1..).unwrap_or("");
            } else {
                let r = rest.strip_prefix('.').unwrap_or(rest);
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end > 0 {
                    segs.push(Seg::Key(r[..end].to_string()));
                }
                rest = &r[end..];
            }
        }
        Self(segs)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("-");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) if k.contains(['.', '[', ']']) || k.is_empty() => write!(f, "[{k}]")?,
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
            }
        }
        Ok(())
    }
}

/// A finding about one place in the config.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line (0 when the whole file is meant).
    pub line: u32,
    /// How serious.
    pub severity: Severity,
    /// `KIND NS/NAME`, or `document N` when the object cannot be named.
    pub object: String,
    /// The field path.
    pub field: FieldPath,
    /// What is wrong, in the user's terms.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}: {}: {}", self.file, self.line, self.severity, self.object, self.field, self.message)
    }
}

/// A finding from validation, before it is placed in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// How serious.
    pub severity: Severity,
    /// Where in the resource.
    pub path: FieldPath,
    /// What is wrong.
    pub message: String,
}

impl Finding {
    /// An error at `path`.
    pub fn error(path: FieldPath, message: impl Into<String>) -> Self {
        Self { severity: Severity::Error, path, message: message.into() }
    }

    /// A warning at `path`.
    pub fn warning(path: FieldPath, message: impl Into<String>) -> Self {
        Self { severity: Severity::Warning, path, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_display_and_parse() {
        let p = FieldPath::root().key("spec").key("http").index(0).key("match").index(0).key("uri").key("regex");
        assert_eq!(p.to_string(), "spec.http[0].match[0].uri.regex");
        assert_eq!(FieldPath::parse("spec.http[0].match[0].uri.regex"), p);
        let labels = FieldPath::root().key("metadata").key("labels").key("app.kubernetes.io/name");
        assert_eq!(labels.to_string(), "metadata.labels[app.kubernetes.io/name]");
        assert_eq!(FieldPath::parse(&labels.to_string()), labels);
        assert_eq!(FieldPath::root().to_string(), "-");
    }

    #[test]
    fn diagnostic_format() {
        let d = Diagnostic {
            file: "vs.yaml".into(),
            line: 14,
            severity: Severity::Error,
            object: "VirtualService default/reviews".into(),
            field: FieldPath::parse("spec.http[0].match[0].uri.regex"),
            message: "invalid regex".into(),
        };
        assert_eq!(
            d.to_string(),
            "vs.yaml:14: error: VirtualService default/reviews: spec.http[0].match[0].uri.regex: invalid regex"
        );
    }
}
