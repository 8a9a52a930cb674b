#!/usr/bin/env bash
# The gateway benchmark: installs wrk if missing (scripts/ensure-deps.sh --bench), then runs
# `cargo run --release -p actormesh-gateway --example gateway_bench`, which loads, in the same
# run, the gateway (HTTP -> remote group ask on another node) and a bare axum handler doing
# the same work in process, with wrk, and prints requests/s, p50 and p99 of both and the
# latency the gateway adds. Arguments go to the benchmark (e.g. --seconds 20 --connections 64).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

./scripts/ensure-deps.sh --bench
cargo run --release -p actormesh-gateway --example gateway_bench -- "$@"
