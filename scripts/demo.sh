#!/usr/bin/env bash
# Runs the actormesh demo: several nodes in one process on the embedded discovery, asks and
# tells across nodes, a remote spawn, a named lookup, and a reference passed inside a message.
# Installs what is missing first (see scripts/ensure-deps.sh). Arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

./scripts/ensure-deps.sh
cargo run --release -p actormesh-examples --bin demo -- "$@"
