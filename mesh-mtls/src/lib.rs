//! Mutual TLS with SPIFFE identities, as Istio does it: a local CA issuing short-lived
//! workload certificates (`spiffe://<td>/ns/<ns>/sa/<sa>` in the URI SAN), rotation without
//! failed requests, certificates from files, rustls configurations whose client side checks
//! the server's identity against the destination's service accounts (secure naming), and
//! PeerAuthentication modes on the accepting side.
//!
//! A server and a client from one CA, as two workloads: the server STRICT, answering with
//! the caller's identity; the client checking the server's identity against the secure
//! naming map. (`server::serve`, the bare accept loop used here, is behind the feature
//! `test-util`: it has no connection cap, timers or drain. `MtlsAcceptor` and
//! `server::WithConnection` are what a server of your own, or mesh-proxy's, builds on.)
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};
//! use arc_swap::ArcSwap;
//! use http_body_util::{BodyExt, Empty};
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//! use mesh_core::{Identity, ext::PeerIdentity};
//! use mesh_mtls::{accept::MtlsAcceptor, ca::CertificateAuthority, config, connector::MeshConnector, peer_auth::Mode, server, store::CertStore};
//! use tower::{ServiceBuilder, util::BoxCloneSyncService};
//!
//! // In memory; `load_or_create(dir, ..)` keeps the root in a directory.
//! let ca = CertificateAuthority::generate("cluster.local")?;
//! let day = Duration::from_secs(24 * 3600);
//! let reviews: Identity = "spiffe://cluster.local/ns/default/sa/reviews".parse()?;
//! let productpage: Identity = "spiffe://cluster.local/ns/default/sa/productpage".parse()?;
//! let roots = config::roots([ca.root()])?;
//!
//! // Server: STRICT mTLS, the caller's identity in each request's extensions.
//! let acceptor = MtlsAcceptor::new(config::server_config(CertStore::new(&ca.issue(&reviews, day)?)?, roots.clone())?);
//! let app = ServiceBuilder::new().service_fn(|req: http::Request<hyper::body::Incoming>| async move {
//!     let peer = req.extensions().get::<PeerIdentity>().map(|p| p.0.to_string()).unwrap_or_default();
//!     Ok::<_, Infallible>(http::Response::new(mesh_core::body::full(peer)))
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! tokio::spawn(server::serve(listener, acceptor, server::fixed(Mode::Strict), BoxCloneSyncService::new(app)));
//!
//! // Client: mTLS for `https://`, the server must be one of the identities named for it.
//! let naming = Arc::new(ArcSwap::from_pointee(HashMap::from([(addr, vec![reviews])])));
//! let connector = MeshConnector::mtls(CertStore::new(&ca.issue(&productpage, day)?)?, roots, naming);
//! let client = Client::builder(TokioExecutor::new()).build::<_, Empty<bytes::Bytes>>(connector);
//! let rsp = client.get(format!("https://{addr}/").parse()?).await?;
//! assert_eq!(rsp.into_body().collect().await?.to_bytes(), "spiffe://cluster.local/ns/default/sa/productpage");
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
#[cfg(feature = "config")]
pub mod gateway;
pub mod peer_auth;
pub mod remote;
pub mod server;
pub mod store;
pub mod verify;
