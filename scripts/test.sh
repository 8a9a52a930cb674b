#!/usr/bin/env bash
# Runs the whole actormesh test suite: unit, integration and multi-process tests, the book's
# listings and the service-template check, then the doctests, then the API documentation
# (`cargo doc`, every rustdoc warning an error: broken intra-doc links fail the suite). Installs
# what is missing first (see scripts/ensure-deps.sh). Arguments go to both cargo test runs
# (e.g. -- --nocapture).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

./scripts/ensure-deps.sh --etcd
cargo test --workspace --all-targets --features actormesh/etcd-tls,actormesh/dev-certs,actormesh/postgres,actormesh/otlp "$@"
cargo test --workspace --doc --features actormesh/etcd-tls,actormesh/dev-certs,actormesh/postgres,actormesh/otlp "$@"
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" \
    cargo doc --no-deps --workspace --features actormesh/etcd-tls,actormesh/dev-certs,actormesh/postgres,actormesh/otlp
