//! Tests only: see `tests/`. Each file exercises several mesh crates together over real
//! loopback connections; a feature crate's own tests use only that crate (and mesh-core).
