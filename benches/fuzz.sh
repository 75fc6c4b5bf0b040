#!/bin/sh
# The fuzz targets (proptest, stable toolchain) at a long run's case count:
#   benches/fuzz.sh            10^6 cases per target
#   CASES=10000 benches/fuzz.sh
# Targets: the YAML loader (mutated Bookinfo configs, arbitrary text) and the string
# matchers against the regex model (mesh-core/tests/fuzz.rs); JWT tokens, JWKS documents
# and path normalisation (mesh-authz/tests/fuzz.rs); the HTTP/1.1 framing follower
# (mesh-proxy/src/framing.rs); the capture listener's protocol sniffing
# (mesh-proxy/src/capture/sniff.rs) and the DNS proxy (mesh-proxy/src/capture/dns.rs). CI runs each at proptest's default, 256 cases.
# A failure prints the minimal case; proptest keeps it under proptest-regressions/.
set -eu
cd "$(dirname "$0")/.."
export PROPTEST_CASES="${CASES:-1000000}"
cargo test --release -p mesh-core --test fuzz
cargo test --release -p mesh-authz --test fuzz
cargo test --release -p mesh-proxy --lib framing
cargo test --release -p mesh-proxy --lib capture::sniff
cargo test --release -p mesh-proxy --lib capture::dns
