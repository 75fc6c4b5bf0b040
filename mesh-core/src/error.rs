//! The error type that crosses layers, and helpers to find a cause in a chain.
//!
//! Layers fail with small typed leaf errors (`thiserror`), boxed into [`Error`]; the one
//! place that maps failures to responses walks the chain with [`is_caused_by`].

/// A boxed error, the error type of every mesh service.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
/// Alias used where tower's naming reads better.
pub type BoxError = Error;

/// Whether `error` or anything in its `source()` chain is an `E`.
pub fn is_caused_by<E: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    cause_ref::<E>(error).is_some()
}

/// The first `E` in `error`'s `source()` chain, `error` itself included.
pub fn cause_ref<'e, E: std::error::Error + 'static>(error: &'e (dyn std::error::Error + 'static)) -> Option<&'e E> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<E>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("leaf")]
    struct Leaf;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] Leaf);

    #[derive(Debug, thiserror::Error)]
    #[error("other")]
    struct Other;

    #[test]
    fn finds_cause_through_chain() {
        let err: Error = Box::new(Wrapper(Leaf));
        assert!(is_caused_by::<Leaf>(&*err));
        assert!(is_caused_by::<Wrapper>(&*err));
        assert!(!is_caused_by::<Other>(&*err));
        assert_eq!(cause_ref::<Leaf>(&*err).map(ToString::to_string).as_deref(), Some("leaf"));
    }
}
