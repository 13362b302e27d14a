#!/usr/bin/env bash
# Raw samples to a real InfluxDB 1.x (issue 13, item 7): 100 devices × 10 Hz over TCP (JSON lines,
# paced by a Python sender), release build.
#  1. edgewatch CPU% over T seconds without an output, then with `[[sink]] kind = "influxdb"`
#     `samples = "all"` (CPU from /proc/<pid>/stat, utime + stime, after a 10 s warm-up);
#  2. bytes on the wire per hour: the sink's `wire_bytes` (accepted gzipped request bodies);
#  3. catch-up: InfluxDB stopped for OUTAGE seconds under the same load, then started; time until
#     the outbox is back to its steady state (≤ 2 queued sample blocks); then the load stops and
#     every analysed sample must be in InfluxDB (count(value) == /api/status analysis.samples).
#   benches/influx.sh                 T=60 OUTAGE=600 benches/influx.sh       BIN=... benches/influx.sh
set -euo pipefail
cd "$(dirname "$0")/.."
T=${T:-120}
OUTAGE=${OUTAGE:-600}
D=${D:-100}
HZ=${HZ:-10}
if [ -z "${BIN:-}" ]; then cargo build --release --locked -q; BIN=$PWD/target/release/edgewatch; fi
command -v influxd >/dev/null || { echo "influxd is not installed (apt-get install influxdb)" >&2; exit 1; }
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ip=$(free_port); rpc=$(free_port)
cat > "$work/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$rpc"
[meta]
  dir = "$work/influx/meta"
[data]
  dir = "$work/influx/data"
  wal-dir = "$work/influx/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$ip"
  log-enabled = false
[monitor]
  store-enabled = false
CONF
influx_pid=""
start_influx() {
  influxd -config "$work/influxdb.conf" >> "$work/influxd.log" 2>&1 &
  influx_pid=$!; pids+=("$influx_pid")
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$ip/ping" >/dev/null && return; sleep 0.1; done
  echo "influxd did not start" >&2; exit 1
}
start_influx
curl -sf -XPOST "http://127.0.0.1:$ip/query" --data-urlencode "q=CREATE DATABASE ew" >/dev/null

config() { # $1 = name, $2 = sink section
  cat > "$work/$1.toml" <<TOML
node_id = "bench"
data_dir = "$work/data-$1"
[api]
listen = "127.0.0.1:0"
[unknown_devices]
policy = "register"
[[source]]
id = "tcp"
kind = "tcp"
listen = "127.0.0.1:0"
$2
TOML
}
config plain ""
config influx "[[sink]]
kind = \"influxdb\"
id = \"tsdb\"
url = \"http://127.0.0.1:$ip\"
database = \"ew\"
samples = \"all\"
backoff_max = \"5s\""

ew_pid=""; api=""; addr=""
start_ew() { # $1 = config name
  : > "$work/$1.log"
  RUST_LOG=warn,edgewatch=info "$BIN" run --config "$work/$1.toml" 2> "$work/$1.log" &
  ew_pid=$!; pids+=("$ew_pid")
  for _ in $(seq 200); do grep -q "tcp source listening on" "$work/$1.log" && break; sleep 0.1; done
  addr=$(grep -o "listening on [0-9.:]*" "$work/$1.log" | tail -1 | awk '{print $3}')
  api=$(grep -o "API at http://[0-9.:]*" "$work/$1.log" | head -1 | cut -d/ -f3)
}
gen_pid=""
start_load() {
  python3 - "$addr" "$D" "$HZ" <<'PY' &
import socket, sys, time, math
host, port = sys.argv[1].rsplit(":", 1)
d, hz = int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, int(port)))
period = 1.0 / hz
nxt = time.monotonic()
k = 0
while True:
    ts = int(time.time() * 1000)
    s.sendall("".join('{"device":"dev%03d","metric":"temp","ts":%d,"value":%.4f}\n'
                      % (i, ts, 20 + math.sin(k / 50 + i) + (k * 7919 + i) % 101 / 500) for i in range(d)).encode())
    k += 1
    nxt += period
    time.sleep(max(0.0, nxt - time.monotonic()))
PY
  gen_pid=$!; pids+=("$gen_pid")
}
stop_load() { kill -TERM "$gen_pid" 2>/dev/null || true; wait "$gen_pid" 2>/dev/null || true; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$ew_pid/stat"; }
status() { curl -s "http://$api/api/status"; }
jq_() { python3 -c "import json,sys; v=json.load(sys.stdin); print($1)"; }
measure_cpu() { # prints CPU% of edgewatch over T s after a 10 s warm-up
  sleep 10
  local t0 c0 t1 c1
  t0=$(date +%s.%N); c0=$(cpu_ticks)
  sleep "$T"
  t1=$(date +%s.%N); c1=$(cpu_ticks)
  python3 -c "print('%.1f' % (($c1 - $c0) / $(getconf CLK_TCK) / ($t1 - $t0) * 100))"
}

start_ew plain; start_load
cpu_plain=$(measure_cpu)
stop_load; kill -TERM "$ew_pid"; wait "$ew_pid" 2>/dev/null || true
echo "without output: edgewatch CPU ${cpu_plain}% of one core ($D devices × $HZ Hz, ${T}s)"

start_ew influx; start_load
sleep 10
b0=$(status | jq_ 'v["sinks"][0]["wire_bytes"]'); s0=$(status | jq_ 'v["analysis"]["samples"]'); t0=$(date +%s.%N); c0=$(cpu_ticks)
sleep "$T"
b1=$(status | jq_ 'v["sinks"][0]["wire_bytes"]'); s1=$(status | jq_ 'v["analysis"]["samples"]'); t1=$(date +%s.%N); c1=$(cpu_ticks)
python3 - <<PY
dt = $t1 - $t0
print("with samples = \"all\": edgewatch CPU %.1f%% of one core; %.0f samples/s; %d bytes on the wire in %.0f s = %.1f MB/h (%.1f bytes/sample, gzip)"
      % (($c1 - $c0) / $(getconf CLK_TCK) / dt * 100, ($s1 - $s0) / dt, $b1 - $b0, dt, ($b1 - $b0) / dt * 3600 / 1e6, ($b1 - $b0) / max(1, $s1 - $s0)))
PY

echo "InfluxDB down for ${OUTAGE}s under load ..."
kill -TERM "$influx_pid"; wait "$influx_pid" 2>/dev/null || true
sleep "$OUTAGE"
q=$(status | jq_ 'v["sinks"][0]["outbox_summaries"], v["sinks"][0]["outbox_bytes"], v["sinks"][0]["dropped"]')
echo "queued at the end of the outage (blocks, bytes, dropped): $q"
start_influx
t0=$(date +%s.%N)
while :; do
  n=$(status | jq_ 'v["sinks"][0]["outbox_summaries"]')
  [ "$n" -le 2 ] && break
  sleep 0.5
done
t1=$(date +%s.%N)
python3 -c "print('caught up %.1f s after InfluxDB came back (outage %d s)' % ($t1 - $t0, $OUTAGE))"

stop_load
sleep 3
want=$(status | jq_ 'v["analysis"]["samples"]')
for _ in $(seq 120); do
  got=$(curl -s "http://127.0.0.1:$ip/query" --data-urlencode "db=ew" --data-urlencode 'q=SELECT count("value") FROM "edgewatch_sample"' | jq_ 'v["results"][0]["series"][0]["values"][0][1]')
  [ "$got" = "$want" ] && break
  sleep 1
done
echo "samples analysed: $want, points in InfluxDB: $got"
[ "$got" = "$want" ] || { echo "MISMATCH" >&2; exit 1; }
