//! The weighted choice, written once: Istio's weighted `route` destinations (through
//! [`super::action::WeightedTargets`]) and the [`Split`](crate::layer::Split) service both
//! draw with it.

/// The index of the weight a draw falls on: `sample` in `[0, 1)` scaled to `total`, then the
/// first weight whose cumulative sum passes it. `total` may exceed the weights' sum (a share
/// that goes nowhere, as Gateway API backendRefs that cannot be resolved): a draw that falls
/// past the weights is `None`. A weight of 0 is never drawn.
pub fn pick(weights: impl IntoIterator<Item = u32>, total: u64, sample: f64) -> Option<usize> {
    let mut point = (sample * total as f64) as u64;
    for (i, w) in weights.into_iter().enumerate() {
        let w = u64::from(w);
        if point < w {
            return Some(i);
        }
        point -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The model: each weight owns the half-open interval of points after the weights before it.
    fn model(weights: &[u32], total: u64, sample: f64) -> Option<usize> {
        let point = (sample * total as f64) as u64;
        let mut start = 0u64;
        for (i, w) in weights.iter().enumerate() {
            let end = start + u64::from(*w);
            if (start..end).contains(&point) {
                return Some(i);
            }
            start = end;
        }
        None
    }

    proptest! {
        #[test]
        fn matches_the_model(weights in prop::collection::vec(0u32..1000, 0..8), extra in 0u64..500, sample in 0.0f64..1.0) {
            let total = weights.iter().map(|w| u64::from(*w)).sum::<u64>() + extra;
            let got = pick(weights.iter().copied(), total, sample);
            prop_assert_eq!(got, model(&weights, total, sample));
            if let Some(i) = got {
                prop_assert!(weights[i] > 0, "a weight of 0 is never drawn");
            }
        }
    }

    #[test]
    fn shares_fall_where_the_weights_say() {
        assert_eq!(pick([80, 20], 100, 0.0), Some(0));
        assert_eq!(pick([80, 20], 100, 0.79), Some(0));
        assert_eq!(pick([80, 20], 100, 0.8), Some(1));
        assert_eq!(pick([0, 20], 20, 0.0), Some(1));
        assert_eq!(pick([50], 100, 0.5), None, "the other half goes nowhere");
        assert_eq!(pick([], 0, 0.3), None);
    }
}
