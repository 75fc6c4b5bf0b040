//! Checks of the Kubernetes kinds the mesh reads: Service, Deployment.

use std::collections::HashSet;

use super::*;
use crate::{api::*, diag::FieldPath};

// === Kubernetes ===

pub(super) fn service(v: &mut Findings, spec: &FieldPath, s: &ServiceSpec) {
    let mut names = HashSet::new();
    for (i, p) in s.ports.iter().enumerate() {
        port_number(v, spec.key("ports").index(i).key("port"), p.port);
        if let Some(IntOrString::Int(t)) = p.target_port {
            port_number(v, spec.key("ports").index(i).key("targetPort"), t);
        }
        if let Some(n) = &p.name
            && !names.insert(n.as_str())
        {
            v.error(spec.key("ports").index(i).key("name"), format!("duplicate port name {n:?}"));
        }
    }
    if s.ports.len() > 1 && s.ports.iter().any(|p| p.name.is_none()) {
        v.error(spec.key("ports"), "every port needs a name when a Service has several ports");
    }
    let address = |v: &mut Findings, path: FieldPath, ip: &str| {
        if !ip.is_empty() && ip != "None" && ip.parse::<std::net::IpAddr>().is_err() {
            v.error(path, format!("{ip:?} is not an IP address (or None, for a headless Service)"));
        }
    };
    if let Some(ip) = &s.cluster_ip {
        address(v, spec.key("clusterIP"), ip);
    }
    for (i, ip) in s.cluster_ips.iter().enumerate() {
        address(v, spec.key("clusterIPs").index(i), ip);
    }
}

pub(super) fn deployment(v: &mut Findings, spec: &FieldPath, d: &DeploymentSpec) {
    let labels = &d.template.metadata.labels;
    if !crate::snapshot::labels_match(&d.selector.match_labels, labels) {
        v.error(spec.key("selector").key("matchLabels"), "selector does not match the pod template's labels");
    }
    for (i, c) in d.template.spec.containers.iter().enumerate() {
        for (j, p) in c.ports.iter().enumerate() {
            port_number(
                v,
                spec.key("template").key("spec").key("containers").index(i).key("ports").index(j).key("containerPort"),
                p.container_port,
            );
        }
    }
}
