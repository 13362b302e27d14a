#!/usr/bin/env bash
# Builds Debian packages from the binaries cross/build.sh left in dist/ (SUFFIX=-ci-cross: from
# the CI profile's binaries; no cargo-deb needed:
# dpkg-deb only). Usage: cross/deb.sh [arm64|armhf]...   (default: both) → dist/edgewatch_<v>_<arch>.deb
# Layout: /usr/bin/edgewatch, /etc/edgewatch/edgewatch.toml (conffile, from config/pi.toml),
# /lib/systemd/system/edgewatch.service, /usr/lib/sysusers.d/edgewatch.conf, docs; state in /var/lib/edgewatch.
set -euo pipefail
cd "$(dirname "$0")/.."
arches=("$@"); ((${#arches[@]})) || arches=(arm64 armhf)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

for arch in "${arches[@]}"; do
  bin=dist/edgewatch-$arch${SUFFIX:-}
  case $arch in
    arm64) objdump=aarch64-linux-gnu-objdump ;;
    armhf) objdump=arm-linux-gnueabihf-objdump ;;
    *) echo "unknown arch $arch (arm64, armhf)" >&2; exit 2 ;;
  esac
  [ -x "$bin" ] || { echo "$bin missing: run cross/build.sh first" >&2; exit 1; }
  # The newest glibc symbol version the binary needs.
  glibc=$($objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -1)
  root=$(mktemp -d)
  install -Dm755 "$bin" "$root/usr/bin/edgewatch"
  install -Dm644 config/pi.toml "$root/etc/edgewatch/edgewatch.toml"
  install -Dm644 systemd/edgewatch.service "$root/lib/systemd/system/edgewatch.service"
  install -Dm644 systemd/edgewatch.sysusers "$root/usr/lib/sysusers.d/edgewatch.conf"
  for d in README.md docs/CONFIG.md docs/PROTOCOL.md docs/CLOCK.md config/demo.toml; do
    install -Dm644 "$d" "$root/usr/share/doc/edgewatch/$(basename "$d")"
  done
  mkdir -p "$root/DEBIAN"
  install -m755 cross/deb/postinst cross/deb/prerm cross/deb/postrm "$root/DEBIAN/"
  echo /etc/edgewatch/edgewatch.toml > "$root/DEBIAN/conffiles"
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  cat > "$root/DEBIAN/control" <<CTRL
Package: edgewatch
Version: $version
Architecture: $arch
Maintainer: edgewatch developers <edgewatch@localhost>
Installed-Size: $size
Depends: libc6 (>= $glibc), adduser
Section: net
Priority: optional
Description: edge sensor collector with rolling statistics and anomaly alerts
 Reads samples from serial, TCP and MQTT devices, keeps per-device rolling
 statistics and anomaly detectors whose state survives restarts, raises and
 resolves alerts, and streams them over WebSocket. Runs as a hardened systemd
 service with watchdog and config reload (systemctl reload edgewatch).
CTRL
  out=dist/edgewatch_${version}_${arch}.deb
  dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
  rm -rf "$root"
  echo "$out ($(stat -c %s "$out") bytes, needs glibc >= $glibc)"
done
