#!/usr/bin/env python3
"""The cost of the mesh on Bookinfo's page: /productpage latency and throughput with no mesh
(the services calling each other directly), embedded mode (every service links the mesh
in-process; the ingress gateway is the only proxy) and sidecar mode (every service beside its
mesh-sidecar), each started with `bookinfo up`, in one run, interleaved, median of --runs.

    python3 benches/bookinfo/run.py              # 3 runs of 10 s per mode
    python3 benches/bookinfo/run.py --no-write   # print only

The mesh modes are measured through the ingress gateway, as users reach the page; no mesh
is measured at productpage itself. No VirtualService is applied: reviews v1, v2 and v3 take
turns in every mode (round robin in the mesh, per call without it). Needs wrk; writes the
table into benches/README.md between the bookinfo-bench markers.
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from loadrun import free_port, write_section, wrk  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def start(binary, mode, work):
    """`bookinfo up` in `mode`; the process and the productpage URL it printed."""
    state = work / mode
    state.mkdir(parents=True, exist_ok=True)
    log = open(state / "up.log", "w+")
    p = subprocess.Popen(
        [binary, "up", "--mode", mode, "--ingress", f"127.0.0.1:{free_port()}", "--dashboard", "127.0.0.1:0",
         "--config-dir", str(state / "config")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        text = (state / "up.log").read_text()
        if "Ctrl-C stops everything" in text:
            url = re.search(r"productpage\s+(http://\S+/productpage)", text).group(1)
            return p, url
        if p.poll() is not None:
            sys.exit(f"bookinfo up --mode {mode} exited:\n{text}")
        time.sleep(0.1)
    p.kill()
    sys.exit(f"bookinfo up --mode {mode} did not come up")


def stop(p):
    os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        sys.exit("wrk is missing: apt-get install wrk")
    print("building bookinfo (release) ...", flush=True)
    subprocess.run(["cargo", "build", "-q", "--release", "-p", "bookinfo"], cwd=ROOT, check=True)
    binary = str(ROOT / "target" / "release" / "bookinfo")
    work = Path(tempfile.mkdtemp(prefix="bookinfo-bench-"))
    modes = ["none", "embedded", "sidecar"]
    results = {m: [] for m in modes}
    for run in range(args.runs):
        for mode in modes:
            p, url = start(binary, mode, work)
            try:
                warm = wrk(url, 2, args.connections, args.threads)
                if warm["failed"]:
                    sys.exit(f"{mode}: failed requests during warm-up: {warm}")
                r = wrk(url, args.duration, args.connections, args.threads)
            finally:
                stop(p)
            results[mode].append(r)
            print(f"run {run + 1} {mode}: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
                  f"failed {r['failed']}", flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ["rps", "p50", "p99", "failed"]} for m, rs in results.items()}
    none = med["none"]
    names = {
        "none": "no mesh (direct calls)",
        "embedded": "embedded (all four linked in; only the gateway proxies)",
        "sidecar": "sidecar (every service beside mesh-sidecar)",
    }
    lines = [
        f"Run {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores: wrk -t{args.threads} -c{args.connections} on "
        f"`/productpage`, {args.duration} s per run, median of {args.runs} interleaved runs.",
        "",
        "| mode | req/s | p50 ms | p99 ms | p50 vs no mesh | p99 vs no mesh | throughput vs no mesh | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in modes:
        x = med[m]
        target = {"none": "", "embedded": "p50 ≤ 1.3x, throughput ≥ 0.75x", "sidecar": "p50 ≤ 2x"}[m]
        lines.append(
            f"| {names[m]} | {x['rps']:.0f} | {x['p50']:.2f} | {x['p99']:.2f} | {x['p50'] / none['p50']:.2f}x | "
            f"{x['p99'] / none['p99']:.2f}x | {x['rps'] / none['rps']:.2f}x | {target} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    if not args.no_write:
        write_section("bookinfo-bench", table)


if __name__ == "__main__":
    main()
