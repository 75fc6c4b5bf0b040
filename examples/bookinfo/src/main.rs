//! `bookinfo`: run the Bookinfo mesh (`bookinfo up`) or one of its services (`bookinfo serve`).

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc};

use bookinfo::{
    details,
    http::{Upstreams, serve},
    productpage::ProductPage,
    ratings::{Ratings, Variant},
    reviews::Reviews,
    up,
};
use clap::{Parser, Subcommand, ValueEnum};
use http_body_util::BodyExt;

#[derive(Debug, Parser)]
#[command(name = "bookinfo", version, about = "Istio's Bookinfo in Rust, meshed by mesh-sidecar")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the whole mesh on this machine: every Deployment with its sidecar, and the
    /// ingress gateway.
    Up {
        /// The ingress gateway's address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
        ingress: SocketAddr,
        /// The watched config directory (seeded with the Bookinfo manifest when empty).
        #[arg(long, value_name = "DIR", default_value = ".mesh/config")]
        config_dir: PathBuf,
        /// Where the service-graph dashboard is served (Kiali's port by default).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:20001")]
        dashboard: SocketAddr,
    },
    /// Run one service.
    Serve {
        /// Which.
        service: Service,
        /// Where it listens.
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// The version (reviews: v1, v2, v3; ratings: v1, v-faulty, v-delayed).
        #[arg(long, default_value = "v1")]
        version: String,
        /// Call the other services through this HTTP proxy (the sidecar's outbound).
        #[arg(long, value_name = "ADDR")]
        proxy: Option<SocketAddr>,
        /// Without a proxy: where a service is (`ratings=127.0.0.1:9081`; repeat).
        #[arg(long, value_name = "HOST=ADDR", value_parser = parse_direct)]
        direct: Vec<(String, SocketAddr)>,
        /// The pod name reviews reports (`HOSTNAME` by default).
        #[arg(long)]
        podname: Option<String>,
    },
    /// Run mesh-sidecar (what `bookinfo up` starts beside each service).
    #[command(disable_help_flag = true)]
    Sidecar {
        /// mesh-sidecar's arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Service {
    Productpage,
    Details,
    Reviews,
    Ratings,
}

fn parse_direct(s: &str) -> Result<(String, SocketAddr), String> {
    let (host, addr) = s.split_once('=').ok_or_else(|| format!("`{s}` is not HOST=ADDR"))?;
    Ok((host.to_string(), addr.parse().map_err(|e| format!("`{addr}`: {e}"))?))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Sidecar { args } = cli.command {
        return mesh_sidecar::main_with(std::iter::once("mesh-sidecar".to_string()).chain(args));
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bookinfo: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bookinfo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Up { ingress, config_dir, dashboard } => up::run(up::Options { ingress, config_dir, dashboard }).await,
        Command::Serve { service, listen, version, proxy, direct, podname } => {
            let upstreams = Upstreams { proxy, direct: direct.into_iter().collect() };
            let listener =
                tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
            let only_v1 = |name: &str| {
                if version == "v1" { Ok(()) } else { Err(format!("{name} {version}: this build has v1 only")) }
            };
            match service {
                Service::Details => {
                    only_v1("details")?;
                    serve(listener, |req| async move { details::handle(&req) }).await;
                }
                Service::Ratings => {
                    let variant: Variant = version.parse()?;
                    let ratings = Ratings::new(variant, rand::random());
                    serve(listener, move |req| {
                        let ratings = ratings.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            ratings.handle(&parts.method, parts.uri.path(), body).await
                        }
                    })
                    .await;
                }
                Service::Reviews => {
                    let podname = podname
                        .or_else(|| std::env::var("HOSTNAME").ok())
                        .unwrap_or_else(|| format!("reviews-{version}"));
                    let reviews =
                        Arc::new(Reviews::new(&version, podname, std::env::var("CLUSTER_NAME").ok(), upstreams)?);
                    serve(listener, move |req| {
                        let reviews = reviews.clone();
                        async move { reviews.handle(&req).await }
                    })
                    .await;
                }
                Service::Productpage => {
                    only_v1("productpage")?;
                    let secret: [u8; 32] = rand::random();
                    let page = Arc::new(ProductPage::new(upstreams, &secret));
                    serve(listener, move |req| {
                        let page = page.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            page.handle(&http::Request::from_parts(parts, ()), body).await
                        }
                    })
                    .await;
                }
            }
            Ok(())
        }
        Command::Sidecar { .. } => unreachable!("handled before the runtime starts"),
    }
}
