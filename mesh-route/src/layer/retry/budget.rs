//! The retry budget: how many retries of a cluster may be in flight at once, and the
//! requests and retries it counts.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use crate::policy::cluster::RetryBudgetLimit;

/// How many retries of a cluster may be in flight at once.
#[derive(Clone, Copy, Debug)]
pub(super) enum Limit {
    /// `maxRetries`.
    Max(usize),
    /// `retryBudget`.
    Budget(RetryBudgetLimit),
}

/// A cluster's requests and retries in flight (those that went through the retry loop).
#[derive(Debug, Default)]
pub(crate) struct Budget {
    active: AtomicUsize,
    retrying: AtomicUsize,
}

impl Budget {
    pub(super) fn try_retry(self: &Arc<Self>, limit: Limit) -> Option<BudgetGuard> {
        let allowed = match limit {
            Limit::Max(n) => n,
            Limit::Budget(b) => b.allowed(self.active.load(Ordering::Relaxed)),
        };
        let prev = self.retrying.fetch_add(1, Ordering::AcqRel);
        if prev >= allowed {
            self.retrying.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(BudgetGuard(self.clone()))
    }
}

pub(super) struct BudgetGuard(Arc<Budget>);

impl Drop for BudgetGuard {
    fn drop(&mut self) {
        self.0.retrying.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A request the retry budget counts as active (its `minRetryConcurrency` share), while it lives.
pub(super) struct ActiveRequest(Arc<Budget>);

impl ActiveRequest {
    pub(super) fn new(b: &Arc<Budget>) -> Self {
        b.active.fetch_add(1, Ordering::AcqRel);
        Self(b.clone())
    }
}

impl Drop for ActiveRequest {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}
