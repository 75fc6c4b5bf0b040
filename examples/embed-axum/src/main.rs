//! `embed-axum`: an axum service in the mesh, with no sidecar. `greeter` answers
//! `GET /hello` after calling its own upstream through the mesh; the mesh serves it with
//! mTLS per PeerAuthentication, authorization, Istio's metrics and access log, and its
//! admin pages (`/stats/prometheus`) on `--admin`.
//!
//! ```text
//! embed-axum --config DIR [--listen 127.0.0.1:9080] [--admin 127.0.0.1:15000]
//!            [--upstream http://echo.example/] [--ca-dir .mesh/ca] [--endpoint NS/WORKLOAD=ADDR]...
//! ```

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use clap::Parser;
use http_body_util::BodyExt;
use mesh_proxy::embed::{Client, Mesh};
use tower::ServiceExt;

#[derive(Debug, Parser)]
#[command(name = "embed-axum", about = "An axum service meshed in-process")]
struct Args {
    /// Istio and Kubernetes YAML (file or directory), watched.
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
    /// Where the service listens (mTLS as PeerAuthentication says).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9080")]
    listen: SocketAddr,
    /// The mesh's admin pages (`/stats/prometheus`, `/config_dump`, ...).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// What `/hello` calls, by its mesh name.
    #[arg(long, value_name = "URL", default_value = "http://echo.example/")]
    upstream: http::Uri,
    /// The mesh CA's directory.
    #[arg(long, value_name = "DIR", default_value = ".mesh/ca")]
    ca_dir: PathBuf,
    /// Where a workload runs, `NS/WORKLOAD=ADDR` (repeat).
    #[arg(long = "endpoint", value_name = "NS/WORKLOAD=ADDR", value_parser = mesh_proxy::parse_endpoint)]
    endpoints: Vec<(String, String, SocketAddr)>,
}

/// `GET /hello`: the upstream's answer, through the mesh's client (routing, retries, mTLS,
/// telemetry as `reporter="source"`).
async fn hello(State((client, upstream)): State<(Client, http::Uri)>) -> Result<String, (StatusCode, String)> {
    let req = http::Request::get(upstream).body(axum::body::Body::empty()).expect("a GET with a URI");
    let failed = |e: mesh_proxy::BoxError| (StatusCode::BAD_GATEWAY, format!("upstream: {e}\n"));
    // The mesh's client never fails: what it cannot send is a local reply (503 UH, 404 NR...).
    let Ok(rsp) = client.oneshot(req).await;
    let status = rsp.status();
    let body = rsp.into_body().collect().await.map_err(failed)?.to_bytes();
    Ok(format!("hello from greeter; upstream said {status}: {}\n", String::from_utf8_lossy(&body).trim_end()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (listener, admin) = (bind(args.listen).await?, bind(args.admin).await?);
    let mut builder = Mesh::builder().config(&args.config).ca_dir(&args.ca_dir);
    for (ns, workload, addr) in args.endpoints {
        builder = builder.endpoint(ns, workload, addr);
    }

    // The mesh, linked in: who we are, the server side as a layer, the client, the metrics.
    let mesh = Arc::new(builder.label("app", "greeter").label("version", "v1").start().await?);
    let app = Router::new()
        .route("/hello", get(hello))
        .with_state((mesh.client(), args.upstream))
        .layer(mesh.server_layer(args.listen.port()));
    let admin_mesh = mesh.clone();
    tokio::spawn(async move { admin_mesh.serve_admin(admin, shutdown()).await });
    eprintln!("embed-axum: serving on {} as {}", listener.local_addr()?, mesh.identity());
    mesh.serve(listener, args.listen.port(), app, shutdown()).await?;
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))
}

/// Ctrl-C or SIGTERM.
async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => drop(t.recv().await),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
