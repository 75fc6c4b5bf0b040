//! Path normalisation as Istio's default `BASE` does it (ISTIO-SEMANTICS §6.4), before
//! authorization and for what the backend receives.

/// Why a path is refused (400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPath {
    /// `%00` in the path.
    #[error("path contains %00")]
    Nul,
}

/// Two hex digits as a byte. Not `u8::from_str_radix`, which takes a sign: `%+0` is no
/// escape at all (found by the fuzz target), not `%00`.
fn hex_pair(hi: u8, lo: u8) -> Option<u8> {
    let digit = |b: u8| char::from(b).to_digit(16);
    u8::try_from(digit(hi)? * 16 + digit(lo)?).ok()
}

/// Normalise a request path (query removed): decode the unreserved percent-escapes
/// (`%2D %2E %30-%39 %41-%5A %5F %61-%7A %7E`), turn `\` into `/`, resolve `.` and `..`
/// segments (RFC 3986). `//` is kept; `%2F` and `%5C` stay encoded.
pub fn normalize(path: &str) -> Result<String, InvalidPath> {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let bytes = path.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let hex = hex_pair(bytes[i + 1], bytes[i + 2]);
            match hex {
                Some(0) => return Err(InvalidPath::Nul),
                Some(c) if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => {
                    decoded.push(c);
                    i += 3;
                    continue;
                }
                _ => {}
            }
        }
        decoded.push(if b == b'\\' { b'/' } else { b });
        i += 1;
    }
    Ok(remove_dot_segments(&String::from_utf8_lossy(&decoded)))
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        if i == 0 && absolute {
            continue;
        }
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = if absolute { String::from("/") } else { String::new() };
    result.push_str(&out.join("/"));
    if trailing_slash && !result.ends_with('/') {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_sign_is_not_a_hex_digit() {
        // `u8::from_str_radix("+0", 16)` is 0: `%+0` must stay as it is, not be a `%00`.
        assert_eq!(normalize("/a%+0b"), Ok("/a%+0b".to_string()));
        assert_eq!(normalize("/%+4"), Ok("/%+4".to_string()));
        assert_eq!(normalize("/%00"), Err(InvalidPath::Nul));
        assert_eq!(normalize("/%4a"), Ok("/J".to_string()));
    }

    #[test]
    fn base_normalisation() {
        let n = |p: &str| normalize(p).unwrap();
        assert_eq!(n("/a/b/../c"), "/a/c");
        assert_eq!(n("/a/./b/"), "/a/b/");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/../a"), "/a");
        assert_eq!(n("/%61dmin"), "/admin");
        assert_eq!(n("/a%2Eb"), "/a.b");
        assert_eq!(n("/%2e%2e/admin"), "/admin");
        assert_eq!(n("/a%2Fb"), "/a%2Fb");
        assert_eq!(n("/a%5Cb"), "/a%5Cb");
        assert_eq!(n("/a\\b"), "/a/b");
        assert_eq!(n("//a//b"), "//a//b");
        assert_eq!(n("/ratings?user=1"), "/ratings");
        assert_eq!(n("/%7Euser/%41"), "/~user/A");
        assert_eq!(n("/%zz"), "/%zz");
        assert_eq!(normalize("/a%00b"), Err(InvalidPath::Nul));
    }

    /// The reference: decode by a table, then a stack over segments.
    fn reference(path: &str) -> Option<String> {
        let unreserved: Vec<(String, char)> = (0u8..=255)
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
            .flat_map(|c| [(format!("%{c:02X}"), c as char), (format!("%{c:02x}"), c as char)])
            .collect();
        if path.to_ascii_uppercase().contains("%00") {
            return None;
        }
        let mut s = String::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some((code, c)) = unreserved.iter().find(|(code, _)| rest.starts_with(code.as_str())) {
                s.push(*c);
                rest = &rest[code.len()..];
            } else {
                let c = rest.chars().next().unwrap();
                s.push(if c == '\\' { '/' } else { c });
                rest = &rest[c.len_utf8()..];
            }
        }
        let mut stack: Vec<String> = Vec::new();
        let parts: Vec<&str> = s[1..].split('/').collect();
        let mut slash = false;
        for (i, p) in parts.iter().enumerate() {
            let end = i + 1 == parts.len();
            match *p {
                "." => slash = end,
                ".." => {
                    stack.pop();
                    slash = end;
                }
                p => {
                    stack.push(p.to_string());
                    slash = false;
                }
            }
        }
        let mut out = format!("/{}", stack.join("/"));
        if slash && !out.ends_with('/') {
            out.push('/');
        }
        Some(out)
    }

    proptest! {
        #[test]
        fn agrees_with_the_reference(path in "/([ab.]|/|\\\\|%2[eEfF]|%41|%5[cC]|%00|%7e){0,12}") {
            prop_assert_eq!(normalize(&path).ok(), reference(&path), "{}", path);
        }

        #[test]
        fn idempotent(path in "/([ab.]|/|\\\\|%2[eE]|%41){0,12}") {
            let once = normalize(&path).unwrap();
            prop_assert_eq!(normalize(&once).unwrap(), once.clone());
        }
    }
}
