//! Mutual TLS with SPIFFE identities, as Istio does it: a local CA issuing short-lived
//! workload certificates (`spiffe://<td>/ns/<ns>/sa/<sa>` in the URI SAN), rotation without
//! failed requests, certificates from files, rustls configurations whose client side checks
//! the server's identity against the destination's service accounts (secure naming), and
//! PeerAuthentication modes on the accepting side.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use mesh_core::Identity;
//! use mesh_mtls::{ca::CertificateAuthority, config, peer_auth::Mode, store::CertStore, accept::MtlsAcceptor};
//!
//! let ca = Arc::new(CertificateAuthority::load_or_create("ca".as_ref(), "cluster.local")?);
//! let me: Identity = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews".parse()?;
//! let store = CertStore::new(&ca.issue(&me, Duration::from_secs(24 * 3600))?)?;
//! store.rotate_from(ca.clone(), me, Duration::from_secs(24 * 3600));
//! let roots = config::roots([ca.root()])?;
//! let acceptor = MtlsAcceptor::new(config::server_config(store.clone(), roots.clone())?);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (tcp, _) = listener.accept().await?;
//! let (io, peer) = acceptor.accept(tcp, Mode::Permissive).await?;
//! # let _ = (io, peer);
//! # Ok(()) }
//! ```
//!
//! # Istio semantics and divergences
//! - No PeerAuthentication at all means PERMISSIVE; the narrowest scope wins, the oldest
//!   among equals; selector policies in the root namespace are ignored; `portLevelMtls`
//!   keys are container ports.
//! - PERMISSIVE tells TLS from plaintext by the first byte (a TLS handshake record);
//!   TLS connections there must still present a client certificate, as in Istio.
//! - Client side, the server's SPIFFE identity must be one the destination may have; DNS
//!   names are not checked.

pub mod accept;
pub mod ca;
pub mod config;
pub mod connector;
pub mod gateway;
pub mod peer_auth;
pub mod remote;
pub mod server;
pub mod store;
pub mod verify;
