#!/usr/bin/env bash
# TPC-H through the PySpark client: `ember server --executors 2` beside LakeSail Sail
# (local mode, parallelism 2), one after the other on the same data, same client.
#   bash bench/connect_vs_sail.sh [DATA_DIR]   (default target/tpch-sf1; make it with
#   `cargo run --release -- tpch gen --sf 1 --out target/tpch-sf1`)
# Needs a Python environment with pyspark-client and pysail ($PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-target/tpch-sf1}"
python="${PYTHON:-python3}"
out="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

cargo build --release --bins
target/release/ember server --port 0 --executors 2 > "$out/ember.url" &
ember_pid=$!
until grep -q sc:// "$out/ember.url" 2>/dev/null; do sleep 0.2; done
"$python" bench/connect_tpch.py --url "$(grep -o 'sc://[^ ]*' "$out/ember.url")" \
    --data "$data" --label ember --out "$out/ember.json"
kill -TERM "$ember_pid"; wait "$ember_pid" || true

port=$(( 20000 + RANDOM % 20000 ))
SAIL_MODE=local SAIL_EXECUTION__DEFAULT_PARALLELISM=2 \
    "$(dirname "$(command -v "$python")")/sail" spark server --port "$port" > "$out/sail.log" 2>&1 &
sail_pid=$!
sleep 3
"$python" bench/connect_tpch.py --url "sc://127.0.0.1:$port" --data "$data" --label sail \
    --out "$out/sail.json"
kill -TERM "$sail_pid"; wait "$sail_pid" || true

"$python" - "$out/ember.json" "$out/sail.json" <<'PY'
import json, sys
e, s = (json.load(open(p)) for p in sys.argv[1:3])
print("| query | Ember (s) | Sail (s) | Ember / Sail |")
print("|---|---|---|---|")
te = ts = 0.0
for n in range(1, 23):
    a, b = e["queries"][str(n)], s["queries"][str(n)]
    if "median_s" in a and "median_s" in b:
        te += a["median_s"]; ts += b["median_s"]
        print(f"| q{n} | {a['median_s']:.3f} | {b['median_s']:.3f} | {a['median_s'] / b['median_s']:.2f} |")
    else:
        print(f"| q{n} | {a.get('median_s', a.get('error'))} | {b.get('median_s', b.get('error'))} | - |")
print(f"| total (both answered) | {te:.2f} | {ts:.2f} | {te / ts:.2f} |")
print(f"| trivial query round trip (ms) | {e['trivial_ms']:.2f} | {s['trivial_ms']:.2f} | {e['trivial_ms'] / s['trivial_ms']:.2f} |")
PY
