//! What `meshctl route` and `meshctl authz` share: loading the config they explain and
//! parsing the request they are asked about.

use std::path::PathBuf;

use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_config::{load::load_paths, snapshot::Snapshot};

/// Load `paths` with `namespace` for resources that name none (on an error, the findings
/// go to stderr, `FILE:LINE: ...`, and the caller fails), or with `kube` what the cluster
/// holds.
pub(crate) fn load_snapshot(paths: &[PathBuf], kube: bool, namespace: &str) -> Result<Snapshot, String> {
    if kube {
        // Decide as the sidecars do: invalid objects are left out (their last good version
        // stays in force there; here there is none), and said so.
        let (snapshot, status) = from_cluster()?;
        for d in &status.errors {
            eprintln!("warning: left out, as the sidecars leave it out: {d}");
        }
        return Ok(snapshot);
    }
    let options = mesh_proxy::config::load_options(namespace);
    let loaded = load_paths(paths, &options);
    if loaded.has_errors() {
        for d in loaded.errors() {
            eprintln!("{d}");
        }
        return Err("the config has errors".into());
    }
    Ok(loaded.into_snapshot())
}

pub(crate) use mesh_config::api::parse_labels;

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

/// What a sidecar with `--kube` reads: every watched kind, listed once, through the
/// kubeconfig (`$KUBECONFIG`, `~/.kube/config`) or the pod's service account. The snapshot
/// (invalid objects left out) and the findings.
pub(crate) fn from_cluster() -> Result<(Snapshot, mesh_config::source::SourceStatus), String> {
    use mesh_config::ConfigSource;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let client = mesh_k8s::client().await.map_err(|e| e.to_string())?;
        let source = mesh_k8s::KubeSource::start(
            client,
            mesh_k8s::KubeOptions { load: mesh_proxy::config::load_options("default"), ..Default::default() },
        )
        .await
        .map_err(|e| e.to_string())?;
        if !source.wait_ready(std::time::Duration::from_secs(30)).await {
            return Err("the API server did not list everything within 30 s".to_string());
        }
        let snapshot = Snapshot::clone(&source.snapshots().borrow());
        let status = source.status().borrow().clone();
        Ok((snapshot, status))
    })
}
