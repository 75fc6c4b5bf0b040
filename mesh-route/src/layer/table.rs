//! The route table a router reads, swapped whole when config changes.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::policy::RouteTable;

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
