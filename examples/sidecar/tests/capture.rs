//! Transparent capture, in network namespaces the test makes itself (`ip netns add`, root
//! only: a test without the rights to make one skips and says why). Nothing is routed out of
//! them: the only addresses are on loopback and on a dummy interface inside the namespace.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    process::{Command, Output},
    sync::mpsc,
    time::Duration,
};

/// A network namespace of this test's own, removed when dropped (also when the test fails).
struct NetNs {
    name: String,
}

impl NetNs {
    /// `None`, with the reason printed, where namespaces cannot be made (not root).
    fn new(tag: &str) -> Option<Self> {
        let name = format!("mesh-test-{}-{tag}", std::process::id());
        match Command::new("ip").args(["netns", "add", &name]).output() {
            Ok(o) if o.status.success() => Some(Self { name }),
            Ok(o) => {
                eprintln!("skipped: cannot make a network namespace: {}", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run `ip` (iproute2): {e}");
                None
            }
        }
    }

    /// `sh -c script` inside the namespace.
    fn sh(&self, script: &str) -> Output {
        Command::new("ip").args(["netns", "exec", &self.name, "sh", "-c", script]).output().unwrap()
    }

    /// `script` must succeed inside the namespace; its stdout.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `mesh-sidecar iptables ARGS` inside the namespace.
    fn iptables(&self, args: &str) -> String {
        self.ok(&format!("{} iptables {args}", env!("CARGO_BIN_EXE_mesh-sidecar")))
    }

    /// A listener bound inside the namespace (made on a thread that entered it).
    fn listen(&self, addr: &str) -> TcpListener {
        let (path, addr) = (format!("/run/netns/{}", self.name), addr.to_string());
        std::thread::spawn(move || {
            let ns = std::fs::File::open(path).unwrap();
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .unwrap();
            TcpListener::bind(addr).unwrap()
        })
        .join()
        .unwrap()
    }
}

impl NetNs {
    /// The namespace's own /etc/resolv.conf (`ip netns exec` mounts it over the host's).
    fn resolv_conf(&self, text: &str) {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/resolv.conf"), text).unwrap();
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

/// `iptables-save` and `ip6tables-save` without their comment lines.
fn saved(ns: &NetNs) -> String {
    ns.ok("iptables-save; ip6tables-save").lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n")
}

#[test]
fn the_rules_are_idempotent_and_cleanup_removes_exactly_ours() {
    let Some(ns) = NetNs::new("rules") else { return };
    ns.ok("iptables -t nat -N KEEP_ME && iptables -t nat -A OUTPUT -j KEEP_ME");
    let args = "--capture-dns --exclude-inbound-ports 22 --exclude-outbound-ip-ranges 10.0.0.9/32,fd00::9";
    ns.iptables(args);
    let first = saved(&ns);
    for want in [
        "-A OUTPUT -p tcp -j MESH_OUTPUT",
        "-A PREROUTING -p tcp -j MESH_INBOUND",
        "-A MESH_INBOUND -p tcp -m tcp --dport 22 -j RETURN",
        "-A MESH_OUTPUT -d 10.0.0.9/32 -j RETURN",
        "-A MESH_OUTPUT -d fd00::9/128 -j RETURN",
        "-A MESH_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A MESH_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A MESH_OUTPUT_DNS -p udp -m udp --dport 53 -j REDIRECT --to-ports 15053",
        "-A MESH_INBOUND_DNS -p udp -m udp --sport 53 -j CT --zone 1",
    ] {
        assert!(first.lines().any(|l| l == want), "missing {want:?} in\n{first}");
    }
    // Again: one set, not two.
    ns.iptables(args);
    assert_eq!(saved(&ns), first);
    assert_eq!(first.matches("-A OUTPUT -p tcp -j MESH_OUTPUT").count(), 2, "one per family\n{first}");
    // --dry-run prints and changes nothing.
    let dry = ns.iptables("--dry-run --include-inbound-ports 9080");
    assert!(dry.contains("# iptables-restore\n*nat\n") && dry.contains("# ip6tables-restore\n"), "{dry}");
    assert!(dry.contains("-A MESH_INBOUND -p tcp --dport 9080 -j MESH_IN_REDIRECT"), "{dry}");
    assert_eq!(saved(&ns), first);
    // --cleanup: ours gone, the rest kept.
    ns.iptables("--cleanup");
    let after = saved(&ns);
    assert!(!after.contains("MESH_"), "{after}");
    assert!(after.contains("-A OUTPUT -j KEEP_ME"), "{after}");
    // Cleaning up nothing is not an error.
    ns.iptables("--cleanup");
}

#[test]
fn outbound_connections_are_captured_with_their_original_destination_but_the_proxys() {
    let Some(ns) = NetNs::new("outbound") else { return };
    // 10.99.0.2 is on a link where nobody answers: only the capture can make it reachable.
    ns.ok("ip link set lo up && ip link add mveth0 type veth peer name mveth1 && ip addr add 10.99.0.1/24 dev mveth0 && ip link set mveth0 up");
    // The proxy is root here; the app runs as nobody.
    ns.iptables("--proxy-uid 0 --proxy-gid 0 --include-inbound-ports ''");
    let listener = ns.listen("127.0.0.1:15001");
    let (tx, rx) = mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let local = conn.local_addr().unwrap();
            tx.send(mesh_proxy::capture::original_dst(&conn, local).unwrap()).unwrap();
            let mut head = [0u8; 1024];
            let _ = conn.read(&mut head);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 8\r\nconnection: close\r\n\r\ncaptured");
        }
    });
    let app = "setpriv --reuid=65534 --regid=65534 --clear-groups curl -s --max-time 5 http://10.99.0.2:9080/x";
    assert_eq!(ns.ok(app), "captured");
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), "10.99.0.2:9080".parse().unwrap());
    // The proxy's own connection goes where it was sent (nowhere here): never captured again.
    let proxy = ns.sh("curl -s --max-time 1 http://10.99.0.2:9080/x");
    assert!(!proxy.status.success());
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "the proxy's connection was captured");
    // Loopback from the app is the app talking to itself: not captured.
    let direct = ns.sh("setpriv --reuid=65534 --regid=65534 --clear-groups curl -s --max-time 1 http://127.0.0.1:9/");
    assert!(!direct.status.success());
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "loopback was captured");
}

/// Echo each read back, prefixed, on every connection to `listener`.
fn echo(listener: TcpListener, prefix: &'static str) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&[prefix.as_bytes(), &buf[..n]].concat()).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// A pod (the app as nobody, its sidecar as root, the capture rules) and, over a veth
/// pair, a host outside the mesh at 10.99.0.2. The pod's default route is that veth, as a
/// pod's is its node's: service addresses (10.96.0.0/16) are routable, and then captured.
struct Pod {
    pod: NetNs,
    _outside: NetNs,
    dir: tempfile::TempDir,
    sidecar: Option<Proc>,
}

impl Pod {
    fn new(tag: &str) -> Option<Self> {
        let (pod, outside) = (NetNs::new(&format!("{tag}-pod"))?, NetNs::new(&format!("{tag}-out"))?);
        pod.ok(&format!(
            "ip link set lo up && ip link add mveth0 type veth peer name mveth1 netns {} && ip addr add 10.99.0.1/24 dev mveth0 && ip link set mveth0 up && ip route add default dev mveth0",
            outside.name
        ));
        outside.ok("ip link set lo up && ip addr add 10.99.0.2/24 dev mveth1 && ip link set mveth1 up");
        echo(outside.listen("10.99.0.2:9000"), "db: ");
        echo(outside.listen("10.99.0.2:7000"), "outside: ");
        http_app(outside.listen("10.99.0.2:9080"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(
            dir.path().join("config/mesh.yaml"),
            r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleep}
spec:
  selector: {matchLabels: {app: sleep}}
  template: {metadata: {labels: {app: sleep}}, spec: {serviceAccountName: sleep, containers: [{name: s}]}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.internal]
  addresses: [10.99.0.50]
  ports: [{number: 9000, name: tcp, protocol: TCP}]
  location: MESH_EXTERNAL
  resolution: STATIC
  endpoints: [{address: 10.99.0.2}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews}
spec: {clusterIP: 10.96.0.20, selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  template: {metadata: {labels: {app: reviews, version: v1}}, spec: {serviceAccountName: bookinfo-reviews, containers: [{name: r}]}}
---
# reviews-v1 runs outside, without a sidecar.
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec: {host: reviews, trafficPolicy: {tls: {mode: DISABLE}}}
"#,
        )
        .unwrap();
        // A pod's resolver: a nameserver (nobody answers there) and the search path.
        pod.resolv_conf("nameserver 10.99.0.2\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:1\n");
        // The sidecar runs as root, so root is the proxy's user; the app is nobody.
        pod.iptables("--proxy-uid 0 --proxy-gid 0 --include-inbound-ports '' --capture-dns");
        Some(Self { pod, _outside: outside, dir, sidecar: None })
    }

    /// (Re)start the sidecar, with `mesh_config` as Istio's mesh config.
    fn start(&mut self, mesh_config: &str) {
        self.sidecar = None;
        let mesh = self.dir.path().join("meshconfig.yaml");
        std::fs::write(&mesh, mesh_config).unwrap();
        let mesh = mesh.display().to_string();
        let args = [
            "--capture-outbound",
            "127.0.0.1:15001",
            "--workload-labels",
            "app=sleep",
            "--mesh-config",
            &mesh,
            "--endpoint",
            "default/reviews-v1=10.99.0.2:9080",
            "--dns",
            "127.0.0.1:15053",
        ];
        self.sidecar = Some(sidecar(&self.pod, self.dir.path(), &args));
    }

    /// The app (nobody, no proxy settings) sends `line` to `addr`: what comes back.
    fn app_says(&self, addr: &str, line: &str) -> String {
        let (host, port) = addr.rsplit_once(':').unwrap();
        let script = format!(
            "import socket\ns=socket.create_connection(('{host}',{port}),timeout=5)\ns.sendall(b'{line}')\ntry:\n  print(s.recv(512).decode(),end='')\nexcept Exception:\n  pass\n"
        );
        let out = self
            .pod
            .sh(&format!("setpriv --reuid=65534 --regid=65534 --clear-groups /usr/bin/python3 -c \"{script}\""));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn stats(&self) -> String {
        self.pod.ok("curl -s http://127.0.0.1:15000/stats/prometheus")
    }
}

/// `istio_tcp_connections_opened_total` whose `destination_service_name` is `name`.
fn opened(stats: &str, name: &str) -> usize {
    stats
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .filter(|l| l.contains(&format!("destination_service_name=\"{name}\"")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as usize)
        .sum()
}

#[test]
fn captured_connections_go_by_their_original_destination_and_the_outbound_policy() {
    let Some(mut pod) = Pod::new("policy") else { return };
    pod.start("");
    // A ServiceEntry's address: that service's traffic, through the TCP proxy.
    assert_eq!(pod.app_says("10.99.0.50:9000", "hello"), "db: hello");
    // No service at that address: ALLOW_ANY (the default) lets it through, as it was sent.
    assert_eq!(pod.app_says("10.99.0.2:7000", "hello"), "outside: hello");
    let stats = pod.stats();
    assert_eq!((opened(&stats, "db"), opened(&stats, "PassthroughCluster")), (1, 1), "{stats}");
    // A Service's HTTP port: the HTTP stack, by name or by its address.
    let app = "setpriv --reuid=65534 --regid=65534 --clear-groups curl -s --max-time 5";
    assert_eq!(pod.pod.ok(&format!("{app} http://10.96.0.20:9080/reviews/0")), "reviews-v1");
    assert_eq!(
        pod.pod.ok(&format!("{app} --resolve reviews:9080:10.96.0.20 http://reviews:9080/reviews/0")),
        "reviews-v1"
    );
    let stats = pod.stats();
    let routed = stats
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"source\""))
        .filter(|l| {
            l.contains("destination_service=\"reviews.default.svc.cluster.local\"")
                && l.contains("response_code=\"200\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum::<f64>();
    assert_eq!(routed, 2.0, "{stats}");
    // By name, as an app knows it: the pod's DNS goes to the sidecar's DNS proxy, which
    // answers the Service's address; the connection to it is captured as above.
    assert_eq!(pod.pod.ok(&format!("{app} http://reviews:9080/reviews/0")), "reviews-v1");
    let nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups";
    assert_eq!(pod.pod.ok(&format!("{nobody} getent hosts db.internal")).split_whitespace().next(), Some("10.99.0.50"));
    // A cluster name nobody defines does not exist; a name outside: its resolvers' (none
    // answers here), so it fails too.
    assert!(!pod.pod.sh(&format!("{nobody} getent hosts nope.default.svc.cluster.local")).status.success());
    assert!(!pod.pod.sh(&format!("{nobody} getent hosts example.org")).status.success());

    // REGISTRY_ONLY: the unknown destination is closed; the ServiceEntry still works.
    pod.start("outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n");
    assert_eq!(pod.app_says("10.99.0.2:7000", "hello"), "");
    assert_eq!(pod.app_says("10.99.0.50:9000", "again"), "db: again");
    let stats = pod.stats();
    assert_eq!((opened(&stats, "BlackHoleCluster"), opened(&stats, "PassthroughCluster")), (1, 0), "{stats}");

    // The workload's Sidecar resource wins over the mesh config, and is taken without a
    // restart.
    std::fs::write(
        pod.dir.path().join("config/sidecar.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: sleep}\nspec:\n  workloadSelector: {labels: {app: sleep}}\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n",
    )
    .unwrap();
    let mut through = String::new();
    for _ in 0..100 {
        through = pod.app_says("10.99.0.2:7000", "hello");
        if !through.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(through, "outside: hello");
}

/// An HTTP app: answers every request with `reviews-v1`.
fn http_app(listener: TcpListener) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\nconnection: close\r\n\r\nreviews-v1");
            });
        }
    });
}

/// A sidecar process in `ns`, killed when dropped.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sidecar(ns: &NetNs, dir: &std::path::Path, args: &[&str]) -> Proc {
    let d = dir.display();
    let proc = Proc(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_mesh-sidecar")])
            .args(["--config", &format!("{d}/config"), "--ca-dir", &format!("{d}/ca"), "--admin", "127.0.0.1:15000"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if ns.sh("curl -s http://127.0.0.1:15000/ready").stdout.starts_with(b"LIVE") {
            return proc;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the sidecar in {} did not come up", ns.name);
}

/// STRICT cannot be bypassed: the app binds 0.0.0.0, and still a plaintext client in another
/// pod that connects straight to its port is refused, while a meshed caller reaches it over
/// mTLS through the inbound capture, counted by the destination's sidecar.
#[test]
fn an_app_bound_to_every_address_is_reachable_only_through_its_sidecar() {
    let Some(pod) = NetNs::new("in-pod") else { return };
    let Some(caller) = NetNs::new("in-caller") else { return };
    pod.ok(&format!(
        "ip link set lo up && ip link add mveth0 type veth peer name mveth1 netns {} && ip addr add 10.99.0.1/24 dev mveth0 && ip link set mveth0 up",
        caller.name
    ));
    caller.ok("ip link set lo up && ip addr add 10.99.0.2/24 dev mveth1 && ip link set mveth1 up");
    http_app(pod.listen("0.0.0.0:9080"));
    // Before the capture: the app answers anyone in plaintext.
    assert_eq!(caller.ok("curl -s --max-time 5 http://10.99.0.1:9080/"), "reviews-v1");

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    let config = mesh_config::test_util::Manifest::new()
        .service("reviews", 9080)
        .deployment("reviews", "v1", Some("bookinfo-reviews"))
        .deployment("productpage", "v1", Some("bookinfo-productpage"))
        .doc("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default}\nspec: {mtls: {mode: STRICT}}")
        .to_string();
    std::fs::write(dir.path().join("config/mesh.yaml"), config).unwrap();
    pod.iptables("--proxy-uid 0 --proxy-gid 0 --include-outbound-ip-ranges ''");
    let _reviews = sidecar(
        &pod,
        dir.path(),
        &["--capture-inbound", "0.0.0.0:15006", "--workload-labels", "app=reviews,version=v1"],
    );
    let _productpage = sidecar(
        &caller,
        dir.path(),
        &[
            "--outbound",
            "127.0.0.1:15080",
            "--workload-labels",
            "app=productpage,version=v1",
            // The pod's address and the app's port, as an EndpointSlice would give them.
            "--endpoint",
            "default/reviews-v1=10.99.0.1:9080",
        ],
    );

    // Plaintext straight to the app's port: captured, and STRICT refuses it.
    let plain = caller.sh("curl -s --max-time 5 http://10.99.0.1:9080/");
    assert!(plain.stdout.is_empty(), "plaintext reached the app: {}", String::from_utf8_lossy(&plain.stdout));
    // Through the caller's sidecar: mTLS to 10.99.0.1:9080, captured into the inbound.
    assert_eq!(
        caller.ok("curl -s --max-time 5 -H 'host: reviews:9080' http://127.0.0.1:15080/reviews/0"),
        "reviews-v1"
    );
    let stats = pod.ok("curl -s http://127.0.0.1:15000/stats/prometheus");
    let line = stats
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("reporter=\"destination\""))
        .unwrap_or_else(|| panic!("no destination report:\n{stats}"));
    for want in [
        "source_workload=\"productpage-v1\"",
        "destination_workload=\"reviews-v1\"",
        "connection_security_policy=\"mutual_tls\"",
        "response_code=\"200\"",
    ] {
        assert!(line.contains(want), "{want} in {line}");
    }
}
