//! Property test: any valid resource survives load -> serialize (YAML or JSON) -> load.

use std::collections::BTreeMap;

use mesh_config::{
    api::*,
    load::{LoadOptions, load_str},
};
use mesh_core::Duration;
use proptest::{option, prelude::*};

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,8}[a-z0-9]"
}

fn text() -> impl Strategy<Value = String> {
    // Includes YAML-hostile spellings that must stay strings.
    prop_oneof![
        "[a-zA-Z0-9/_.-]{1,12}",
        Just("no".to_string()),
        Just("on".to_string()),
        Just("0x1F".to_string()),
        Just("1.0".to_string()),
        Just("~".to_string())
    ]
}

fn string_match() -> impl Strategy<Value = StringMatch> {
    prop_oneof![
        text().prop_map(StringMatch::Exact),
        text().prop_map(StringMatch::Prefix),
        "[a-z/]{1,6}(\\.\\*)?".prop_map(StringMatch::Regex),
    ]
}

fn value_match() -> impl Strategy<Value = ValueMatch> {
    prop_oneof![Just(ValueMatch::Present), string_match().prop_map(ValueMatch::Match)]
}

fn duration() -> impl Strategy<Value = Duration> {
    (1u64..100_000).prop_map(|ms| Duration(std::time::Duration::from_millis(ms)))
}

fn percent() -> impl Strategy<Value = Percent> {
    (0u32..=1_000_000).prop_map(|ppm| Percent { value: f64::from(ppm) / 10_000.0 })
}

fn headers_map() -> impl Strategy<Value = BTreeMap<String, ValueMatch>> {
    prop::collection::btree_map(name(), value_match(), 0..3)
}

fn match_request() -> impl Strategy<Value = HttpMatchRequest> {
    (
        option::of(string_match()),
        option::of(string_match()),
        headers_map(),
        headers_map(),
        any::<bool>(),
        option::of(1u32..65535),
    )
        .prop_map(|(uri, method, headers, query_params, ignore_uri_case, port)| HttpMatchRequest {
            uri: uri.map(|u| match u {
                StringMatch::Prefix(p) => StringMatch::Prefix(format!("/{p}")),
                other => other,
            }),
            method,
            headers,
            query_params,
            ignore_uri_case,
            port,
            ..Default::default()
        })
}

fn route(hosts: Vec<String>) -> impl Strategy<Value = HttpRoute> {
    let dests = prop::collection::vec((prop::sample::select(hosts), option::of(name()), 1i32..100), 1..4);
    (
        prop::collection::vec(match_request(), 0..3),
        dests,
        option::of(duration()),
        option::of((1i32..5, option::of(duration()), any::<bool>())),
        option::of((option::of(duration()), option::of(percent()), option::of(200i32..600))),
    )
        .prop_map(|(matches, dests, timeout, retries, fault)| HttpRoute {
            matches,
            route: dests
                .into_iter()
                .map(|(host, subset, weight)| HttpRouteDestination {
                    destination: Destination { host, subset, port: None },
                    weight: Some(weight),
                    headers: None,
                })
                .collect(),
            timeout,
            retries: retries.map(|(attempts, per_try_timeout, gw)| HttpRetry {
                attempts,
                per_try_timeout,
                retry_on: gw.then(|| "gateway-error,connect-failure,503".to_string()),
                ..Default::default()
            }),
            fault: fault.and_then(|(delay, pct, status)| {
                let delay = delay.map(|d| FaultDelay { fixed_delay: Some(d), percentage: pct, ..Default::default() });
                let abort = status.map(|s| FaultAbort { http_status: Some(s), percentage: pct, ..Default::default() });
                (delay.is_some() || abort.is_some()).then_some(HttpFaultInjection { delay, abort })
            }),
            ..Default::default()
        })
}

fn virtual_service() -> impl Strategy<Value = Resource> {
    (name(), prop::collection::vec(name(), 1..3))
        .prop_flat_map(|(n, hosts)| (Just(n), Just(hosts.clone()), prop::collection::vec(route(hosts), 1..4)))
        .prop_map(|(n, hosts, http)| {
            Resource::VirtualService(Object {
                api_version: "networking.istio.io/v1".into(),
                kind: "VirtualService".into(),
                metadata: ObjectMeta { name: n, namespace: "default".into(), ..Default::default() },
                spec: VirtualServiceSpec { hosts, http, ..Default::default() },
                status: Ignored,
            })
        })
}

fn authorization_policy() -> impl Strategy<Value = Resource> {
    let values = prop::collection::vec(prop_oneof!["[a-z/]{1,8}", "[a-z/]{1,6}\\*", "\\*[a-z]{1,6}"], 0..3);
    let rule = (
        values.clone(),
        values.clone(),
        prop::collection::vec("/[a-z]{1,5}", 0..2),
        prop::collection::vec("[1-9][0-9]{0,3}", 0..2),
    )
        .prop_map(|(principals, not_principals, paths, ports)| Rule {
            from: vec![RuleFrom { source: Source { principals, not_principals, ..Default::default() } }],
            to: vec![RuleTo {
                operation: Operation { paths, ports, methods: vec!["GET".into()], ..Default::default() },
            }],
            when: vec![Condition {
                key: "request.headers[x-user]".into(),
                values: vec!["a".into()],
                not_values: vec![],
            }],
        });
    (
        name(),
        prop::collection::vec(rule, 1..3),
        prop::sample::select(vec![AuthorizationAction::Allow, AuthorizationAction::Deny]),
    )
        .prop_map(|(n, rules, action)| {
            Resource::AuthorizationPolicy(Object {
                api_version: "security.istio.io/v1".into(),
                kind: "AuthorizationPolicy".into(),
                metadata: ObjectMeta { name: n, namespace: "default".into(), ..Default::default() },
                spec: AuthorizationPolicySpec {
                    selector: Some(WorkloadSelector {
                        match_labels: [("app".to_string(), "reviews".to_string())].into(),
                    }),
                    rules,
                    action: Some(action),
                    ..Default::default()
                },
                status: Ignored,
            })
        })
}

fn destination_rule() -> impl Strategy<Value = Resource> {
    let subset = (name(), prop::collection::btree_map(name(), name(), 1..3)).prop_map(|(name, labels)| Subset {
        name,
        labels,
        traffic_policy: None,
    });
    (
        name(),
        prop::collection::vec(subset, 0..4),
        prop::sample::select(vec![SimpleLb::RoundRobin, SimpleLb::Random, SimpleLb::LeastRequest]),
    )
        .prop_map(|(host, mut subsets, lb)| {
            subsets.sort_by(|a, b| a.name.cmp(&b.name));
            subsets.dedup_by(|a, b| a.name == b.name);
            Resource::DestinationRule(Object {
                api_version: "networking.istio.io/v1beta1".into(),
                kind: "DestinationRule".into(),
                metadata: ObjectMeta { name: host.clone(), namespace: "default".into(), ..Default::default() },
                spec: DestinationRuleSpec {
                    host,
                    subsets,
                    traffic_policy: Some(TrafficPolicy {
                        load_balancer: Some(LoadBalancerSettings { simple: Some(lb), ..Default::default() }),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                status: Ignored,
            })
        })
}

fn round_trip(resource: &Resource) -> Result<(), TestCaseError> {
    let json = resource.to_json();
    for (label, text) in
        [("case.yaml", serde_saphyr::to_string(&json).unwrap()), ("case.json", serde_json::to_string(&json).unwrap())]
    {
        let loaded = load_str(label, &text, &LoadOptions::default());
        prop_assert!(!loaded.has_errors(), "{}\n{}", loaded.report(), text);
        prop_assert_eq!(loaded.resources.len(), 1);
        prop_assert_eq!(&*loaded.resources[0].resource, resource, "{}", text);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn virtual_services_round_trip(r in virtual_service()) { round_trip(&r)?; }

    #[test]
    fn authorization_policies_round_trip(r in authorization_policy()) { round_trip(&r)?; }

    #[test]
    fn destination_rules_round_trip(r in destination_rule()) { round_trip(&r)?; }
}
