//! Benchmarks of the mesh layers and of the proxy hop against its peers (criterion benches arrive with the layers they measure).
