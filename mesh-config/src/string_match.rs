//! Istio's `StringMatch` semantics, written once: exact and prefix are case-sensitive
//! string comparisons, `regex` is an RE2-style **full** match, and a header condition
//! written as `{}` (or `regex: "*"`) tests presence only. The compiled [`StringMatcher`] is
//! built from the config type once, at load time.

use std::sync::Arc;

use crate::api::StringMatch;

/// Istio rejects longer patterns.
pub const MAX_REGEX_LEN: usize = 1024;

/// A regex that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRegex {
    /// Longer than [`MAX_REGEX_LEN`].
    #[error("regex is {0} characters long; the limit is {MAX_REGEX_LEN}")]
    TooLong(usize),
    /// Not valid RE2 syntax (as the Rust regex crate reads it).
    #[error("invalid regex: {0}")]
    Syntax(String),
}

/// Compile `pattern` as an anchored full match (`^(?:pattern)$`).
pub fn compile_full_match(pattern: &str) -> Result<regex::Regex, InvalidRegex> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(InvalidRegex::TooLong(pattern.len()));
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| InvalidRegex::Syntax(first_line(&e.to_string())))
}

fn first_line(s: &str) -> String {
    // The regex crate renders a multi-line diagnostic; keep its last, most specific line.
    let line = s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(s).trim();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// A compiled string condition.
#[derive(Clone, Debug)]
pub enum StringMatcher {
    /// Equal to the value.
    Exact(Arc<str>),
    /// Starts with the value (a plain string prefix, not path-segment aware).
    Prefix(Arc<str>),
    /// The whole value matches the pattern.
    Regex(Arc<regex::Regex>),
    /// The value is present (any value, empty included).
    Present,
    /// The Gateway API's `PathPrefix`: element-wise, so `/foo` matches `/foo`, `/foo/` and
    /// `/foo/bar` but not `/foobar`. Held without its trailing `/` (`""` for `/`, which
    /// matches every path); build it with [`StringMatcher::path_prefix`].
    PathPrefix(Arc<str>),
}

impl PartialEq for StringMatcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b))
            | (Self::Prefix(a), Self::Prefix(b))
            | (Self::PathPrefix(a), Self::PathPrefix(b)) => a == b,
            (Self::Regex(a), Self::Regex(b)) => a.as_str() == b.as_str(),
            (Self::Present, Self::Present) => true,
            _ => false,
        }
    }
}

impl TryFrom<&StringMatch> for StringMatcher {
    type Error = InvalidRegex;

    fn try_from(m: &StringMatch) -> Result<Self, InvalidRegex> {
        Ok(match m {
            StringMatch::Exact(s) => Self::Exact(s.as_str().into()),
            StringMatch::Prefix(s) => Self::Prefix(s.as_str().into()),
            StringMatch::Regex(r) => Self::Regex(Arc::new(compile_full_match(r)?)),
        })
    }
}

impl StringMatcher {
    /// A condition for a header or query parameter: `None` (written `{}`) and
    /// `regex: "*"` both mean presence.
    pub fn for_presence_or(m: Option<&StringMatch>) -> Result<Self, InvalidRegex> {
        match m {
            None => Ok(Self::Present),
            Some(StringMatch::Regex(r)) if r == "*" => Ok(Self::Present),
            Some(m) => Self::try_from(m),
        }
    }

    /// A Gateway API `PathPrefix` condition; a trailing `/` in `prefix` is ignored.
    pub fn path_prefix(prefix: &str) -> Self {
        Self::PathPrefix(prefix.trim_end_matches('/').into())
    }

    /// Whether `value` satisfies the condition.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == &**s,
            Self::Prefix(p) => value.starts_with(&**p),
            Self::PathPrefix(p) => {
                value.starts_with(&**p) && matches!(value.as_bytes().get(p.len()), None | Some(b'/'))
            }
            Self::Regex(r) => r.is_match(value),
            Self::Present => true,
        }
    }

    /// `ignoreUriCase`: exact and prefix compare ASCII case-insensitively; regex is unaffected.
    pub fn matches_ignore_case(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value.eq_ignore_ascii_case(s),
            Self::Prefix(p) => {
                value.len() >= p.len() && value.is_char_boundary(p.len()) && value[..p.len()].eq_ignore_ascii_case(p)
            }
            other => other.matches(value),
        }
    }

    /// A `headers` / `queryParams` condition over every value the request carries for that
    /// name: it holds if **any single value** matches (values are not joined with `,`).
    /// An absent header never matches.
    pub fn matches_any<'a>(&self, mut values: impl Iterator<Item = &'a str>) -> bool {
        values.any(|v| self.matches(v))
    }

    /// A `withoutHeaders` condition: the block **fails** if the header matches. An absent
    /// header is read as the empty string, so the block succeeds unless the matcher also
    /// matches `""`; a presence matcher on an absent header simply succeeds.
    pub fn without<'a>(&self, values: impl Iterator<Item = &'a str>) -> bool {
        let mut values = values.peekable();
        if values.peek().is_none() {
            return match self {
                Self::Present => true,
                other => !other.matches(""),
            };
        }
        !self.matches_any(values)
    }

    /// Whether this matcher accepts every value (a catch-all `uri`: prefix `/` or `""`, regex `.*`).
    pub fn is_catch_all_uri(&self) -> bool {
        match self {
            Self::Prefix(p) => p.is_empty() || &**p == "/",
            Self::PathPrefix(p) => p.is_empty(),
            Self::Regex(r) => r.as_str() == "^(?:.*)$",
            Self::Present => true,
            Self::Exact(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn m(sm: StringMatch) -> StringMatcher {
        StringMatcher::try_from(&sm).unwrap()
    }

    #[test]
    fn table() {
        use StringMatch::*;
        let cases: &[(StringMatch, &str, bool)] = &[
            (Exact("jason".into()), "jason", true),
            (Exact("jason".into()), "Jason", false),
            (Prefix("/static".into()), "/staticfoo", true),
            (Prefix("/static".into()), "/stati", false),
            (Regex("v1".into()), "/v1/x", false),
            (Regex("/v1/.*".into()), "/v1/x", true),
            (Regex("(?i)JASON".into()), "jason", true),
            (Regex("a|b".into()), "ab", false),
            (Regex("\\d+".into()), "a123", false),
            (Regex("\\d+".into()), "123", true),
        ];
        for (sm, value, want) in cases {
            assert_eq!(m(sm.clone()).matches(value), *want, "{sm:?} on {value:?}");
        }
    }

    #[test]
    fn ignore_case_does_not_touch_regex() {
        assert!(m(StringMatch::Exact("/Productpage".into())).matches_ignore_case("/productpage"));
        assert!(m(StringMatch::Prefix("/API".into())).matches_ignore_case("/api/v1"));
        assert!(!m(StringMatch::Regex("/API".into())).matches_ignore_case("/api"));
        assert!(!m(StringMatch::Prefix("/é".into())).matches_ignore_case("/"));
    }

    #[test]
    fn repeated_headers_match_value_by_value() {
        let jason_bob = m(StringMatch::Exact("jason,bob".into()));
        assert!(!jason_bob.matches_any(["jason", "bob"].into_iter()));
        assert!(m(StringMatch::Exact("bob".into())).matches_any(["jason", "bob"].into_iter()));
    }

    #[test]
    fn without_headers_reads_absent_as_empty() {
        let none = std::iter::empty::<&str>;
        assert!(m(StringMatch::Exact("jason".into())).without(none()));
        assert!(!m(StringMatch::Exact(String::new())).without(none()));
        assert!(!m(StringMatch::Regex(".*".into())).without(none()));
        assert!(StringMatcher::Present.without(none()));
        assert!(!StringMatcher::Present.without(["x"].into_iter()));
        assert!(!m(StringMatch::Exact("jason".into())).without(["bob", "jason"].into_iter()));
    }

    #[test]
    fn presence_forms() {
        assert_eq!(StringMatcher::for_presence_or(None).unwrap(), StringMatcher::Present);
        assert_eq!(
            StringMatcher::for_presence_or(Some(&StringMatch::Regex("*".into()))).unwrap(),
            StringMatcher::Present
        );
        assert!(StringMatcher::Present.matches(""));
    }

    #[test]
    fn regex_validation() {
        assert!(matches!(compile_full_match("(?=x)"), Err(InvalidRegex::Syntax(_))));
        assert!(matches!(compile_full_match("(a"), Err(InvalidRegex::Syntax(_))));
        assert_eq!(compile_full_match(&"a".repeat(1025)).unwrap_err(), InvalidRegex::TooLong(1025));
        assert!(compile_full_match(&"a".repeat(1024)).is_ok());
    }

    fn word() -> impl Strategy<Value = String> {
        "[a-cA-C/]{0,6}"
    }

    proptest! {
        // Reference model: plain std string operations.
        #[test]
        fn exact_and_prefix_follow_the_model(pat in word(), value in word()) {
            prop_assert_eq!(m(StringMatch::Exact(pat.clone())).matches(&value), value == pat);
            prop_assert_eq!(m(StringMatch::Prefix(pat.clone())).matches(&value), value.starts_with(&pat));
            prop_assert_eq!(
                m(StringMatch::Exact(pat.clone())).matches_ignore_case(&value),
                value.eq_ignore_ascii_case(&pat)
            );
            prop_assert_eq!(
                m(StringMatch::Prefix(pat.clone())).matches_ignore_case(&value),
                value.to_ascii_lowercase().starts_with(&pat.to_ascii_lowercase())
            );
        }

        // A regex of escaped literal text is a full match: equal to exact.
        #[test]
        fn literal_regex_is_exact(pat in word(), value in word()) {
            let r = m(StringMatch::Regex(regex::escape(&pat)));
            prop_assert_eq!(r.matches(&value), value == pat);
            // A prefix written as a regex needs the trailing `.*`.
            let p = m(StringMatch::Regex(format!("{}.*", regex::escape(&pat))));
            prop_assert_eq!(p.matches(&value), value.starts_with(&pat));
        }

        // Header conditions: any single value; withoutHeaders is the negation, absent = "".
        #[test]
        fn header_helpers_follow_the_model(pat in word(), values in prop::collection::vec(word(), 0..3)) {
            let exact = m(StringMatch::Exact(pat.clone()));
            let any = values.contains(&pat);
            prop_assert_eq!(exact.matches_any(values.iter().map(String::as_str)), any);
            let without = if values.is_empty() { !pat.is_empty() } else { !any };
            prop_assert_eq!(exact.without(values.iter().map(String::as_str)), without);
        }
    }
}
