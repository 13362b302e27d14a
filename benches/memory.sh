#!/usr/bin/env bash
# Resident memory of the release binary with N devices (default 1000) × M metrics (1 or 2, default
# 2) whose windows and chart rings are full, for each analysis.history in H (default "300 0").
# DET=zscore (default) runs one zscore detector over the window; DET=default leaves the template
# without `window`/`detectors`, so the defaults (the ensemble) run.
# Prints VmRSS/VmHWM in MiB.     benches/memory.sh     N=5000 M=1 H="600 300 0" DET=default benches/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
M=${M:-2}
WINDOW=${WINDOW:-256}
SAMPLES=${SAMPLES:-700}   # per metric: more than the window (256) and the ring (600)
DET=${DET:-zscore}
if [ "$DET" = default ]; then
  template=""
else
  template="window = $WINDOW
detectors = [{ type = \"zscore\", window = $WINDOW, threshold = 6.0, warmup = 32 }]"
fi
cargo build --release --locked -q
bin=$PWD/target/release/edgewatch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for history in ${H:-300 0}; do
  cat > "$work/mem.toml" <<TOML
node_id = "mem"
data_dir = "$work/data-$history"
persist_interval = "1h"
[api]
listen = "127.0.0.1:0"
[analysis]
history = $history
shards = 2
[unknown_devices]
policy = "register"
template = "t"
[template.t]
$template
[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
TOML
  "$bin" run --config "$work/mem.toml" 2> "$work/log-$history" &
  pid=$!
  for _ in $(seq 100); do grep -q "tcp source listening on" "$work/log-$history" && break; sleep 0.1; done
  addr=$(grep -o "listening on [0-9.:]*" "$work/log-$history" | tail -1 | awk '{print $3}')
  python3 - "$addr" "$N" "$SAMPLES" "$M" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
n, samples, m = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.create_connection((host, int(port)))
t0 = 1_763_000_000_000
for k in range(samples):
    lines = []
    for d in range(n):
        v = 20 + ((k * 31 + d * 17) % 97) / 97
        if m == 1:
            lines.append('{"device":"dev-%05d","ts":%d,"temp":%.3f}\n' % (d, t0 + k * 1000, v))
        else:
            lines.append('{"device":"dev-%05d","ts":%d,"temp":%.3f,"hum":%.3f}\n' % (d, t0 + k * 1000, v, v * 2))
    s.sendall("".join(lines).encode())
s.close()
PY
  api=$(grep -o "API at http://[0-9.:]*" "$work/log-$history" | head -1 | cut -d/ -f3)
  want=$((M * N * SAMPLES))
  for _ in $(seq 600); do
    got=$(curl -s "http://$api/api/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["analysis"]["samples"])')
    [ "$got" -ge "$want" ] && break; sleep 0.2
  done
  sleep 1
  echo "det=$DET history=$history window=$WINDOW devices=$N metrics=$((M * N)): $(awk '/VmRSS|VmHWM|RssAnon|RssFile/ {printf "%s %.1f MiB  ", $1, $2/1024}' /proc/$pid/status)"
  kill -TERM $pid; wait $pid || true
done
