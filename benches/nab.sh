#!/usr/bin/env bash
# Scores every detector kind (config/nab.toml) on the NAB development set with NAB's own scorer and
# prints the rows of the table in docs/DETECTION.md. Usage: benches/nab.sh [NAB_DIR] (default ../shared/nab).
set -euo pipefail
cd "$(dirname "$0")/.."
nab=${1:-../shared/nab}
cargo build --release --quiet
bin=target/release/edgewatch
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
echo "| detector | standard | low FP | low FN | alerts / 10k samples |"
echo "|---|---|---|---|---|"
for t in zscore mad ewma cusum seasonal predict ensemble; do
  summary=$($bin replay --config config/nab.toml --template "$t" --out "$out/$t" "$nab/data" | tail -1)
  per10k=$(sed -E 's/.*\(([0-9.]+) per 10,000 samples\).*/\1/' <<<"$summary")
  line=$(python3 "$nab/score.py" --results "$out/$t" --nab "$nab" | tail -1)
  read -r std lfp lfn < <(sed -E 's/NAB standard=([0-9.-]+) low_fp=([0-9.-]+) low_fn=([0-9.-]+)/\1 \2 \3/' <<<"$line")
  echo "| $t | $std | $lfp | $lfn | $per10k |"
done
