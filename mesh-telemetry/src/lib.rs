//! Istio standard metrics, trace context and access logs as Tower layers (arrives with issue 5).
