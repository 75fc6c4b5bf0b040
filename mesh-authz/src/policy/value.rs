//! Istio's value matching for AuthorizationPolicy fields (ISTIO-SEMANTICS §6.4): `abc`
//! exact, `abc*` prefix, `*abc` suffix, `*` presence (non-empty); paths also take the URI
//! templates `{*}` (one segment) and `{**}` (the rest); `namespaces` allow `*` anywhere.

/// One compiled value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ValueMatcher {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// Ends with.
    Suffix(String),
    /// Any non-empty value.
    Presence,
    /// A path template.
    Template {
        /// Segments; `None` is `{*}` (one non-empty segment).
        segments: Vec<Option<String>>,
        /// A trailing `{**}` (one or more segments).
        rest: bool,
    },
    /// `*` anywhere (namespaces): the parts between stars, in order.
    Glob(Vec<String>),
}

impl ValueMatcher {
    /// Compile a value of a plain field.
    pub fn new(v: &str) -> Self {
        if v == "*" {
            Self::Presence
        } else if let Some(p) = v.strip_suffix('*') {
            Self::Prefix(p.to_string())
        } else if let Some(s) = v.strip_prefix('*') {
            Self::Suffix(s.to_string())
        } else {
            Self::Exact(v.to_string())
        }
    }

    /// Compile a `paths` value (templates allowed).
    pub fn path(v: &str) -> Self {
        if !v.contains('{') {
            return Self::new(v);
        }
        let mut segments: Vec<Option<String>> = v.split('/').map(|s| (s != "{*}").then(|| s.to_string())).collect();
        let rest = segments.last().is_some_and(|s| s.as_deref() == Some("{**}"));
        if rest {
            segments.pop();
        }
        Self::Template { segments, rest }
    }

    /// Compile a `namespaces` value (`*` anywhere).
    pub fn glob(v: &str) -> Self {
        if v.contains('*') {
            Self::Glob(v.split('*').map(str::to_string).collect())
        } else {
            Self::Exact(v.to_string())
        }
    }

    /// Lowercase the literal parts (for case-insensitive `hosts`).
    #[must_use]
    pub fn lowercase(self) -> Self {
        match self {
            Self::Exact(s) => Self::Exact(s.to_ascii_lowercase()),
            Self::Prefix(s) => Self::Prefix(s.to_ascii_lowercase()),
            Self::Suffix(s) => Self::Suffix(s.to_ascii_lowercase()),
            other => other,
        }
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(e) => value == e,
            Self::Prefix(p) => value.starts_with(p.as_str()),
            Self::Suffix(s) => value.ends_with(s.as_str()),
            Self::Presence => !value.is_empty(),
            Self::Template { segments, rest } => {
                let parts: Vec<&str> = value.split('/').collect();
                if *rest {
                    // `/a/{**}` needs at least one more segment after `/a`.
                    parts.len() > segments.len()
                        && segments.iter().zip(&parts).all(|(t, p)| segment_matches(t.as_deref(), p))
                } else {
                    parts.len() == segments.len()
                        && segments.iter().zip(&parts).all(|(t, p)| segment_matches(t.as_deref(), p))
                }
            }
            Self::Glob(parts) => glob_matches(parts, value),
        }
    }
}

fn segment_matches(template: Option<&str>, segment: &str) -> bool {
    match template {
        None => !segment.is_empty(),
        Some(t) => t == segment,
    }
}

fn glob_matches(parts: &[String], value: &str) -> bool {
    let (first, rest) = parts.split_first().expect("split gives at least one part");
    let Some(mut remaining) = value.strip_prefix(first.as_str()) else { return false };
    let (last, middle) = rest.split_last().expect("a glob has a star");
    for part in middle {
        match remaining.find(part.as_str()) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last.as_str())
}

pub use mesh_core::cidr::Cidr;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn forms() {
        assert!(ValueMatcher::new("abc").matches("abc") && !ValueMatcher::new("abc").matches("abcd"));
        assert!(ValueMatcher::new("abc*").matches("abc") && ValueMatcher::new("abc*").matches("abcd"));
        assert!(ValueMatcher::new("*abc").matches("xabc") && !ValueMatcher::new("*abc").matches("abcx"));
        assert!(ValueMatcher::new("*").matches("x") && !ValueMatcher::new("*").matches(""));
        let t = ValueMatcher::path("/foo/{*}");
        assert!(t.matches("/foo/bar") && !t.matches("/foo/bar/baz") && !t.matches("/foo/") && !t.matches("/foo"));
        let r = ValueMatcher::path("/foo/{**}");
        assert!(r.matches("/foo/bar") && r.matches("/foo/bar/baz") && !r.matches("/foo") && !r.matches("/food/x"));
        let m = ValueMatcher::path("/api/{*}/reviews/{**}");
        assert!(m.matches("/api/v1/reviews/0") && m.matches("/api/v1/reviews/0/x") && !m.matches("/api/v1/ratings/0"));
        let g = ValueMatcher::glob("prod-*-eu");
        assert!(
            g.matches("prod-web-eu") && g.matches("prod--eu") && !g.matches("prod-web-us") && !g.matches("prod-eu")
        );
        assert!(ValueMatcher::glob("*").matches("") && ValueMatcher::glob("*a*").matches("xay"));
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()) && !c.contains("10.2.0.1".parse().unwrap()));
        assert!(Cidr::parse("1.2.3.4").unwrap().contains("1.2.3.4".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
        assert!(Cidr::parse("::1/128").unwrap().contains("::1".parse().unwrap()));
        assert!(Cidr::parse("127.0.0.0/8").unwrap().contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_none() && Cidr::parse("nope").is_none());
    }

    fn word() -> impl Strategy<Value = String> {
        "[ab/]{0,5}"
    }

    proptest! {
        // Reference model: the plain string operations §6.4 names.
        #[test]
        fn value_forms_follow_the_model(core in word(), value in word()) {
            prop_assert_eq!(ValueMatcher::new(&core).matches(&value), if core == "*" { !value.is_empty() } else { value == core });
            // `*` alone is presence, so `{core}*` with an empty core needs a non-empty value.
            let prefix = format!("{core}*");
            prop_assert_eq!(ValueMatcher::new(&prefix).matches(&value), value.starts_with(&core) && (!core.is_empty() || !value.is_empty()));
            let suffix = format!("*{core}");
            prop_assert_eq!(ValueMatcher::new(&suffix).matches(&value), value.ends_with(&core) && (!core.is_empty() || !value.is_empty()));
        }

        // Globs against a regex built from the same parts.
        #[test]
        fn globs_follow_a_regex(parts in prop::collection::vec("[ab-]{0,3}", 2..4), value in "[ab-]{0,8}") {
            let glob = parts.join("*");
            let re = regex::Regex::new(&format!("^{}$", parts.iter().map(|p| regex::escape(p)).collect::<Vec<_>>().join(".*"))).unwrap();
            prop_assert_eq!(ValueMatcher::glob(&glob).matches(&value), re.is_match(&value));
        }
    }
}
