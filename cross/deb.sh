#!/usr/bin/env bash
# Builds Debian packages from the binaries cross/build.sh left in dist/ (SUFFIX=-ci-cross: from
# the CI profile's binaries; no cargo-deb needed: dpkg-deb only).
# Usage: cross/deb.sh [arm64|armhf|armv6|amd64]...   (default: arm64 armhf) → dist/edgewatch_<v>_<arch>.deb
#   armv6: the static ARMv6 binary (Pi 1 / Zero) as an armhf package, dist/edgewatch_<v>_armhf-armv6.deb,
#          version <v>+armv6 (so `dpkg -l` tells it from the ARMv7 build); the ARMv7 armhf package
#          gets a preinst that refuses an ARMv6 CPU (cross/README.md, "ARMv6").
#   amd64: the host's binary (target/debug or BIN=...), for tests of the package itself.
# BIN=FILE packages that binary; GEN=FILE is the edgewatch-gen that writes man pages and completions
# (default: cargo run --bin edgewatch-gen); OUT=DIR writes the .deb there instead of dist/;
# COMPRESS=gzip|none instead of xz (tests).
# Layout: /usr/bin/edgewatch, /etc/edgewatch/edgewatch.toml (conffile, from config/pi.toml),
# /lib/systemd/system/edgewatch.service, /usr/lib/sysusers.d/edgewatch.conf, the man pages
# (/usr/share/man/man1), bash/zsh/fish completions, and under /usr/share/doc/edgewatch the README,
# docs/, the example configs (config/) and cross/README.md at the same relative paths as in the
# repository, so the README's links work there. State in /var/lib/edgewatch.
set -euo pipefail
cd "$(dirname "$0")/.."
arches=("$@"); ((${#arches[@]})) || arches=(arm64 armhf)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
outdir=${OUT:-dist}
mkdir -p "$outdir"

# Man pages and completions come from edgewatch-gen (src/bin/edgewatch-gen.rs, kept out of the
# shipped binary; the command line is the same on every architecture): GEN=FILE, else a host build.
gen_docs() { # gen_docs OUTDIR
  if [ -n "${GEN:-}" ]; then "$GEN" --out "$1"
  else cargo run --quiet --locked --bin edgewatch-gen -- --out "$1"
  fi
}

for arch in "${arches[@]}"; do
  debarch=$arch name=$arch debversion=$version
  case $arch in
    arm64) objdump=aarch64-linux-gnu-objdump ;;
    armhf) objdump=arm-linux-gnueabihf-objdump ;;
    armv6) objdump="" debarch=armhf name=armhf-armv6 debversion=$version+armv6 ;;  # static: no libc dependency
    amd64) objdump=objdump ;;
    *) echo "unknown arch $arch (arm64, armhf, armv6, amd64)" >&2; exit 2 ;;
  esac
  bin=${BIN:-dist/edgewatch-$arch${SUFFIX:-}}
  [ "$arch" = amd64 ] && [ -z "${BIN:-}" ] && bin=${CARGO_TARGET_DIR:-target}/debug/edgewatch
  [ -x "$bin" ] || { echo "$bin missing: run cross/build.sh first" >&2; exit 1; }
  depends=adduser
  if [ -n "$objdump" ]; then
    # The newest glibc symbol version the binary needs; packed relative relocations (DT_RELR,
    # cross/build.sh's aarch64 link) need the loader of glibc 2.36.
    glibc=$($objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -1)
    verneed=$($objdump -p "$bin")
    if [[ $verneed == *GLIBC_ABI_DT_RELR* ]]; then
      glibc=$(printf '%s\n' "$glibc" 2.36 | sort -V | tail -1)
    fi
    depends="libc6 (>= $glibc), adduser"
  fi
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  install -Dm755 "$bin" "$root/usr/bin/edgewatch"
  install -Dm644 config/pi.toml "$root/etc/edgewatch/edgewatch.toml"
  install -Dm644 systemd/edgewatch.service "$root/lib/systemd/system/edgewatch.service"
  install -Dm644 systemd/edgewatch.sysusers "$root/usr/lib/sysusers.d/edgewatch.conf"

  doc=$root/usr/share/doc/edgewatch
  for d in README.md docs/*.md config/*.toml cross/README.md; do
    install -Dm644 "$d" "$doc/$d"
  done

  gen=$(mktemp -d)
  gen_docs "$gen"
  mkdir -p "$root/usr/share/man/man1"
  for m in "$gen"/man/*.1; do gzip -9n < "$m" > "$root/usr/share/man/man1/$(basename "$m").gz"; done
  install -Dm644 "$gen/completions/edgewatch.bash" "$root/usr/share/bash-completion/completions/edgewatch"
  install -Dm644 "$gen/completions/_edgewatch" "$root/usr/share/zsh/vendor-completions/_edgewatch"
  install -Dm644 "$gen/completions/edgewatch.fish" "$root/usr/share/fish/vendor_completions.d/edgewatch.fish"
  rm -rf "$gen"

  mkdir -p "$root/DEBIAN"
  install -m755 cross/deb/postinst cross/deb/prerm cross/deb/postrm "$root/DEBIAN/"
  if [ "$arch" = armhf ]; then install -m755 cross/deb/preinst-armv7 "$root/DEBIAN/preinst"; fi
  echo /etc/edgewatch/edgewatch.toml > "$root/DEBIAN/conffiles"
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  cat > "$root/DEBIAN/control" <<CTRL
Package: edgewatch
Version: $debversion
Architecture: $debarch
Maintainer: edgewatch developers <edgewatch@localhost>
Installed-Size: $size
Depends: $depends
Section: net
Priority: optional
Description: edge sensor collector with rolling statistics and anomaly alerts
 Reads samples from serial, TCP and MQTT devices, keeps per-device rolling
 statistics and anomaly detectors whose state survives restarts, raises and
 resolves alerts, and streams them over WebSocket. Runs as a hardened systemd
 service with watchdog and config reload (systemctl reload edgewatch).
 Documentation and example configs: /usr/share/doc/edgewatch.
CTRL
  out=$outdir/edgewatch_${version}_${name}.deb
  dpkg-deb --root-owner-group -Z"${COMPRESS:-xz}" --build "$root" "$out" >/dev/null
  rm -rf "$root"
  trap - EXIT
  echo "$out ($(stat -c %s "$out") bytes${glibc:+, needs glibc >= $glibc})"
  unset glibc
done
