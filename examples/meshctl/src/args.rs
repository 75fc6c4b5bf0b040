//! What `meshctl route` and `meshctl authz` share: loading the config they explain and
//! parsing the request they are asked about.

use std::path::PathBuf;

use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_core::{
    load::{LoadOptions, load_paths},
    snapshot::Snapshot,
};

/// Load `paths` with `namespace` for resources that name none. On an error, the findings
/// go to stderr (`FILE:LINE: ...`) and the caller fails.
pub(crate) fn load_snapshot(paths: &[PathBuf], namespace: &str) -> Result<Snapshot, String> {
    let options = LoadOptions { default_namespace: namespace.to_string(), ..LoadOptions::default() };
    let loaded = load_paths(paths, &options);
    if loaded.has_errors() {
        for d in loaded.errors() {
            eprintln!("{d}");
        }
        return Err("the config has errors".into());
    }
    Ok(loaded.into_snapshot())
}

pub(crate) use mesh_core::api::parse_labels;

/// Repeated `--header 'name: value'` into a header map (names lowercased, values trimmed).
pub(crate) fn parse_headers(headers: &[String]) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for h in headers {
        let Some((name, value)) = h.split_once(':') else {
            return Err(format!("invalid --header {h:?}: use 'name: value'"));
        };
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()), HeaderValue::from_str(value.trim()))
        else {
            return Err(format!("invalid --header {h:?}"));
        };
        map.append(name, value);
    }
    Ok(map)
}
