#!/usr/bin/env bash
# LogisticRegression(maxIter=20) on 1M x 32 through pyspark-client on `ember server`
# (2 CPU executors), beside Ember's own `lr_bench` on the same data in the same run: the
# difference is what the Spark Connect protocol costs.
#   bash bench/connect_lr.sh [ROWS] [FEATURES] [ITERATIONS]
# Needs a Python environment with pyspark-client ($PYTHON, default python3).
set -euo pipefail
# Mesa's device-select layer warns about XDG_RUNTIME_DIR on headless machines.
export NODEVICE_SELECT=1
cd "$(dirname "$0")/.."
rows="${1:-1000000}"; features="${2:-32}"; iterations="${3:-20}"
python="${PYTHON:-python3}"
out="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

cargo build --release --bins --example lr_bench
echo "== lr_bench (Rust API, same data) =="
target/release/examples/lr_bench --rows "$rows" --features "$features" \
    --iterations "$iterations" --data-dir "$out/data"

echo "== pyspark-client on ember server =="
target/release/ember server --port 0 --executors 2 > "$out/ember.url" &
ember_pid=$!
until grep -q sc:// "$out/ember.url" 2>/dev/null; do sleep 0.2; done
"$python" bench/connect_lr.py --url "$(grep -o 'sc://[^ ]*' "$out/ember.url")" \
    --data "$out/data" --iterations "$iterations"
kill -TERM "$ember_pid"; wait "$ember_pid" || true
