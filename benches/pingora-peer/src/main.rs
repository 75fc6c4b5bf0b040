//! `pingora-peer LISTEN UPSTREAM THREADS`: forwards every request to UPSTREAM over pooled
//! HTTP/1.1 connections, as the benchmark's nginx and HAProxy do.

use async_trait::async_trait;
use pingora::{
    prelude::{HttpPeer, Opt, Server},
    proxy::{ProxyHttp, Session, http_proxy_service},
};

struct Forward {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream.as_str(), false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream, threads] = &args[..] else {
        eprintln!("usage: pingora-peer LISTEN UPSTREAM THREADS");
        std::process::exit(2);
    };
    let conf = std::env::temp_dir().join(format!("pingora-peer-{}.yaml", std::process::id()));
    std::fs::write(&conf, format!("---\nversion: 1\nthreads: {threads}\n")).expect("write the config");
    let opt = Opt { conf: Some(conf.to_string_lossy().into_owned()), ..Opt::default() };
    let mut server = Server::new(Some(opt)).expect("server");
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Forward { upstream: upstream.clone() });
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
