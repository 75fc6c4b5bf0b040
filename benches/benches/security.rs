//! Authorization decisions and the mTLS handshake.

use std::{hint::black_box, sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use mesh_authz::policy::{AuthzPolicy, AuthzRequest, Traffic};
use mesh_config::load::{LoadOptions, load_paths};
use mesh_core::Identity;
use mesh_mtls::{ca::CertificateAuthority, config, store::CertStore};
use rustls::{ClientConnection, ServerConnection};
use rustls_pki_types::ServerName;

fn authz(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bookinfo/config/tutorial/security");
    let files: Vec<_> = [
        "authz-allow-nothing.yaml",
        "authz-productpage-viewer.yaml",
        "authz-details-viewer.yaml",
        "authz-reviews-viewer.yaml",
        "authz-ratings-viewer.yaml",
    ]
    .iter()
    .map(|f| dir.join(f))
    .collect();
    let snapshot = load_paths(&files, &LoadOptions::default()).into_snapshot();
    let policy =
        AuthzPolicy::compile(&snapshot, "default", &[("app".to_string(), "reviews".to_string())].into(), Traffic::Http);
    let productpage: Identity = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage".parse().unwrap();
    let ratings: Identity = "spiffe://cluster.local/ns/default/sa/bookinfo-ratings".parse().unwrap();
    let headers = HeaderMap::new();
    fn req<'a>(peer: &'a Identity, method: &'static str, headers: &'a HeaderMap) -> AuthzRequest<'a> {
        AuthzRequest {
            peer: Some(peer),
            source_ip: Some("127.0.0.1".parse().unwrap()),
            remote_ip: None,
            request_auth: None,
            method,
            path: "/reviews/0",
            host: "reviews:9080",
            port: 9080,
            headers,
            destination_ip: None,
            sni: None,
        }
    }
    let mut g = c.benchmark_group("authz_bookinfo");
    let allowed = req(&productpage, "GET", &headers);
    g.bench_function("reviews_viewer_allow", |b| b.iter(|| policy.evaluate(black_box(&allowed)).decision.allowed));
    let denied = req(&ratings, "GET", &headers);
    g.bench_function("reviews_viewer_deny", |b| b.iter(|| policy.evaluate(black_box(&denied)).decision.allowed));
    g.finish();
}

/// Drive a client and a server connection to the end of the handshake in memory.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut buf = Vec::with_capacity(16 * 1024);
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let mut s = &buf[..];
        while !s.is_empty() {
            server.read_tls(&mut s).unwrap();
        }
        server.process_new_packets().unwrap();
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        let mut s = &buf[..];
        while !s.is_empty() {
            client.read_tls(&mut s).unwrap();
        }
        client.process_new_packets().unwrap();
    }
}

fn tls(c: &mut Criterion) {
    let ca = CertificateAuthority::generate("cluster.local").unwrap();
    let day = Duration::from_secs(86400);
    let roots = config::roots([ca.root()]).unwrap();
    let server_id: Identity = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews".parse().unwrap();
    let server_cfg =
        config::server_config(CertStore::new(&ca.issue(&server_id, day).unwrap()).unwrap(), roots.clone()).unwrap();
    let client_id: Identity = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage".parse().unwrap();
    let client_cfg =
        config::client_config(CertStore::new(&ca.issue(&client_id, day).unwrap()).unwrap(), roots, vec![server_id])
            .unwrap();
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut g = c.benchmark_group("mtls");
    g.bench_function("full_handshake_tls13_p256", |b| {
        b.iter(|| {
            let mut client = ClientConnection::new(Arc::clone(&client_cfg), name.clone()).unwrap();
            let mut server = ServerConnection::new(Arc::clone(&server_cfg)).unwrap();
            handshake(&mut client, &mut server);
            black_box(server.peer_certificates().is_some())
        })
    });
    g.finish();
}

criterion_group!(benches, authz, tls);
criterion_main!(benches);
