#!/usr/bin/env bash
# Builds stripped, optimised release binaries of edgewatch for Raspberry Pi targets, without Docker:
# rustup targets + Debian's cross linkers (installed when missing). Usage:
#   cross/build.sh [aarch64|armv7|armv6|all]...      (default: aarch64 armv7)
# Binaries land in target/<triple>/release/edgewatch and are copied to dist/edgewatch-<arch>.
# PROFILE=ci-cross selects the cheaper profile CI uses (same code, less optimisation).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
targets=("$@"); ((${#targets[@]})) || targets=(aarch64 armv7)
[[ " ${targets[*]} " == *" all "* ]] && targets=(aarch64 armv7 armv6)

SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
apt_need() { # apt_need COMMAND PACKAGE...
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing: ${*:2}"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${@:2}"
}

# The shipped build: fully optimised and stripped whatever the local profile says.
[ "$profile" = release ] && export CARGO_PROFILE_RELEASE_STRIP=true CARGO_PROFILE_RELEASE_OPT_LEVEL=3
mkdir -p dist

for t in "${targets[@]}"; do
  case $t in
    aarch64)  # Pi 3/4/5, 64-bit Raspberry Pi OS (bookworm or later) / Debian arm64
      triple=aarch64-unknown-linux-gnu arch=arm64 cc=aarch64-linux-gnu-gcc
      apt_need "$cc" gcc-aarch64-linux-gnu libc6-dev-arm64-cross
      rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"
      export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-$cc}
      export CC_aarch64_unknown_linux_gnu=$cc
      # Linked by rustc's own lld (rust-lld, named here for toolchains that do not default to it)
      # with identical code folding and packed relative relocations (DT_RELR: glibc >= 2.36,
      # i.e. bookworm): -0.38 MB, cross/README.md "Binary size". Link flags of the binary only,
      # hence `cargo rustc` (RUSTFLAGS would rebuild every dependency for nothing).
      gccld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/gcc-ld"
      cargo rustc --locked -j "${JOBS:-2}" --profile "$profile" --target "$triple" --bin edgewatch -- \
        -C link-arg=-B"$gccld" -C link-arg=-fuse-ld=lld \
        -C link-arg=-Wl,--icf=all -C link-arg=-Wl,-z,pack-relative-relocs
      ;;
    armv7)    # Pi 2/3/4/Zero 2, 32-bit Raspberry Pi OS (bookworm or later) / Debian armhf
      triple=armv7-unknown-linux-gnueabihf arch=armhf cc=arm-linux-gnueabihf-gcc
      apt_need "$cc" gcc-arm-linux-gnueabihf libc6-dev-armhf-cross
      rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"
      export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=$cc CC_armv7_unknown_linux_gnueabihf=$cc
      cargo build --locked -j "${JOBS:-2}" --profile "$profile" --target "$triple" --bin edgewatch
      ;;
    armv6)    # Pi 1 / Zero / Zero W (ARM1176, ARMv6): see cross/README.md
      # Debian's armhf objects (crt1.o, libc.a, libgcc) are ARMv7/Thumb-2 and die with SIGILL on an
      # ARM1176. Debian's armel toolchain targets ARMv5TE, which an ARMv6 runs: soft-float ABI,
      # glibc linked statically (Raspberry Pi OS has no armel loader). No rust-std is published
      # for it on every mirror, so std is built from source with a nightly toolchain.
      triple=arm-unknown-linux-gnueabi arch=armv6 cc=arm-linux-gnueabi-gcc
      apt_need "$cc" gcc-arm-linux-gnueabi libc6-dev-armel-cross
      tc=${ARMV6_TOOLCHAIN:-nightly}
      rustup +"$tc" component list --installed 2>/dev/null | grep -q '^rust-src' || rustup +"$tc" component add rust-src
      export CARGO_TARGET_ARM_UNKNOWN_LINUX_GNUEABI_LINKER=$cc CC_arm_unknown_linux_gnueabi=$cc
      export CFLAGS_arm_unknown_linux_gnueabi="-march=armv6 -marm -mfloat-abi=soft"
      export CARGO_TARGET_ARM_UNKNOWN_LINUX_GNUEABI_RUSTFLAGS="-C target-feature=+crt-static"
      cargo +"$tc" build -j "${JOBS:-2}" --profile "$profile" --target "$triple" --bin edgewatch \
        -Z build-std=std,panic_abort
      ;;
    *) echo "unknown target '$t' (aarch64, armv7, armv6, all)" >&2; exit 2 ;;
  esac
  dir=$profile; [ "$profile" = dev ] && dir=debug
  out=dist/edgewatch-$arch; [ "$profile" = release ] || out=dist/edgewatch-$arch-$profile
  cp "target/$triple/$dir/edgewatch" "$out"
  printf '%-32s %-28s %s bytes\n' "$triple" "$out" "$(stat -c %s "$out")"
done
