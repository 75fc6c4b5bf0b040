//! Hot reload through the file system: a change is published, a broken file keeps the last
//! good snapshot in force and is reported, and the fix is published.

use std::{path::Path, sync::Arc, time::Duration};

use mesh_config::{
    ConfigSource, DirectorySource, Snapshot,
    api::{Kind, Resource},
    source::{DirectoryOptions, InitialLoadError, SourceStatus},
};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(10);

fn vs(subset: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews}}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {{host: reviews, subset: {subset}}}\n"
    )
}

const DR: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: reviews}\nspec:\n  host: reviews\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n  - {name: v3, labels: {version: v3}}\n";

fn subset(snapshot: &Snapshot) -> Option<String> {
    let r = snapshot.get(Kind::VirtualService, "default", "reviews")?;
    let Resource::VirtualService(vs) = &**r else { return None };
    vs.spec.http[0].route[0].destination.subset.clone()
}

/// Write through a temporary file and a rename, as editors and `kubectl`-like tools do.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn next_snapshot(rx: &mut watch::Receiver<Arc<Snapshot>>) -> Arc<Snapshot> {
    tokio::time::timeout(WAIT, rx.changed()).await.expect("a new snapshot in time").unwrap();
    rx.borrow_and_update().clone()
}

async fn status_where(rx: &mut watch::Receiver<SourceStatus>, f: impl Fn(&SourceStatus) -> bool) -> SourceStatus {
    tokio::time::timeout(WAIT, rx.wait_for(|s| f(s))).await.expect("status in time").unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_break_fix() {
    let dir = tempfile::tempdir().unwrap();
    let vs_path = dir.path().join("reviews-vs.yaml");
    std::fs::write(dir.path().join("reviews-dr.yaml"), DR).unwrap();
    std::fs::write(&vs_path, vs("v1")).unwrap();

    let source = DirectorySource::start(vec![dir.path().to_path_buf()], DirectoryOptions::default()).unwrap();
    let mut snapshots = source.snapshots();
    let mut status = source.status();
    assert_eq!(subset(&snapshots.borrow_and_update()).as_deref(), Some("v1"));
    assert_eq!(status.borrow().generation, 1);

    // A change is published.
    write(&vs_path, &vs("v2"));
    let snap = next_snapshot(&mut snapshots).await;
    assert_eq!(subset(&snap).as_deref(), Some("v2"));
    assert!(status.borrow().is_healthy());

    // A broken file: reported with file, line and field; v2 stays in force.
    write(&vs_path, &vs("v2").replace("hosts:", "hostz:"));
    let broken = status_where(&mut status, |s| !s.errors.is_empty()).await;
    let err = broken.errors[0].to_string();
    assert!(
        err.contains("reviews-vs.yaml:5: error: VirtualService default/reviews: spec.hostz: unknown field `hostz`"),
        "{err}"
    );
    assert_eq!(subset(&snapshots.borrow()).as_deref(), Some("v2"));
    assert!(!snapshots.has_changed().unwrap(), "a broken load must not publish");

    // The fix arrives.
    write(&vs_path, &vs("v3"));
    let snap = next_snapshot(&mut snapshots).await;
    assert_eq!(subset(&snap).as_deref(), Some("v3"));
    let fixed = status_where(&mut status, SourceStatus::is_healthy).await;
    assert!(fixed.generation >= 3, "{fixed:?}");

    // Removing a file removes its resources.
    std::fs::remove_file(&vs_path).unwrap();
    let snap = next_snapshot(&mut snapshots).await;
    assert!(snap.get(Kind::VirtualService, "default", "reviews").is_none());
    assert!(snap.get(Kind::DestinationRule, "default", "reviews").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_single_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vs.yaml");
    std::fs::write(&path, vs("v1")).unwrap();
    let source = DirectorySource::start(vec![path.clone()], DirectoryOptions::default()).unwrap();
    let mut snapshots = source.snapshots();
    write(&path, &vs("v2"));
    let snap = next_snapshot(&mut snapshots).await;
    assert_eq!(subset(&snap).as_deref(), Some("v2"));
}

#[tokio::test]
async fn reload_on_demand_and_unchanged_config_is_not_republished() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vs.yaml"), vs("v1")).unwrap();
    let source = DirectorySource::start(vec![dir.path().to_path_buf()], DirectoryOptions::default()).unwrap();
    let snapshots = source.snapshots();
    let status = source.reload().await;
    assert_eq!((status.generation, status.loads), (1, 2));
    assert!(!snapshots.has_changed().unwrap());
}

#[tokio::test]
async fn a_broken_first_load_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("vs.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec: {hosts: []}\n",
    )
    .unwrap();
    let err = DirectorySource::start(vec![dir.path().to_path_buf()], DirectoryOptions::default()).unwrap_err();
    let err = err.downcast::<InitialLoadError>().expect("an InitialLoadError");
    let found: Vec<String> = err.0.iter().map(|d| d.to_string()).collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].ends_with("vs.yaml:4: error: VirtualService default/r: spec.hosts: at least one host is required"),
        "{found:?}"
    );
    assert!(
        found[1].ends_with(
            "vs.yaml:4: error: VirtualService default/r: spec: at least one of http, tcp or tls routes is required"
        ),
        "{found:?}"
    );
}
