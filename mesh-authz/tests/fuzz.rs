//! Fuzz targets (property-based, stable toolchain): JWT parsing and verification on mutated
//! and arbitrary tokens, JWKS documents, and path normalisation.
//!
//! The case count is proptest's: 256 by default (what CI runs), `PROPTEST_CASES=1000000`
//! for a long run (`benches/fuzz.sh`).
// The fixture is read by the loader: the default feature `config`.
#![cfg(feature = "config")]

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue};
use mesh_authz::{
    jwt::{Jwks, JwtPolicy, testing::Issuer},
    policy::path::normalize,
};
use mesh_config::load::{LoadOptions, load_str};
use proptest::prelude::*;

struct Fixture {
    policy: JwtPolicy,
    token: String,
    now: SystemTime,
}

fn fixture() -> Fixture {
    let issuer = Issuer::new();
    let config = format!(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: jwt}}\nspec:\n  selector: {{matchLabels: {{app: reviews}}}}\n  jwtRules:\n  - issuer: https://issuer.test\n    audiences: [bookinfo]\n    jwks: '{}'\n",
        issuer.jwks
    );
    let loaded = load_str("jwt.yaml", &config, &LoadOptions::default());
    assert!(!loaded.has_errors(), "{}", loaded.report());
    let labels = [("app".to_string(), "reviews".to_string())].into();
    let policy = JwtPolicy::compile(&loaded.into_snapshot(), "default", &labels);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let token = issuer.token(&serde_json::json!({
        "iss": "https://issuer.test", "sub": "jason", "aud": "bookinfo", "exp": 1_800_000_600_i64,
    }));
    Fixture { policy, token, now }
}

thread_local!(static FIXTURE: Fixture = fixture());

/// Authenticate `token` as a bearer token; `Ok(true)` when it is accepted.
fn accepted(f: &Fixture, token: &str) -> Result<bool, ()> {
    let mut headers = HeaderMap::new();
    let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) else { return Err(()) };
    headers.insert("authorization", v);
    match f.policy.authenticate(&mut headers, None, f.now) {
        Ok(Some(_)) => Ok(true),
        Ok(None) => Err(()),
        Err(_) => Ok(false),
    }
}

/// One edit of a token.
#[derive(Clone, Debug)]
enum Edit {
    Flip(usize, u8),
    Delete(usize),
    Insert(usize, char),
    SwapSegments(usize, usize),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(a, b)| Edit::Flip(a, b)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), prop_oneof![Just('.'), Just('='), Just('+'), Just('/'), Just('A'), Just(' ')])
            .prop_map(|(a, c)| Edit::Insert(a, c)),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Edit::SwapSegments(a, b)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(token: &str, e: &Edit) -> String {
    let mut b = token.as_bytes().to_vec();
    let at = |a: usize, len: usize| a % len.max(1);
    match e {
        Edit::Flip(a, x) if !b.is_empty() => {
            let i = at(*a, b.len());
            b[i] = (b[i] ^ x) & 0x7f;
        }
        Edit::Delete(a) if !b.is_empty() => {
            b.remove(at(*a, b.len()));
        }
        Edit::Insert(a, c) => b.insert(at(*a, b.len() + 1), *c as u8),
        Edit::SwapSegments(x, y) => {
            let mut parts: Vec<&str> = token.split('.').collect();
            if *x < parts.len() && *y < parts.len() {
                parts.swap(*x, *y);
            }
            return parts.join(".");
        }
        Edit::Truncate(a) => b.truncate(at(*a, b.len() + 1)),
        _ => {}
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// The part of a token the signature covers.
fn signed_part(token: &str) -> Option<&str> {
    let t = token.trim();
    t.rsplit_once('.').map(|(hp, _)| hp)
}

proptest! {
    /// A changed token never passes unless what its signature covers is unchanged, and it
    /// never panics the verifier.
    #[test]
    fn fuzz_jwt_mutated_tokens(edits in prop::collection::vec(edit(), 1..4)) {
        FIXTURE.with(|f| {
            prop_assert_eq!(accepted(f, &f.token), Ok(true));
            let mut t = f.token.clone();
            for e in &edits {
                t = apply(&t, e);
            }
            if let Ok(true) = accepted(f, &t) {
                prop_assert_eq!(signed_part(&t), signed_part(&f.token), "accepted a forged token {}", t);
            }
            Ok(())
        })?;
    }

    /// Arbitrary text as a token: refused, never a panic.
    #[test]
    fn fuzz_jwt_arbitrary_tokens(t in "[A-Za-z0-9_\\-.=+/ ]{0,200}|\\PC{0,100}") {
        FIXTURE.with(|f| {
            prop_assert_ne!(accepted(f, &t), Ok(true));
            Ok(())
        })?;
    }

    /// Three arbitrary base64url segments, the header one of the accepted algorithms with a
    /// JSON body the fuzzer picks: refused.
    #[test]
    fn fuzz_jwt_forged_headers(alg in "ES256|RS256|HS256|none|\\PC{0,6}", kid in "k1|\\PC{0,4}", claims in "\\PC{0,60}", sig in prop::collection::vec(any::<u8>(), 0..80)) {
        use mesh_core::base64::encode_url;
        let header = encode_url(serde_json::json!({"alg": alg, "kid": kid}).to_string().as_bytes());
        let payload = encode_url(claims.as_bytes());
        let t = format!("{header}.{payload}.{}", encode_url(&sig));
        FIXTURE.with(|f| {
            prop_assert_ne!(accepted(f, &t), Ok(true));
            Ok(())
        })?;
    }

    /// JWKS documents (inline `jwks` or fetched from `jwksUri`): parsed or refused.
    #[test]
    fn fuzz_jwks_documents(
        kty in "EC|RSA|oct|\\PC{0,3}", crv in "P-256|P-384|\\PC{0,3}",
        x in "[A-Za-z0-9_\\-]{0,90}", y in "[A-Za-z0-9_\\-]{0,90}", n in "[A-Za-z0-9_\\-]{0,400}", e in "AQAB|\\PC{0,4}",
        raw in "\\PC{0,200}",
    ) {
        let doc = serde_json::json!({"keys": [{"kty": kty, "crv": crv, "x": x, "y": y, "n": n, "e": e, "kid": "k"}]});
        let _ = Jwks::parse(&doc.to_string());
        let _ = Jwks::parse(&raw);
    }

    /// Path normalisation: idempotent, no dot segments, `%00` refused, nothing above the
    /// root, and the query never part of the result.
    #[test]
    fn fuzz_path_normalisation(path in "(/|\\\\|\\.|\\.\\.|%2[eE]|%2[fF]|%5[cC]|%00|%41|%zz|[a-z]|\\?|;|//){0,24}|\\PC{0,60}") {
        match normalize(&path) {
            Ok(p) => {
                prop_assert_eq!(normalize(&p), Ok(p.clone()), "not idempotent: {:?} -> {:?}", path, p);
                prop_assert!(!p.contains('?'));
                prop_assert!(!p.contains('\\'));
                for seg in p.split('/') {
                    prop_assert!(seg != "." && seg != "..", "{:?} -> {:?}", path, p);
                }
            }
            Err(_) => prop_assert!(path.split('?').next().unwrap_or("").contains("%00")),
        }
    }
}
