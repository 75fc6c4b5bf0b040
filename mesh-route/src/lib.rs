//! Istio VirtualService routing, weighted subsets, load balancing, timeouts and retries as Tower layers (arrives with issue 3).
