//! The compiled matcher agrees with a plain reference interpreter of ISTIO-SEMANTICS §2.2
//! on generated match blocks and requests; weighted choice passes a chi-square test.
// The loader and route table need the default feature `config`.
#![cfg(feature = "config")]

use std::collections::BTreeMap;

use http::HeaderMap;
use mesh_config::api::{HttpMatchRequest, StringMatch, ValueMatch};
use mesh_route::policy::{
    action::{HeaderOps, Target, WeightedTarget, WeightedTargets},
    matching::{MatchBlock, RequestInfo},
};
use proptest::{option, prelude::*};
use rand::{Rng, SeedableRng, rngs::StdRng};

// === the reference interpreter: obviously correct, slow ===

fn full_match(pattern: &str, value: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$")).unwrap().is_match(value)
}

fn string_match(m: &StringMatch, value: &str, ignore_case: bool) -> bool {
    match m {
        StringMatch::Exact(e) if ignore_case => value.to_lowercase() == e.to_lowercase(),
        StringMatch::Exact(e) => value == e,
        StringMatch::Prefix(p) if ignore_case => value.to_lowercase().starts_with(&p.to_lowercase()),
        StringMatch::Prefix(p) => value.starts_with(p.as_str()),
        // ignoreUriCase never applies to regex.
        StringMatch::Regex(r) => full_match(r, value),
    }
}

fn is_presence(m: &ValueMatch) -> bool {
    matches!(m, ValueMatch::Present) || matches!(m, ValueMatch::Match(StringMatch::Regex(r)) if r == "*")
}

#[derive(Clone, Debug)]
struct SimpleRequest {
    method: String,
    authority: String,
    uri: String,
    headers: Vec<(String, String)>,
}

fn header_values<'a>(req: &'a SimpleRequest, name: &str) -> Vec<&'a str> {
    req.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
}

fn reference(block: &HttpMatchRequest, req: &SimpleRequest) -> bool {
    let (path, query) = match req.uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (req.uri.as_str(), None),
    };
    if let Some(u) = &block.uri
        && !string_match(u, path, block.ignore_uri_case)
    {
        return false;
    }
    if let Some(m) = &block.method
        && !string_match(m, &req.method, false)
    {
        return false;
    }
    if let Some(a) = &block.authority
        && !string_match(a, &req.authority, false)
    {
        return false;
    }
    for (name, m) in &block.headers {
        let values = header_values(req, name);
        let ok = if is_presence(m) {
            !values.is_empty()
        } else {
            values.iter().any(|v| string_match(m.string_match().unwrap(), v, false))
        };
        if !ok {
            return false;
        }
    }
    for (name, m) in &block.without_headers {
        let values = header_values(req, name);
        let matched = if is_presence(m) {
            !values.is_empty()
        } else if values.is_empty() {
            string_match(m.string_match().unwrap(), "", false)
        } else {
            values.iter().any(|v| string_match(m.string_match().unwrap(), v, false))
        };
        if matched {
            return false;
        }
    }
    for (name, m) in &block.query_params {
        let first = query.and_then(|q| {
            q.split('&').map(|pair| pair.split_once('=').unwrap_or((pair, ""))).find(|(k, _)| k == name).map(|(_, v)| v)
        });
        let ok = match first {
            None => false,
            Some(_) if is_presence(m) => true,
            Some(v) => string_match(m.string_match().unwrap(), v, false),
        };
        if !ok {
            return false;
        }
    }
    true
}

// === generators ===

fn text() -> impl Strategy<Value = String> {
    // Regex metacharacters included, to catch values treated as patterns.
    "[aAbB/.*+?]{0,4}"
}

fn regex_pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        text().prop_map(|t| regex::escape(&t)),
        text().prop_map(|t| format!("{}.*", regex::escape(&t))),
        Just("[ab]+".to_string()),
        Just("(?i)/A.*".to_string()),
        Just("/a|/b".to_string()),
        Just(".*".to_string()),
    ]
}

fn string_match_strategy(allow_empty_prefix: bool) -> impl Strategy<Value = StringMatch> {
    prop_oneof![
        text().prop_map(StringMatch::Exact),
        text()
            .prop_filter("empty prefix only for uri", move |p| allow_empty_prefix || !p.is_empty())
            .prop_map(StringMatch::Prefix),
        regex_pattern().prop_map(StringMatch::Regex),
    ]
}

fn value_match() -> impl Strategy<Value = ValueMatch> {
    prop_oneof![
        1 => Just(ValueMatch::Present),
        1 => Just(ValueMatch::Match(StringMatch::Regex("*".into()))),
        1 => Just(ValueMatch::Match(StringMatch::Exact(String::new()))),
        5 => string_match_strategy(false).prop_map(ValueMatch::Match),
    ]
}

fn names() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["end-user".to_string(), "x-v".to_string()])
}

fn block() -> impl Strategy<Value = HttpMatchRequest> {
    (
        option::of(string_match_strategy(true)),
        any::<bool>(),
        option::of(prop::sample::select(vec!["GET", "POST"]).prop_map(|m| StringMatch::Exact(m.into()))),
        option::of(prop::sample::select(vec![
            StringMatch::Exact("reviews".into()),
            StringMatch::Prefix("reviews:".into()),
        ])),
        prop::collection::btree_map(names(), value_match(), 0..2),
        prop::collection::btree_map(names(), value_match(), 0..2),
        prop::collection::btree_map(prop::sample::select(vec!["u".to_string(), "v".to_string()]), value_match(), 0..2),
    )
        .prop_map(|(uri, ignore_uri_case, method, authority, headers, without_headers, query_params)| {
            HttpMatchRequest {
                uri,
                ignore_uri_case,
                method,
                authority,
                headers,
                without_headers,
                query_params,
                ..Default::default()
            }
        })
}

fn request() -> impl Strategy<Value = SimpleRequest> {
    let query = prop::collection::vec((prop::sample::select(vec!["u", "v", "w"]), option::of("[aAbB]{0,3}")), 0..3)
        .prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.to_string(),
                })
                .collect::<Vec<_>>()
                .join("&")
        });
    (
        prop::sample::select(vec!["GET", "POST"]),
        prop::sample::select(vec!["reviews", "reviews:9080", "ratings"]),
        "/[aAbB/.*+?]{0,4}",
        option::of(query),
        prop::collection::vec((names(), "[aAbB/.*+?]{0,3}"), 0..3),
    )
        .prop_map(|(method, authority, path, query, headers)| SimpleRequest {
            method: method.into(),
            authority: authority.into(),
            uri: match query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            },
            headers,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn compiled_matcher_agrees_with_the_reference(b in block(), r in request()) {
        let compiled = MatchBlock::try_from(&b).unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in &r.headers {
            headers.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let (path, query) = match r.uri.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (r.uri.as_str(), None),
        };
        let info = RequestInfo { method: &r.method, scheme: "http", authority: &r.authority, path, query, headers: &headers };
        prop_assert_eq!(compiled.matches(&info), reference(&b, &r), "block {:?}\nrequest {:?}", b, r);
    }
}

/// Per-request weighted choice: chi-square over a seeded RNG (df = 2, p = 0.001: 13.82).
#[test]
fn weighted_choice_chi_square() {
    let t = |w| WeightedTarget {
        target: Target::Missing { name: format!("c{w}").into(), host: "h".into(), subset: None, port: None },
        weight: w,
        headers: HeaderOps::default(),
        filters: None,
    };
    let targets = WeightedTargets::new(vec![t(50), t(30), t(20)]);
    for seed in [1u64, 2, 3] {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = 20_000;
        let mut counts: BTreeMap<u32, u32> = BTreeMap::new();
        for _ in 0..n {
            *counts.entry(targets.pick(rng.random()).unwrap().weight).or_default() += 1;
        }
        let chi2: f64 = [50u32, 30, 20]
            .iter()
            .map(|w| {
                let expected = f64::from(n) * f64::from(*w) / 100.0;
                let observed = f64::from(counts[w]);
                (observed - expected).powi(2) / expected
            })
            .sum();
        assert!(chi2 < 13.82, "seed {seed}: chi-square {chi2} for {counts:?}");
    }
}
