"""TPC-H through a Spark Connect server, timed from the PySpark client.

Registers the TPC-H tables of DATA (Parquet directories) as temporary views, runs each of
the 22 queries once to warm up and then RUNS times (`collect()`), and prints the median per
query, the total, and the median round trip of a trivial query (`SELECT 1`). The same
script measures any Spark Connect server (Ember's, Sail's), so the two are compared through
the same client on the same data.

    python bench/connect_tpch.py --url sc://127.0.0.1:15002 --data target/tpch-sf1 --label ember
"""

import argparse
import json
import os
import statistics
import time
import warnings

warnings.filterwarnings("ignore")

from pyspark.sql import SparkSession  # noqa: E402

TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]
QUERIES = os.path.join(os.path.dirname(__file__), "..", "tpch", "queries")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", help="write the figures as JSON here")
    args = p.parse_args()
    spark = SparkSession.builder.remote(args.url).create()
    for t in TABLES:
        spark.read.parquet(os.path.abspath(os.path.join(args.data, t))).createOrReplaceTempView(t)
    trivial = []
    for _ in range(5):
        spark.sql("SELECT 1").collect()
    for _ in range(50):
        start = time.perf_counter()
        spark.sql("SELECT 1").collect()
        trivial.append(time.perf_counter() - start)
    figures = {"label": args.label, "trivial_ms": statistics.median(trivial) * 1000, "queries": {}}
    for n in range(1, 23):
        with open(os.path.join(QUERIES, f"q{n}.sql")) as f:
            text = f.read().strip().rstrip(";")
        times, rows = [], None
        try:
            spark.sql(text).collect()
            for _ in range(args.runs):
                start = time.perf_counter()
                rows = len(spark.sql(text).collect())
                times.append(time.perf_counter() - start)
            figures["queries"][n] = {"median_s": statistics.median(times), "rows": rows}
        except Exception as e:  # noqa: BLE001 - reported per query
            figures["queries"][n] = {"error": str(e).splitlines()[0][:200]}
        q = figures["queries"][n]
        print(f"{args.label} q{n:02}: " + (f"{q['median_s']:.3f} s ({q['rows']} rows)" if "median_s" in q else q["error"]), flush=True)
    ok = [q["median_s"] for q in figures["queries"].values() if "median_s" in q]
    figures["total_s"] = sum(ok)
    print(f"{args.label}: {len(ok)}/22 queries, total {figures['total_s']:.2f} s, trivial query round trip {figures['trivial_ms']:.2f} ms")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(figures, f, indent=1)
    spark.stop()


if __name__ == "__main__":
    main()
