//! The route table a router reads, swapped whole when config changes.

use std::sync::Arc;

use arc_swap::ArcSwap;
use mesh_config::{
    Snapshot,
    registry::{Locator, Registry},
};
use tokio::sync::watch;

use crate::policy::{ProxyContext, RouteTable};

/// A shared, swappable route table. Each request loads the current table once; a swap
/// leaves in-flight requests on the table they started with.
#[derive(Clone, Debug)]
pub struct TableHandle(Arc<ArcSwap<RouteTable>>);

impl TableHandle {
    /// A handle holding `table`.
    pub fn new(table: RouteTable) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(table)))
    }

    /// The current table.
    pub fn load(&self) -> Arc<RouteTable> {
        self.0.load_full()
    }

    /// Replace the table.
    pub fn store(&self, table: RouteTable) {
        self.0.store(Arc::new(table));
    }
}

/// Compile the table for `ctx` from every snapshot `snapshots` publishes, now and on each
/// change, into the returned handle. The task ends when the sender is dropped.
pub fn follow(mut snapshots: watch::Receiver<Arc<Snapshot>>, locator: Locator, ctx: ProxyContext) -> TableHandle {
    let compile = move |s: &Snapshot| {
        let table = RouteTable::compile(s, &Registry::build(s, &locator), &ctx);
        for w in &table.warnings {
            tracing::warn!("{w}");
        }
        table
    };
    let handle = TableHandle::new(compile(&snapshots.borrow_and_update()));
    let h = handle.clone();
    tokio::spawn(async move {
        while snapshots.changed().await.is_ok() {
            let snapshot = snapshots.borrow_and_update().clone();
            h.store(compile(&snapshot));
        }
    });
    handle
}
