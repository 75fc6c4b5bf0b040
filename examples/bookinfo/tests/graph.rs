//! The service graph stays legible at twice Bookinfo's size: a synthetic mesh (two copies of
//! Bookinfo behind one gateway, served as one proxy's metrics), drawn by the dashboard in
//! headless Chromium; no drawn label box may overlap another (the page measures its own DOM).

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use bookinfo::dashboard::{Dashboard, INTERVAL};
use bytes::Bytes;
use http_body_util::Full;

/// Two Bookinfos' edges: (caller, callee), as the callers' proxies report them.
fn edges() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for copy in ["", "2"] {
        let (pp, details, reviews, ratings) = (
            format!("productpage{copy}"),
            format!("details{copy}"),
            format!("reviews{copy}"),
            format!("ratings{copy}"),
        );
        out.push(("istio-ingressgateway".to_string(), format!("{pp}-v1")));
        out.push((format!("{pp}-v1"), format!("{details}-v1")));
        for v in ["v1", "v2", "v3"] {
            out.push((format!("{pp}-v1"), format!("{reviews}-{v}")));
        }
        for v in ["v2", "v3"] {
            out.push((format!("{reviews}-{v}"), format!("{ratings}-v1")));
        }
    }
    out
}

fn exposition(n: u64) -> String {
    let mut text = String::new();
    for (s, d) in edges() {
        let l = format!("source_workload=\"{s}\",destination_workload=\"{d}\"");
        text += &format!(
            "istio_requests_total{{reporter=\"source\",{l},response_code=\"200\",response_flags=\"-\"}} {}\n",
            n * 10
        );
        if d == "ratings2-v1" && s == "reviews2-v3" {
            // A failing edge: some 503s with upstream connection failures.
            text += &format!(
                "istio_requests_total{{reporter=\"source\",{l},response_code=\"503\",response_flags=\"UF\"}} {}\n",
                n * 3
            );
        }
        text += &format!(
            "istio_requests_total{{reporter=\"destination\",{l},response_code=\"200\",connection_security_policy=\"mutual_tls\",source_principal=\"spiffe://cluster.local/ns/default/sa/{s}\",destination_principal=\"spiffe://cluster.local/ns/default/sa/{d}\"}} {}\n",
            n * 10
        );
        for le in ["5", "10", "+Inf"] {
            text += &format!(
                "istio_request_duration_milliseconds_bucket{{reporter=\"source\",{l},le=\"{le}\"}} {}\n",
                n * 10
            );
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_stays_legible_at_twice_bookinfos_size() {
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("chromium is needed for the dashboard test (apt-get install chromium; .ci/run installs it)");
    // The synthetic proxy: its counters grow with every scrape.
    let scrapes = Arc::new(AtomicU64::new(0));
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let s = scrapes.clone();
    tokio::spawn(bookinfo::http::serve(admin, move |_req| {
        let n = s.fetch_add(1, Ordering::Relaxed) + 1;
        async move { http::Response::new(Full::new(Bytes::from(exposition(n)))) }
    }));
    let dashboard = Dashboard::new(vec![("istio-ingressgateway".to_string(), admin_addr)]);
    dashboard.scrape(INTERVAL).await;
    dashboard.scrape(INTERVAL).await;
    let graph = dashboard.graph();
    assert_eq!(graph["nodes"].as_array().unwrap().len(), 13, "{graph}");
    assert_eq!(graph["edges"].as_array().unwrap().len(), 14);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let d = dashboard.clone();
    tokio::spawn(bookinfo::http::serve(listener, move |req| {
        let d = d.clone();
        async move { d.serve(req).await }
    }));
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let browse = |extra: String| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let out = Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--virtual-time-budget=4000",
                    "--window-size=1600,1200",
                ])
                .arg(extra)
                .arg(&url)
                .output()
                .expect("chromium runs");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let dom = browse("--dump-dom".into()).await.unwrap();
    let labels: usize = dom
        .split("data-labels=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the page measured nothing:\n{dom}"));
    assert!(labels >= 13 + 8, "node boxes and app names at least: {labels}");
    assert!(dom.contains("data-overlaps=\"0\""), "label boxes overlap at twice Bookinfo's size:\n{dom}");
    assert!(
        dom.contains("class=\"edge failing\" data-edge=\"reviews2-v3-&gt;ratings2-v1\""),
        "the failing edge is red"
    );
    assert_eq!(dom.matches("class=\"edge failing\"").count(), 1, "only that one");
    for app in ["reviews", "reviews2", "productpage2", "ratings2"] {
        assert!(dom.contains(&format!("data-app=\"{app}\"")), "no {app} group");
    }
    let shot = artifacts.join("dashboard-double.png");
    browse(format!("--screenshot={}", shot.display())).await.unwrap();
    assert!(shot.exists());
}
