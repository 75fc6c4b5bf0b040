//! Checks of the `telemetry.istio.io` Telemetry.

use super::*;
use crate::{api::*, diag::FieldPath};

// === Telemetry ===

pub(super) fn telemetry(v: &mut Findings, spec: &FieldPath, t: &TelemetrySpec) {
    targets(v, spec, t.selector.is_some(), t.target_ref.is_some(), &t.target_refs);
    for (i, tr) in t.tracing.iter().enumerate() {
        let p = spec.key("tracing").index(i);
        if let Some(pct) = tr.random_sampling_percentage
            && !(0.0..=100.0).contains(&pct)
        {
            v.error(p.key("randomSamplingPercentage"), format!("percentage must be within 0..=100, got {pct}"));
        }
        for (j, provider) in tr.providers.iter().enumerate() {
            if provider.name.is_empty() {
                v.error(p.key("providers").index(j).key("name"), "provider name is required");
            }
        }
        if tr.providers.len() > 1 {
            v.warning(
                p.key("providers"),
                "only one tracing provider is supported (as in Istio); the proxy's --otlp-endpoint receives the spans",
            );
        }
        if tr.custom_tags.is_some() {
            v.warning(
                p.key("customTags"),
                "custom span tags are not applied by this mesh yet; the spans carry Istio's standard tags",
            );
        }
    }
    if !t.metrics.is_empty() {
        v.warning(
            spec.key("metrics"),
            "metric overrides are not applied by this mesh yet: Istio's standard metrics stay as they are",
        );
    }
    for (i, al) in t.access_logging.iter().enumerate() {
        let p = spec.key("accessLogging").index(i);
        for (j, provider) in al.providers.iter().enumerate() {
            match provider.name.as_str() {
                "" => v.error(p.key("providers").index(j).key("name"), "provider name is required"),
                "envoy" => {}
                other => v.warning(
                    p.key("providers").index(j).key("name"),
                    format!(
                        "access log provider {other:?} is not one this mesh has (only `envoy`, Istio's built-in, the proxy's stdout): the lines go to stdout"
                    ),
                ),
            }
        }
        if let Some(f) = &al.filter
            && let Err(e) = mesh_core::cel::Expr::parse(&f.expression)
        {
            v.error(p.key("filter").key("expression"), e.to_string());
        }
    }
}
