#!/usr/bin/env bash
# Runs the reference workload of ../shared/bench against the release binary.
#   benches/workload.sh tcp 100000 300000      (MODE=tcp, rates in samples/s)
#   D=1000 benches/workload.sh tcp 100000      (1,000 devices)
# Results: one JSON line per point in bench-results/custom.jsonl (see ../shared/bench/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:?usage: benches/workload.sh tcp|mqtt RATE...}; shift
BENCH=${BENCH:-$(cd .. && pwd)/shared/bench}
[ -x "$BENCH/run_peer.sh" ] || { echo "no load generator at $BENCH" >&2; exit 1; }
cargo build --release --locked -q
cfg=${CONFIG:-config/bench-$mode.toml}
data=$(awk -F'"' '/^data_dir/ {print $2}' "$cfg")
log=/tmp/edgewatch-bench-$mode.log
export MODE=$mode TCP_ADDR=127.0.0.1:9000 RESULTS=${RESULTS:-$PWD/bench-results}
export PEER_LOG=$log PEER_WS=${PEER_WS:-ws://127.0.0.1:8080/ws?state=firing}
export PEER_READY=${PEER_READY:-'listening on|subscribed'}
export PEER_RUN="rm -rf '$data'; RUST_LOG=warn,edgewatch=info nohup $PWD/target/release/edgewatch run --config $PWD/$cfg > $log 2>&1 & echo \$!"
exec "$BENCH/run_peer.sh" custom "$@"
