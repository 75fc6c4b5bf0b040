//! SPIFFE workload identities as Istio issues them: `spiffe://<td>/ns/<ns>/sa/<sa>`.

use std::{fmt, str::FromStr, sync::Arc};

/// A workload identity. Parsing is strict: the scheme, trust domain, and the
/// `/ns/<namespace>/sa/<service-account>` path are all required. One pointer wide: endpoints
/// and connections carry it on the request path, so a clone is one reference count.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity(Arc<Parts>);

#[derive(Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Parts {
    trust_domain: Box<str>,
    namespace: Box<str>,
    service_account: Box<str>,
}

/// Why a string is not an Istio SPIFFE identity.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdentity {
    /// The `spiffe://` scheme is missing.
    #[error("identity must start with spiffe://")]
    Scheme,
    /// The trust domain is empty or has characters SPIFFE forbids.
    #[error("invalid trust domain {0:?}: use lowercase letters, digits, '.', '-' and '_'")]
    TrustDomain(String),
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error("identity path must be /ns/<namespace>/sa/<service-account>, got {0:?}")]
    Path(String),
}

impl Identity {
    /// An identity from its parts, checked like a parsed one.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, InvalidIdentity> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    /// The trust domain, e.g. `cluster.local`.
    pub fn trust_domain(&self) -> &str {
        &self.0.trust_domain
    }

    /// The workload's namespace.
    pub fn namespace(&self) -> &str {
        &self.0.namespace
    }

    /// The workload's service account.
    pub fn service_account(&self) -> &str {
        &self.0.service_account
    }

    /// The principal as AuthorizationPolicy writes it: without `spiffe://`.
    pub fn principal(&self) -> String {
        format!("{}/ns/{}/sa/{}", self.trust_domain(), self.namespace(), self.service_account())
    }
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl FromStr for Identity {
    type Err = InvalidIdentity;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("spiffe://").ok_or(InvalidIdentity::Scheme)?;
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        if td.is_empty()
            || !td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(InvalidIdentity::TrustDomain(td.to_string()));
        }
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["ns", ns, "sa", sa] if valid_segment(ns) && valid_segment(sa) => Ok(Self(Arc::new(Parts {
                trust_domain: td.into(),
                namespace: (*ns).into(),
                service_account: (*sa).into(),
            }))),
            _ => Err(InvalidIdentity::Path(format!("/{path}"))),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain(), self.namespace(), self.service_account())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_displays() {
        let id: Identity = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-reviews");
        assert_eq!(id.principal(), "cluster.local/ns/default/sa/bookinfo-reviews");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/bookinfo-reviews");
    }

    #[test]
    fn rejects_malformed() {
        use InvalidIdentity::*;
        let cases = [
            ("cluster.local/ns/default/sa/x", Scheme),
            ("spiffe:///ns/default/sa/x", TrustDomain(String::new())),
            ("spiffe://Cluster.local/ns/a/sa/b", TrustDomain("Cluster.local".into())),
            ("spiffe://td/ns/a/sa/", Path("/ns/a/sa/".into())),
            ("spiffe://td/ns/a", Path("/ns/a".into())),
            ("spiffe://td/sa/b/ns/a", Path("/sa/b/ns/a".into())),
            ("spiffe://td/ns/a/sa/b/extra", Path("/ns/a/sa/b/extra".into())),
            ("spiffe://td", Path("/".into())),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Identity>(), Err(want), "{input}");
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(td in "[a-z0-9][a-z0-9.-]{0,20}", ns in "[a-z0-9-]{1,20}", sa in "[a-z0-9_.-]{1,20}") {
            let id = Identity::new(&td, &ns, &sa).unwrap();
            prop_assert_eq!(id.to_string().parse::<Identity>().unwrap(), id.clone());
            prop_assert_eq!(id.namespace(), ns.as_str());
        }
    }
}
