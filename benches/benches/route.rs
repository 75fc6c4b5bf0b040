//! Route matching and table compilation.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use mesh_benches::{bookinfo, synthetic};
use mesh_route::policy::{ProxyContext, RouteOutcome, RouteTable, matching::RequestInfo};

fn request<'a>(authority: &'a str, path: &'a str, headers: &'a HeaderMap) -> RequestInfo<'a> {
    RequestInfo { method: "GET", scheme: "http", authority, path, query: None, headers }
}

fn matched(d: RouteOutcome<'_>) -> bool {
    matches!(d, RouteOutcome::Matched(..))
}

fn bookinfo_match(c: &mut Criterion) {
    let (snapshot, registry) = bookinfo();
    let sidecar = RouteTable::compile(&snapshot, &registry, &ProxyContext::sidecar("default", Default::default()));
    let gateway = RouteTable::compile(&snapshot, &registry, &ProxyContext::gateway("default", "bookinfo-gateway"));
    let mut jason = HeaderMap::new();
    jason.insert("end-user", "jason".parse().unwrap());
    let plain = HeaderMap::new();

    let mut g = c.benchmark_group("bookinfo_match");
    g.bench_function("reviews_jason_v2", |b| {
        b.iter(|| matched(sidecar.route(&request(black_box("reviews:9080"), "/reviews/0", &jason), None)))
    });
    g.bench_function("reviews_default_v1", |b| {
        b.iter(|| matched(sidecar.route(&request(black_box("reviews:9080"), "/reviews/0", &plain), None)))
    });
    g.bench_function("ratings_no_vs", |b| {
        b.iter(|| matched(sidecar.route(&request(black_box("ratings:9080"), "/ratings/0", &plain), None)))
    });
    g.bench_function("gateway_productpage", |b| {
        b.iter(|| {
            matched(gateway.route(&request(black_box("bookinfo.example.com"), "/productpage", &plain), Some(8080)))
        })
    });
    g.finish();
}

fn synthetic_match(c: &mut Criterion) {
    let (snapshot, registry) = synthetic(1000, 10);
    let table = RouteTable::compile(&snapshot, &registry, &ProxyContext::sidecar("default", Default::default()));
    let mut tenant = HeaderMap::new();
    tenant.insert("x-tenant", "t8".parse().unwrap());
    let plain = HeaderMap::new();
    let mut g = c.benchmark_group("synthetic_1000x10");
    // The 9th route of host 777 (eight misses first), and the final catch-all.
    g.bench_function("route_9_of_10", |b| {
        b.iter(|| matched(table.route(&request(black_box("svc-777:8080"), "/api/v8/items", &tenant), None)))
    });
    g.bench_function("catch_all", |b| {
        b.iter(|| matched(table.route(&request(black_box("svc-123"), "/other", &plain), None)))
    });
    g.finish();
}

fn compile(c: &mut Criterion) {
    let (snapshot, registry) = synthetic(1000, 10);
    let ctx = ProxyContext::sidecar("default", Default::default());
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("1000_virtual_services", |b| {
        b.iter(|| RouteTable::compile(black_box(&snapshot), &registry, &ctx))
    });
    g.finish();
}

criterion_group!(benches, bookinfo_match, synthetic_match, compile);
criterion_main!(benches);
