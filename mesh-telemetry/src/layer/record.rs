//! Resolving a request's labels, access log line and span from its response.

use std::sync::{Arc, Weak};

use mesh_core::{
    ext::{ResponseFlags, RouteDecision, UpstreamEndpoint},
    request::resolve_host,
};

use crate::metrics::RequestLabels;

use super::*;

impl RequestSide {
    /// With the response's head; `None`: no response at all (`response_code="0"`); `extra`
    /// flags added to the response's.
    pub(super) fn resolve(self, head: Option<&http::response::Parts>, extra: ResponseFlags) -> Done {
        let shared = &self.shared;
        let ext = head.map(|h| &h.extensions);
        let flags = ext.and_then(|e| e.get::<ResponseFlags>()).copied().unwrap_or_default() | extra;
        let decision = ext.and_then(|e| e.get::<RouteDecision>());
        let upstream = ext.and_then(|e| e.get::<UpstreamEndpoint>());
        let grpc =
            head.and_then(|h| h.headers.get(&GRPC_STATUS)).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let code = head.map_or(0, |h| h.status.as_u16());
        // The caller's side: the service the route chose (`unknown` without a route, Istio
        // #18821); the callee's: its own service (Istio #32726). Never the Host header.
        let local_service = shared.o.local_service.load();
        let service = match shared.o.reporter {
            // A failure below the router (503 UF) carries no decision but had a route: the
            // Host named a configured service. No route (NR) is always `unknown`.
            Reporter::Source => decision.and_then(|d| d.destination_service.as_deref()).or_else(|| {
                (!flags.is_empty() && !flags.contains(ResponseFlags::NO_ROUTE))
                    .then(|| self.authority.as_ref()?.to_str().ok())
                    .flatten()
            }),
            Reporter::Destination => local_service.as_deref(),
        };
        let key = Key {
            peer: self.peer.as_deref(),
            principal: self.peer_principal.as_ref().map(|i| (i.trust_domain(), i.namespace(), i.service_account())),
            workload: upstream.map(|u| (&*u.0.workload, &*u.0.namespace)),
            service,
            code,
            flags: flags.bits(),
            grpc,
            grpc_protocol: self.grpc_protocol,
        };
        let handles = LAST.with_borrow_mut(|last| match last {
            Some((owner, entry))
                if Weak::as_ptr(owner) == Arc::as_ptr(shared)
                    && hashbrown::Equivalent::equivalent(&key, &entry.key) =>
            {
                entry.clone()
            }
            _ => {
                let entry = shared
                    .cache
                    .get(&key, Key::to_owned, &shared.o.metrics, || self.labels(code, flags, grpc, service, upstream));
                *last = Some((Arc::downgrade(shared), entry.clone()));
                entry
            }
        });
        let log = match (&shared.o.access_log, self.log) {
            (Some(l), Some((mut e, filter))) => {
                e.status = code;
                e.flags = flags.to_string();
                e.upstream_host = upstream.map(|u| u.0.address.to_string());
                e.route_name = decision.and_then(|d| d.route_name.as_deref().map(str::to_string));
                e.trace_id = self.trace_id.map(|t| format!("{t:032x}"));
                e.start = self.started_at;
                Some((l.clone(), e, filter))
            }
            _ => None,
        };
        #[cfg(feature = "otel")]
        let span = match (&shared.o.otlp, self.span) {
            (Some(exporter), Some((ctx, name, method))) => Some((
                exporter.clone(),
                crate::otlp::SpanRecord {
                    trace_id: ctx.trace_id,
                    span_id: ctx.span_id,
                    parent_span_id: ctx.parent_span_id,
                    name,
                    server: shared.o.reporter == Reporter::Destination,
                    start: self.started_at,
                    end: self.started_at,
                    attributes: vec![
                        ("http.status_code".into(), code.to_string()),
                        ("response_flags".into(), flags.to_string()),
                        ("node_id".into(), format!("{}.{}", shared.o.local.workload, shared.o.local.namespace)),
                        (
                            "upstream_cluster".into(),
                            decision
                                .and_then(|d| d.destination_service.as_deref().map(str::to_string))
                                .unwrap_or_else(|| "-".into()),
                        ),
                        ("http.method".into(), method.to_string()),
                        ("upstream_address".into(), upstream.map_or_else(|| "-".into(), |u| u.0.address.to_string())),
                    ],
                    error: code >= 500,
                },
            )),
            _ => None,
        };
        Done {
            handles,
            start: self.start,
            request_bytes: self.request_bytes,
            log,
            #[cfg(feature = "otel")]
            span,
        }
    }

    pub(super) fn labels(
        &self,
        code: u16,
        flags: ResponseFlags,
        grpc: Option<u16>,
        service: Option<&str>,
        upstream: Option<&UpstreamEndpoint>,
    ) -> RequestLabels {
        let local = &self.shared.o.local;
        let unknown = || "unknown".to_string();
        let local_principal = local.principal.clone().unwrap_or_else(unknown);
        let mut l = RequestLabels {
            request_protocol: if self.grpc_protocol { "grpc" } else { "http" }.into(),
            response_code: code.to_string(),
            grpc_response_status: grpc.map(|g| g.to_string()).unwrap_or_default(),
            response_flags: flags.to_string(),
            ..RequestLabels::default()
        };
        // Decisions name FQDNs; a Host (failures without a decision) is resolved like one.
        let service_fqdn = service.map(|h| resolve_host(h.rsplit_once(':').map_or(h, |(h, _)| h), &local.namespace));
        let (svc_name, svc_ns) = match &service_fqdn {
            Some(f) => {
                let mut parts = f.split('.');
                (parts.next().unwrap_or("unknown").to_string(), parts.next().map_or_else(unknown, str::to_string))
            }
            None => (unknown(), unknown()),
        };
        l.destination_service = service_fqdn.unwrap_or_else(unknown);
        l.destination_service_name = svc_name;
        l.destination_service_namespace = svc_ns;
        match self.shared.o.reporter {
            Reporter::Source => {
                l.reporter = "source".into();
                l.source_workload = local.workload.clone();
                l.source_workload_namespace = local.namespace.clone();
                l.source_principal = local_principal;
                l.source_app = local.app.clone();
                l.source_version = local.version.clone();
                l.source_canonical_service = local.app.clone();
                l.source_canonical_revision = local.version.clone();
                l.source_cluster = local.cluster.clone();
                match upstream {
                    Some(u) => {
                        let e = &u.0;
                        let get = |k: &str, d: &str| e.labels.get(k).cloned().unwrap_or_else(|| d.to_string());
                        l.destination_workload = e.workload.to_string();
                        l.destination_workload_namespace = e.namespace.to_string();
                        l.destination_principal = e.identity.as_ref().map_or_else(unknown, ToString::to_string);
                        l.destination_app = get("app", "unknown");
                        l.destination_version = get("version", "unknown");
                        l.destination_canonical_service = get("app", &e.workload);
                        l.destination_canonical_revision = get("version", "latest");
                        l.destination_cluster = local.cluster.clone();
                    }
                    None => {
                        for f in [
                            &mut l.destination_workload,
                            &mut l.destination_workload_namespace,
                            &mut l.destination_principal,
                            &mut l.destination_app,
                            &mut l.destination_version,
                            &mut l.destination_canonical_service,
                            &mut l.destination_cluster,
                        ] {
                            *f = unknown();
                        }
                        l.destination_canonical_revision = "latest".into();
                    }
                }
                // The client cannot know what the server enforced.
                l.connection_security_policy = "unknown".into();
            }
            Reporter::Destination => {
                l.reporter = "destination".into();
                l.destination_workload = local.workload.clone();
                l.destination_workload_namespace = local.namespace.clone();
                l.destination_principal = local_principal;
                l.destination_app = local.app.clone();
                l.destination_version = local.version.clone();
                l.destination_canonical_service = local.app.clone();
                l.destination_canonical_revision = local.version.clone();
                l.destination_cluster = local.cluster.clone();
                let field = self.peer.as_deref().map(parse_peer);
                let get = |k: &str| field.as_ref().map_or_else(unknown, |f| f(k));
                l.source_workload = get("workload");
                l.source_workload_namespace = get("namespace");
                l.source_app = get("app");
                l.source_version = get("version");
                l.source_canonical_service = get("app");
                l.source_canonical_revision = if self.peer.is_some() { get("version") } else { "latest".into() };
                l.source_principal = self.peer_principal.as_ref().map_or_else(unknown, ToString::to_string);
                l.source_cluster = if self.peer.is_some() { local.cluster.clone() } else { unknown() };
                l.connection_security_policy = if self.peer_principal.is_some() { "mutual_tls" } else { "none" }.into();
            }
        }
        l
    }
}
