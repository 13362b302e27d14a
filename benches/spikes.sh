#!/usr/bin/env bash
# The reference workload of ../shared/bench (Gaussian noise, +12σ spikes, 100 devices over TCP on
# loopback) against the release binary with the DEFAULT detector set (config/bench-default.toml),
# at each rate (samples/s; default 2k, 10k, 100k, 1M), T seconds each (default 20). Prints one
# table row per rate: samples sent, spikes injected and matched, false alerts (and per million
# samples), latency p50/p99 (ms), samples the appliance reports analysed (its summaries' totals).
#   benches/spikes.sh                 T=10 benches/spikes.sh 2000 10000
set -euo pipefail
cd "$(dirname "$0")/.."
rates=("$@")
[ ${#rates[@]} -eq 0 ] && rates=(2000 10000 100000 1000000)
# RESULTS=DIR keeps the loadgen's JSON lines (DIR/custom.jsonl); a temporary directory otherwise.
if [ -n "${RESULTS:-}" ]; then results=$RESULTS; mkdir -p "$results"; else
  results=$(mktemp -d); trap 'rm -rf "$results"' EXIT; fi
CONFIG=config/bench-default.toml RESULTS=$results PEER_WS=ws://127.0.0.1:8080/ws?state=firing \
  benches/workload.sh tcp "${rates[@]}" >&2
echo "| offered /s | achieved /s | samples | spikes | matched | false alerts | false / 1M samples | latency p50 / p99 ms | samples analysed |"
echo "|---|---|---|---|---|---|---|---|---|"
python3 - "$results/custom.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    lg = r.get("loadgen") or {}
    g = lambda k: "?" if lg.get(k) is None else lg[k]
    sent = lg.get("sent") or 0
    false = lg.get("false_alerts")
    per_m = f"{1e6 * false / sent:.2f}" if sent and false is not None else "?"
    print(f"| {r.get('rate_offered', '?'):.0f} | {g('rate_achieved')} | {sent} | {g('spikes_injected')} "
          f"| {g('alerts_matched')} ({g('matched_pct')} %) | {g('false_alerts')} | {per_m} "
          f"| {g('latency_ms_p50')} / {g('latency_ms_p99')} | {g('sut_reported_total')} |")
PY
