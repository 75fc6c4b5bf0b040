//! Mutual TLS with SPIFFE identities, a local CA and PeerAuthentication modes (arrives with issue 4).
