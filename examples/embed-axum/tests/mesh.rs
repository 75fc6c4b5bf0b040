//! The axum example as a user runs it: its binary, called by two sidecars over mTLS. The
//! AuthorizationPolicy lets `caller` in and answers `intruder` with 403; the example's own
//! upstream call goes through its mesh client; its metrics show all three.

use std::{net::SocketAddr, path::Path, process::Stdio, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mesh_config::test_util::Manifest;
use mesh_proxy::sidecar::{Args, LogControl};
use tokio::net::{TcpListener, TcpStream};

/// A port nobody listens on now, for a process that binds it next.
fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

async fn wait_port(addr: SocketAddr) {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr}");
}

/// GET `uri` (absolute form, as to an HTTP proxy) from `addr`: status and body.
async fn get(addr: SocketAddr, uri: &str) -> (u16, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let rsp = s.send_request(http::Request::get(uri).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of the sample of `name` whose labels include all of `labels`.
fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The upstream of `/hello`: answers `echo`.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"echo"))))
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc));
        }
    });
    addr
}

fn config(echo: SocketAddr) -> String {
    Manifest::new()
        .service("greeter", 9080)
        .deployment("greeter", "v1", Some("greeter"))
        .deployment("caller", "v1", Some("caller"))
        .deployment("intruder", "v1", Some("intruder"))
        .doc(&format!(
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]
"#,
            echo.port()
        ))
        .doc(
            r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: greeter-callers, namespace: default}
spec:
  selector: {matchLabels: {app: greeter}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/default/sa/caller]}}]
"#,
        )
        .to_string()
}

/// A sidecar for `app` in this process, through the library: its outbound address.
fn sidecar(dir: &Path, app: &str, greeter: SocketAddr) -> SocketAddr {
    let outbound = free_port();
    let d = |p: &str| dir.join(p).display().to_string();
    let args = [
        "mesh-sidecar",
        "--config",
        &d("config"),
        "--ca-dir",
        &d("ca"),
        "--outbound",
        &outbound.to_string(),
        "--workload-labels",
        &format!("app={app},version=v1"),
        "--endpoint",
        &format!("default/greeter-v1={greeter}"),
        "--access-log",
        "off",
    ];
    let args = <Args as clap::Parser>::try_parse_from(args).unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let log = LogControl::new("info", |_| Ok(()));
        runtime.block_on(mesh_proxy::sidecar::run(args, log)).unwrap();
    });
    outbound
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_calls_the_axum_service_over_mtls_and_authz_keeps_another_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/mesh.yaml"), config(echo().await)).unwrap();
    let (listen, admin) = (free_port(), free_port());
    let mut greeter = tokio::process::Command::new(env!("CARGO_BIN_EXE_embed-axum"))
        .args(["--config", &dir.path().join("config").display().to_string()])
        .args(["--ca-dir", &dir.path().join("ca").display().to_string()])
        .args(["--listen", &listen.to_string(), "--admin", &admin.to_string()])
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_port(listen).await;
    wait_port(admin).await;
    let (caller, intruder) = (sidecar(dir.path(), "caller", listen), sidecar(dir.path(), "intruder", listen));
    wait_port(caller).await;
    wait_port(intruder).await;

    let (status, body) = get(caller, "http://greeter:9080/hello").await;
    assert_eq!((status, body.as_str()), (200, "hello from greeter; upstream said 200 OK: echo\n"));
    let (status, body) = get(intruder, "http://greeter:9080/hello").await;
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    // Plaintext straight to the service: STRICT mTLS refuses the connection.
    assert!(
        tokio::time::timeout(Duration::from_secs(5), async {
            let tcp = TcpStream::connect(listen).await.unwrap();
            let Ok((mut s, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await else { return true };
            tokio::spawn(conn);
            s.send_request(http::Request::get("/hello").body(Full::new(Bytes::new())).unwrap()).await.is_err()
        })
        .await
        .unwrap(),
        "a plaintext request got an answer"
    );

    // The server side counts a request when its response body ends: give it a moment.
    let dest = |principal: &'static str, code: &'static str| {
        [
            ("reporter", "destination"),
            ("source_principal", principal),
            ("destination_workload", "greeter-v1"),
            ("response_code", code),
            ("connection_security_policy", "mutual_tls"),
        ]
    };
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = get(admin, "/stats/prometheus").await.1;
        if sample(&metrics, "istio_requests_total", &dest("spiffe://cluster.local/ns/default/sa/intruder", "403"))
            .is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let count = |labels: &[(&str, &str)]| sample(&metrics, "istio_requests_total", labels);
    assert_eq!(count(&dest("spiffe://cluster.local/ns/default/sa/caller", "200")), Some(1.0), "{metrics}");
    assert_eq!(count(&dest("spiffe://cluster.local/ns/default/sa/intruder", "403")), Some(1.0), "{metrics}");
    // Its own call, as the source.
    let upstream = [
        ("reporter", "source"),
        ("source_workload", "greeter-v1"),
        ("destination_service", "echo.example"),
        ("response_code", "200"),
    ];
    assert_eq!(count(&upstream), Some(1.0), "{metrics}");
    greeter.kill().await.unwrap();
}
