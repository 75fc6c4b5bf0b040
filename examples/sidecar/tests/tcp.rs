//! Plain TCP through two sidecars: Istio's TCP traffic shifting task on loopback.

mod support;

use std::time::Duration;

use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The task's client, `sleep`, and the `tcp-echo` Service with Deployments of `versions`.
fn tcp_echo(versions: &[&str]) -> Manifest {
    let sleep = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleep}
spec:
  selector: {matchLabels: {app: sleep}}
  template: {metadata: {labels: {app: sleep}}, spec: {serviceAccountName: sleep, containers: [{name: s}]}}
"#;
    let m = Manifest::new().service_port("tcp-echo", "tcp", 9000).doc(sleep);
    versions.iter().fold(m, |m, v| m.deployment("tcp-echo", v, Some("tcp-echo")))
}

static CONFIG: LazyLock<String> = LazyLock::new(|| {
    tcp_echo(&["v1", "v2"])
        .doc(
            r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: tcp-echo-destination}
spec:
  host: tcp-echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#,
        )
        .doc(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp-echo}
spec:
  hosts: [tcp-echo]
  tcp:
  - match: [{port: 9000}]
    route:
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v1}, weight: 80}
    - {destination: {host: tcp-echo, port: {number: 9000}, subset: v2}, weight: 20}
"#,
        )
        .doc(
            r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
"#,
        )
        .to_string()
});

/// The task's tcp-echo server: answers each line with `<prefix> <line>`.
async fn echo(prefix: &'static str) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                loop {
                    let n = match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let reply = format!("{prefix} {}", String::from_utf8_lossy(&buf[..n]));
                    if tcp.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn say(addr: std::net::SocketAddr, line: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(line.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_traffic_shifting_over_mtls() {
    let mesh = Mesh::new(&[("tcp-echo.yaml", CONFIG.as_str())]);
    let v1 = Sidecar::start(&mesh, Spec::server("app=tcp-echo,version=v1", echo("one").await));
    let v2 = Sidecar::start(&mesh, Spec::server("app=tcp-echo,version=v2", echo("two").await));
    let sleep = Sidecar::start(
        &mesh,
        Spec::client("app=sleep")
            .endpoint("tcp-echo-v1", v1.inbound())
            .endpoint("tcp-echo-v2", v2.inbound())
            .tcp("tcp-echo:9000"),
    );
    let local = sleep.listeners["tcp tcp-echo:9000"];
    let mut ones = 0;
    for i in 0..100 {
        let reply = say(local, &format!("hello {i}\n")).await;
        match reply.split_once(' ') {
            Some(("one", rest)) => {
                assert_eq!(rest, format!("hello {i}\n"));
                ones += 1;
            }
            Some(("two", _)) => {}
            _ => panic!("unexpected reply {reply:?}"),
        }
    }
    // Binomial(100, 0.8): mean 80, standard deviation 4; this bound is 5 of them.
    assert!((60..=100).contains(&ones) && ones < 100, "v1 took {ones} of 100");

    // STRICT: a plaintext client straight to the server's sidecar gets nothing back.
    let mut plain = TcpStream::connect(v1.inbound()).await.unwrap();
    let _ = plain.write_all(b"sneaky\n").await;
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "plaintext got an answer: {:?}", &buf[..n]);

    // Both reporters count the connections.
    eventually("TCP metrics on both sides", async || {
        let source = sleep.admin_get("/stats/prometheus").await.body;
        let dest = v1.admin_get("/stats/prometheus").await.body;
        let opened = |text: &str, reporter: &str| {
            total(
                text,
                "istio_tcp_connections_opened_total",
                &[("reporter", reporter), ("destination_workload", "tcp-echo-v1")],
            )
        };
        let closed_dest =
            total(&dest, "istio_tcp_connections_closed_total", &[("connection_security_policy", "mutual_tls")]);
        opened(&source, "source") == f64::from(ones)
            && opened(&dest, "destination") == f64::from(ones)
            && closed_dest == f64::from(ones)
            && total(
                &dest,
                "istio_tcp_sent_bytes_total",
                &[("source_principal", "spiffe://cluster.local/ns/default/sa/sleep")],
            ) > 0.0
    })
    .await;
}

/// A DestinationRule's `tls.mode: ISTIO_MUTUAL` holds for plain TCP as for HTTP: the
/// connection goes out as TLS (here to a plaintext server, which sees a ClientHello), never
/// as plaintext. `DISABLE` sends the bytes as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_follows_the_destination_rules_tls_mode() {
    const LEGACY: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: legacy}
spec: {ports: [{port: 9000, name: tcp}], selector: {app: legacy}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: legacy}
spec:
  selector: {matchLabels: {app: legacy}}
  template: {metadata: {labels: {app: legacy}}, spec: {containers: [{name: l}]}}
---
apiVersion: v1
kind: Service
metadata: {name: plain}
spec: {ports: [{port: 9000, name: tcp}], selector: {app: plain}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain}
spec:
  selector: {matchLabels: {app: plain}}
  template: {metadata: {labels: {app: plain}}, spec: {serviceAccountName: plain, containers: [{name: p}]}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: legacy}
spec:
  host: legacy
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: plain}
spec:
  host: plain
  trafficPolicy: {tls: {mode: DISABLE}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleep}
spec:
  selector: {matchLabels: {app: sleep}}
  template: {metadata: {labels: {app: sleep}}, spec: {serviceAccountName: sleep, containers: [{name: s}]}}
"#;
    /// A server that reports the first byte each connection sends.
    async fn first_bytes() -> (std::net::SocketAddr, tokio::sync::mpsc::UnboundedReceiver<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut b = [0u8; 1];
                if tcp.read_exact(&mut b).await.is_ok() {
                    let _ = tx.send(b[0]);
                }
            }
        });
        (addr, rx)
    }
    let mesh = Mesh::new(&[("legacy.yaml", LEGACY)]);
    let (legacy, mut legacy_seen) = first_bytes().await;
    let (plain, mut plain_seen) = first_bytes().await;
    let sleep = Sidecar::start(
        &mesh,
        Spec::client("app=sleep")
            .endpoint("legacy", legacy)
            .endpoint("plain", plain)
            .tcp("legacy:9000")
            .tcp("plain:9000"),
    );
    for (listener, seen, want) in
        [("tcp legacy:9000", &mut legacy_seen, 0x16u8), ("tcp plain:9000", &mut plain_seen, b'h')]
    {
        let mut tcp = TcpStream::connect(sleep.listeners[listener]).await.unwrap();
        tcp.write_all(b"hello\n").await.unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), seen.recv()).await.unwrap().unwrap();
        assert_eq!(first, want, "{listener}: first byte on the wire {first:#x}");
    }
}

/// A refused connect is tried again on another endpoint, as mesh-route's
/// `RetryPolicy::tcp_connect` says (two retries): with two dead endpoints of three the
/// connection still reaches the live one. With all three dead, the connection is closed and
/// counted `UF,URX` (Envoy's TCP proxy: connect attempts exhausted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connect_is_retried_on_another_endpoint_then_urx() {
    let config = tcp_echo(&["v1", "v2", "v3"]).to_string();
    let mesh = Mesh::new(&[("tcp-echo.yaml", config.as_str())]);
    let dead = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap() // closed when `l` drops: connects are refused
    };
    let (dead1, dead2, dead3) = (dead(), dead(), dead());
    let v3 = Sidecar::start(&mesh, Spec::server("app=tcp-echo,version=v3", echo("three").await));
    let live = Sidecar::start(
        &mesh,
        Spec::client("app=sleep")
            .endpoint("tcp-echo-v1", dead1)
            .endpoint("tcp-echo-v2", dead2)
            .endpoint("tcp-echo-v3", v3.inbound())
            .tcp("tcp-echo:9000"),
    );
    let local = live.listeners["tcp tcp-echo:9000"];
    for i in 0..20 {
        assert_eq!(say(local, &format!("hi {i}\n")).await, format!("three hi {i}\n"));
    }

    let all_dead = Sidecar::start(
        &mesh,
        Spec::client("app=sleep")
            .endpoint("tcp-echo-v1", dead1)
            .endpoint("tcp-echo-v2", dead2)
            .endpoint("tcp-echo-v3", dead3)
            .tcp("tcp-echo:9000"),
    );
    let local = all_dead.listeners["tcp tcp-echo:9000"];
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(local).await.unwrap();
        let _ = tcp.write_all(b"anyone?\n").await;
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await.unwrap().unwrap_or(0);
        assert_eq!(n, 0, "a dead service answered: {:?}", &buf[..n]);
    }
    eventually("connections counted UF,URX", async || {
        let text = all_dead.admin_get("/stats/prometheus").await.body;
        total(&text, "istio_tcp_connections_opened_total", &[("response_flags", "UF,URX")]) == 3.0
    })
    .await;
    let text = live.admin_get("/stats/prometheus").await.body;
    assert_eq!(total(&text, "istio_tcp_connections_opened_total", &[("response_flags", "-")]), 20.0, "{text}");
}
