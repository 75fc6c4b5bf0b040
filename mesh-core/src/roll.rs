//! The randomness seam: every random choice on the request path (a fault's percentage, a
//! weighted route or subset, a balancer's pick, a retry's jitter) samples a [`Roll`], the
//! thread-local generator in production and a [`SeededRoll`] in tests, so tests are
//! deterministic.

use std::sync::Mutex;

use rand::{Rng, SeedableRng, rngs::StdRng};

/// The random source: a uniform number in `[0, 100)`. Injectable so tests are deterministic.
pub trait Roll: Send + Sync + std::fmt::Debug {
    /// A uniform sample in `[0, 100)`.
    fn roll(&self) -> f64;
}

/// The thread-local generator (production default).
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadRoll;

impl Roll for ThreadRoll {
    fn roll(&self) -> f64 {
        rand::rng().random::<f64>() * 100.0
    }
}

/// A seeded generator: the same seed gives the same sequence.
#[derive(Debug)]
pub struct SeededRoll(Mutex<StdRng>);

impl SeededRoll {
    /// Seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

impl Roll for SeededRoll {
    fn roll(&self) -> f64 {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).random::<f64>() * 100.0
    }
}
