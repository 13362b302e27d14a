#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10) from its corpus in fuzz/corpus/<target>
# (read-only: new inputs go to a temp dir; keep interesting ones with `cp`), and prints the
# executions per target. Installs the nightly toolchain and cargo-fuzz when missing.
# A crash stops the script with the input saved under fuzz/artifacts/<target>/.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-10}
shift || true
if [ "$secs" = 0 ]; then
    echo "fuzz: skipped (0 seconds)"
    exit 0
fi
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
# No sanitizer: the code under test is safe Rust (panics are what we look for), and without
# ASan a target runs several times faster.
cargo +nightly fuzz build -s none
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%-10s %12s %8s\n' target executions exec/s
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    log="$work/$t.log"
    if ! cargo +nightly fuzz run -s none "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz target $t FAILED (input saved under fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    printf '%-10s %12s %8s\n' "$t" "${runs:-?}" "${rate:-?}"
done
