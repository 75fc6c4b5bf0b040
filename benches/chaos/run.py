#!/usr/bin/env python3
"""The chaos suite: what a dead pod or a hostile client does to the mesh, with figures.

    python3 benches/chaos/run.py [--duration 10] [--only kill,flood,...] [--no-write]

Builds the release binaries, then runs each case on loopback (release mesh-sidecar
processes in front of `bookinfo serve ratings`, a Python load generator of keep-alive
clients: no tool to install) and prints a table, also written into benches/README.md:

- kill: one of three ratings replicas killed (SIGKILL, sidecar and app) under load, with
  Istio's default retry policy, then again with outlierDetection: success % after the kill.
- bad-body: malformed chunked bodies from one client, outlierDetection on: the other
  clients' success %, the bad requests' statuses, ejections.
- zero-byte: 700 connections that send nothing against a sidecar under `ulimit -n 600`:
  the established clients' success %, how soon a new client is served, the sidecar's fds.
- cert-rotation: workload certificates re-issued every 2 s (`--cert-ttl 3s`) under load.
- reloads: 100 config writes (every tenth invalid) under load, each past the watcher's
  debounce so that each is loaded.
- cardinality: 1,000 distinct Host headers at the outbound and 1,000 forged peer headers at
  the inbound: series added to /stats/prometheus.

The fast versions of these run as cargo tests (examples/sidecar/tests/hostile.rs,
tests/sidecar.rs, mesh-telemetry's label tests).
"""

import argparse
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loadrun import ROOT, free_port, wait_port, write_section  # noqa: E402

BIN = ROOT / "target" / "release"
HOST = "ratings:9080"

OUTLIER = """---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings-outlier}
spec:
  host: ratings
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 100}
"""


class Proc:
    """A child process; its stderr kept in a file and scanned for `listening on` lines."""

    def __init__(self, argv, log, fd_limit=None):
        self.log_path = log
        self.log = open(log, "w")
        if fd_limit:
            argv = ["sh", "-c", f'ulimit -n {fd_limit} && exec "$@"', "sh"] + argv
        self.p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.log)

    def listeners(self, want, timeout=30.0):
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = dict(re.findall(r"mesh-sidecar: (\S+) listening on 127\.0\.0\.1:(\d+)", self.text()))
            if len(found) >= want:
                return {k: int(v) for k, v in found.items()}
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit(f"{self.log_path}:\n{self.text()}")

    def text(self):
        return Path(self.log_path).read_text(errors="replace")

    def fds(self):
        try:
            return len(os.listdir(f"/proc/{self.p.pid}/fd"))
        except OSError:
            return 0

    def kill(self):
        self.p.send_signal(signal.SIGKILL)
        self.p.wait()

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
        self.log.close()


class Mesh:
    """A config directory (Bookinfo's mesh config plus extras), a CA, and the processes."""

    def __init__(self, work, name, extra=""):
        self.dir = work / name
        self.config = self.dir / "config"
        shutil.copytree(ROOT / "examples" / "bookinfo" / "config" / "mesh", self.config)
        if extra:
            (self.config / "extra.yaml").write_text(extra)
        self.ca = self.dir / "ca"
        self.procs = []

    def app(self):
        port = free_port()
        p = Proc([str(BIN / "bookinfo"), "serve", "ratings", "--listen", f"127.0.0.1:{port}"], self.dir / f"app-{port}.log")
        self.procs.append(p)
        wait_port(port, "bookinfo serve ratings")
        return p, port

    def sidecar(self, labels, *args, app=None, fd_limit=None):
        argv = [str(BIN / "mesh-sidecar"), "--config", str(self.config), "--ca-dir", str(self.ca)]
        argv += ["--workload-labels", labels, "--outbound", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-level", "info"]
        argv += ["--access-log", "off"]
        if app:
            argv += ["--inbound", "127.0.0.1:0", "--app", f"127.0.0.1:{app}"]
        p = Proc(argv + list(args), self.dir / f"sidecar-{len(self.procs)}.log", fd_limit)
        self.procs.append(p)
        p.ports = p.listeners(3 if app else 2)
        return p

    def replica(self, *args):
        app, port = self.app()
        return app, self.sidecar("app=ratings,version=v1", *args, app=port)

    def client(self, replicas, *args, fd_limit=None):
        eps = []
        for _, s in replicas:
            eps += ["--endpoint", f"default/ratings-v1=127.0.0.1:{s.ports['inbound']}"]
        return self.sidecar("app=reviews,version=v1", *eps, *args, fd_limit=fd_limit)

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


def stats(sidecar):
    with urllib.request.urlopen(f"http://127.0.0.1:{sidecar.ports['admin']}/stats/prometheus", timeout=10) as r:
        return r.read().decode()


def metric(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
    return total


def series(text):
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


class Load:
    """`n` threads, each a keep-alive client in a loop: (send time, status or error)."""

    def __init__(self, port, n=8):
        self.port, self.stop_at, self.results = port, None, []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]
        self.running = True
        for t in self.threads:
            t.start()

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while self.running:
            sent = time.monotonic()
            try:
                conn.request("GET", "/ratings/0", headers={"Host": HOST})
                r = conn.getresponse()
                r.read()
                status = r.status
                if r.getheader("connection", "").lower() == "close":
                    conn.close()
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            with self.lock:
                self.results.append((sent, status))

    def finish(self):
        self.running = False
        for t in self.threads:
            t.join(15)
        return self.results

    @staticmethod
    def rate(results, since=0.0):
        after = [s for t, s in results if t >= since]
        ok = sum(1 for s in after if s == 200)
        return ok, len(after), [s for s in after if s != 200]


def pct(ok, n):
    return f"{100.0 * ok / n:.3f} %" if n else "n/a"


def fresh(port, timeout=2.0):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request("GET", "/ratings/0", headers={"Host": HOST})
        s = c.getresponse().status
        c.close()
        return s
    except (OSError, http.client.HTTPException):
        return None


def case_kill(work, duration, outlier):
    m = Mesh(work, "kill-outlier" if outlier else "kill", OUTLIER if outlier else "")
    try:
        replicas = [m.replica() for _ in range(3)]
        client = m.client(replicas)
        load = Load(client.ports["outbound"], 16)
        time.sleep(duration / 3)
        killed = time.monotonic()
        replicas[0][1].kill()
        replicas[0][0].kill()
        time.sleep(duration * 2 / 3)
        ok, n, failed = Load.rate(load.finish(), killed)
        retries = metric(stats(client), "mesh_upstream_retries_total")
        name = "kill one of three replicas" + (", outlierDetection" if outlier else ", default retries")
        target = 99.99 if outlier else 99.9
        return [(name, f"{pct(ok, n)} of {n} requests after the kill succeed ({len(failed)} failed, {retries:.0f} retries)",
                 ok * 100.0 >= n * target)]
    finally:
        m.stop()


BAD_BODIES = [b"zz\r\nabc\r\n0\r\n\r\n", b"-1\r\nabc\r\n0\r\n\r\n", b"0x5\r\nabcde\r\n0\r\n\r\n",
              b"100000000000000000\r\nabc\r\n0\r\n\r\n", b"3\r\nabcxyz0\r\n\r\n"]


def case_bad_body(work, duration):
    m = Mesh(work, "bad-body", OUTLIER)
    try:
        client = m.client([m.replica()])
        port = client.ports["outbound"]
        load = Load(port, 8)
        statuses = {}
        deadline = time.monotonic() + duration
        sent = 0
        while time.monotonic() < deadline and sent < 1000:
            body = BAD_BODIES[sent % len(BAD_BODIES)]
            with socket.create_connection(("127.0.0.1", port), 5) as s:
                s.sendall(b"POST /ratings/0 HTTP/1.1\r\nHost: ratings:9080\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
                s.settimeout(5)
                try:
                    head = s.recv(64).split(b" ")[1].decode()
                except (OSError, IndexError):
                    head = "none"
            statuses[head] = statuses.get(head, 0) + 1
            sent += 1
        ok, n, failed = Load.rate(load.finish())
        ejections = metric(stats(client), "mesh_outlier_ejections_total")
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
        return [("bad-body flood, outlierDetection",
                 f"{sent} bad bodies ({answers}); other clients {pct(ok, n)} of {n}; {ejections:.0f} ejections",
                 ejections == 0 and not failed and set(statuses) == {"400"})]
    finally:
        m.stop()


def case_zero_byte(work, duration):
    m = Mesh(work, "zero-byte")
    try:
        client = m.client([m.replica()], "--first-byte-timeout", "2s", fd_limit=600)
        port = client.ports["outbound"]
        load = Load(port, 4)
        time.sleep(1)
        held, peak = [], 0
        for _ in range(700):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), 1))
            except OSError:
                break
        flooded = time.monotonic()
        peak = max(peak, client.fds())
        served_after = None
        while time.monotonic() < flooded + duration:
            peak = max(peak, client.fds())
            if served_after is None and fresh(port) == 200:
                served_after = time.monotonic() - flooded
            time.sleep(0.1)
        ok, n, failed = Load.rate(load.finish(), flooded)
        text = stats(client)
        overflow = metric(text, "envoy_listener_downstream_cx_overflow_total")
        timeouts = metric(text, "envoy_listener_downstream_pre_cx_timeout_total")
        warnings = client.text().count("accept failed")
        for s in held:
            s.close()
        after = "never" if served_after is None else f"{served_after:.1f} s"
        return [("zero-byte flood, 700 conns, ulimit -n 600",
                 f"established clients {pct(ok, n)} of {n}; a new client served after {after}; peak {peak} fds; "
                 f"{overflow:.0f} refused at the cap, {timeouts:.0f} timed out, {warnings} accept-failure lines",
                 not failed and served_after is not None)]
    finally:
        m.stop()


def case_cert_rotation(work, duration):
    m = Mesh(work, "certs")
    try:
        replicas = [m.replica("--cert-ttl", "3s")]
        client = m.client(replicas, "--cert-ttl", "3s")
        load = Load(client.ports["outbound"], 8)
        time.sleep(duration)
        ok, n, failed = Load.rate(load.finish())
        rotated = client.text().count("workload certificate rotated") + replicas[0][1].text().count(
            "workload certificate rotated")
        return [("certificates rotated under load", f"{pct(ok, n)} of {n} succeed; {rotated} rotations",
                 not failed and rotated >= 4)]
    finally:
        m.stop()


ROUTE = """apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings}}
spec:
  hosts: [ratings]
  http:
  - timeout: {timeout}s
    route: [{{destination: {{host: ratings, subset: v1}}}}]
"""


def case_reloads(work, duration):
    m = Mesh(work, "reloads")
    try:
        client = m.client([m.replica()])
        load = Load(client.ports["outbound"], 8)
        target = m.config / "chaos-route.yaml"
        for i in range(100):
            text = "kind: VirtualService\nspec: [unclosed\n" if i % 10 == 9 else ROUTE.format(timeout=5 + i)
            tmp = m.config / ".chaos-route.tmp"
            tmp.write_text(text)
            os.replace(tmp, target)
            # Past the watcher's 100 ms debounce, so that each write is a load of its own.
            time.sleep(max(duration / 100, 0.2))
        target.write_text(ROUTE.format(timeout=5))
        time.sleep(1)
        ok, n, failed = Load.rate(load.finish())
        text = stats(client)
        reloads = metric(text, "mesh_config_reloads_total")
        errors = metric(text, "mesh_config_reload_errors_total")
        return [("100 config writes (10 invalid) under load",
                 f"{pct(ok, n)} of {n} succeed; {reloads:.0f} snapshots published, {errors:.0f} rejected",
                 not failed and reloads >= 50 and errors >= 5)]
    finally:
        m.stop()


def case_cardinality(work, _duration):
    m = Mesh(work, "cardinality")
    try:
        app, server = m.replica()
        client = m.client([(app, server)])
        fresh(client.ports["outbound"])
        before_out, before_in = series(stats(client)), series(stats(server))
        conn = http.client.HTTPConnection("127.0.0.1", client.ports["outbound"], timeout=10)
        for i in range(1000):
            conn.request("GET", "/ratings/0", headers={"Host": f"attacker-{i}.example:9080"})
            conn.getresponse().read()
        inbound = http.client.HTTPConnection("127.0.0.1", server.ports["inbound"], timeout=10)
        for i in range(1000):
            peer = f"workload=forged-{i};namespace=ns-{i};app=a{i};version=v{i};service_account=sa{i}"
            inbound.request("GET", "/ratings/0", headers={"Host": f"h{i}", "x-mesh-peer": peer})
            inbound.getresponse().read()
        added_out = series(stats(client)) - before_out
        added_in = series(stats(server)) - before_in
        return [("cardinality: 1,000 Hosts out, 1,000 forged peers in",
                 f"{added_out} series added at the outbound, {added_in} at the inbound",
                 added_out <= 100 and added_in <= 100)]
    finally:
        m.stop()


CASES = {
    "kill": lambda w, d: case_kill(w, d, False) + case_kill(w, d, True),
    "bad-body": case_bad_body,
    "zero-byte": case_zero_byte,
    "cert-rotation": case_cert_rotation,
    "reloads": case_reloads,
    "cardinality": case_cardinality,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10, help="seconds of load per case")
    ap.add_argument("--only", default=",".join(CASES), help="comma-separated cases")
    ap.add_argument("--no-write", action="store_true", help="print only; leave benches/README.md alone")
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "mesh-sidecar", "-p", "bookinfo"], cwd=ROOT, check=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mesh-chaos-") as tmp:
        for name in args.only.split(","):
            print(f"== {name}", flush=True)
            for row in CASES[name](Path(tmp), args.duration):
                print(f"   {row[0]}: {row[1]} [{'ok' if row[2] else 'FAILED'}]", flush=True)
                rows.append(row)
    table = "| case | figure | holds |\n|---|---|---|\n" + "\n".join(
        f"| {c} | {f} | {'yes' if ok else '**no**'} |" for c, f, ok in rows)
    print("\n" + table)
    if not args.no_write and args.only == ",".join(CASES):
        write_section("chaos", table)
    sys.exit(0 if all(ok for _, _, ok in rows) else 1)


if __name__ == "__main__":
    main()
