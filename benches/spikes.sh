#!/usr/bin/env bash
# The reference workload of ../shared/bench (Gaussian noise, +12σ spikes, 100 devices over TCP on
# loopback) against the release binary with the DEFAULT detector set (config/bench-default.toml),
# at each rate (samples/s; default 2k, 10k, 100k, 1M), T seconds each (default 20). Prints one
# table row per rate: spikes matched / injected, false alerts, latency p50/p99 (ms).
#   benches/spikes.sh                 T=10 benches/spikes.sh 2000 10000
set -euo pipefail
cd "$(dirname "$0")/.."
rates=("$@")
[ ${#rates[@]} -eq 0 ] && rates=(2000 10000 100000 1000000)
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
CONFIG=config/bench-default.toml RESULTS=$results PEER_WS=ws://127.0.0.1:8080/ws?state=firing \
  benches/workload.sh tcp "${rates[@]}" >&2
echo "| offered /s | achieved /s | matched | false alerts | latency p50 / p99 ms |"
echo "|---|---|---|---|---|"
python3 - "$results/custom.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    g = lambda *k: next((r[x] for x in k if x in r and r[x] is not None), "?")
    print(f"| {g('rate_offered','rate')} | {g('rate_achieved')} | {g('alerts_matched')}/{g('spikes_injected')} "
          f"| {g('false_alerts')} | {g('latency_ms_p50')} / {g('latency_ms_p99')} |")
PY
