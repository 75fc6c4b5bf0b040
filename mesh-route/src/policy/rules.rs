//! mesh-route's rules for the loader ([`mesh_config::validate::Rule`]): what the route
//! table decides when it compiles, reported at file:line:field when the config loads.

use mesh_config::{
    api::{HttpMatchRequest, HttpRoute, Resource},
    diag::{FieldPath, Finding},
    validate::Rule,
};

use super::matching::MatchBlock;

/// A VirtualService `http` route that matches every request, before the last route: Istio
/// drops the routes after it (a warning, as `istioctl analyze` gives).
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteRules;

impl Rule for RouteRules {
    fn check(&self, resource: &Resource, out: &mut Vec<Finding>) {
        let Resource::VirtualService(vs) = resource else { return };
        let last = vs.spec.http.len().saturating_sub(1);
        for (i, route) in vs.spec.http.iter().enumerate().take(last) {
            if matches_everything(route) {
                out.push(Finding::warning(
                    FieldPath::root().key("spec").key("http").index(i),
                    "this route matches every request but is not the last one; the routes after it are never used",
                ));
            }
        }
    }
}

/// Whether `route` matches every request on every proxy it applies to: no `match`, or a
/// block with no request condition ([`MatchBlock::is_catch_all`]) and no config-time
/// selector (those are decided per proxy when the table compiles).
pub fn matches_everything(route: &HttpRoute) -> bool {
    route.matches.is_empty()
        || route.matches.iter().any(|m| !has_selectors(m) && MatchBlock::try_from(m).is_ok_and(|b| b.is_catch_all()))
}

/// Whether a block names a config-time selector: `port`, `gateways`, `sourceLabels` or
/// `sourceNamespace`.
fn has_selectors(m: &HttpMatchRequest) -> bool {
    m.port.is_some() || !m.gateways.is_empty() || !m.source_labels.is_empty() || m.source_namespace.is_some()
}

#[cfg(test)]
mod tests {
    use mesh_config::api::{HttpMatchRequest, HttpRoute, StringMatch};

    use super::*;

    fn block(f: impl FnOnce(&mut HttpMatchRequest)) -> HttpRoute {
        let mut m = HttpMatchRequest::default();
        f(&mut m);
        HttpRoute { matches: vec![m], ..Default::default() }
    }

    #[test]
    fn a_route_matches_everything_only_without_conditions_or_selectors() {
        assert!(matches_everything(&HttpRoute::default()));
        assert!(matches_everything(&block(|_| {})));
        assert!(matches_everything(&block(|m| m.uri = Some(StringMatch::Prefix("/".into())))));
        assert!(matches_everything(&block(|m| m.uri = Some(StringMatch::Regex(".*".into())))));
        assert!(!matches_everything(&block(|m| m.uri = Some(StringMatch::Prefix("/api".into())))));
        assert!(!matches_everything(&block(|m| m.port = Some(9080))));
        assert!(!matches_everything(&block(|m| m.gateways = vec!["mesh".into()])));
        assert!(!matches_everything(&block(|m| m.source_namespace = Some("prod".into()))));
        assert!(!matches_everything(&block(|m| m.method = Some(StringMatch::Exact("GET".into())))));
    }
}
