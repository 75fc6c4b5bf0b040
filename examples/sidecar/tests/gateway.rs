//! mesh-sidecar as the ingress gateway: Istio's "ingress gateways" and "secure gateways"
//! tasks on loopback, certificates made with openssl and requests sent with curl, as the
//! tutorial does.

mod support;

use std::{path::Path, process::Command};

use support::*;

static CONFIG: LazyLock<String> = LazyLock::new(|| {
    Manifest::new()
        .service("productpage", 9080)
        .deployment("productpage", "v1", Some("bookinfo-productpage"))
        .doc(
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: SIMPLE, credentialName: bookinfo-credential}
  - port: {number: 443, name: https-httpbin, protocol: HTTPS}
    hosts: [httpbin.example.com]
    tls: {mode: SIMPLE, credentialName: httpbin-credential}
  - port: {number: 8443, name: https-mutual, protocol: HTTPS}
    hosts: [bookinfo.example.com]
    tls: {mode: MUTUAL, credentialName: bookinfo-credential}
  - port: {number: 8000, name: http-redirect, protocol: HTTP}
    hosts: [bookinfo.example.com]
    tls: {httpsRedirect: true}
"#,
        )
        .doc(
            r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {exact: /productpage}}, {uri: {prefix: /static}}]
    route: [{destination: {host: productpage, port: {number: 9080}}}]
"#,
        )
        .to_string()
});

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A self-signed CA `NAME.crt`/`NAME.key`.
fn ca(dir: &Path, name: &str, subject: &str) {
    let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
    let mut args = vec!["req", "-x509", "-sha256", "-days", "2", "-subj", subject];
    args.extend(EC);
    args.extend(["-keyout", &key, "-out", &crt]);
    openssl(dir, &args);
}

/// `WHO.crt`/`WHO.key` for CN=WHO.example.com with the extension `ext`, signed by `ca`.
fn leaf(dir: &Path, who: &str, ext: &str, ca: &str, serial: &str) {
    let (subject, key, crt) = (format!("/CN={who}.example.com"), format!("{who}.key"), format!("{who}.crt"));
    let mut args = vec!["req", "-out", "x.csr", "-subj", &subject];
    args.extend(EC);
    args.extend(["-keyout", &key]);
    openssl(dir, &args);
    std::fs::write(dir.join("ext.cnf"), ext).unwrap();
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "2",
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-set_serial",
            serial,
            "-in",
            "x.csr",
            "-out",
            &crt,
            "-extfile",
            "ext.cnf",
        ],
    );
}

const EC: [&str; 5] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

/// A root CA, a server certificate for bookinfo.example.com (and a second one, `rotated`,
/// for the same name), one for httpbin.example.com and a client certificate, in
/// `credentials/NAME/{tls.crt,tls.key,ca.crt}` as Istio mounts a secret; and a second
/// client CA with a client of its own, for the rotation of `ca.crt`.
fn certificates(dir: &Path) {
    ca(dir, "example.com", "/O=example Inc./CN=example.com");
    for (who, ext) in [
        ("bookinfo", "subjectAltName=DNS:bookinfo.example.com"),
        ("rotated", "subjectAltName=DNS:bookinfo.example.com"),
        ("client", "extendedKeyUsage=clientAuth"),
        ("httpbin", "subjectAltName=DNS:httpbin.example.com"),
    ] {
        leaf(dir, who, ext, "example.com", "1");
    }
    ca(dir, "other-ca", "/O=other Inc./CN=other.example");
    leaf(dir, "client2", "extendedKeyUsage=clientAuth", "other-ca", "2");
    let secret = dir.join("credentials/bookinfo-credential");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::copy(dir.join("bookinfo.crt"), secret.join("tls.crt")).unwrap();
    std::fs::copy(dir.join("bookinfo.key"), secret.join("tls.key")).unwrap();
    std::fs::copy(dir.join("example.com.crt"), secret.join("ca.crt")).unwrap();
    let httpbin = dir.join("credentials/httpbin-credential");
    std::fs::create_dir_all(&httpbin).unwrap();
    std::fs::copy(dir.join("httpbin.crt"), httpbin.join("tls.crt")).unwrap();
    std::fs::copy(dir.join("httpbin.key"), httpbin.join("tls.key")).unwrap();
}

/// curl's status line and body: `-w '%{http_code}'` after the body.
fn curl(args: &[String]) -> (String, String) {
    let out = Command::new("curl").args(["-sS", "-w", "\n%{http_code}"]).args(args).output().expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.to_string(), format!("{body}{}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_over_http_https_and_mutual_tls_with_curl() {
    let mesh = Mesh::new(&[("bookinfo.yaml", CONFIG.as_str())]);
    let dir = mesh.dir.path();
    certificates(dir);
    let app = App::named("productpage").await;
    let pp = Sidecar::start(&mesh, Spec::server("app=productpage,version=v1", app.addr));
    let gw = Sidecar::start(
        &mesh,
        Spec::gateway("default/bookinfo-gateway", &[8080, 443, 8443, 8000])
            .endpoint("productpage-v1", pp.inbound())
            .arg("--credential-dir")
            .arg(&path(&dir.join("credentials"))),
    );
    let http = gw.gateway[&8080];
    let r = get(http, "anything.example:80", "/productpage").await;
    assert_eq!((r.status, r.body.as_str()), (200, "productpage"), "{r:?}");
    assert_eq!(get(http, "anything.example", "/other").await.status, 404, "no route: 404 NR");
    // Both framings in one head: 400 and closed at the gateway as at every listener.
    let both = raw(
        http,
        b"POST /productpage HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(both.starts_with("HTTP/1.1 400") && both.contains("connection: close"), "{both}");

    // SIMPLE TLS, as the secure gateways task checks it.
    let https = gw.gateway[&443];
    let resolve = format!("bookinfo.example.com:{}:127.0.0.1", https.port());
    let url = format!("https://bookinfo.example.com:{}/productpage", https.port());
    let cacert = path(&dir.join("example.com.crt"));
    let (code, body) = curl(&["--resolve".into(), resolve.clone(), "--cacert".into(), cacert.clone(), url.clone()]);
    assert_eq!((code.as_str(), body.as_str()), ("200", "productpage"));
    // Over HTTP/2 too (ALPN).
    let (code, _) = curl(&["--http2".into(), "--resolve".into(), resolve, "--cacert".into(), cacert.clone(), url]);
    assert_eq!(code, "200");
    // Two hosts on one port, each with its own certificate (Istio's "TLS ingress gateway
    // for multiple hosts"): the SNI picks it.
    for host in ["bookinfo", "httpbin"] {
        let (code, out) = curl(&[
            "-v".into(),
            "--resolve".into(),
            format!("{host}.example.com:{}:127.0.0.1", https.port()),
            "--cacert".into(),
            cacert.clone(),
            format!("https://{host}.example.com:{}/productpage", https.port()),
        ]);
        assert_eq!(code, "200", "{out}");
        assert!(out.contains(&format!("CN={host}.example.com")), "{host} got another certificate:\n{out}");
    }

    // The credential rotates (as a Secret update reaches Istio's gateway over SDS): the
    // new certificate is served without a restart.
    let secret = dir.join("credentials/bookinfo-credential");
    for (from, to) in [("rotated.key", "tls.key"), ("rotated.crt", "tls.crt")] {
        std::fs::copy(dir.join(from), secret.join(format!(".{to}"))).unwrap();
        std::fs::rename(secret.join(format!(".{to}")), secret.join(to)).unwrap();
    }
    let resolve_https = format!("bookinfo.example.com:{}:127.0.0.1", https.port());
    let url_https = format!("https://bookinfo.example.com:{}/productpage", https.port());
    eventually("the rotated certificate to be served", async || {
        let (code, out) = curl(&[
            "-v".into(),
            "--resolve".into(),
            resolve_https.clone(),
            "--cacert".into(),
            cacert.clone(),
            url_https.clone(),
        ]);
        code == "200" && out.contains("CN=rotated.example.com")
    })
    .await;

    // MUTUAL: without a client certificate the handshake fails; with one, it passes.
    let mutual = gw.gateway[&8443];
    let resolve = format!("bookinfo.example.com:{}:127.0.0.1", mutual.port());
    let url = format!("https://bookinfo.example.com:{}/productpage", mutual.port());
    let base = vec!["--resolve".to_string(), resolve, "--cacert".into(), cacert];
    let (code, err) = curl(&[base.clone(), vec![url.clone()]].concat());
    assert_eq!(code, "000", "no client certificate must fail the handshake: {err}");
    let client = |who: &str| {
        let mut a = base.clone();
        a.extend([
            "--cert".to_string(),
            path(&dir.join(format!("{who}.crt"))),
            "--key".into(),
            path(&dir.join(format!("{who}.key"))),
            url.clone(),
        ]);
        curl(&a)
    };
    let (code, body) = client("client");
    assert_eq!((code.as_str(), body.as_str()), ("200", "productpage"));
    assert_eq!(client("client2").0, "000", "a client of another CA is refused");

    // The client CA rotates (the Secret's ca.crt): clients of the new CA get in, those of
    // the old one no longer, without a restart.
    std::fs::copy(dir.join("other-ca.crt"), secret.join(".ca.crt")).unwrap();
    std::fs::rename(secret.join(".ca.crt"), secret.join("ca.crt")).unwrap();
    eventually("the rotated client CA to be in force", async || client("client2").0 == "200").await;
    assert_eq!(client("client").0, "000", "the old CA's client is refused after the rotation");

    let info: serde_json::Value = serde_json::from_str(&gw.admin_get("/server_info").await.body).unwrap();
    assert_eq!((info["type"].as_str(), info["namespace"].as_str()), (Some("gateway"), Some("istio-system")), "{info}");

    // httpsRedirect.
    let r = get(gw.gateway[&8000], "bookinfo.example.com:8000", "/productpage?u=1").await;
    assert_eq!(r.status, 301);
    assert_eq!(r.headers["location"], "https://bookinfo.example.com/productpage?u=1");

    // The gateway reports as Istio's ingress gateway, over mTLS to productpage: the pages
    // above (two over TLS, one after the rotation at least, one with a client certificate,
    // one plain).
    eventually("productpage's destination metrics", async || {
        let text = pp.admin_get("/stats/prometheus").await.body;
        total(
            &text,
            "istio_requests_total",
            &[
                ("reporter", "destination"),
                ("source_workload", "istio-ingressgateway"),
                ("source_principal", "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"),
                ("connection_security_policy", "mutual_tls"),
            ],
        ) >= 5.0
    })
    .await;
}

/// A changed Gateway is served without a restart, as Istio's gateways take one: a host with
/// its own certificate added to a port, httpsRedirect turned on, a port turned to TLS (the
/// scheme routes match follows the connection), a port's servers removed (its connections
/// closed). A Gateway that cannot be served (a certificate that is not there) is logged and
/// the last good listeners keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_gateway_is_served_without_a_restart() {
    let config = |servers: &str, https_tag: &str| {
        Manifest::new()
            .service("productpage", 9080)
            .deployment("productpage", "v1", Some("bookinfo-productpage"))
            .doc(&format!(
                "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n{servers}"
            ))
            .doc(&format!(
                r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pages}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http:
  - match: [{{scheme: {{exact: https}}}}]
    route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
    headers: {{response: {{set: {{x-scheme: {https_tag}}}}}}}
  - route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]
    headers: {{response: {{set: {{x-scheme: http}}}}}}
"#
            ))
            .to_string()
    };
    let http = "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";
    let redirect =
        "  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls: {httpsRedirect: true}\n";
    let tls_8080 = "  - port: {number: 8080, name: https-8080, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: bookinfo-credential}\n";
    let bookinfo = "  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [bookinfo.example.com]\n    tls: {mode: SIMPLE, credentialName: bookinfo-credential}\n";
    let httpbin = "  - port: {number: 443, name: https-httpbin, protocol: HTTPS}\n    hosts: [httpbin.example.com]\n    tls: {mode: SIMPLE, credentialName: httpbin-credential}\n";
    let missing = "  - port: {number: 443, name: https-other, protocol: HTTPS}\n    hosts: [other.example.com]\n    tls: {mode: SIMPLE, credentialName: missing-credential}\n";

    let mesh = Mesh::new(&[("gateway.yaml", &config(&format!("{http}{bookinfo}"), "https"))]);
    let dir = mesh.dir.path();
    certificates(dir);
    let app = App::named("productpage").await;
    let pp = Sidecar::start(&mesh, Spec::server("app=productpage,version=v1", app.addr));
    let gw = Sidecar::start(
        &mesh,
        Spec::gateway("default/gw", &[8080, 443])
            .endpoint("productpage-v1", pp.inbound())
            .arg("--credential-dir")
            .arg(&path(&dir.join("credentials"))),
    );
    let (plain, tls) = (gw.gateway[&8080], gw.gateway[&443]);
    let cacert = path(&dir.join("example.com.crt"));
    // curl over TLS to `host` at `addr`: the status, and the verbose output (certificate,
    // response headers).
    let https = |host: &str, addr: std::net::SocketAddr| {
        curl(&[
            "-v".into(),
            "--resolve".into(),
            format!("{host}.example.com:{}:127.0.0.1", addr.port()),
            "--cacert".into(),
            cacert.clone(),
            format!("https://{host}.example.com:{}/productpage", addr.port()),
        ])
    };
    let r = get(plain, "bookinfo.example.com", "/productpage").await;
    assert_eq!((r.status, r.headers.get("x-scheme").and_then(|v| v.to_str().ok())), (200, Some("http")), "{r:?}");
    let (code, out) = https("bookinfo", tls);
    assert!(code == "200" && out.contains("x-scheme: https"), "{code}: {out}");
    // httpbin.example.com has no server yet: the only certificate is bookinfo's.
    assert_eq!(https("httpbin", tls).0, "000");

    // A host with its own certificate on 443; httpsRedirect on 8080.
    mesh.write("gateway.yaml", &config(&format!("{redirect}{bookinfo}{httpbin}"), "https"));
    eventually("httpbin.example.com served with its certificate", async || {
        let (code, out) = https("httpbin", tls);
        code == "200" && out.contains("CN=httpbin.example.com")
    })
    .await;
    let r = get(plain, "bookinfo.example.com", "/productpage?u=1").await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(r.headers["location"], "https://bookinfo.example.com/productpage?u=1");

    // 8080 turned to TLS: requests on it are `https` to the routes.
    mesh.write("gateway.yaml", &config(&format!("{tls_8080}{bookinfo}{httpbin}"), "https"));
    eventually("8080 over TLS", async || https("bookinfo", plain).0 == "200").await;
    let (_, out) = https("bookinfo", plain);
    assert!(out.contains("x-scheme: https"), "{out}");

    // A certificate that is not there: logged, and the listeners keep serving as they were
    // (the route change in the same file is in force: the snapshot was taken).
    mesh.write("gateway.yaml", &config(&format!("{tls_8080}{bookinfo}{httpbin}{missing}"), "https-v2"));
    eventually("the new routes", async || https("bookinfo", tls).1.contains("x-scheme: https-v2")).await;
    eventually("the refusal logged", async || {
        gw.log.lock().unwrap().iter().any(|l| {
            l.contains("missing-credential") && l.contains("the gateway's listeners keep serving as they were")
        })
    })
    .await;
    let (code, out) = https("httpbin", tls);
    assert!(code == "200" && out.contains("CN=httpbin.example.com"), "{code}: {out}");
    assert_eq!(https("bookinfo", plain).0, "200");

    // 443's servers removed: its connections are closed; 8080 serves on, plaintext again.
    mesh.write("gateway.yaml", &config(http, "https"));
    eventually("443 closed", async || https("bookinfo", tls).0 == "000").await;
    let r = get(plain, "bookinfo.example.com", "/productpage").await;
    assert_eq!((r.status, r.headers.get("x-scheme").and_then(|v| v.to_str().ok())), (200, Some("http")), "{r:?}");
}
