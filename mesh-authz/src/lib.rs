//! Istio AuthorizationPolicy and RequestAuthentication as a Tower layer (arrives with issue 4).
