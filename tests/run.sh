#!/usr/bin/env bash
# The test command of the README: installs what the tests need on a fresh Debian/Ubuntu machine
# (only what is missing), then runs every test of the crate against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
# need mosquitto mosquitto   (one line per system tool a test suite needs: command, package)
need chromium chromium          # tests/dashboard.rs: the dashboard in headless Chromium
need chromium fonts-liberation  # (a recommended package of chromium: text metrics like a desktop)
need node nodejs                # tests/browser: playwright-core drives Chromium; tests/sparkplug.rs: Tahu's payload codec
need npm npm
need mosquitto mosquitto
need mosquitto_pub mosquitto-clients
need python3 python3        # tests/replay.rs runs NAB's scorer (../shared/nab/score.py; skipped, saying why, without ../shared)
need fusermount3 fuse3       # tests/powercut.rs mounts a FUSE filesystem (fuser)
need prometheus-alertmanager prometheus-alertmanager  # tests/push.rs, tests/fleet_push.rs: the alertmanager sink
need influxd influxdb        # tests/push.rs, tests/fleet_push.rs, tests/influx_samples.rs: the influxdb sink (v1 API)
need victoria-metrics victoria-metrics  # tests/push.rs, tests/influx_samples.rs: the influxdb sink's v2 write API
need prometheus prometheus   # tests/prometheus.rs: scrapes /metrics, receives remote write
need promtool prometheus     # tests/prometheus.rs: `promtool check metrics` on the exposition
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Node packages of the browser test (playwright-core only: it uses Debian's chromium, downloads no
# browser), installed from the committed lock file when missing or of another version.
lock=tests/browser/package-lock.json
want=$(node -p "require('./$lock').packages['node_modules/playwright-core'].version")
have=$(node -p "try { require('./tests/browser/node_modules/playwright-core/package.json').version } catch { '' }")
if [ "$want" != "$have" ]; then
  echo "installing node packages of tests/browser (playwright-core $want)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# Sparkplug B payloads in tests/sparkplug.rs are encoded by Eclipse Tahu's JavaScript library
# (sparkplug-payload), installed the same way from tests/sparkplug's lock file.
lock=tests/sparkplug/package-lock.json
want=$(node -p "require('./$lock').packages['node_modules/sparkplug-payload'].version")
have=$(node -p "try { require('./tests/sparkplug/node_modules/sparkplug-payload/package.json').version } catch { '' }")
if [ "$want" != "$have" ]; then
  echo "installing node packages of tests/sparkplug (sparkplug-payload $want)"
  (cd tests/sparkplug && npm ci --no-audit --no-fund --loglevel=error)
fi

# SKAB's scorer (tests/device.rs runs ../shared/skab/score.py) needs numpy for the `python3` on
# PATH, which may be a pyenv or venv interpreter that Debian's python3-numpy does not reach.
if ! python3 -c 'import numpy' 2>/dev/null; then
  echo "installing numpy for $(command -v python3)"
  python3 -m pip install --quiet --user numpy 2>/dev/null || python3 -m pip install --quiet numpy
fi

command -v cargo >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs" >&2; exit 1; }
# Tests that need the project's shared data (../shared: the NAB set) skip, saying why, when it is
# missing (a fresh clone); where it exists (CI) a missing piece of it is a failure instead.
[ -d ../shared ] && export EDGEWATCH_REQUIRE_SHARED=1
cargo test --all-targets --locked "$@"
