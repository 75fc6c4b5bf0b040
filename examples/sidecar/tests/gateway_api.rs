//! The Gateway API in the conformance suite's style: echo backends that answer with the
//! request they saw and their own pod name, `mesh-sidecar --gateway` serving a Gateway API
//! Gateway (and a sidecar for mesh routes, GAMMA), and tables of request → expected response
//! written from the spec (gateway-api's HTTPRoute and GRPCRoute Go doc comments).

mod support;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;

/// An echo backend: 200 with `{pod, method, path, query, host, proto, headers}` (header
/// values joined with `,`); a request for `/slow…` waits 2 s first.
struct Echo {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<http::request::Parts>>>,
}

async fn echo(pod: &str) -> Echo {
    let pod = pod.to_string();
    let app = App::start(Arc::new(move |req| {
        let mut headers: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in req.headers() {
            let v = v.to_str().unwrap_or("").to_string();
            headers.entry(k.as_str().to_string()).and_modify(|e| *e = format!("{e},{v}")).or_insert(v);
        }
        let host = req
            .headers()
            .get("host")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let body = serde_json::json!({
            "pod": pod,
            "method": req.method().as_str(),
            "path": req.uri().path(),
            "query": req.uri().query(),
            "host": host,
            "proto": format!("{:?}", req.version()),
            "headers": headers,
        });
        let delay = if req.uri().path().starts_with("/slow") { Duration::from_secs(2) } else { Duration::ZERO };
        (200, body.to_string(), delay)
    }))
    .await;
    Echo { addr: app.addr, seen: app.seen }
}

/// A Service `name` (port 8080) in `ns`, its Deployment, and the `--endpoint` flag pair.
fn service(ns: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{ports: [{{port: 8080, name: http}}], selector: {{app: {name}}}}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template: {{metadata: {{labels: {{app: {name}}}}}, spec: {{containers: [{{name: {name}}}]}}}}\n---\n"
    )
}

/// The backends are plain apps (no sidecar): plaintext, as Istio's auto mTLS decides for a
/// namespace whose PeerAuthentication is DISABLE.
fn plaintext(ns: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: plaintext, namespace: {ns}}}\nspec: {{mtls: {{mode: DISABLE}}}}\n---\n"
    )
}

const GATEWAY: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec:
  gatewayClassName: istio
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: http-wild, port: 80, protocol: HTTP, hostname: "*.wild.com"}
  - {name: same-only, port: 8081, protocol: HTTP}
  - name: by-label
    port: 8082
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {shared-gateway-access: "true"}}}}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: secure.example.com
    tls: {certificateRefs: [{name: secure-cert}]}
"#;

const ROUTES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /prefix}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /prefix/deeper/}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /hdr}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /hdr}, headers: [{name: Version, value: two}]}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches:
    - {path: {type: PathPrefix, value: /hdr}, headers: [{name: version, value: two}, {name: color, type: RegularExpression, value: "gr(a|e)y"}]}
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /method}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /method}, method: POST}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /query}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /query}, queryParams: [{name: animal, value: whale}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{path: {type: RegularExpression, value: "/re/[0-9]+"}}, {path: {type: Exact, value: /or}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: newer, namespace: infra, creationTimestamp: "2024-02-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /tie}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: older, namespace: infra, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /tie}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b-route, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  rules:
  - matches: [{path: {value: /alpha}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a-route, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  rules:
  - matches: [{path: {value: /alpha}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wild, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: http-wild}]
  hostnames: [a.wild.com, other.com, "*.deep.wild.com"]
  rules:
  - backendRefs: [{name: infra-backend-v3, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: isolated, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [a.wild.com, plain.com]
  rules:
  - matches: [{path: {value: /iso}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: from-web, namespace: web}
spec:
  parentRefs: [{name: gw, namespace: infra}]
  rules:
  - matches: [{path: {value: /from-web}}]
    backendRefs: [{name: web-backend, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: on-8081, namespace: infra}
spec:
  parentRefs: [{name: gw, port: 8081}]
  rules:
  - matches: [{path: {value: /only-8081}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: filters, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [filters.example.com]
  rules:
  - matches: [{path: {value: /headers}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-Set, value: set-value}]
        add: [{name: X-Add, value: added}]
        remove: [X-Remove]
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: X-Resp, value: "yes"}], remove: [X-Gone]}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {value: /redirect-scheme}}]
    filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
  - matches: [{path: {value: /redirect-host}}]
    filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org}}]
  - matches: [{path: {value: /redirect-port}}]
    filters: [{type: RequestRedirect, requestRedirect: {port: 8083}}]
  - matches: [{path: {type: Exact, value: /redirect-full}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}}}]
  - matches: [{path: {value: /redirect-prefix}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /replaced}, statusCode: 308}}]
  - matches: [{path: {value: /rewrite-prefix}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: rewritten.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {value: /strip}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {value: /rewrite-full}}]
    filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /full}}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{path: {value: /mirror}}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: infra-backend-v2, port: 8080}}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {value: /per-backend}}]
    backendRefs:
    - name: infra-backend-v3
      port: 8080
      filters:
      - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Backend, value: v3}]}}
      - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: X-Picked, value: v3}]}}
      - {type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /from-backend-filter}}}
  - matches: [{path: {value: /weight-zero}}]
    backendRefs: [{name: infra-backend-v1, port: 8080, weight: 0}, {name: infra-backend-v2, port: 8080, weight: 1}]
  - matches: [{path: {value: /all-zero}}]
    backendRefs: [{name: infra-backend-v1, port: 8080, weight: 0}]
  - matches: [{path: {value: /no-backends}}]
  - matches: [{path: {value: /missing}}]
    backendRefs: [{name: no-such-service, port: 8080}]
  - matches: [{path: {value: /cross-ns}}]
    backendRefs: [{name: web-backend, namespace: web, port: 8080}]
  - matches: [{path: {value: /granted}}]
    backendRefs: [{name: web-granted, namespace: web, port: 8080}]
  - matches: [{path: {value: /half}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}, {name: no-such-service, port: 8080}]
  - matches: [{path: {value: /slow}}]
    timeouts: {request: 500ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{path: {value: /slow-try}}]
    timeouts: {request: 5s, backendRequest: 300ms}
    backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-infra-routes, namespace: web}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: infra}]
  to: [{group: "", kind: Service, name: web-granted}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secure, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: https}]
  rules:
  - backendRefs: [{name: infra-backend-v1, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: infra}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [grpc.example.com]
  rules:
  - matches: [{method: {service: echo.Echo, method: Hello}}]
    backendRefs: [{name: infra-backend-v1, port: 8080}]
  - matches: [{method: {service: echo.Echo}}]
    backendRefs: [{name: infra-backend-v2, port: 8080}]
  - matches: [{method: {method: Hello}, headers: [{name: x-variant, value: three}]}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{method: {type: RegularExpression, service: "other\\..*", method: "Get.*"}}]
    backendRefs: [{name: infra-backend-v3, port: 8080}]
  - matches: [{method: {service: weights.W}}]
    filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-grpc-route, value: weights}]}}]
    backendRefs: [{name: infra-backend-v1, port: 8080, weight: 0}, {name: infra-backend-v2, port: 8080, weight: 3}]
"#;

/// One row of a table: a request and what must come back.
struct Case {
    host: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    status: u16,
    /// The backend's pod, when forwarded.
    pod: Option<&'static str>,
    /// The path (with query) the backend saw.
    seen_path: Option<&'static str>,
    /// Headers the backend saw (`None`: must be absent).
    seen_headers: &'static [(&'static str, Option<&'static str>)],
    /// Response headers (`None`: must be absent).
    response_headers: &'static [(&'static str, Option<&'static str>)],
}

const fn case(host: &'static str, path: &'static str, status: u16, pod: Option<&'static str>) -> Case {
    Case {
        host,
        method: "GET",
        path,
        headers: &[],
        status,
        pod,
        seen_path: None,
        seen_headers: &[],
        response_headers: &[],
    }
}

async fn check(addr: SocketAddr, c: &Case) {
    let mut req = Req::get(c.path).header("host", c.host);
    req.method = c.method;
    for (k, v) in c.headers {
        req = req.header(k, v);
    }
    let r = send(addr, req).await.unwrap();
    let what = format!("{} {}{} -> {r:?}", c.method, c.host, c.path);
    assert_eq!(r.status, c.status, "{what}");
    for (k, v) in c.response_headers {
        assert_eq!(r.headers.get(*k).and_then(|v| v.to_str().ok()), *v, "response header {k}: {what}");
    }
    let Some(pod) = c.pod else { return };
    let seen: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("echo body: {what}"));
    assert_eq!(seen["pod"], pod, "{what}");
    if let Some(p) = c.seen_path {
        let full = match seen["query"].as_str() {
            Some(q) => format!("{}?{q}", seen["path"].as_str().unwrap()),
            None => seen["path"].as_str().unwrap().to_string(),
        };
        assert_eq!(full, p, "{what}");
    }
    for (k, v) in c.seen_headers {
        assert_eq!(seen["headers"][k].as_str(), *v, "header {k} at the backend: {what}");
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// h2c (prior knowledge) gRPC-style POST of `/service/method`; the backend's echo.
async fn grpc_call(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, serde_json::Value) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut s, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    let mut b = http::Request::builder()
        .method("POST")
        .uri(format!("http://{host}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let rsp = s.send_request(b.body(Full::new(Bytes::from_static(b"\0\0\0\0\0"))).unwrap()).await.unwrap();
    let status = rsp.status().as_u16();
    let headers = rsp.headers().clone();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_api_gateway_serves_httproutes_and_grpcroutes_as_the_spec_says() {
    let (v1, v2, v3) = (echo("infra-backend-v1").await, echo("infra-backend-v2").await, echo("infra-backend-v3").await);
    let (web, granted) = (echo("web-backend").await, echo("web-granted").await);
    let mut config = String::new();
    for (ns, name) in [
        ("infra", "infra-backend-v1"),
        ("infra", "infra-backend-v2"),
        ("infra", "infra-backend-v3"),
        ("web", "web-backend"),
        ("web", "web-granted"),
    ] {
        config.push_str(&service(ns, name));
    }
    config.push_str(&plaintext("infra"));
    config.push_str(&plaintext("web"));
    let mesh = Mesh::new(&[("services.yaml", &config), ("gateway.yaml", GATEWAY), ("routes.yaml", ROUTES)]);

    // The HTTPS listener's certificateRefs: the Secret `secure-cert` as a credential folder.
    let dir = mesh.dir.path();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=secure.example.com",
            "-addext",
            "subjectAltName=DNS:secure.example.com",
            "-keyout",
            "secure.key",
            "-out",
            "secure.crt",
        ],
    );
    let secret = dir.join("credentials/secure-cert");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::copy(dir.join("secure.crt"), secret.join("tls.crt")).unwrap();
    std::fs::copy(dir.join("secure.key"), secret.join("tls.key")).unwrap();

    let mut spec =
        Spec::gateway("infra/gw", &[80, 8081, 8082, 443]).arg("--credential-dir").arg(&path(&dir.join("credentials")));
    for (ns, name, addr) in [
        ("infra", "infra-backend-v1", v1.addr),
        ("infra", "infra-backend-v2", v2.addr),
        ("infra", "infra-backend-v3", v3.addr),
        ("web", "web-backend", web.addr),
        ("web", "web-granted", granted.addr),
    ] {
        spec = spec.arg("--endpoint").arg(&format!("{ns}/{name}={addr}"));
    }
    let gw = Sidecar::start(&mesh, spec);
    let http = gw.gateway[&80];

    let v1p = Some("infra-backend-v1");
    let v2p = Some("infra-backend-v2");
    let v3p = Some("infra-backend-v3");
    let cases = [
        // Precedence across the rules of a route: exact, the longest prefix, element-wise.
        case("example.com", "/exact", 200, v1p),
        case("example.com", "/exact/x", 404, None),
        case("example.com", "/prefix", 200, v2p),
        case("example.com", "/prefix/", 200, v2p),
        case("example.com", "/prefix/deeper", 200, v3p),
        case("example.com", "/prefix/deeper/x", 200, v3p),
        case("example.com", "/prefix/deeperx", 200, v2p),
        case("example.com", "/prefixx", 404, None),
        // Then the most headers (names case-insensitive), the method, the query parameters.
        case("example.com", "/hdr", 200, v1p),
        Case { headers: &[("version", "two")], ..case("example.com", "/hdr", 200, v2p) },
        Case { headers: &[("VERSION", "two"), ("color", "gray")], ..case("example.com", "/hdr", 200, v3p) },
        Case { headers: &[("version", "two"), ("color", "green")], ..case("example.com", "/hdr", 200, v2p) },
        case("example.com", "/method", 200, v1p),
        Case { method: "POST", ..case("example.com", "/method", 200, v3p) },
        case("example.com", "/query?animal=dolphin", 200, v1p),
        case("example.com", "/query?animal=whale&x=1", 200, v3p),
        // Matches within a rule are ORed; a regex is a full match.
        case("example.com", "/re/42", 200, v2p),
        case("example.com", "/re/42x", 404, None),
        case("example.com", "/or", 200, v2p),
        // Across routes: the oldest, then namespace/name alphabetically.
        case("example.com", "/tie", 200, v1p),
        case("example.com", "/alpha", 200, v3p),
        // Hostnames: listener ∩ route; a more specific listener keeps its hosts.
        case("a.wild.com", "/anything", 200, v3p),
        case("x.deep.wild.com", "/anything", 200, v3p),
        case("b.wild.com", "/iso", 404, None),
        case("other.com", "/anything", 404, None),
        case("a.wild.com", "/iso", 200, v3p),
        case("plain.com", "/iso", 200, v1p),
        // allowedRoutes: from All on `http`; port 8081's listener is from Same only.
        case("example.com", "/from-web", 200, Some("web-backend")),
        case("example.com", "/only-8081", 404, None),
        // Filters.
        Case {
            headers: &[("x-remove", "gone"), ("x-add", "first"), ("x-set", "old")],
            seen_headers: &[("x-set", Some("set-value")), ("x-add", Some("first,added")), ("x-remove", None)],
            response_headers: &[("x-resp", Some("yes"))],
            ..case("filters.example.com", "/headers", 200, v1p)
        },
        Case {
            response_headers: &[("location", Some("https://filters.example.com/redirect-scheme?a=1"))],
            ..case("filters.example.com", "/redirect-scheme?a=1", 301, None)
        },
        Case {
            response_headers: &[("location", Some("http://example.org/redirect-host"))],
            ..case("filters.example.com", "/redirect-host", 302, None)
        },
        Case {
            response_headers: &[("location", Some("http://filters.example.com:8083/redirect-port"))],
            ..case("filters.example.com", "/redirect-port", 302, None)
        },
        Case {
            response_headers: &[("location", Some("http://filters.example.com/new"))],
            ..case("filters.example.com", "/redirect-full", 302, None)
        },
        Case {
            response_headers: &[("location", Some("http://filters.example.com/replaced/x/y"))],
            ..case("filters.example.com", "/redirect-prefix/x/y", 308, None)
        },
        Case {
            seen_path: Some("/one/two?q=1"),
            seen_headers: &[("host", Some("rewritten.example.com"))],
            ..case("filters.example.com", "/rewrite-prefix/two?q=1", 200, v2p)
        },
        Case { seen_path: Some("/one"), ..case("filters.example.com", "/rewrite-prefix", 200, v2p) },
        Case { seen_path: Some("/three"), ..case("filters.example.com", "/strip/three", 200, v2p) },
        Case { seen_path: Some("/"), ..case("filters.example.com", "/strip", 200, v2p) },
        Case { seen_path: Some("/full?x=y"), ..case("filters.example.com", "/rewrite-full/a/b?x=y", 200, v2p) },
        Case {
            seen_path: Some("/from-backend-filter"),
            seen_headers: &[("x-backend", Some("v3"))],
            response_headers: &[("x-picked", Some("v3"))],
            ..case("filters.example.com", "/per-backend", 200, v3p)
        },
        // Weights: 0 sends nothing; no weight left, no backend or an invalid one is 500.
        case("filters.example.com", "/weight-zero", 200, v2p),
        case("filters.example.com", "/all-zero", 500, None),
        case("filters.example.com", "/no-backends", 500, None),
        case("filters.example.com", "/missing", 500, None),
        case("filters.example.com", "/cross-ns", 500, None),
        case("filters.example.com", "/granted", 200, Some("web-granted")),
        // Timeouts: `request` over the whole exchange, `backendRequest` per try.
        case("filters.example.com", "/slow", 504, None),
        case("filters.example.com", "/slow-try", 504, None),
    ];
    for c in &cases {
        check(http, c).await;
    }
    // Port 8081's listener: its own routes, none from `web`.
    check(gw.gateway[&8081], &case("example.com", "/only-8081", 200, v2p)).await;
    check(gw.gateway[&8081], &case("example.com", "/from-web", 404, None)).await;
    // Port 8082's listener takes routes from namespaces labelled so: `web` is not, until its
    // Namespace object says so (a config change, picked up live).
    check(gw.gateway[&8082], &case("example.com", "/from-web", 404, None)).await;
    mesh.write(
        "namespaces.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: web, labels: {shared-gateway-access: 'true'}}\n",
    );
    let by_label = gw.gateway[&8082];
    eventually("web's routes attach to the by-label listener", async || {
        get(by_label, "example.com", "/from-web").await.status == 200
    })
    .await;
    check(by_label, &case("example.com", "/from-web", 200, Some("web-backend"))).await;
    check(by_label, &case("example.com", "/tie", 404, None)).await;

    // A rule whose backends are half invalid: that half answers 500.
    let mut codes = BTreeMap::new();
    for _ in 0..40 {
        let r = send(http, Req::get("/half").header("host", "filters.example.com")).await.unwrap();
        *codes.entry(r.status).or_insert(0) += 1;
    }
    assert_eq!(codes.keys().copied().collect::<Vec<_>>(), [200, 500], "{codes:?}");

    // RequestMirror: v2 gets a copy of what v1 answered.
    let before = v2.seen.lock().unwrap().len();
    check(http, &case("filters.example.com", "/mirror", 200, v1p)).await;
    eventually("the mirrored copy", async || {
        v2.seen.lock().unwrap()[before..].iter().any(|p| p.uri.path() == "/mirror")
    })
    .await;

    // GRPCRoute over HTTP/2: service and method, headers.
    for (path, headers, pod) in [
        ("/echo.Echo/Hello", &[][..], "infra-backend-v1"),
        ("/echo.Echo/Bye", &[], "infra-backend-v2"),
        ("/other.Svc/Hello", &[("x-variant", "three")][..], "infra-backend-v3"),
        ("/other.Svc/GetThing", &[], "infra-backend-v3"),
    ] {
        let (status, _, seen) = grpc_call(http, "grpc.example.com", path, headers).await;
        assert_eq!((status, seen["pod"].as_str()), (200, Some(pod)), "{path}: {seen}");
        assert_eq!(seen["proto"], "HTTP/2.0", "{path}");
    }
    // No rule: Envoy's local reply to a gRPC call, 200 with grpc-status UNIMPLEMENTED (12).
    let (status, headers, _) = grpc_call(http, "grpc.example.com", "/other.Svc/Hello", &[]).await;
    assert_eq!((status, headers.get("grpc-status").and_then(|v| v.to_str().ok())), (200, Some("12")), "{headers:?}");
    // Weights (0 sends nothing) and filters, as for HTTPRoutes.
    for _ in 0..10 {
        let (status, headers, seen) = grpc_call(http, "grpc.example.com", "/weights.W/Any", &[]).await;
        assert_eq!((status, seen["pod"].as_str()), (200, Some("infra-backend-v2")), "{seen}");
        assert_eq!(headers.get("x-grpc-route").and_then(|v| v.to_str().ok()), Some("weights"));
    }

    // HTTPS: the listener's certificateRefs, with curl.
    let url = "https://secure.example.com/tls-path";
    let resolve = format!("secure.example.com:443:{}", gw.gateway[&443].ip());
    let out = Command::new("curl")
        .args(["-sS", "--connect-to", &format!("secure.example.com:443:127.0.0.1:{}", gw.gateway[&443].port())])
        .arg("--cacert")
        .arg(dir.join("secure.crt"))
        .arg(url)
        .output()
        .expect("curl runs");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        body.contains("\"pod\":\"infra-backend-v1\"") && body.contains("/tls-path"),
        "{resolve}: {body}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The Gateway changed without a restart: the HTTPS listener removed closes its port;
    // port 8081's listener turned HTTPS with the same certificate serves TLS.
    let https_8081 = "  - {name: same-only, port: 8081, protocol: HTTPS, hostname: secure.example.com, tls: {certificateRefs: [{name: secure-cert}]}}\n";
    let changed = GATEWAY.replace("  - {name: same-only, port: 8081, protocol: HTTP}\n", https_8081);
    let changed = &changed[..changed.find("  - name: https\n").unwrap()];
    mesh.write("gateway.yaml", changed);
    let curl_at = |port: u16| {
        Command::new("curl")
            .args(["-sS", "--max-time", "2", "--connect-to", &format!("secure.example.com:443:127.0.0.1:{port}")])
            .arg("--cacert")
            .arg(dir.join("secure.crt"))
            .arg("https://secure.example.com/only-8081")
            .output()
            .expect("curl runs")
    };
    let (p443, p8081) = (gw.gateway[&443].port(), gw.gateway[&8081].port());
    eventually("port 8081 over TLS", async || {
        String::from_utf8_lossy(&curl_at(p8081).stdout).contains("infra-backend-v2")
    })
    .await;
    assert!(!curl_at(p443).status.success(), "443's listener is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_and_a_gateway_api_gateway_of_one_name_are_refused() {
    let both = format!(
        "{GATEWAY}---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\nspec: {{servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ['*']}}]}}\n"
    );
    let mesh = Mesh::new(&[("gw.yaml", &both)]);
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-sidecar"))
        .arg("--config")
        .arg(mesh.config())
        .args(["--gateway", "infra/gw", "--listen", "80=127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--ca-dir")
        .arg(mesh.ca())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("the Istio Gateway infra/gw (networking.istio.io)")
            && err.contains("the Gateway API Gateway infra/gw (gateway.networking.k8s.io)"),
        "{err}"
    );
}

const MESH_ROUTES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 8080}]
  rules:
  - matches: [{headers: [{name: x-version, value: v2}]}]
    backendRefs: [{name: echo-v2, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - {type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: x-mesh, value: "yes"}]}}
    - {type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v1}}}
    backendRefs: [{name: echo-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /moved}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /api}}}]
  - matches: [{path: {type: Exact, value: /shadowed}}]
    filters:
    - {type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-route, value: echo}]}}
    - {type: RequestMirror, requestMirror: {backendRef: {name: echo-v2, port: 8080}}}
    backendRefs: [{name: echo-v1, port: 8080}]
  - matches: [{path: {type: Exact, value: /nowhere}}]
    backendRefs: [{name: no-such-service, port: 8080}]
  - backendRefs: [{name: echo-v1, port: 8080, weight: 1}, {name: echo-v2, port: 8080, weight: 0}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-for-tests, namespace: tests}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, namespace: default}]
  rules:
  - backendRefs: [{name: echo-v2, namespace: default, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: tests-may-route, namespace: default}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: tests}]
  to: [{group: "", kind: Service}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo-vs, namespace: default, creationTimestamp: "2030-01-01T00:00:00Z"}
spec:
  hosts: [echo]
  http: [{route: [{destination: {host: echo-v2}}]}]
"#;

/// GAMMA: an HTTPRoute whose parent is a Service applies at every client's sidecar, with the
/// same filters; a consumer route in the client's namespace replaces it for that namespace;
/// a newer VirtualService on the same host gives way to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_httproutes_apply_at_sidecars_for_traffic_to_their_service() {
    let (v1, v2) = (echo("echo-v1").await, echo("echo-v2").await);
    let mut config = String::new();
    config.push_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: echo, namespace: default}\nspec: {ports: [{port: 8080, name: http}], selector: {app: echo}}\n---\n",
    );
    for v in ["v1", "v2"] {
        config.push_str(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: echo-{v}, namespace: default}}\nspec: {{ports: [{{port: 8080, name: http}}], selector: {{app: echo, version: {v}}}}}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: echo-{v}, namespace: default}}\nspec:\n  selector: {{matchLabels: {{app: echo, version: {v}}}}}\n  template: {{metadata: {{labels: {{app: echo, version: {v}}}}}, spec: {{containers: [{{name: echo}}]}}}}\n---\n"
        ));
    }
    config.push_str(&plaintext("default"));
    let mesh = Mesh::new(&[("services.yaml", &config), ("routes.yaml", MESH_ROUTES)]);
    let client = |ns: &str| {
        Spec::client("app=client")
            .arg("--namespace")
            .arg(ns)
            .arg("--endpoint")
            .arg(&format!("default/echo-v1={}", v1.addr))
            .arg("--endpoint")
            .arg(&format!("default/echo-v2={}", v2.addr))
    };
    let sidecar = Sidecar::start(&mesh, client("default"));
    let out = sidecar.outbound();
    let v1p = Some("echo-v1");
    let v2p = Some("echo-v2");
    for c in [
        case("echo:8080", "/", 200, v1p),
        case("echo", "/anything", 200, v1p),
        case("echo.default.svc.cluster.local:8080", "/", 200, v1p),
        Case { headers: &[("x-version", "v2")], ..case("echo", "/", 200, v2p) },
        Case {
            seen_path: Some("/v1/items"),
            seen_headers: &[("x-mesh", Some("yes"))],
            ..case("echo:8080", "/api/items", 200, v1p)
        },
        Case {
            response_headers: &[("location", Some("http://echo:8080/api"))],
            ..case("echo:8080", "/moved", 302, None)
        },
        Case { response_headers: &[("x-route", Some("echo"))], ..case("echo:8080", "/shadowed", 200, v1p) },
        case("echo:8080", "/nowhere", 500, None),
        // The Service's own routes are untouched for its subsets' Services.
        case("echo-v2:8080", "/", 200, v2p),
    ] {
        check(out, &c).await;
    }
    eventually("the mirrored copy at echo-v2", async || {
        v2.seen.lock().unwrap().iter().any(|p| p.uri.path() == "/shadowed")
    })
    .await;
    // A client in `tests`: its namespace's consumer route replaces the producer's.
    let tests = Sidecar::start(&mesh, client("tests"));
    check(tests.outbound(), &case("echo.default:8080", "/api/items", 200, v2p)).await;
    check(
        tests.outbound(),
        &Case { seen_path: Some("/api/items"), ..case("echo.default:8080", "/api/items", 200, v2p) },
    )
    .await;
}
