//! The Kubernetes config source (feature `k8s`): lists and watches the Istio resources and
//! the registry's Services, EndpointSlices and Pods on a cluster's API server through
//! kube-rs, and publishes the same [`Snapshot`] the directory source does, so nothing
//! above it changes.
//!
//! - Each kind is watched with kube-runtime's watcher: an initial (paginated) list, then a
//!   watch from the list's `resourceVersion` with bookmarks, resumed from the last version
//!   seen when the stream ends, relisted after `410 Gone`, with client-go's backoff after
//!   errors. A relist replaces what the kind had (objects gone meanwhile disappear).
//! - Each object is loaded and validated once, when it arrives, by the same loader as
//!   files (findings name `k8s://<api path>` and the line of the object as indented JSON).
//!   An object with errors keeps its last good version in force (a new one is left out) and
//!   its errors are reported in [`SourceStatus`]; the rest of the cluster's config goes on
//!   being published.
//! - Publishing is debounced (a burst of events gives one snapshot) and starts only after
//!   the first full list of every kind: [`KubeSource::ready`].
//! - Istio kinds are watched in the highest version the server serves among those the
//!   model accepts (`v1`, then `v1beta1`, then `v1alpha3`): the API server serves one
//!   object in all versions, so watching one gives every object once. A group the server
//!   does not serve (CRDs not installed) is reported as a warning and skipped.
//! - Scope: all namespaces or a list of them; an optional label selector applies to the
//!   Istio resources (as a revision label would), never to the registry's kinds.
//! - The client comes from the in-cluster service account (token and CA) or a kubeconfig,
//!   as kubectl finds them: [`client`].

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{WatchStreamExt, watcher},
};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use mesh_config::{
    Snapshot,
    api::Kind,
    diag::{Diagnostic, FieldPath, Severity},
    load::{LoadOptions, Loaded, combine, load_json_object},
    source::{ConfigSource, SourceStatus, publish_if_changed, record_load},
};

/// The kinds read from the API server: every kind of the model but Deployment (on a
/// cluster its Pods are the workloads) and ServiceAccount (the Pods name theirs).
pub fn watched() -> impl Iterator<Item = Kind> {
    Kind::ALL.into_iter().filter(|k| !matches!(k, Kind::Deployment | Kind::ServiceAccount))
}

/// What and how to watch.
#[derive(Clone, Debug)]
pub struct KubeOptions {
    /// Namespaces to watch; empty watches all of them.
    pub namespaces: Vec<String>,
    /// A label selector (`key=value,key2`) the Istio and Gateway API resources must match
    /// (GatewayClasses, cluster-wide, are not filtered).
    pub config_selector: Option<String>,
    /// Quiet time after the last event before publishing.
    pub debounce: Duration,
    /// How objects are loaded.
    pub load: LoadOptions,
}

impl Default for KubeOptions {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            config_selector: None,
            debounce: Duration::from_millis(100),
            load: LoadOptions::default(),
        }
    }
}

/// The source could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("no Kubernetes configuration (in-cluster service account or kubeconfig): {0}")]
    Config(String),
    /// Discovery failed.
    #[error("cannot reach the API server: {0}")]
    Discovery(String),
}

/// A client from the in-cluster service account (token and CA under
/// `/var/run/secrets/kubernetes.io/serviceaccount`, `KUBERNETES_SERVICE_HOST`) or else the
/// kubeconfig (`$KUBECONFIG` or `~/.kube/config`, its current context).
pub async fn client() -> Result<Client, StartError> {
    let config = kube::Config::infer().await.map_err(|e| StartError::Config(e.to_string()))?;
    Client::try_from(config).map_err(|e| StartError::Config(e.to_string()))
}

/// Reviews bearer tokens with the API server (`TokenReview`), for the mesh CA: which service
/// account a pod's projected token belongs to.
#[derive(Clone)]
pub struct TokenReviewer {
    client: Client,
    audiences: Vec<String>,
}

impl std::fmt::Debug for TokenReviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewer").field("audiences", &self.audiences).finish_non_exhaustive()
    }
}

impl TokenReviewer {
    /// Tokens must be meant for one of `audiences`.
    pub fn new(client: Client, audiences: Vec<String>) -> Self {
        Self { client, audiences }
    }

    /// The `(namespace, service account)` the token proves, or why it proves nothing.
    pub async fn review(&self, token: &str) -> Result<(String, String), ReviewError> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: Some(self.audiences.clone()) },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let done = api
            .create(&kube::api::PostParams::default(), &review)
            .await
            .map_err(|e| ReviewError::Unavailable(format!("TokenReview failed: {e}")))?;
        let status = done.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(ReviewError::Rejected(status.error.unwrap_or_else(|| "not authenticated".into())));
        }
        if let Some(granted) = &status.audiences
            && !granted.iter().any(|a| self.audiences.contains(a))
        {
            return Err(ReviewError::Rejected(format!("the token is for {granted:?}, not {:?}", self.audiences)));
        }
        let user = status.user.and_then(|u| u.username).unwrap_or_default();
        match user.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) {
            Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() => Ok((ns.to_string(), sa.to_string())),
            _ => Err(ReviewError::Rejected(format!("{user:?} is not a service account"))),
        }
    }
}

/// Why a token review gave no service account.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The API server says the token proves nothing.
    #[error("{0}")]
    Rejected(String),
    /// The API server could not be asked.
    #[error("{0}")]
    Unavailable(String),
}

/// What one watcher has: each object's load by (namespace, name) (its resources are the
/// last good version while the newest has errors; its findings the newest version's), and
/// whether its first list is in.
#[derive(Default)]
struct Store {
    objects: BTreeMap<(String, String), Loaded>,
    listed: bool,
    /// The last watch error, cleared by the next event.
    error: Option<String>,
}

struct Shared {
    options: KubeOptions,
    /// One store per watcher, in publish order.
    stores: Vec<Mutex<Store>>,
    /// Kinds skipped because the server does not serve them.
    skipped: Vec<Diagnostic>,
    changed: Notify,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    status_tx: watch::Sender<SourceStatus>,
    ready_tx: watch::Sender<bool>,
}

/// Lists and watches a cluster; see the module docs.
pub struct KubeSource {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource").field("namespaces", &self.shared.options.namespaces).finish_non_exhaustive()
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A watched kind: what the API calls it.
struct Target {
    kind: Kind,
    resource: ApiResource,
}

/// The version of `kind` to watch among those the server serves for its group.
fn pick_version(kind: Kind, served: &[String]) -> Option<&'static str> {
    kind.versions().iter().copied().find(|v| served.iter().any(|s| s == v))
}

async fn targets(client: &Client) -> Result<(Vec<Target>, Vec<Diagnostic>), StartError> {
    let mut served: HashMap<&'static str, Vec<String>> = HashMap::new();
    let mut skipped = Vec::new();
    for kind in watched() {
        let group = kind.group();
        if served.contains_key(group) {
            continue;
        }
        let versions = match group {
            "" => vec!["v1".to_string()],
            g => match kube::discovery::group(client, g).await {
                Ok(ag) => ag.versions().map(str::to_string).collect(),
                Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
                Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_))) => Vec::new(),
                Err(e) => return Err(StartError::Discovery(format!("API group {g}: {e}"))),
            },
        };
        served.insert(group, versions);
    }
    let mut out = Vec::new();
    for kind in watched() {
        let group = kind.group();
        let versions = &served[group];
        match pick_version(kind, versions) {
            Some(version) => {
                let gvk = GroupVersionKind::gvk(group, version, kind.as_str());
                out.push(Target { kind, resource: ApiResource::from_gvk(&gvk) });
            }
            None => skipped.push(Diagnostic {
                file: format!("k8s://apis/{group}"),
                line: 0,
                severity: Severity::Warning,
                object: kind.to_string(),
                field: FieldPath::root(),
                message: if versions.is_empty() {
                    format!("the API server does not serve {group} (CRDs not installed?); {kind} skipped")
                } else {
                    format!(
                        "the API server serves {group} in {} but none of {}; {kind} skipped",
                        versions.join(", "),
                        kind.versions().join(", ")
                    )
                },
            }),
        }
    }
    Ok((out, skipped))
}

impl KubeSource {
    /// Discover what the server serves, then list and watch every kind. Returns once the
    /// watchers are started; [`KubeSource::ready`] tells when the first full list is in.
    /// Must run inside a tokio runtime.
    pub async fn start(client: Client, options: KubeOptions) -> Result<Self, StartError> {
        let (targets, skipped) = targets(&client).await?;
        let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
            vec![None]
        } else {
            options.namespaces.iter().cloned().map(Some).collect()
        };
        // GatewayClass and Namespace are cluster-scoped: one watch of all of them, whatever
        // the namespaces.
        let watchers: Vec<(&Target, Option<String>)> = targets
            .iter()
            .flat_map(|t| match t.kind.namespaced() {
                false => vec![(t, None)],
                true => scopes.iter().map(|s| (t, s.clone())).collect(),
            })
            .collect();
        let (snapshot_tx, _) = watch::channel(Arc::new(Snapshot::default()));
        let (status_tx, _) = watch::channel(SourceStatus { warnings: skipped.clone(), ..SourceStatus::default() });
        let (ready_tx, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            stores: watchers.iter().map(|_| Mutex::default()).collect(),
            skipped,
            options,
            changed: Notify::new(),
            snapshot_tx,
            status_tx,
            ready_tx,
        });
        let mut tasks = Vec::new();
        for (index, (target, namespace)) in watchers.into_iter().enumerate() {
            let api: Api<DynamicObject> = match &namespace {
                Some(ns) => Api::namespaced_with(client.clone(), ns, &target.resource),
                None => Api::all_with(client.clone(), &target.resource),
            };
            let mut config = watcher::Config::default();
            let config_kind = target.kind.group().ends_with(".istio.io")
                || (target.kind.group() == mesh_config::api::gateway_api::GROUP && target.kind.namespaced());
            if config_kind && let Some(selector) = &shared.options.config_selector {
                config = config.labels(selector);
            }
            tasks.push(tokio::spawn(watch_kind(
                shared.clone(),
                index,
                target.kind,
                target.resource.clone(),
                api,
                config,
            )));
        }
        tasks.push(tokio::spawn(publish_loop(shared.clone())));
        Ok(Self { shared, tasks })
    }

    /// A receiver that turns true once every kind has been listed in full and the first
    /// snapshot published.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.shared.ready_tx.subscribe()
    }

    /// Wait for [`KubeSource::ready`], at most `timeout`; whether it came.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.ready();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r)).await.is_ok_and(|r| r.is_ok())
    }
}

impl ConfigSource for KubeSource {
    fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.shared.snapshot_tx.subscribe()
    }

    fn status(&self) -> watch::Receiver<SourceStatus> {
        self.shared.status_tx.subscribe()
    }
}

/// `k8s://` plus the object's API path, as findings name it.
fn label(resource: &ApiResource, namespace: Option<&str>, name: &str) -> String {
    let base = if resource.group.is_empty() {
        format!("api/{}", resource.version)
    } else {
        format!("apis/{}/{}", resource.group, resource.version)
    };
    match namespace {
        Some(ns) => format!("k8s://{base}/namespaces/{ns}/{}/{name}", resource.plural),
        None => format!("k8s://{base}/{}/{name}", resource.plural),
    }
}

/// The object as the loader takes it: `apiVersion` and `kind` filled in (list items may
/// lack them), server bookkeeping that changes without meaning anything to the mesh
/// (`resourceVersion`, `generation`, `managedFields`, `status`) dropped, so that a status
/// update publishes nothing.
fn to_json(resource: &ApiResource, mut o: DynamicObject) -> serde_json::Value {
    o.metadata.resource_version = None;
    o.metadata.generation = None;
    o.metadata.managed_fields = None;
    let mut v = serde_json::to_value(&o).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.insert("apiVersion".into(), resource.api_version.clone().into());
        map.insert("kind".into(), resource.kind.clone().into());
        map.remove("status");
    }
    v
}

/// Load `o` into `slot`: its resources replace the previous ones unless it has errors.
fn load_into(slot: &mut Loaded, resource: &ApiResource, o: DynamicObject, options: &LoadOptions) {
    let (ns, name) = (o.metadata.namespace.clone(), o.metadata.name.clone().unwrap_or_default());
    let loaded = load_json_object(&label(resource, ns.as_deref(), &name), &to_json(resource, o), options);
    if loaded.has_errors() {
        slot.diagnostics = loaded.diagnostics;
    } else {
        *slot = loaded;
    }
}

fn key(o: &DynamicObject) -> (String, String) {
    (o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default())
}

async fn watch_kind(
    shared: Arc<Shared>,
    index: usize,
    kind: Kind,
    resource: ApiResource,
    api: Api<DynamicObject>,
    config: watcher::Config,
) {
    let options = shared.options.load.clone();
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    // The objects of a list in progress (`Init` .. `InitDone`).
    let mut relist: Option<BTreeMap<(String, String), Loaded>> = None;
    while let Some(event) = events.next().await {
        let mut store = shared.stores[index].lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let changed = match event {
            Ok(watcher::Event::Init) => {
                relist = Some(BTreeMap::new());
                false
            }
            Ok(watcher::Event::InitApply(o)) => {
                let k = key(&o);
                let buffer = relist.get_or_insert_with(BTreeMap::new);
                // Start from what is in force, so an object with errors keeps its last
                // good version across a relist; what is in force stays published until
                // the list is complete.
                let mut slot = store.objects.get(&k).cloned().unwrap_or_default();
                load_into(&mut slot, &resource, o, &options);
                buffer.insert(k, slot);
                false
            }
            Ok(watcher::Event::InitDone) => {
                store.objects = relist.take().unwrap_or_default();
                store.listed = true;
                tracing::debug!(%kind, objects = store.objects.len(), "listed");
                true
            }
            Ok(watcher::Event::Apply(o)) => {
                let slot = store.objects.entry(key(&o)).or_default();
                load_into(slot, &resource, o, &options);
                true
            }
            Ok(watcher::Event::Delete(o)) => store.objects.remove(&key(&o)).is_some(),
            Err(e) => {
                tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff");
                store.error = Some(e.to_string());
                true
            }
        };
        if changed {
            drop(store);
            shared.changed.notify_one();
        }
    }
}

async fn publish_loop(shared: Arc<Shared>) {
    loop {
        shared.changed.notified().await;
        // Debounce: publish once the burst has been quiet for a while.
        while tokio::time::timeout(shared.options.debounce, shared.changed.notified()).await.is_ok() {}
        publish(&shared);
    }
}

fn publish(shared: &Shared) {
    let mut watch_errors = Vec::new();
    let mut listed = true;
    let loaded = {
        let stores: Vec<_> =
            shared.stores.iter().map(|s| s.lock().unwrap_or_else(std::sync::PoisonError::into_inner)).collect();
        for s in &stores {
            listed &= s.listed;
            if let Some(e) = &s.error {
                watch_errors.push(e.clone());
            }
        }
        if !listed {
            return;
        }
        combine(stores.iter().flat_map(|s| s.objects.values()))
    };
    for s in &shared.stores {
        s.lock().unwrap_or_else(std::sync::PoisonError::into_inner).error = None;
    }
    let (errors, mut warnings): (Vec<_>, Vec<_>) =
        loaded.diagnostics.iter().cloned().partition(|d| d.severity == Severity::Error);
    warnings.extend(shared.skipped.iter().cloned());
    warnings.extend(watch_errors.into_iter().map(|message| Diagnostic {
        file: "k8s://".into(),
        line: 0,
        severity: Severity::Warning,
        object: "-".into(),
        field: FieldPath::root(),
        message: format!("watch error (retried): {message}"),
    }));
    for e in &errors {
        tracing::warn!("{e}");
    }
    let first = !*shared.ready_tx.borrow();
    let published = publish_if_changed(&shared.snapshot_tx, loaded.into_snapshot(), first);
    if published {
        tracing::info!(resources = shared.snapshot_tx.borrow().len(), "config from the API server published");
    }
    record_load(&shared.status_tx, published, errors, warnings);
    shared.ready_tx.send_if_modified(|r| !std::mem::replace(r, true));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_prefer_v1_then_beta_then_alpha() {
        let served = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(pick_version(Kind::VirtualService, &served(&["v1alpha3", "v1beta1", "v1"])), Some("v1"));
        assert_eq!(pick_version(Kind::VirtualService, &served(&["v1alpha3", "v1beta1"])), Some("v1beta1"));
        assert_eq!(pick_version(Kind::VirtualService, &served(&["v1alpha3"])), Some("v1alpha3"));
        assert_eq!(pick_version(Kind::PeerAuthentication, &served(&["v1alpha1"])), None);
    }

    #[test]
    fn labels_name_the_api_path() {
        let vs = ApiResource::from_gvk(&GroupVersionKind::gvk("networking.istio.io", "v1", "VirtualService"));
        assert_eq!(
            label(&vs, Some("default"), "reviews"),
            "k8s://apis/networking.istio.io/v1/namespaces/default/virtualservices/reviews"
        );
        let pod = ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Pod"));
        assert_eq!(label(&pod, Some("ns"), "p"), "k8s://api/v1/namespaces/ns/pods/p");
    }
}
