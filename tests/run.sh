#!/usr/bin/env bash
# The test command of the README: installs what the tests need on a fresh Debian/Ubuntu machine
# (only what is missing), then runs every test of the crate against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
# need mosquitto mosquitto   (one line per system tool a test suite needs: command, package)
need python3 python3        # tests/replay.rs runs NAB's scorer (../shared/nab/score.py)
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
cargo test --all-targets --locked "$@"
