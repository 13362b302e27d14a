#!/usr/bin/env bash
# Idle footprint of the demo: runs `edgewatch run` on config/demo.toml (own data dir, free ports)
# for WARM s, then reports CPU use (utime+stime over SPAN s) and RSS. Under qemu-user the numbers
# include the emulator (its translation cache adds RSS and CPU). Usage:
#   cross/measure.sh BINARY [qemu-aarch64 -L /usr/aarch64-linux-gnu]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1; shift
warm=${WARM:-20} span=${SPAN:-30}
tmp=$(mktemp -d); trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
sed -e "s#^data_dir = .*#data_dir = \"$tmp/data\"#" -e 's#"127.0.0.1:8080"#"127.0.0.1:0"#' \
    -e 's#"127.0.0.1:9000"#"127.0.0.1:0"#' config/demo.toml > "$tmp/demo.toml"
"$@" "$bin" run --config "$tmp/demo.toml" > "$tmp/log" 2>&1 &
pid=$!
sleep "$warm"
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
t0=$(ticks); sleep "$span"; t1=$(ticks)
hz=$(getconf CLK_TCK)
cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$span" 'BEGIN{printf "%.1f", (b-a)/hz/s*100}')
rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status"); hwm=$(awk '/VmHWM/{print $2}' "/proc/$pid/status")
echo "binary $bin ${*:+(under $*)}: CPU ${cpu}% of one core over ${span}s, RSS ${rss} KiB (peak ${hwm} KiB), alerts: $(grep -c 'alert firing' "$tmp/log")"
