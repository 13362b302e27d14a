#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10) from its corpus in fuzz/corpus/<target>
# (read-only: new inputs go to a temp dir; keep interesting ones with `cp`), and prints the
# executions per target. Builds with the stable toolchain: the libFuzzer targets are compiled
# with the same coverage instrumentation `cargo fuzz build -s none` uses, so neither nightly nor
# cargo-fuzz is needed (`cargo +nightly fuzz run -s none T` works too, for its extra options).
# A crash stops the script with the input saved under fuzz/artifacts/<target>/.
# Usage: [FUZZ_PROFILE=ci] fuzz/run.sh [SECONDS] [TARGET...]   (ci: a cheaper build for short runs)
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-10}
shift || true
if [ "$secs" = 0 ]; then
    echo "fuzz: skipped (0 seconds)"
    exit 0
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
# The flags of `cargo fuzz build -s none` (cargo-fuzz 0.12), without a sanitizer: the code under
# test is safe Rust, a panic is the finding, and runs are several times faster without ASan.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# --target keeps the instrumentation off build scripts and proc macros.
profile=${FUZZ_PROFILE:-release}
cargo build --locked --profile "$profile" --bins --target "$triple" --target-dir target-stable -j "${JOBS:-2}"
bins=target-stable/$triple/$profile
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^edgewatch-fuzz$')
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p artifacts
printf '%-10s %12s %8s\n' target executions exec/s
for t in "${targets[@]}"; do
    mkdir -p "$work/$t" "artifacts/$t"
    log="$work/$t.log"
    if ! "$bins/$t" "$work/$t" "corpus/$t" -max_total_time="$secs" -rss_limit_mb=1024 \
        -timeout=10 -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz target $t FAILED (input saved under fuzz/artifacts/$t/)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
    printf '%-10s %12s %8s\n' "$t" "${runs:-?}" "${rate:-?}"
done
