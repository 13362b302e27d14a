#!/usr/bin/env bash
# Installs edgewatch as a systemd service without a package (run as root on the Pi, from a source
# checkout or an unpacked release). Usage: sudo cross/install.sh [BINARY]
#   BINARY: default dist/edgewatch-<arch of this machine>, else target/release/edgewatch.
# ROOT=/some/dir installs into that directory instead of / and skips systemctl (for tests).
# Installs /usr/local/bin/edgewatch, /etc/edgewatch/edgewatch.toml (kept if present),
# /etc/systemd/system/edgewatch.service, the docs and example configs under
# /usr/local/share/doc/edgewatch (same layout as the .deb's /usr/share/doc/edgewatch), and, when
# edgewatch-gen or cargo is at hand (GEN=FILE), the man pages and bash/zsh/fish completions;
# creates the edgewatch user (group dialout).
# Uninstall: systemctl disable --now edgewatch; rm -r /usr/local/bin/edgewatch /etc/systemd/system/edgewatch.service /usr/local/share/doc/edgewatch
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
doc=$root/usr/local/share/doc/edgewatch
for d in README.md docs/*.md config/*.toml cross/README.md; do install -Dm644 "$d" "$doc/$d"; done
gen=$(mktemp -d)
# edgewatch-gen (src/bin/edgewatch-gen.rs, not in the edgewatch binary) writes them: GEN=FILE, else
# the one next to the binary (cargo build --release builds it), else a host build through cargo.
genbin=${GEN:-$(dirname "$bin")/edgewatch-gen}
if { [ -x "$genbin" ] && "$genbin" --out "$gen"; } ||
   { command -v cargo >/dev/null && cargo run --quiet --locked --bin edgewatch-gen -- --out "$gen"; }; then
  for m in "$gen"/man/*.1; do install -Dm644 "$m" "$root/usr/local/share/man/man1/$(basename "$m")"; done
  install -Dm644 "$gen/completions/edgewatch.bash" "$root/usr/local/share/bash-completion/completions/edgewatch"
  install -Dm644 "$gen/completions/_edgewatch" "$root/usr/local/share/zsh/site-functions/_edgewatch"
  install -Dm644 "$gen/completions/edgewatch.fish" "$root/usr/local/share/fish/vendor_completions.d/edgewatch.fish"
else
  echo "(no edgewatch-gen and no cargo here: man pages and completions not installed)"
fi
rm -rf "$gen"
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
