//! A table of invalid configs, each with the exact finding: file, line, field, message.
//! Every case is loaded as `case.yaml`; its findings (errors and warnings) must be exactly
//! the ones listed.

use mesh_config::{
    load::LoadOptions,
    test_util::{FindingCase, check_findings},
};

const CASES: &[FindingCase] = &[
    FindingCase {
        name: "Telemetry: a sampling percentage out of range, overrides not applied yet",
        yaml: r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - randomSamplingPercentage: 150
  metrics:
  - overrides: [{disabled: true}]
"#,
        want: &[
            r#"case.yaml:6: error: Telemetry istio-system/mesh-default: spec.tracing[0].randomSamplingPercentage: percentage must be within 0..=100, got 150"#,
            r#"case.yaml:7: warning: Telemetry istio-system/mesh-default: spec.metrics: metric overrides are not applied by this mesh yet: Istio's standard metrics stay as they are"#,
        ],
    },
    FindingCase {
        name: "Telemetry: an access-log filter outside the CEL the mesh evaluates, a provider it does not have",
        yaml: r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: logs, namespace: shop}
spec:
  accessLogging:
  - providers: [{name: otel-als}]
    filter:
      expression: response.code >= '400'
  - filter: {expression: "response.flags == 'UH'"}
"#,
        want: &[
            r#"case.yaml:6: warning: Telemetry shop/logs: spec.accessLogging[0].providers[0].name: access log provider "otel-als" is not one this mesh has (only `envoy`, Istio's built-in, the proxy's stdout): the lines go to stdout"#,
            r#"case.yaml:8: error: Telemetry shop/logs: spec.accessLogging[0].filter.expression: `>=` compares int with string at offset 0"#,
            r#"case.yaml:9: error: Telemetry shop/logs: spec.accessLogging[1].filter.expression: unknown attribute `response.flags` at offset 0 (known: request.method, request.path, request.url_path, request.host, request.scheme, request.protocol, request.useragent, request.id, request.size, request.headers['name'], response.code, response.size, upstream.address, connection.mtls)"#,
        ],
    },
    FindingCase {
        name: "unknown spec field, with a suggestion",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
spec:
  hostss: [reviews]
"#,
        want: &[
            r#"case.yaml:5: error: VirtualService default/r: spec.hostss: unknown field `hostss` (did you mean `hosts`?)"#,
        ],
    },
    FindingCase {
        name: "unknown top-level field",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: r}
specs:
  hosts: [reviews]
"#,
        want: &[r#"case.yaml:4: error: VirtualService default/r: specs: unknown field `specs` (did you mean `spec`?)"#],
    },
    FindingCase {
        name: "unknown field inside a StringMatch",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: prod}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri:
        regexp: /v1/.*
    route:
    - destination: {host: reviews}
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService prod/reviews: spec.http[0].match[0].uri.regexp: unknown field `regexp` (did you mean `regex`?)"#,
        ],
    },
    FindingCase {
        name: "regex that does not compile",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri:
        regex: "/v1/(.*"
    route:
    - destination: {host: reviews}
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService default/reviews: spec.http[0].match[0].uri.regex: invalid regex: unclosed group"#,
        ],
    },
    FindingCase {
        name: "regex with lookahead (not RE2)",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {regex: "(?=jason).*"}
    route:
    - destination: {host: reviews}
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService default/reviews: spec.http[0].match[0].headers.end-user.regex: invalid regex: look-around, including look-ahead and look-behind, is not supported"#,
        ],
    },
    FindingCase {
        name: "two match kinds in one StringMatch",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {exact: /a, prefix: /b}
    route:
    - destination: {host: reviews}
"#,
        want: &[
            r#"case.yaml:8: error: VirtualService default/reviews: spec.http[0].match[0].uri: only one of exact, prefix or regex may be set"#,
        ],
    },
    FindingCase {
        name: "empty StringMatch for uri",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {}
    route:
    - destination: {host: reviews}
"#,
        want: &[
            r#"case.yaml:8: error: VirtualService default/reviews: spec.http[0].match[0].uri: one of exact, prefix or regex must be set"#,
        ],
    },
    FindingCase {
        name: "empty prefix outside uri",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user: {prefix: ""}
    route:
    - destination: {host: reviews}
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService default/reviews: spec.http[0].match[0].headers.end-user.prefix: an empty prefix is only allowed for uri"#,
        ],
    },
    FindingCase {
        name: "header name not lowercase",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        End-User: {exact: jason}
    route:
    - destination: {host: reviews}
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService default/reviews: spec.http[0].match[0].headers.End-User: header name "End-User" must be lowercase"#,
        ],
    },
    FindingCase {
        name: "all weights zero",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: 0
    - destination: {host: reviews}
"#,
        want: &[
            r#"case.yaml:7: error: VirtualService default/reviews: spec.http[0].route: total destination weight = 0: with several destinations, give at least one a weight"#,
        ],
    },
    FindingCase {
        name: "negative weight",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: -10
    - destination: {host: reviews}
      weight: 110
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService default/reviews: spec.http[0].route[0].weight: weight must not be negative, got -10"#,
        ],
    },
    FindingCase {
        name: "weight of the wrong type",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
      weight: fifty
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService default/reviews: spec.http[0].route[0].weight: invalid type: string "fifty", expected i32"#,
        ],
    },
    FindingCase {
        name: "malformed duration",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    timeout: 5 seconds
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService default/reviews: spec.http[0].timeout: invalid duration "5 seconds": expected a number and a unit (ns, us, ms, s, m, h), e.g. "1.5s" or "100ms""#,
        ],
    },
    FindingCase {
        name: "negative duration",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    timeout: -1s
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService default/reviews: spec.http[0].timeout: negative duration "-1s" is not allowed"#,
        ],
    },
    FindingCase {
        name: "duration beyond what the API server accepts",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    timeout: 18446744073709551615ms
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService default/reviews: spec.http[0].timeout: duration "18446744073709551615ms" is too large: the largest Istio accepts is 2562047h47m16.854775807s (about 292 years)"#,
        ],
    },
    FindingCase {
        name: "zero timeout (Istio rejects it; omit the field for no timeout)",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    timeout: 0s
"#,
        want: &[
            r#"case.yaml:9: error: VirtualService default/reviews: spec.http[0].timeout: duration must be at least 1ms, got 0s"#,
        ],
    },
    FindingCase {
        name: "retries disabled but perTryTimeout set",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
    retries:
      attempts: 0
      perTryTimeout: 1s
"#,
        want: &[
            r#"case.yaml:11: error: VirtualService default/ratings: spec.http[0].retries.perTryTimeout: perTryTimeout cannot be set when attempts is 0 (retries disabled)"#,
        ],
    },
    FindingCase {
        name: "unknown retryOn policy",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
    retries:
      attempts: 3
      retryOn: 5xx,connect-failures
"#,
        want: &[
            r#"case.yaml:11: error: VirtualService default/ratings: spec.http[0].retries.retryOn: "connect-failures" is not a valid retryOn policy or HTTP status code"#,
        ],
    },
    FindingCase {
        name: "redirect combined with route",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - redirect: {uri: /v2}
    route:
    - destination: {host: ratings}
"#,
        want: &[
            r#"case.yaml:8: error: VirtualService default/ratings: spec.http[0].route: redirect cannot be combined with route"#,
        ],
    },
    FindingCase {
        name: "unsupported redirect code",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - redirect: {uri: /v2, redirectCode: 305}
"#,
        want: &[
            r#"case.yaml:7: error: VirtualService default/ratings: spec.http[0].redirect.redirectCode: redirect code 305 is not supported; use 301, 302, 303, 307 or 308"#,
        ],
    },
    FindingCase {
        name: "direct response status out of range",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - directResponse:
      status: 700
      body: {string: nope}
"#,
        want: &[
            r#"case.yaml:8: error: VirtualService default/ratings: spec.http[0].directResponse.status: status must be within 200..=599, got 700"#,
        ],
    },
    FindingCase {
        name: "mirror and mirrors together",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
    mirror: {host: ratings-shadow}
    mirrors:
    - destination: {host: ratings-shadow}
"#,
        want: &[
            r#"case.yaml:10: error: VirtualService default/ratings: spec.http[0].mirrors: mirror and mirrors cannot both be set"#,
        ],
    },
    FindingCase {
        name: "rewrite uri together with uriRegexRewrite",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
    rewrite:
      uri: /a
      uriRegexRewrite: {match: "^/b(.*)", rewrite: "/c\\1"}
"#,
        want: &[
            r#"case.yaml:11: error: VirtualService default/ratings: spec.http[0].rewrite.uriRegexRewrite: uriRegexRewrite cannot be combined with uri"#,
        ],
    },
    FindingCase {
        name: "VirtualService without hosts",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  http:
  - route:
    - destination: {host: ratings}
"#,
        want: &[r#"case.yaml:4: error: VirtualService default/ratings: spec.hosts: at least one host is required"#],
    },
    FindingCase {
        name: "wildcard host bound to the mesh",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: all}
spec:
  hosts: ["*"]
  http:
  - route:
    - destination: {host: ratings}
"#,
        want: &[
            r#"case.yaml:5: error: VirtualService default/all: spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh"#,
        ],
    },
    FindingCase {
        name: "route without any action",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - match:
    - uri: {prefix: /}
    timeout: 1s
"#,
        want: &[
            r#"case.yaml:7: error: VirtualService default/ratings: spec.http[0]: a route needs one of route, redirect, directResponse or delegate"#,
        ],
    },
    FindingCase {
        name: "route to a subset that no DestinationRule defines (warning)",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v9}
"#,
        want: &[
            r#"case.yaml:8: warning: VirtualService default/reviews: spec.http[0].route[0].destination.subset: subset "v9" is not defined by any DestinationRule for reviews.default.svc.cluster.local; requests will fail with 503 (NC)"#,
        ],
    },
    FindingCase {
        name: "duplicate subset names",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v1
    labels: {version: v2}
"#,
        want: &[
            r#"case.yaml:9: error: DestinationRule default/reviews: spec.subsets[1].name: duplicate subset name "v1""#,
        ],
    },
    FindingCase {
        name: "DestinationRule without host",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  subsets:
  - name: v1
    labels: {version: v1}
"#,
        want: &[r#"case.yaml:4: error: DestinationRule default/reviews: spec.host: host is required"#],
    },
    FindingCase {
        name: "simple and consistentHash together",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      consistentHash: {httpHeaderName: x-user}
"#,
        want: &[
            r#"case.yaml:7: error: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer: only one of simple or consistentHash may be set"#,
        ],
    },
    FindingCase {
        name: "unknown enum value",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer:
      simple: RANDUM
"#,
        want: &[
            r#"case.yaml:8: error: DestinationRule default/reviews: spec.trafficPolicy.loadBalancer.simple: unknown variant `RANDUM`, expected one of `UNSPECIFIED`, `LEAST_CONN`, `RANDOM`, `PASSTHROUGH`, `ROUND_ROBIN`, `LEAST_REQUEST`"#,
        ],
    },
    FindingCase {
        name: "maxEjectionPercent out of range",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      maxEjectionPercent: 120
"#,
        want: &[
            r#"case.yaml:9: error: DestinationRule default/reviews: spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage must be within 0..=100, got 120"#,
        ],
    },
    FindingCase {
        name: "portLevelMtls without a selector",
        yaml: r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec:
  mtls: {mode: STRICT}
  portLevelMtls:
    9080: {mode: PERMISSIVE}
"#,
        want: &[
            r#"case.yaml:6: error: PeerAuthentication default/default: spec.portLevelMtls: portLevelMtls needs a workload selector"#,
        ],
    },
    FindingCase {
        name: "selector policy in the root namespace (warning)",
        yaml: r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: istio-system}
spec:
  selector:
    matchLabels: {app: reviews}
  mtls: {mode: STRICT}
"#,
        want: &[
            r#"case.yaml:5: warning: PeerAuthentication istio-system/reviews: spec.selector: a PeerAuthentication with a selector in the root namespace is ignored; put it in the workload's namespace"#,
        ],
    },
    FindingCase {
        name: "unknown mTLS mode",
        yaml: r#"apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default}
spec:
  mtls: {mode: STRIKT}
"#,
        want: &[
            r#"case.yaml:5: error: PeerAuthentication default/default: spec.mtls.mode: unknown variant `STRIKT`, expected one of `UNSET`, `DISABLE`, `PERMISSIVE`, `STRICT`"#,
        ],
    },
    FindingCase {
        name: "selector together with targetRefs",
        yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  selector:
    matchLabels: {app: reviews}
  targetRefs:
  - {kind: Gateway, group: gateway.networking.k8s.io, name: gw}
  rules:
  - {}
"#,
        want: &[
            r#"case.yaml:7: error: AuthorizationPolicy default/p: spec.targetRefs: selector and targetRef/targetRefs cannot both be set"#,
        ],
    },
    FindingCase {
        name: "DENY policy without rules",
        yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-nothing}
spec:
  action: DENY
"#,
        want: &[
            r#"case.yaml:4: error: AuthorizationPolicy default/deny-nothing: spec.rules: a DENY policy needs at least one rule (without rules it would never match)"#,
        ],
    },
    FindingCase {
        name: "CUSTOM policy without rules",
        yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-nothing}
spec:
  action: CUSTOM
  provider: {name: ext-authz}
"#,
        want: &[
            r#"case.yaml:4: error: AuthorizationPolicy default/ext-nothing: spec.rules: a CUSTOM policy needs at least one rule (without rules it would never match)"#,
        ],
    },
    FindingCase {
        // Istio's validation has no rules check for AUDIT: accepted, audits nothing.
        name: "AUDIT policy without rules is accepted",
        yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-nothing}
spec:
  action: AUDIT
"#,
        want: &[],
    },
    FindingCase {
        name: "wildcard in the middle of a principal",
        yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/*/sa/reviews"]
"#,
        want: &[
            r#"case.yaml:8: error: AuthorizationPolicy default/p: spec.rules[0].from[0].source.principals[0]: invalid value "cluster.local/ns/*/sa/reviews": '*' is only allowed as the whole value, or at its start or end"#,
        ],
    },
    FindingCase {
        name: "principal written with spiffe:// (warning)",
        yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  rules:
  - from:
    - source:
        principals: ["spiffe://cluster.local/ns/default/sa/bookinfo-productpage"]
"#,
        want: &[
            r#"case.yaml:8: warning: AuthorizationPolicy default/p: spec.rules[0].from[0].source.principals[0]: principals are written without "spiffe://": use "cluster.local/ns/default/sa/bookinfo-productpage""#,
        ],
    },
    FindingCase {
        name: "path template with {**} before the end",
        yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  rules:
  - to:
    - operation:
        paths: ["/api/{**}/details"]
"#,
        want: &[
            r#"case.yaml:8: error: AuthorizationPolicy default/p: spec.rules[0].to[0].operation.paths[0]: invalid path template "/api/{**}/details": use whole segments {*} or {**} (last only), without other wildcards"#,
        ],
    },
    FindingCase {
        name: "port that is not a number",
        yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  rules:
  - to:
    - operation:
        ports: ["http"]
"#,
        want: &[
            r#"case.yaml:8: error: AuthorizationPolicy default/p: spec.rules[0].to[0].operation.ports[0]: invalid port "http": a number within 1..=65535"#,
        ],
    },
    FindingCase {
        name: "unknown when key",
        yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  rules:
  - when:
    - key: request.header[x-token]
      values: ["abc"]
"#,
        want: &[
            r#"case.yaml:7: error: AuthorizationPolicy default/p: spec.rules[0].when[0].key: unknown attribute "request.header[x-token]""#,
        ],
    },
    FindingCase {
        name: "CUSTOM without a provider",
        yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext}
spec:
  action: CUSTOM
  rules:
  - to:
    - operation: {paths: ["/admin"]}
"#,
        want: &[
            r#"case.yaml:4: error: AuthorizationPolicy default/ext: spec.provider: a CUSTOM policy needs a provider"#,
        ],
    },
    FindingCase {
        name: "serviceAccounts together with principals",
        yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/a"]
        serviceAccounts: ["default/b"]
"#,
        want: &[
            r#"case.yaml:9: error: AuthorizationPolicy default/p: spec.rules[0].from[0].source.serviceAccounts: serviceAccounts cannot be combined with principals or namespaces"#,
        ],
    },
    FindingCase {
        name: "invalid IP block",
        yaml: r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  action: DENY
  rules:
  - from:
    - source:
        ipBlocks: ["10.0.0.0/33"]
"#,
        want: &[
            r#"case.yaml:9: error: AuthorizationPolicy default/p: spec.rules[0].from[0].source.ipBlocks[0]: invalid IP address or CIDR "10.0.0.0/33""#,
        ],
    },
    FindingCase {
        name: "Gateway without servers",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
"#,
        want: &[r#"case.yaml:4: error: Gateway default/gw: spec.servers: at least one server is required"#],
    },
    FindingCase {
        name: "Gateway with an unknown protocol",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP3}
    hosts: ["*"]
"#,
        want: &[
            r#"case.yaml:7: error: Gateway default/gw: spec.servers[0].port.protocol: unknown protocol "HTTP3"; use one of HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS, REDIS, MYSQL, UDP"#,
        ],
    },
    FindingCase {
        name: "RequestAuthentication rule without issuer",
        yaml: r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt}
spec:
  jwtRules:
  - jwksUri: https://example.com/jwks.json
"#,
        want: &[
            r#"case.yaml:6: error: RequestAuthentication default/jwt: spec.jwtRules[0].issuer: issuer is required"#,
        ],
    },
    FindingCase {
        name: "Sidecar egress host without a namespace",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress:
  - hosts: ["reviews.default.svc.cluster.local"]
"#,
        want: &[
            r#"case.yaml:5: warning: Sidecar default/default: spec.egress: egress (the hosts a workload's proxy knows) is not applied yet; the proxy behaves as without it"#,
            r#"case.yaml:6: error: Sidecar default/default: spec.egress[0].hosts[0]: invalid egress host "reviews.default.svc.cluster.local": use NAMESPACE/DNSNAME, e.g. "./*" or "istio-system/*""#,
        ],
    },
    FindingCase {
        name: "STATIC ServiceEntry with a host name address",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.example.com]
  ports:
  - {number: 5432, name: tcp, protocol: TCP}
  resolution: STATIC
  endpoints:
  - address: db.internal
"#,
        want: &[
            r#"case.yaml:10: error: ServiceEntry default/db: spec.endpoints[0].address: resolution STATIC needs IP addresses, got "db.internal""#,
        ],
    },
    FindingCase {
        name: "removing the host header",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http:
  - route:
    - destination: {host: ratings}
    headers:
      request:
        remove: [host]
"#,
        want: &[
            r#"case.yaml:11: error: VirtualService default/ratings: spec.http[0].headers.request.remove[0]: host cannot be removed"#,
        ],
    },
    FindingCase {
        name: "unsupported apiVersion",
        yaml: r#"apiVersion: networking.istio.io/v2
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
"#,
        want: &[
            r#"case.yaml:1: error: VirtualService default/ratings: apiVersion: unsupported apiVersion "networking.istio.io/v2" for VirtualService; use one of networking.istio.io/v1, networking.istio.io/v1beta1, networking.istio.io/v1alpha3"#,
        ],
    },
    FindingCase {
        name: "missing kind",
        yaml: r#"apiVersion: networking.istio.io/v1
metadata: {name: ratings}
spec:
  hosts: [ratings]
"#,
        want: &[r#"case.yaml:1: error: document 1: kind: not a Kubernetes resource: `kind` is missing"#],
    },
    FindingCase {
        name: "missing metadata.name",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {namespace: default}
spec:
  host: ratings
"#,
        want: &[r#"case.yaml:3: error: DestinationRule default/: metadata.name: metadata.name is required"#],
    },
    FindingCase {
        name: "YAML syntax error",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings
spec:
  host: ratings
"#,
        want: &[
            r#"case.yaml:4: error: -: -: invalid YAML: while parsing a flow mapping, did not find expected ',' or '}'"#,
        ],
    },
    FindingCase {
        name: "duplicate key",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  host: reviews
"#,
        want: &[r#"case.yaml:6: error: -: -: invalid YAML: duplicate mapping key: host"#],
    },
    FindingCase {
        name: "Deployment selector that does not match its pods",
        yaml: r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1}
spec:
  selector:
    matchLabels: {app: reviews, version: v1}
  template:
    metadata:
      labels: {app: reviews, version: v2}
    spec:
      containers:
      - name: reviews
"#,
        want: &[
            r#"case.yaml:6: error: Deployment default/reviews-v1: spec.selector.matchLabels: selector does not match the pod template's labels"#,
        ],
    },
    FindingCase {
        name: "HTTPRoute: a typo in a rule",
        yaml: r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - backendRef: [{name: reviews, port: 9080}]
"#,
        want: &[
            r#"case.yaml:7: error: HTTPRoute default/r: spec.rules[0].backendRef: unknown field `backendRef` (did you mean `backendRefs`?)"#,
        ],
    },
    FindingCase {
        name: "HTTPRoute: paths, methods, a Service without a port",
        yaml: r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  hostnames: ["*", "Example.com"]
  rules:
  - matches:
    - path: {type: Exact, value: reviews}
    - path: {type: PathPrefix, value: /a//b}
      method: FETCH
    - path: {type: RegularExpression, value: "/(unclosed"}
    backendRefs: [{name: reviews}]
"#,
        want: &[
            r#"case.yaml:6: error: HTTPRoute default/r: spec.hostnames[0]: invalid hostname "*": a lower-case DNS name, optionally starting with "*." (no IP, no port)"#,
            r#"case.yaml:6: error: HTTPRoute default/r: spec.hostnames[1]: invalid hostname "Example.com": a lower-case DNS name, optionally starting with "*." (no IP, no port)"#,
            r#"case.yaml:9: error: HTTPRoute default/r: spec.rules[0].matches[0].path.value: invalid path "reviews": must start with '/' and contain no '//', '/./', '/../', '%2f', '%2F' or '#', nor end in '/.' or '/..'"#,
            r#"case.yaml:10: error: HTTPRoute default/r: spec.rules[0].matches[1].path.value: invalid path "/a//b": must start with '/' and contain no '//', '/./', '/../', '%2f', '%2F' or '#', nor end in '/.' or '/..'"#,
            r#"case.yaml:11: error: HTTPRoute default/r: spec.rules[0].matches[1].method: method "FETCH" must be one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH"#,
            r#"case.yaml:12: error: HTTPRoute default/r: spec.rules[0].matches[2].path.value: invalid regex: unclosed group"#,
            r#"case.yaml:13: error: HTTPRoute default/r: spec.rules[0].backendRefs[0].port: port is required when referring to a Service"#,
        ],
    },
    FindingCase {
        name: "HTTPRoute: filters the spec forbids together, or mis-set",
        yaml: r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {type: Exact, value: /a}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 304, path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}
    - type: URLRewrite
      urlRewrite: {hostname: example.com}
    - type: RequestHeaderModifier
      responseHeaderModifier: {set: [{name: x, value: y}]}
    backendRefs: [{name: reviews, port: 9080}]
"#,
        want: &[
            r#"case.yaml:8: error: HTTPRoute default/r: spec.rules[0].filters: RequestRedirect and URLRewrite cannot both be set"#,
            r#"case.yaml:10: error: HTTPRoute default/r: spec.rules[0].filters[0].requestRedirect.statusCode: status 304 must be one of 301, 302, 303, 307, 308"#,
            r#"case.yaml:10: error: HTTPRoute default/r: spec.rules[0].filters[0].requestRedirect.path.replacePrefixMatch: ReplacePrefixMatch needs the rule to have exactly one match, of type PathPrefix"#,
            r#"case.yaml:13: error: HTTPRoute default/r: spec.rules[0].filters[2].requestHeaderModifier: type RequestHeaderModifier needs requestHeaderModifier"#,
            r#"case.yaml:14: error: HTTPRoute default/r: spec.rules[0].filters[2].responseHeaderModifier: responseHeaderModifier must not be set when type is RequestHeaderModifier"#,
            r#"case.yaml:15: error: HTTPRoute default/r: spec.rules[0].backendRefs: a rule with a RequestRedirect filter must not have backendRefs"#,
        ],
    },
    FindingCase {
        name: "HTTPRoute: experimental fields the mesh does not apply are refused, not dropped",
        yaml: r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}, {name: gw}, {kind: ConfigMap, name: x}]
  rules:
  - retry: {attempts: 3}
    timeouts: {request: 1s, backendRequest: 2s}
    backendRefs: [{name: reviews, port: 9080, weight: 2000000}]
"#,
        want: &[
            r#"case.yaml:5: error: HTTPRoute default/r: spec.parentRefs[1]: the same parent is referenced twice (name, namespace, sectionName and port must differ)"#,
            r#"case.yaml:5: error: HTTPRoute default/r: spec.parentRefs[2].kind: HTTPRoute parents are Gateways (group gateway.networking.k8s.io) or Services (group "", kind Service); got group "gateway.networking.k8s.io" kind "ConfigMap""#,
            r#"case.yaml:7: error: HTTPRoute default/r: spec.rules[0].retry: retry is not supported by the mesh; remove it (requests would not get what it asks)"#,
            r#"case.yaml:8: error: HTTPRoute default/r: spec.rules[0].timeouts.backendRequest: backendRequest must not be longer than request"#,
            r#"case.yaml:9: error: HTTPRoute default/r: spec.rules[0].backendRefs[0].weight: weight must be within 0..=1000000"#,
        ],
    },
    FindingCase {
        name: "HTTPRoute: a header twice in one list of a modifier (across lists is allowed)",
        yaml: r#"apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: X-A, value: "1"}, {name: x-a, value: "2"}]
        remove: [x-a]
    backendRefs: [{name: reviews, port: 9080}]
"#,
        want: &[
            r#"case.yaml:10: error: HTTPRoute default/r: spec.rules[0].filters[0].requestHeaderModifier.set[1].name: header "x-a" appears twice in set"#,
        ],
    },
    FindingCase {
        name: "HTTPRoute: references the set cannot resolve (warnings: the route still loads)",
        yaml: r#"apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec: {ports: [{port: 9080, name: http}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: web}
spec:
  parentRefs: [{name: gw}, {group: "", kind: Service, name: ratings}]
  rules:
  - backendRefs:
    - {name: reviews, namespace: shop, port: 9080}
    - {name: details, port: 9080}
"#,
        want: &[
            r#"case.yaml:10: warning: HTTPRoute web/r: spec.parentRefs[0].name: Gateway web/gw (gateway.networking.k8s.io) is not defined: the HTTPRoute is attached to nothing there"#,
            r#"case.yaml:10: warning: HTTPRoute web/r: spec.parentRefs[1].name: Service web/ratings is not defined: the HTTPRoute applies to no traffic"#,
            r#"case.yaml:13: warning: HTTPRoute web/r: spec.rules[0].backendRefs[0].namespace: Service shop/reviews is in another namespace and no ReferenceGrant in shop allows HTTPRoutes from web: its share of requests gets 500"#,
            r#"case.yaml:14: warning: HTTPRoute web/r: spec.rules[0].backendRefs[1].name: Service web/details is not defined: its share of requests gets 500"#,
        ],
    },
    FindingCase {
        name: "Gateway API Gateway: listeners",
        yaml: r#"apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: istio
  listeners:
  - {name: web, port: 80, protocol: HTTP, tls: {certificateRefs: [{name: c}]}}
  - {name: web, port: 443, protocol: HTTPS}
  - name: tcp
    port: 9000
    protocol: TCP
    hostname: a.example.com
  - name: sel
    port: 8080
    protocol: HTTP
    allowedRoutes: {namespaces: {from: Selector}}
  - name: two-certs
    port: 8443
    protocol: HTTPS
    tls: {certificateRefs: [{name: rsa}, {name: ecdsa}]}
"#,
        want: &[
            r#"case.yaml:7: error: Gateway default/gw: spec.listeners[0].tls: an HTTP listener cannot have tls"#,
            r#"case.yaml:8: error: Gateway default/gw: spec.listeners[1].name: listener name "web" is used twice"#,
            r#"case.yaml:8: error: Gateway default/gw: spec.listeners[1].tls: an HTTPS listener needs tls"#,
            r#"case.yaml:12: error: Gateway default/gw: spec.listeners[2].hostname: a TCP listener cannot have a hostname"#,
            r#"case.yaml:16: error: Gateway default/gw: spec.listeners[3].allowedRoutes.namespaces.selector: from: Selector needs a selector"#,
            r#"case.yaml:20: warning: Gateway default/gw: spec.listeners[4].tls.certificateRefs: only the first of 2 certificateRefs is served (one certificate per listener here, not one per key type)"#,
        ],
    },
    FindingCase {
        name: "GRPCRoute: a method match needs a part; no URLRewrite; v1alpha2 is not served",
        yaml: r#"apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: g}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches: [{method: {type: Exact}}]
    filters: [{type: URLRewrite, urlRewrite: {hostname: x.example.com}}]
    backendRefs: [{name: grpc, port: 50051}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: GRPCRoute
metadata: {name: old}
spec: {}
"#,
        want: &[
            r#"case.yaml:7: error: GRPCRoute default/g: spec.rules[0].matches[0].method: one or both of service and method must be set"#,
            r#"case.yaml:8: error: GRPCRoute default/g: spec.rules[0].filters[0].type: URLRewrite is not a GRPCRoute filter"#,
            r#"case.yaml:11: error: GRPCRoute default/old: apiVersion: unsupported apiVersion "gateway.networking.k8s.io/v1alpha2" for GRPCRoute; use one of gateway.networking.k8s.io/v1"#,
        ],
    },
];

#[test]
fn invalid_configs_report_the_exact_finding() {
    assert!(CASES.len() >= 40);
    check_findings(CASES, &LoadOptions::default());
}
