//! Where snapshots come from. A [`ConfigSource`] publishes `Arc<Snapshot>`s on a tokio
//! `watch` channel; consumers compile their policy from each one. Today: a watched
//! directory ([`DirectorySource`]); a Kubernetes API source publishes the same way.
//!
//! A load with any error is not published: the last good snapshot stays in force and the
//! errors are reported in [`SourceStatus`] (and logged) until a later load succeeds.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::sync::{mpsc, watch};

use crate::{
    Snapshot,
    diag::{Diagnostic, Severity},
    load::{LoadOptions, load_paths},
};

/// Anything that publishes snapshots.
pub trait ConfigSource: Send + Sync {
    /// The snapshot in force now and every later one.
    fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>>;
    /// Health of the source: what was published, what failed.
    fn status(&self) -> watch::Receiver<SourceStatus>;
}

/// What a source last did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourceStatus {
    /// Number of snapshots published (the first counts).
    pub generation: u64,
    /// Number of loads attempted, including failed ones.
    pub loads: u64,
    /// Errors of the last load; empty when it succeeded. While non-empty the previous
    /// snapshot is still in force.
    pub errors: Vec<Diagnostic>,
    /// Warnings and notes of the last load.
    pub warnings: Vec<Diagnostic>,
    /// When the snapshot in force was published (wall clock; `None` before the first).
    pub loaded_at: Option<SystemTime>,
}

impl SourceStatus {
    /// Whether the last load succeeded.
    pub fn is_healthy(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The first load failed: there is no good snapshot to serve.
#[derive(Debug, thiserror::Error)]
#[error("config has errors:\n{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct InitialLoadError(pub Vec<Diagnostic>);

/// Options of a directory source.
#[derive(Clone, Debug)]
pub struct DirectoryOptions {
    /// How files are loaded.
    pub load: LoadOptions,
    /// Quiet time after the last change before reloading (editors write in bursts).
    pub debounce: Duration,
}

impl Default for DirectoryOptions {
    fn default() -> Self {
        Self { load: LoadOptions::default(), debounce: Duration::from_millis(100) }
    }
}

struct Shared {
    paths: Vec<PathBuf>,
    options: DirectoryOptions,
    snapshot_tx: watch::Sender<Arc<Snapshot>>,
    status_tx: watch::Sender<SourceStatus>,
    // Serialises reloads from the watcher task and from `reload()`.
    reload_lock: tokio::sync::Mutex<()>,
}

/// Files and directories, watched: every change is debounced, reloaded and, when it loads
/// without error and differs from what is in force, published.
pub struct DirectorySource {
    shared: Arc<Shared>,
    // Dropping the watcher stops the notifications; the task then ends.
    _watcher: Mutex<notify::RecommendedWatcher>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DirectorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectorySource").field("paths", &self.shared.paths).finish_non_exhaustive()
    }
}

impl Drop for DirectorySource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DirectorySource {
    /// Load `paths` and start watching them. Must run inside a tokio runtime. Fails when
    /// the first load has errors, or when the paths cannot be watched.
    pub fn start(
        paths: Vec<PathBuf>,
        options: DirectoryOptions,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        use notify::Watcher;

        let loaded = load_paths(&paths, &options.load);
        let (errors, warnings) = split(&loaded.diagnostics);
        if !errors.is_empty() {
            return Err(Box::new(InitialLoadError(errors)));
        }
        let (snapshot_tx, _) = watch::channel(Arc::new(loaded.into_snapshot()));
        let (status_tx, _) = watch::channel(SourceStatus {
            generation: 1,
            loads: 1,
            errors,
            warnings,
            loaded_at: Some(SystemTime::now()),
        });
        let shared = Arc::new(Shared { paths, options, snapshot_tx, status_tx, reload_lock: Default::default() });

        let (tx, rx) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(e) => !matches!(e.kind, notify::EventKind::Access(_)),
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        })?;
        for path in &shared.paths {
            if path.is_dir() {
                watcher.watch(path, notify::RecursiveMode::Recursive)?;
            } else {
                // Editors replace files by renaming over them: watch the folder.
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
                watcher.watch(parent, notify::RecursiveMode::NonRecursive)?;
            }
        }
        let task = tokio::spawn(watch_loop(shared.clone(), rx));
        Ok(Self { shared, _watcher: Mutex::new(watcher), task })
    }

    /// Reload now, as a file change would. Returns the status after the load.
    pub async fn reload(&self) -> SourceStatus {
        reload(&self.shared).await
    }
}

impl ConfigSource for DirectorySource {
    fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.shared.snapshot_tx.subscribe()
    }

    fn status(&self) -> watch::Receiver<SourceStatus> {
        self.shared.status_tx.subscribe()
    }
}

fn split(diags: &[Diagnostic]) -> (Vec<Diagnostic>, Vec<Diagnostic>) {
    diags.iter().cloned().partition(|d| d.severity == Severity::Error)
}

async fn watch_loop(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<()>) {
    while rx.recv().await.is_some() {
        // Debounce: wait until the burst of events has been quiet for a while.
        loop {
            match tokio::time::timeout(shared.options.debounce, rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) => break,
            }
        }
        reload(&shared).await;
    }
}

async fn reload(shared: &Arc<Shared>) -> SourceStatus {
    let _guard = shared.reload_lock.lock().await;
    let paths = shared.paths.clone();
    let options = shared.options.load.clone();
    let loaded = match tokio::task::spawn_blocking(move || load_paths(&paths, &options)).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "config reload task failed");
            return shared.status_tx.borrow().clone();
        }
    };
    let (errors, warnings) = split(&loaded.diagnostics);
    let mut published = false;
    if errors.is_empty() {
        published = publish_if_changed(&shared.snapshot_tx, loaded.into_snapshot(), false);
        if published {
            tracing::info!(resources = shared.snapshot_tx.borrow().len(), "config reloaded");
        }
    } else {
        for e in &errors {
            tracing::warn!("{e}");
        }
        tracing::warn!(errors = errors.len(), "config has errors; the last good config stays in force");
    }
    record_load(&shared.status_tx, published, errors, warnings);
    shared.status_tx.borrow().clone()
}

/// Put `next` in force unless it equals the snapshot in force (`always`: even then).
/// Whether it was published.
pub fn publish_if_changed(tx: &watch::Sender<Arc<Snapshot>>, next: Snapshot, always: bool) -> bool {
    tx.send_if_modified(|current| {
        if **current == next && !always {
            false
        } else {
            *current = Arc::new(next);
            true
        }
    })
}

/// Count a load in the status, with its findings.
pub fn record_load(
    tx: &watch::Sender<SourceStatus>,
    published: bool,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
) {
    tx.send_modify(|s| {
        s.loads += 1;
        if published {
            s.generation += 1;
            s.loaded_at = Some(SystemTime::now());
        }
        s.errors = errors;
        s.warnings = warnings;
    });
}
