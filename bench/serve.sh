#!/usr/bin/env bash
# Load test of `ember serve` with wrk (Debian's package): requests/s and p50 / p99 latency
# at 1, 16 and 64 concurrent connections, for 1-row and 100-row requests, with batching
# off (--max-batch 1), on with no wait (the default: requests merge when they queue up)
# and on with a 2 ms window; beside the same Iris model trained with scikit-learn and
# served by FastAPI + uvicorn (bench/serve_sklearn.py), measured in the same run.
#   bash bench/serve.sh [SECONDS_PER_POINT]
# Needs wrk and a Python with scikit-learn, pandas, fastapi and uvicorn ($PYTHON).
# The load generator and the servers share the machine's cores.
set -euo pipefail
# Mesa's device-select layer warns about XDG_RUNTIME_DIR on headless machines.
export NODEVICE_SELECT=1
cd "$(dirname "$0")/.."
seconds="${1:-5}"
python="${PYTHON:-python3}"
command -v wrk >/dev/null || { echo "wrk is required (apt-get install wrk)" >&2; exit 1; }
out="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT

cargo build --release --bins --example ml_pipeline
target/release/examples/ml_pipeline --save "$out/iris" > /dev/null

# Request bodies: 1 and 100 Iris rows in TensorFlow Serving's `instances` form.
"$python" - "$out" <<'EOF'
import csv, json, sys
rows = list(csv.DictReader(open("tests/data/iris.csv")))
cols = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
inst = [{c: float(r[c]) for c in cols} for r in rows]
for n in (1, 100):
    body = json.dumps({"instances": (inst * 2)[:n]})
    with open(f"{sys.argv[1]}/post{n}.lua", "w") as f:
        f.write('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n')
        f.write(f"wrk.body = {json.dumps(body)}\n")
EOF

wait_port() { until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do sleep 0.2; done; }

# load NAME URL: one wrk run per request size and concurrency; prints table rows.
load() {
    local name="$1" url="$2"
    for rows in 1 100; do
        wrk -t1 -c4 -d1s -s "$out/post$rows.lua" "$url" > /dev/null  # warm up
        for c in 1 16 64; do
            local threads=$(( c < 2 ? 1 : 2 ))
            wrk -t"$threads" -c"$c" -d"${seconds}s" --latency -s "$out/post$rows.lua" "$url" \
                > "$out/wrk.txt"
            local rps p50 p99 errors
            rps=$(awk '/^Requests\/sec/ {print $2}' "$out/wrk.txt")
            p50=$(awk '$1 == "50%" {print $2}' "$out/wrk.txt")
            p99=$(awk '$1 == "99%" {print $2}' "$out/wrk.txt")
            errors=$(awk '/Non-2xx|Socket errors/ {print}' "$out/wrk.txt" | tr '\n' ' ')
            printf '| %s | %s | %s | %s | %s | %s |%s\n' \
                "$name" "$rows" "$c" "$rps" "$p50" "$p99" "${errors:+ $errors}"
        done
    done
}

echo "| server | rows/request | connections | requests/s | p50 | p99 |"
echo "|---|---|---|---|---|---|"
port=18080
for mode in "off:--max-batch 1" "on, no wait:--batch-window 0ms" "on, 2 ms window:--batch-window 2ms"; do
    label="${mode%%:*}"; flags="${mode#*:}"
    # shellcheck disable=SC2086
    RUST_LOG=warn target/release/ember serve --model "iris=$out/iris" --port "$port" $flags \
        > /dev/null &
    pid=$!
    wait_port "$port"
    load "ember serve, batching $label" "http://127.0.0.1:$port/v1/models/iris:predict"
    kill -TERM "$pid"; wait "$pid" || true
    port=$((port + 1))
done
"$python" bench/serve_sklearn.py --csv tests/data/iris.csv --port "$port" &
pid=$!
wait_port "$port"
load "scikit-learn + FastAPI + uvicorn" "http://127.0.0.1:$port/v1/models/iris:predict"
kill -TERM "$pid"; wait "$pid" || true
