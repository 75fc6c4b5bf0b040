//! A lock-free histogram with fixed buckets: an observation is a few atomic adds, where
//! prometheus-client's `Histogram` takes a lock. Encodes as a classic Prometheus histogram.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

use crate::metrics::BUCKETS;

#[derive(Debug)]
struct Inner {
    /// One count per finite bucket, then one for `+Inf`.
    counts: [AtomicU64; BUCKETS.len() + 1],
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

/// Istio's (Envoy's) buckets, observed without a lock.
#[derive(Clone, Debug)]
pub struct AtomicHistogram(Arc<Inner>);

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self(Arc::new(Inner { counts: std::array::from_fn(|_| AtomicU64::new(0)), sum: AtomicU64::new(0) }))
    }
}

impl AtomicHistogram {
    /// Record one observation.
    pub fn observe(&self, v: f64) {
        // NaN lands in +Inf, as in prometheus-client.
        let i = BUCKETS.iter().position(|b| v <= *b).unwrap_or(BUCKETS.len());
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .0
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + v).to_bits()));
    }

    /// Count, sum and per-bucket counts (upper bound, count), `+Inf` last.
    pub fn snapshot(&self) -> (u64, f64, Vec<(f64, u64)>) {
        let buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        // The count is the buckets' total, so a scrape never sees them disagree.
        let count = buckets.iter().map(|(_, c)| c).sum();
        (count, f64::from_bits(self.0.sum.load(Ordering::Relaxed)), buckets)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (count, sum, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a model: each value lands in the first bucket whose bound is >= it.
        #[test]
        fn buckets_match_a_model(values in proptest::collection::vec(0.0f64..4_000_000.0, 0..50)) {
            let h = AtomicHistogram::default();
            for v in &values {
                h.observe(*v);
            }
            let (count, sum, buckets) = h.snapshot();
            prop_assert_eq!(count, values.len() as u64);
            let expected: f64 = values.iter().sum();
            prop_assert!((sum - expected).abs() <= 1e-6 * expected.max(1.0));
            for (i, (bound, n)) in buckets.iter().enumerate() {
                let lower = if i == 0 { f64::NEG_INFINITY } else { buckets[i - 1].0 };
                let model = values.iter().filter(|v| **v > lower && **v <= *bound).count() as u64;
                prop_assert_eq!(*n, model, "bucket {}", bound);
            }
        }
    }
}
