#!/usr/bin/env bash
# Instructions per request through the whole outbound hop in memory (benches/hop.rs), counted
# by valgrind's callgrind: repeatable for the same binary whatever else the machine does, so
# a change's cost or gain shows without timing noise. Needs valgrind (apt-get install valgrind).
#   benches/hop-instructions.sh            # total per request and the top functions
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -q -p mesh-benches --profile quick-release --bench hop --no-run 2>/dev/null
bin=$(ls -t target/quick-release/deps/hop-* | grep -v '\.d$' | head -1)
out=$(mktemp -d)
valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" --bench --profile-time 2 outbound >/dev/null 2>&1
callgrind_annotate --tree=caller "$out/cg" >"$out/callers.txt"
callgrind_annotate --inclusive=yes "$out/cg" >"$out/inclusive.txt"
python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
callers = open(f"{out}/callers.txt").read()
# How many requests ran: the calls into the edge guard.
m = re.search(r"< [^\n]*\(([\d,]+)x\)[^\n]*\n[^\n]*\* [^\n]*mesh_proxy::guard::Guard<S> as tower_service::Service", callers)
n = int(m.group(1).replace(",", ""))
rows = []
for line in open(f"{out}/inclusive.txt"):
    m = re.match(r"\s*([\d,]+) \([^)]*\)\s+\S*?:(.*) \[", line)
    if m:
        rows.append((int(m.group(1).replace(",", "")), m.group(2)))
total = next(v for v, f in rows if f.startswith("hop::hop::{{closure}}::{{closure}}"))
print(f"requests: {n}")
print(f"instructions per request: {total // n}")
keys = ["Guard<S>", "Telemetry<S>", "Rescue<S>", "Router<S>", "Fault<S>", "Timeout<S>", "Retry<S>", "RetryFuture",
        "Balance<S>", "drop_in_place<http::request::Parts>", "Extensions::insert", "inject_with_request_id"]
for v, f in rows:
    if any(k in f for k in keys):
        print(f"{v // n:8d}  {f[:150]}")
PY
rm -rf "$out"
