#!/usr/bin/env bash
# Installs edgewatch as a systemd service without a package (run as root on the Pi, from a source
# checkout or an unpacked release). Usage: sudo cross/install.sh [BINARY]
#   BINARY: default dist/edgewatch-<arch of this machine>, else target/release/edgewatch.
# ROOT=/some/dir installs into that directory instead of / and skips systemctl (for tests).
# Installs /usr/local/bin/edgewatch, /etc/edgewatch/edgewatch.toml (kept if present),
# /etc/systemd/system/edgewatch.service; creates the edgewatch user (group dialout).
# Uninstall: systemctl disable --now edgewatch; rm /usr/local/bin/edgewatch /etc/systemd/system/edgewatch.service
set -euo pipefail
cd "$(dirname "$0")/.."
root=${ROOT:-}
case $(uname -m) in
  aarch64) arch=arm64 ;;
  armv7l) arch=armhf ;;
  armv6l) arch=armv6 ;;
  *) arch=$(uname -m) ;;
esac
bin=${1:-}
if [ -z "$bin" ]; then
  for b in "dist/edgewatch-$arch" target/release/edgewatch; do [ -x "$b" ] && { bin=$b; break; }; done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "no edgewatch binary: pass its path, or run cross/build.sh / cargo build --release" >&2; exit 1; }
[ -n "$root" ] || [ "$(id -u)" -eq 0 ] || { echo "run as root (sudo)" >&2; exit 1; }

install -Dm755 "$bin" "$root/usr/local/bin/edgewatch"
if [ -e "$root/etc/edgewatch/edgewatch.toml" ]; then
  echo "keeping existing $root/etc/edgewatch/edgewatch.toml"
else
  install -Dm644 config/pi.toml "$root/etc/edgewatch/edgewatch.toml"
fi
mkdir -p "$root/etc/systemd/system"
sed 's#/usr/bin/edgewatch#/usr/local/bin/edgewatch#g' systemd/edgewatch.service \
  > "$root/etc/systemd/system/edgewatch.service"
chmod 644 "$root/etc/systemd/system/edgewatch.service"
if [ -n "$root" ]; then
  echo "installed into $root (no user created, systemctl skipped)"
  exit 0
fi
if ! getent passwd edgewatch >/dev/null; then
  useradd --system --user-group --home-dir /var/lib/edgewatch --no-create-home \
    --shell /usr/sbin/nologin edgewatch
fi
usermod -aG dialout edgewatch
/usr/local/bin/edgewatch check --config /etc/edgewatch/edgewatch.toml
systemctl daemon-reload
systemctl enable --now edgewatch
systemctl --no-pager status edgewatch | head -5 || true
echo "logs: journalctl -u edgewatch -f    reload config: systemctl reload edgewatch"
