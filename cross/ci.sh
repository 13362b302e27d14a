#!/usr/bin/env bash
# CI for the Raspberry Pi path (called by .ci/run): cross-builds aarch64 and armv7 (profile
# ci-cross), runs them under qemu-user (check every shipped config, a demo run that raises an
# alert), checks the systemd unit (verify, security <= 2.0), builds and inspects the arm64 .deb,
# and tries the install script into a scratch root. Installs what it needs only when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("${@:2}"); }
need aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu libc6-dev-arm64-cross
need arm-linux-gnueabihf-gcc gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
need qemu-aarch64 qemu-user
need systemd-analyze systemd
need dpkg-deb dpkg
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

echo "== cross builds (profile ci-cross)"
PROFILE=ci-cross cross/build.sh aarch64 armv7
echo "== qemu-user"
cross/qemu-smoke.sh arm64 dist/edgewatch-arm64-ci-cross
cross/qemu-smoke.sh armhf dist/edgewatch-armhf-ci-cross

echo "== systemd unit"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# verify wants ExecStart= to exist: point it at the binary just built.
sed "s#/usr/bin/edgewatch#$PWD/dist/edgewatch-arm64-ci-cross#" systemd/edgewatch.service > "$tmp/edgewatch.service"
systemd-analyze verify "$tmp/edgewatch.service"
# systemd 252 takes the threshold in tenths: 20 = exposure 2.0.
systemd-analyze security --offline=true --threshold=20 --no-pager "$tmp/edgewatch.service" | tail -1

echo "== package and install script"
SUFFIX=-ci-cross cross/deb.sh arm64
deb=$(ls dist/edgewatch_*_arm64.deb)
dpkg-deb --contents "$deb" > "$tmp/contents"
for f in ./usr/bin/edgewatch ./etc/edgewatch/edgewatch.toml ./lib/systemd/system/edgewatch.service \
         ./usr/lib/sysusers.d/edgewatch.conf ./usr/share/doc/edgewatch/README.md \
         ./usr/share/doc/edgewatch/docs/SOURCES.md ./usr/share/doc/edgewatch/config/serial-modbus.toml \
         ./usr/share/man/man1/edgewatch.1.gz ./usr/share/bash-completion/completions/edgewatch; do
  grep -q " $f\$" "$tmp/contents" || { cat "$tmp/contents"; echo "missing in $deb: $f" >&2; exit 1; }
done
dpkg-deb --field "$deb" Conffiles 2>/dev/null | grep -q /etc/edgewatch/edgewatch.toml ||
  dpkg-deb -I "$deb" conffiles | grep -qx /etc/edgewatch/edgewatch.toml
dpkg-deb -I "$deb" | grep -E "Package|Version|Architecture|Depends"
# The ARMv7 armhf package carries the preinst that refuses a Pi 1 / Zero (ARMv6).
SUFFIX=-ci-cross COMPRESS=gzip OUT="$tmp" cross/deb.sh armhf
dpkg-deb -I "$tmp"/edgewatch_*_armhf.deb preinst | grep -q armhf-armv6.deb
ROOT="$tmp/root" cross/install.sh dist/edgewatch-arm64-ci-cross >/dev/null
test -x "$tmp/root/usr/local/bin/edgewatch" && grep -q /usr/local/bin/edgewatch "$tmp/root/etc/systemd/system/edgewatch.service"
test -f "$tmp/root/usr/local/share/doc/edgewatch/docs/SOURCES.md"
echo "== pi checks done in $((SECONDS - start)) s"
