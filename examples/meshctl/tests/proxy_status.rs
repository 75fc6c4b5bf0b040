//! `meshctl proxy-status` against running proxies: embedded meshes serving their admin on
//! loopback, listed in a state directory as `bookinfo up` lists its proxies.

use std::{net::SocketAddr, path::Path, process::Command, sync::Arc, time::Duration};

use mesh_proxy::embed::Mesh;
use serde_json::Value;

fn seed(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in ["bookinfo.yaml", "bookinfo-gateway.yaml", "destination-rules.yaml"] {
        let from = format!("{}/../bookinfo/config/mesh/{f}", env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(from, dir.join(f)).unwrap();
    }
}

async fn meshctl(args: &[&str], dir: &Path) -> (i32, String, String) {
    let (args, dir): (Vec<String>, _) = (args.iter().map(|s| s.to_string()).collect(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_meshctl")).args(&args).current_dir(dir).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    })
    .await
    .unwrap()
}

/// An embedded mesh for `app`, its admin served on a port of its own.
async fn start(root: &Path, app: &str) -> (Arc<Mesh>, SocketAddr) {
    let mesh = Arc::new(
        Mesh::builder()
            .config(root.join(".mesh/config"))
            .ca_dir(root.join(".mesh/ca"))
            .label("app", app)
            .label("version", "v1")
            .workload(format!("{app}-v1"))
            .start()
            .await
            .unwrap(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let m = mesh.clone();
    tokio::spawn(async move { m.serve_admin(listener, std::future::pending()).await });
    (mesh, addr)
}

fn line<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no line for {name}:\n{out}"))
        .split_whitespace()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_line_per_proxy_synced_stale_unreachable_and_errors() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join(".mesh/config");
    seed(&config);
    let (_reviews, reviews_admin) = start(root.path(), "reviews").await;
    let (_ratings, ratings_admin) = start(root.path(), "ratings").await;
    // A port nothing listens on any more.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let state = serde_json::json!({
        "config_dir": config,
        "proxies": [
            {"name": "reviews-v1", "namespace": "default", "type": "embedded", "admin": reviews_admin.to_string()},
            {"name": "ratings-v1", "namespace": "default", "type": "embedded", "admin": ratings_admin.to_string()},
            {"name": "details-v1", "namespace": "default", "type": "sidecar", "admin": dead.to_string()},
        ],
    });
    std::fs::write(root.path().join(".mesh/proxies.json"), state.to_string()).unwrap();

    let (code, out, err) = meshctl(&["proxy-status"], root.path()).await;
    assert_eq!(code, 1, "a proxy did not answer: exit 1\n{out}{err}");
    let header = line(&out, "NAME");
    assert_eq!(
        header,
        ["NAME", "NAMESPACE", "TYPE", "ADMIN", "STATE", "GENERATION", "LOADED", "VERSION", "SYNC", "ERRORS"]
    );
    let reviews = line(&out, "reviews-v1");
    assert_eq!(reviews[..6], ["reviews-v1", "default", "embedded", &reviews_admin.to_string(), "LIVE", "1"]);
    assert!(reviews[6].ends_with('Z') && reviews[7].len() == 16, "{out}");
    assert_eq!(reviews[8..], ["SYNCED", "0"]);
    assert_eq!(line(&out, "ratings-v1")[8..], ["SYNCED", "0"]);
    let details = line(&out, "details-v1");
    assert_eq!((details[4], details[8]), ("UNREACHABLE", "-"));
    assert!(out.contains(&format!("details-v1.default: {dead}: ")), "why it did not answer:\n{out}");

    // Against a config with one more resource than the proxies run: STALE.
    let newer = root.path().join("newer");
    seed(&newer);
    let vs =
        format!("{}/../bookinfo/config/tutorial/networking/virtual-service-all-v1.yaml", env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(vs, newer.join("vs.yaml")).unwrap();
    let (_, out, _) = meshctl(&["proxy-status", "--config-dir", "newer"], root.path()).await;
    assert_eq!(line(&out, "reviews-v1")[8], "STALE", "{out}");

    // `--admin` alone: the proxy names itself; JSON for scripts.
    let (code, out, err) = meshctl(
        &["proxy-status", "--admin", &ratings_admin.to_string(), "--config-dir", ".mesh/config", "-o", "json"],
        root.path(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let p = &doc["proxies"][0];
    assert_eq!(
        (p["name"].as_str(), p["type"].as_str(), p["sync"].as_str()),
        (Some("ratings-v1"), Some("embedded"), Some("SYNCED"))
    );
    assert_eq!(doc["latest_version"], p["version"]);

    // A broken file in the watched directory: the proxies keep the last good config and say
    // why; nothing is the latest any more.
    std::fs::write(
        config.join("broken.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: x\nspec:\n  hosts: 7\n",
    )
    .unwrap();
    let mut last = String::new();
    for _ in 0..100 {
        let (_, out, err) = meshctl(&["proxy-status"], root.path()).await;
        last = format!("{out}{err}");
        if line(&out, "reviews-v1")[9] == "1" && line(&out, "ratings-v1")[9] == "1" {
            assert_eq!(line(&out, "reviews-v1")[5], "1", "the last good generation stays in force\n{last}");
            assert_eq!(line(&out, "reviews-v1")[8], "-", "{last}");
            assert!(
                out.contains("reviews-v1.default: ") && out.contains("broken.yaml:6"),
                "the finding, with file and line:\n{last}"
            );
            assert!(err.contains("the proxies keep the last good config"), "{last}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the reload's error never showed:\n{last}");
}

#[tokio::test]
async fn no_running_mesh_says_where_it_looked() {
    let root = tempfile::tempdir().unwrap();
    let (code, _, err) = meshctl(&["proxy-status"], root.path()).await;
    assert_eq!(code, 1);
    assert!(err.contains(".mesh/proxies.json") && err.contains("--admin ADDR"), "{err}");
}

/// Admins that never answer, answer without end, or trickle their answer: each is
/// UNREACHABLE with why, all are asked at once, and the command ends within its per-proxy
/// timeout whatever they do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_endless_or_trickling_admin_cannot_hold_proxy_status() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn fake(answer: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = conn.read(&mut [0u8; 1024]).await;
                    match answer {
                        "silent" => std::future::pending::<()>().await,
                        "endless" => {
                            let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                            if conn.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let chunk = format!("10000\r\n{}\r\n", "[".repeat(0x10000));
                            while conn.write_all(chunk.as_bytes()).await.is_ok() {}
                        }
                        _ => {
                            let head = "HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{";
                            let _ = conn.write_all(head.as_bytes()).await;
                            loop {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                if conn.write_all(b" ").await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }
    let (silent, endless, trickle) = (fake("silent").await, fake("endless").await, fake("trickle").await);
    let dir = tempfile::tempdir().unwrap();
    let started = tokio::time::Instant::now();
    let args = ["proxy-status", "--admin", &silent.to_string(), "--admin", &endless.to_string()];
    let (code, out, _) = meshctl(&[&args[..], &["--admin", &trickle.to_string()]].concat(), dir.path()).await;
    let took = started.elapsed();
    assert_eq!(code, 1, "{out}");
    assert!(took < Duration::from_secs(5), "asked one after another, or not bounded: {took:?}");
    assert_eq!(out.lines().filter(|l| l.contains("UNREACHABLE")).count(), 3, "{out}");
    assert!(out.contains(&format!("{silent}: {silent}: no answer within 3s")), "{out}");
    assert!(out.contains(&format!("{trickle}: {trickle}: no answer within 3s")), "{out}");
    assert!(out.contains(&format!("{endless}: {endless}: length limit exceeded")), "{out}");
}
