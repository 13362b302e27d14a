#!/usr/bin/env bash
# Runs a cross-built edgewatch under qemu-user: `check` on every shipped config, then a short demo
# run that must raise an alert and stop cleanly on SIGTERM. Usage: cross/qemu-smoke.sh ARCH BINARY
#   ARCH: arm64 | armhf | armv6        (armv6: static binary, emulated ARM1176 CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
arch=$1 bin=$2
case $arch in
  arm64) qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu) ;;
  armhf) qemu=(qemu-arm -L /usr/arm-linux-gnueabihf) ;;
  armv6) qemu=(qemu-arm -cpu arm1176) ;;
  *) echo "unknown arch $arch" >&2; exit 2 ;;
esac
run() { "${qemu[@]}" "$bin" "$@"; }

echo "== $arch: $(run --version)"
for c in config/*.toml; do
  run check --config "$c" >/dev/null || { echo "check failed: $c" >&2; exit 1; }
  echo "check ok: $c"
done

tmp=$(mktemp -d); trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$tmp"' EXIT
sed -e "s#^data_dir = .*#data_dir = \"$tmp/data\"#" -e 's#^listen = "127.0.0.1:8080"#listen = "127.0.0.1:0"#' \
    -e 's#^listen = "127.0.0.1:9000"#listen = "127.0.0.1:0"#' config/demo.toml > "$tmp/demo.toml"
RUST_LOG=info "${qemu[@]}" "$bin" run --config "$tmp/demo.toml" > "$tmp/log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do
  grep -q "alert firing" "$tmp/log" && break
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/log"; echo "edgewatch exited early" >&2; exit 1; }
  sleep 0.5
done
grep -m1 "alert firing" "$tmp/log" || { cat "$tmp/log"; echo "no alert within 60 s" >&2; exit 1; }
kill -TERM "$pid"
wait "$pid" || { cat "$tmp/log"; echo "unclean exit" >&2; exit 1; }
grep -q "state saved" "$tmp/log" || { cat "$tmp/log"; echo "no final snapshot" >&2; exit 1; }
echo "demo ok: alert raised, clean shutdown"
