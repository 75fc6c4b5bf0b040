//! The sizes of the request path's futures, checked as ztunnel checks its own
//! (`src/assertions.rs`): every layer's future embeds the one below it, the whole is moved
//! into one allocation per request at the stack's edge, so a layer that grows its future
//! (an `async` block, a timer held inline, a clone of the inner service) makes every request
//! copy more. A budget that no longer holds fails here, with the sizes printed.

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use crate::client::HttpClient;
    use http::Request;
    use mesh_core::BoxBody;
    use mesh_mtls::connector::MeshConnector;
    use mesh_route::layer::RetryBody;
    use tower::Service;

    type Client = crate::client::HttpClientStack<MeshConnector>;
    type Fut<S> = <S as Service<Request<BoxBody>>>::Future;

    /// (name, size, budget in bytes) of the outbound path's futures, innermost first. The
    /// budgets are the sizes measured when they were set (2026-12-05), rounded up a little.
    fn outbound() -> Vec<(&'static str, usize, usize)> {
        use crate::edge::Rescue;
        use mesh_route::layer::{Balance, Retry, Router, Timeout};
        type B = HttpClient<RetryBody<BoxBody>, MeshConnector>;
        type Bal = Balance<B>;
        type Ret = Retry<Bal>;
        type Tim = Timeout<Ret>;
        type Fau = mesh_fault::Fault<Tim>;
        type Rou = Router<Fau>;
        vec![
            ("HttpClient", size_of::<<B as Service<Request<RetryBody<BoxBody>>>>::Future>(), 32),
            ("Balance", size_of::<<Bal as Service<Request<RetryBody<BoxBody>>>>::Future>(), 256),
            ("Retry", size_of::<Fut<Ret>>(), 768),
            ("Timeout", size_of::<Fut<Tim>>(), 800),
            ("Fault", size_of::<Fut<Fau>>(), 800),
            ("Router", size_of::<Fut<Rou>>(), 1088),
            ("Rescue (the client stack)", size_of::<Fut<Rescue<Rou>>>(), 1088),
        ]
    }

    #[test]
    fn request_path_futures_stay_within_their_budgets() {
        let sizes = outbound();
        let report: String = sizes.iter().map(|(n, s, b)| format!("{n}: {s} bytes (budget {b})\n")).collect();
        println!("{report}");
        for (name, size, budget) in &sizes {
            assert!(size <= budget, "{name}'s future grew past its budget:\n{report}");
        }
        assert_eq!(sizes.last().map(|s| s.1), Some(size_of::<Fut<Client>>()));
    }
}
