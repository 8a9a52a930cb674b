#!/usr/bin/env bash
# What metrics cost on the hot path, in instructions: runs `metrics_bench --only <workload>`
# under `valgrind --tool=callgrind` with metrics off and on, each at N and 2N messages, and
# prints the instructions per message of each side ((I(2N) - I(N)) / N: start-up and shutdown
# cancel out) and their difference. Instruction counts do not depend on what else the machine
# runs, unlike the timings of `metrics_bench`. Installs valgrind if missing
# (scripts/ensure-deps.sh --bench).
#
#   scripts/bench-metrics-instructions.sh [N]     (default N = 20000)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

n="${1:-20000}"
case "$n" in
    '' | *[!0-9]*)
        echo "usage: $0 [N]   (N: messages per workload, a positive integer)" >&2
        exit 2
        ;;
esac

./scripts/ensure-deps.sh --bench
cargo build --release -p actormesh-examples --bin metrics_bench
bin="${CARGO_TARGET_DIR:-$PWD/target}/release/metrics_bench"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Instructions of one run (all threads), from callgrind's summary line.
instructions() {
    local log="$work/log"
    valgrind --tool=callgrind --callgrind-out-file="$work/out" \
        "$bin" --only "$1" --metrics "$2" --n "$3" >"$work/stdout" 2>"$log" || {
        echo "metrics_bench --only $1 --metrics $2 --n $3 failed under valgrind:" >&2
        tail -20 "$log" >&2
        exit 1
    }
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$log" | tail -1
}

echo "instructions per message (callgrind, N = $n and 2N, release build; $(uname -m))"
printf '%-14s %16s %16s %12s\n' workload "metrics off" "metrics on" "on - off"
for workload in local remote ask; do
    per() {
        local small large
        small=$(instructions "$workload" "$1" "$n")
        large=$(instructions "$workload" "$1" "$((2 * n))")
        echo $(((large - small) / n))
    }
    off=$(per off)
    on=$(per on)
    printf '%-14s %16s %16s %12s\n' "$workload" "$off" "$on" "$((on - off))"
done
