//! The config as the composition loads it: mesh-config's loader with each feature's own
//! rules ([`rules`]), so a field a feature compiles is checked once, by that feature, and
//! reported at file:line:field wherever the config is loaded (the sidecar, the gateway, the
//! embedded mesh, `meshctl analyze`).

use std::sync::Arc;

use mesh_config::{load::LoadOptions, validate::Rule};

/// Every feature's rules: mesh-fault's `fault` blocks, mesh-route's catch-all routes.
pub fn rules() -> Vec<Arc<dyn Rule>> {
    vec![Arc::new(mesh_fault::FaultRules), Arc::new(mesh_route::policy::rules::RouteRules)]
}

/// Load options with every feature's rules; `default_namespace` for resources that name
/// none.
pub fn load_options(default_namespace: &str) -> LoadOptions {
    LoadOptions { default_namespace: default_namespace.to_string(), rules: rules(), ..LoadOptions::default() }
}
