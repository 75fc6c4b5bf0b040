//! Telemetry's policy (feature `config`), like every other feature's: what the Telemetry
//! resources (`telemetry.istio.io`) say for one workload, merged as Istio merges them (the
//! mesh's, the namespace's, the workload's; per side by `match.mode`), and resolved against
//! the proxy's defaults into what the layer's controls take ([`TraceControl`]'s sampling and
//! span reporting, [`LogControl`]'s [`LogRule`]).
//!
//! [`TraceControl`]: crate::trace::TraceControl
//! [`LogControl`]: crate::access_log::LogControl

use std::sync::Arc;

use mesh_config::{
    api::{Kind, Labels, Resource, TelemetrySpec, WorkloadMode, labels_match},
    snapshot::Snapshot,
};

use crate::access_log::LogRule;

/// A workload's telemetry as its Telemetry resources set it, per side; what they leave unset
/// the proxy's defaults decide ([`SideTracing::in_force`], [`SideAccessLog::rule`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TelemetryPolicy {
    /// Tracing.
    pub tracing: WorkloadTracing,
    /// Access logging.
    pub access_log: WorkloadAccessLog,
}

/// How one side of a proxy traces, as Telemetry resources set it; `None`: not set, the
/// mesh config's default applies (`defaultConfig.tracing.sampling`, spans reported).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SideTracing {
    /// `randomSamplingPercentage`.
    pub sampling: Option<f64>,
    /// The opposite of `disableSpanReporting`.
    pub report_spans: Option<bool>,
}

/// A workload's tracing, per side.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WorkloadTracing {
    /// Outbound (the client side; a gateway's requests).
    pub client: SideTracing,
    /// Inbound (the server side).
    pub server: SideTracing,
}

/// How one side of a proxy writes access logs, as Telemetry resources set it; `enabled`
/// `None`: not set, the proxy's `--access-log` decides (Istio's `meshConfig.accessLogFile`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SideAccessLog {
    /// On or off.
    pub enabled: Option<bool>,
    /// Only requests this CEL expression holds for (validated at load).
    pub filter: Option<String>,
}

/// A workload's access logging, per side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadAccessLog {
    /// Outbound (the client side; a gateway's requests).
    pub client: SideAccessLog,
    /// Inbound (the server side).
    pub server: SideAccessLog,
}

/// The Telemetry resources that apply to a workload in `namespace` with `labels`, least
/// specific first, as Istio merges them: the root namespace's resource without a selector
/// (the mesh), the namespace's without a selector, one whose selector matches the workload.
/// Several in one scope: the first by name (Istio leaves it to the oldest).
fn scopes<'a>(
    snapshot: &'a Snapshot,
    namespace: &'a str,
    labels: &'a Labels,
) -> impl Iterator<Item = &'a TelemetrySpec> + 'a {
    let in_ns = move |ns: &str, selector: bool| {
        snapshot.in_namespace(Kind::Telemetry, ns).find_map(move |r| match &**r {
            Resource::Telemetry(t) => match &t.spec.selector {
                None if !selector => Some(&t.spec),
                Some(sel) if selector && labels_match(&sel.match_labels, labels) => Some(&t.spec),
                _ => None,
            },
            _ => None,
        })
    };
    let root = in_ns(mesh_config::ROOT_NAMESPACE, false);
    let own = (namespace != mesh_config::ROOT_NAMESPACE).then(|| in_ns(namespace, false)).flatten();
    let workload = in_ns(namespace, true);
    [root, own, workload].into_iter().flatten()
}

impl TelemetryPolicy {
    /// The policy of a workload in `namespace` with `labels`.
    pub fn compile(snapshot: &Snapshot, namespace: &str, labels: &Labels) -> Self {
        Self { tracing: tracing(snapshot, namespace, labels), access_log: access_log(snapshot, namespace, labels) }
    }
}

/// The tracing the Telemetry resources give a workload ([`scopes`]): each field set by a
/// more specific one overrides. In one resource, the `tracing` entries whose `match.mode`
/// covers a side apply in order.
fn tracing(snapshot: &Snapshot, namespace: &str, labels: &Labels) -> WorkloadTracing {
    let mut out = WorkloadTracing::default();
    for t in scopes(snapshot, namespace, labels) {
        for tr in &t.tracing {
            let mode = tr.match_.and_then(|m| m.mode).unwrap_or_default();
            for side in sides(mode, &mut out.client, &mut out.server) {
                if let Some(p) = tr.random_sampling_percentage {
                    side.sampling = Some(p);
                }
                if let Some(d) = tr.disable_span_reporting {
                    side.report_spans = Some(!d);
                }
            }
        }
    }
    out
}

/// The access logging the Telemetry resources give a workload, merged as [`tracing`]: an
/// `accessLogging` entry covering a side replaces what a less specific one set there: on
/// unless `disabled`, with its `filter` or none.
fn access_log(snapshot: &Snapshot, namespace: &str, labels: &Labels) -> WorkloadAccessLog {
    let mut out = WorkloadAccessLog::default();
    for t in scopes(snapshot, namespace, labels) {
        for al in &t.access_logging {
            let mode = al.match_.and_then(|m| m.mode).unwrap_or_default();
            for side in sides(mode, &mut out.client, &mut out.server) {
                *side = SideAccessLog {
                    enabled: Some(!al.disabled.unwrap_or(false)),
                    filter: al.filter.as_ref().map(|f| f.expression.clone()),
                };
            }
        }
    }
    out
}

/// The sides a `match.mode` covers.
fn sides<'a, T>(mode: WorkloadMode, client: &'a mut T, server: &'a mut T) -> Vec<&'a mut T> {
    match mode {
        WorkloadMode::ClientAndServer => vec![client, server],
        WorkloadMode::Client => vec![client],
        WorkloadMode::Server => vec![server],
    }
}

impl SideTracing {
    /// The side's tracing in force, `(sampling percentage, spans reported)`: what the
    /// Telemetry resources set, else the mesh's `default_sampling`, spans reported.
    pub fn in_force(self, default_sampling: f64) -> (f64, bool) {
        (self.sampling.unwrap_or(default_sampling), self.report_spans.unwrap_or(true))
    }
}

impl SideAccessLog {
    /// The side's access logging in force: what the Telemetry resources set, else
    /// `default_on` (the proxy's `--access-log`). The filter was checked when its file was
    /// loaded; one that does not parse here writes nothing, as Envoy writes no line when its
    /// expression fails.
    pub fn rule(&self, default_on: bool) -> LogRule {
        let filter = self.filter.as_deref().map(|e| {
            mesh_core::cel::Expr::parse(e).map(Arc::new).map_err(|err| {
                tracing::warn!("accessLogging filter {e:?}: {err}; no access log lines are written");
            })
        });
        match filter {
            Some(Err(())) => LogRule { on: false, filter: None },
            Some(Ok(f)) => LogRule { on: self.enabled.unwrap_or(default_on), filter: Some(f) },
            None => LogRule { on: self.enabled.unwrap_or(default_on), filter: None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_telemetry_leaves_unset_the_defaults_decide() {
        assert_eq!(SideTracing::default().in_force(1.0), (1.0, true));
        assert_eq!(SideTracing { sampling: Some(0.0), report_spans: Some(false) }.in_force(1.0), (0.0, false));
        let off = SideAccessLog { enabled: Some(false), filter: None };
        assert!(!off.rule(true).on);
        assert!(SideAccessLog::default().rule(true).on);
        assert!(!SideAccessLog::default().rule(false).on);
        let filtered = SideAccessLog { enabled: Some(true), filter: Some("response.code >= 400".into()) }.rule(false);
        assert!(filtered.on && filtered.filter.is_some());
        let broken = SideAccessLog { enabled: Some(true), filter: Some("response.code >=".into()) }.rule(true);
        assert!(!broken.on, "a filter that does not parse writes nothing, as Envoy");
    }

    #[test]
    fn telemetry_tracing_merges_mesh_namespace_and_workload_per_side() {
        use mesh_config::test_util::Manifest;
        use mesh_core::test_util::labels;
        let telemetry = |ns: &str, name: &str, body: &str| {
            format!(
                "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}"
            )
        };
        let s = Manifest::new()
            .doc(&telemetry("istio-system", "mesh-default", "  tracing: [{randomSamplingPercentage: 10}]"))
            .doc(&telemetry("shop", "ns", "  tracing: [{randomSamplingPercentage: 50, match: {mode: SERVER}}]"))
            .doc(&telemetry(
                "shop",
                "reviews",
                "  selector: {matchLabels: {app: reviews}}\n  tracing: [{disableSpanReporting: true, match: {mode: CLIENT}}]",
            ))
            .snapshot();
        let reviews = TelemetryPolicy::compile(&s, "shop", &labels(&[("app", "reviews")])).tracing;
        assert_eq!(reviews.client, SideTracing { sampling: Some(10.0), report_spans: Some(false) });
        assert_eq!(reviews.server, SideTracing { sampling: Some(50.0), report_spans: None });
        let ratings = TelemetryPolicy::compile(&s, "shop", &labels(&[("app", "ratings")])).tracing;
        assert_eq!(ratings.client, SideTracing { sampling: Some(10.0), report_spans: None });
        let elsewhere = TelemetryPolicy::compile(&s, "default", &labels(&[("app", "reviews")])).tracing;
        assert_eq!(elsewhere.server.sampling, Some(10.0), "the mesh's default, not shop's");
        assert_eq!(
            TelemetryPolicy::compile(&Snapshot::default(), "shop", &labels(&[])).tracing,
            WorkloadTracing::default()
        );
    }

    #[test]
    fn telemetry_access_logging_replaces_per_side_from_mesh_to_workload() {
        use mesh_config::test_util::Manifest;
        use mesh_core::test_util::labels;
        let telemetry = |ns: &str, name: &str, body: &str| {
            format!(
                "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{body}"
            )
        };
        let s = Manifest::new()
            .doc(&telemetry("istio-system", "mesh-default", "  accessLogging: [{providers: [{name: envoy}]}]"))
            .doc(&telemetry(
                "shop",
                "ns",
                "  accessLogging: [{filter: {expression: 'response.code >= 400'}, match: {mode: SERVER}}]",
            ))
            .doc(&telemetry(
                "shop",
                "reviews",
                "  selector: {matchLabels: {app: reviews}}\n  accessLogging: [{disabled: true, match: {mode: CLIENT}}]",
            ))
            .snapshot();
        let on = SideAccessLog { enabled: Some(true), filter: None };
        let errors = SideAccessLog { enabled: Some(true), filter: Some("response.code >= 400".into()) };
        let reviews = TelemetryPolicy::compile(&s, "shop", &labels(&[("app", "reviews")])).access_log;
        assert_eq!(reviews.client, SideAccessLog { enabled: Some(false), filter: None });
        assert_eq!(reviews.server, errors);
        let ratings = TelemetryPolicy::compile(&s, "shop", &labels(&[("app", "ratings")])).access_log;
        assert_eq!((ratings.client, ratings.server), (on.clone(), errors));
        assert_eq!(
            TelemetryPolicy::compile(&s, "default", &labels(&[])).access_log.server,
            on,
            "the mesh's, not shop's"
        );
        assert_eq!(
            TelemetryPolicy::compile(&Snapshot::default(), "shop", &labels(&[])).access_log,
            WorkloadAccessLog::default()
        );
    }
}
