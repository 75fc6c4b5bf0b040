//! RequestAuthentication: JWTs checked against the issuers a workload accepts, so that
//! `requestPrincipals` and `request.auth.*` conditions work. A request with an invalid token
//! is refused (401); a request without a token passes on, unauthenticated, to authorization.

use std::{collections::HashMap, sync::Arc, time::SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_config::api::JwtRule;
#[cfg(feature = "config")]
use mesh_config::{
    Snapshot,
    api::{Kind, Labels, Resource},
};
use mesh_core::base64;
use ring::signature;
use serde_json::Value;

use crate::policy::RequestAuth;

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts with JSON header and payload.
    #[error("Jwt is not in the form of Header.Payload.Signature")]
    Malformed,
    /// No rule for the token's issuer.
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    /// Signature or key problems.
    #[error("Jwt verification fails")]
    BadSignature,
    /// `exp` passed.
    #[error("Jwt is expired")]
    Expired,
    /// `nbf` in the future.
    #[error("Jwt not yet valid")]
    NotYetValid,
    /// `aud` not accepted.
    #[error("Audiences in Jwt are not allowed")]
    Audience,
    /// The keys are not known (yet).
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoKey,
}

/// A public key from a JWKS.
#[derive(Clone, Debug)]
enum Key {
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec { curve: &'static signature::EcdsaVerificationAlgorithm, point: Vec<u8>, alg: &'static str },
}

/// A JWKS document that cannot be used (not JSON, no `keys`, a key that does not decode).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidJwks(String);

/// A `jwtRules` entry that does not hold (an unparsable inline `jwks`, a bad header name).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("jwtRules[{index}]: {source}")]
pub struct InvalidJwtRule {
    /// The rule's index in the list.
    pub index: usize,
    /// What is wrong with it: its inline `jwks`.
    pub source: InvalidJwks,
}

/// A parsed JSON Web Key Set.
#[derive(Clone, Debug, Default)]
pub struct Jwks {
    keys: Vec<(Option<String>, Key)>,
}

impl Jwks {
    /// Parse a JWKS document (RSA and EC P-256/P-384 keys; others are skipped).
    pub fn parse(json: &str) -> Result<Self, InvalidJwks> {
        Self::parse_keys(json).map_err(InvalidJwks)
    }

    fn parse_keys(json: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let keys = v.get("keys").and_then(Value::as_array).ok_or("a JWKS needs \"keys\"")?;
        let b = |k: &Value, f: &str| k.get(f).and_then(Value::as_str).and_then(base64::decode);
        let mut out = Vec::new();
        for k in keys {
            let kid = k.get("kid").and_then(Value::as_str).map(str::to_string);
            let key = match k.get("kty").and_then(Value::as_str) {
                Some("RSA") => match (b(k, "n"), b(k, "e")) {
                    (Some(n), Some(e)) => Key::Rsa { n, e },
                    _ => continue,
                },
                Some("EC") => {
                    let (curve, alg): (&'static signature::EcdsaVerificationAlgorithm, _) =
                        match k.get("crv").and_then(Value::as_str) {
                            Some("P-256") => (&signature::ECDSA_P256_SHA256_FIXED, "ES256"),
                            Some("P-384") => (&signature::ECDSA_P384_SHA384_FIXED, "ES384"),
                            _ => continue,
                        };
                    let (Some(x), Some(y)) = (b(k, "x"), b(k, "y")) else { continue };
                    let mut point = vec![0x04];
                    point.extend(x);
                    point.extend(y);
                    Key::Ec { curve, point, alg }
                }
                _ => continue,
            };
            out.push((kid, key));
        }
        Ok(Self { keys: out })
    }

    fn verify(&self, alg: &str, kid: Option<&str>, message: &[u8], sig: &[u8]) -> Result<(), JwtError> {
        let candidates = self.keys.iter().filter(|(k, _)| kid.is_none() || k.as_deref() == kid);
        let mut any = false;
        for (_, key) in candidates {
            let ok = match (alg, key) {
                ("RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512", Key::Rsa { n, e }) => {
                    let params: &signature::RsaParameters = match alg {
                        "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                        "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                        "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                        "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                        "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                        _ => &signature::RSA_PSS_2048_8192_SHA512,
                    };
                    any = true;
                    signature::RsaPublicKeyComponents { n, e }.verify(params, message, sig).is_ok()
                }
                (a, Key::Ec { curve, point, alg }) if a == *alg => {
                    any = true;
                    signature::UnparsedPublicKey::new(*curve, point).verify(message, sig).is_ok()
                }
                _ => false,
            };
            if ok {
                return Ok(());
            }
        }
        Err(if any { JwtError::BadSignature } else { JwtError::NoKey })
    }
}

/// Where a token may be.
#[derive(Clone, Debug)]
enum Location {
    Header(HeaderName, String),
    Param(String),
}

/// One accepted issuer.
#[derive(Clone, Debug)]
struct Rule {
    issuer: String,
    audiences: Vec<String>,
    jwks: Jwks,
    jwks_uri: Option<String>,
    locations: Vec<Location>,
    forward: bool,
    output_payload_to_header: Option<HeaderName>,
}

/// The RequestAuthentication in force for one workload.
#[derive(Clone, Debug, Default)]
pub struct JwtPolicy {
    rules: Vec<Rule>,
    /// Problems found while compiling.
    pub warnings: Vec<String>,
}

fn compile_rule(r: &JwtRule) -> Result<Rule, InvalidJwks> {
    let jwks = match &r.jwks {
        Some(inline) => Jwks::parse(inline)?,
        None => Jwks::default(),
    };
    let mut locations: Vec<Location> = r
        .from_headers
        .iter()
        .filter_map(|h| {
            Some(Location::Header(
                HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes()).ok()?,
                h.prefix.clone().unwrap_or_default(),
            ))
        })
        .collect();
    locations.extend(r.from_params.iter().map(|p| Location::Param(p.clone())));
    if locations.is_empty() {
        // Istio's defaults: `Authorization: Bearer <token>` and `?access_token=`.
        locations = vec![
            Location::Header(http::header::AUTHORIZATION, "Bearer ".into()),
            Location::Param("access_token".into()),
        ];
    }
    Ok(Rule {
        issuer: r.issuer.clone(),
        audiences: r.audiences.clone(),
        jwks,
        jwks_uri: r.jwks_uri.clone(),
        locations,
        forward: r.forward_original_token.unwrap_or(false),
        output_payload_to_header: r
            .output_payload_to_header
            .as_ref()
            .and_then(|h| HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()).ok()),
    })
}

impl JwtPolicy {
    /// A fixed set of `jwtRules` (a RequestAuthentication's), for the layer used alone. A rule
    /// that does not hold (an unparsable inline `jwks`, a bad header name) is an error naming
    /// its index.
    pub fn from_rules<'a>(rules: impl IntoIterator<Item = &'a JwtRule>) -> Result<Self, InvalidJwtRule> {
        let mut out = Self::default();
        for (index, rule) in rules.into_iter().enumerate() {
            out.rules.push(compile_rule(rule).map_err(|source| InvalidJwtRule { index, source })?);
        }
        Ok(out)
    }

    /// The rules of every RequestAuthentication that applies to the workload.
    #[cfg(feature = "config")]
    pub fn compile(snapshot: &Snapshot, namespace: &str, labels: &Labels) -> Self {
        let mut out = Self::default();
        for r in snapshot.policies_for_workload(Kind::RequestAuthentication, namespace, labels) {
            let Resource::RequestAuthentication(ra) = &**r else { continue };
            if ra.spec.target_ref.is_some() || !ra.spec.target_refs.is_empty() {
                continue;
            }
            for (i, rule) in ra.spec.jwt_rules.iter().enumerate() {
                match compile_rule(rule) {
                    Ok(c) => out.rules.push(c),
                    Err(e) => out.warnings.push(format!(
                        "RequestAuthentication {}/{}: spec.jwtRules[{i}]: {e}",
                        ra.metadata.namespace, ra.metadata.name
                    )),
                }
            }
        }
        out
    }

    /// Whether any issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// `jwksUri`s whose keys must be fetched.
    pub fn jwks_uris(&self) -> Vec<String> {
        let mut uris: Vec<String> = self.rules.iter().filter_map(|r| r.jwks_uri.clone()).collect();
        uris.sort();
        uris.dedup();
        uris
    }

    /// Install keys fetched from `jwksUri`s.
    pub fn set_fetched_keys(&mut self, fetched: &HashMap<String, Jwks>) {
        for r in &mut self.rules {
            if let Some(k) = r.jwks_uri.as_ref().and_then(|u| fetched.get(u)) {
                r.jwks = k.clone();
            }
        }
    }

    /// Authenticate a request: `Ok(None)` when it carries no token, the authenticated
    /// principal when a token is valid, an error (401) otherwise. The token header is
    /// removed unless `forwardOriginalToken` is set.
    pub fn authenticate(
        &self,
        headers: &mut HeaderMap,
        query: Option<&str>,
        now: SystemTime,
    ) -> Result<Option<RequestAuth>, JwtError> {
        let mut found = None;
        'search: for rule in &self.rules {
            for loc in &rule.locations {
                let token = match loc {
                    Location::Header(name, prefix) => headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix(prefix.as_str()))
                        .map(str::to_string),
                    Location::Param(p) => query
                        .and_then(|q| {
                            q.split('&').find_map(|kv| kv.strip_prefix(p.as_str()).and_then(|r| r.strip_prefix('=')))
                        })
                        .map(str::to_string),
                };
                if let Some(t) = token {
                    found = Some((t, loc.clone()));
                    break 'search;
                }
            }
        }
        let Some((token, location)) = found else { return Ok(None) };
        let mut parts = token.trim().split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JwtError::Malformed);
        };
        let header: Value =
            base64::decode(h).and_then(|b| serde_json::from_slice(&b).ok()).ok_or(JwtError::Malformed)?;
        let claims: Value =
            base64::decode(p).and_then(|b| serde_json::from_slice(&b).ok()).ok_or(JwtError::Malformed)?;
        let sig = base64::decode(s).ok_or(JwtError::Malformed)?;
        let iss = claims.get("iss").and_then(Value::as_str).ok_or(JwtError::UnknownIssuer)?;
        let rule = self.rules.iter().find(|r| r.issuer == iss).ok_or(JwtError::UnknownIssuer)?;
        let alg = header.get("alg").and_then(Value::as_str).ok_or(JwtError::Malformed)?;
        let kid = header.get("kid").and_then(Value::as_str);
        rule.jwks.verify(alg, kid, format!("{h}.{p}").as_bytes(), &sig)?;
        let now = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
        // Envoy's default clock skew: 60 s.
        if claims.get("exp").and_then(Value::as_i64).is_some_and(|exp| now > exp + 60) {
            return Err(JwtError::Expired);
        }
        if claims.get("nbf").and_then(Value::as_i64).is_some_and(|nbf| now + 60 < nbf) {
            return Err(JwtError::NotYetValid);
        }
        let audiences: Vec<String> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(a)) => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => Vec::new(),
        };
        if !rule.audiences.is_empty() && !audiences.iter().any(|a| rule.audiences.contains(a)) {
            return Err(JwtError::Audience);
        }
        if !rule.forward
            && let Location::Header(name, _) = &location
        {
            headers.remove(name);
        }
        if let Some(out) = &rule.output_payload_to_header
            && let Ok(v) = HeaderValue::from_str(p)
        {
            headers.insert(out.clone(), v);
        }
        let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
        Ok(Some(RequestAuth {
            principal: format!("{iss}/{sub}"),
            audiences,
            presenter: claims.get("azp").and_then(Value::as_str).map(str::to_string),
            claims,
        }))
    }
}

/// Fetch the JWKS documents of `uris` over HTTP.
pub async fn fetch_jwks(uris: &[String]) -> HashMap<String, Jwks> {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut out = HashMap::new();
    for uri in uris {
        let Ok(parsed) = uri.parse::<http::Uri>() else { continue };
        let fetched = async {
            let rsp = client.get(parsed).await.map_err(|e| e.to_string())?;
            let body = rsp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Jwks::parse(&String::from_utf8_lossy(&body)).map_err(|e| e.to_string())
        };
        match tokio::time::timeout(std::time::Duration::from_secs(5), fetched).await {
            Ok(Ok(jwks)) => {
                out.insert(uri.clone(), jwks);
            }
            Ok(Err(e)) => tracing::warn!(%uri, error = %e, "JWKS fetch failed"),
            Err(_) => tracing::warn!(%uri, "JWKS fetch timed out"),
        }
    }
    out
}

/// A shared, swappable policy (for the layer).
pub type SharedJwtPolicy = Arc<arc_swap::ArcSwap<JwtPolicy>>;

/// Fetch the keys of every `jwksUri` of the policy in `shared` and swap in a policy that
/// has them (call after each compile, and periodically: Istio refreshes every 20 minutes).
pub async fn refresh_keys(shared: &arc_swap::ArcSwap<JwtPolicy>) {
    let uris = shared.load().jwks_uris();
    if uris.is_empty() {
        return;
    }
    let fetched = fetch_jwks(&uris).await;
    let mut next = JwtPolicy::clone(&shared.load());
    next.set_fetched_keys(&fetched);
    shared.store(Arc::new(next));
}

/// A signing key minted for tests, with its JWKS document (feature `test-util`).
#[cfg(any(test, feature = "test-util"))]
pub mod testing {
    use mesh_core::base64;
    use ring::{
        rand::SystemRandom,
        signature::{self, EcdsaKeyPair, KeyPair},
    };

    /// An ES256 issuer: key id `k1`.
    #[derive(Debug)]
    pub struct Issuer {
        key: EcdsaKeyPair,
        /// The JWKS document with the public key.
        pub jwks: String,
    }

    impl Issuer {
        /// A fresh P-256 key.
        pub fn new() -> Self {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .expect("P-256 key generation");
            let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
                .expect("a freshly generated key parses");
            let point = key.public_key().as_ref();
            let jwks = format!(
                r#"{{"keys": [{{"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "x": "{}", "y": "{}"}}]}}"#,
                base64::encode_url(&point[1..33]),
                base64::encode_url(&point[33..65])
            );
            Self { key, jwks }
        }

        /// A signed token with these claims.
        pub fn token(&self, claims: &serde_json::Value) -> String {
            let header = base64::encode_url(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
            let payload = base64::encode_url(claims.to_string().as_bytes());
            let sig = self
                .key
                .sign(&SystemRandom::new(), format!("{header}.{payload}").as_bytes())
                .expect("signing with a valid key");
            format!("{header}.{payload}.{}", base64::encode_url(sig.as_ref()))
        }
    }

    impl Default for Issuer {
        fn default() -> Self {
            Self::new()
        }
    }
}
