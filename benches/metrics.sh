#!/usr/bin/env bash
# GET /metrics at scale: N devices (default 500) × 2 metrics (= 1,000 series by default) with
# every series' window filled, then R scrapes (default 50) timed by curl. Prints the median and
# worst scrape time and the body size (plain and gzip). Release build unless BIN is given.
#   benches/metrics.sh          N=2500 benches/metrics.sh          BIN=target/debug/edgewatch benches/metrics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-500}
R=${R:-50}
if [ -z "${BIN:-}" ]; then cargo build --release --locked -q; BIN=$PWD/target/release/edgewatch; fi
work=$(mktemp -d)
pid=""
trap '[ -n "$pid" ] && kill -TERM $pid 2>/dev/null; rm -rf "$work"' EXIT
cat > "$work/m.toml" <<TOML
node_id = "bench"
data_dir = "$work/data"
persist_interval = "1h"
[api]
listen = "127.0.0.1:0"
[api.metrics]
max_series = 100000
[unknown_devices]
policy = "register"
template = "t"
[template.t]
window = 64
[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
TOML
touch "$work/log"
"$BIN" run --config "$work/m.toml" 2> "$work/log" &
pid=$!
for _ in $(seq 100); do grep -q "tcp source listening on" "$work/log" && break; sleep 0.1; done
addr=$(grep -o "listening on [0-9.:]*" "$work/log" | tail -1 | awk '{print $3}')
api=$(grep -o "API at http://[0-9.:]*" "$work/log" | head -1 | cut -d/ -f3)
python3 - "$addr" "$N" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
n = int(sys.argv[2])
s = socket.create_connection((host, int(port)))
t0 = 1_763_000_000_000
for k in range(80):
    s.sendall("".join('{"device":"dev-%05d","ts":%d,"temp":%.3f,"hum":%.3f}\n' % (d, t0 + k * 1000, 20 + (k * 31 + d) % 97 / 97, 50 + (k + d) % 13) for d in range(n)).encode())
s.close()
PY
want=$((2 * N * 80))
for _ in $(seq 600); do
  got=$(curl -s "http://$api/api/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["analysis"]["samples"])')
  [ "$got" -ge "$want" ] && break; sleep 0.2
done
series=$(curl -s "http://$api/metrics" | grep -c '^edgewatch_series_last{')
for _ in $(seq "$R"); do curl -s -o /dev/null -w '%{time_total}\n' "http://$api/metrics"; done | sort -n > "$work/times"
size=$(curl -s "http://$api/metrics" | wc -c)
gz=$(curl -s -H 'Accept-Encoding: gzip' "http://$api/metrics" | wc -c)
awk -v s="$series" -v r="$R" -v size="$size" -v gz="$gz" '{t[NR]=$1} END {printf "series=%d scrapes=%d median=%.1f ms max=%.1f ms size=%d bytes (gzip %d bytes)\n", s, r, t[int((NR+1)/2)]*1000, t[NR]*1000, size, gz}' "$work/times"
