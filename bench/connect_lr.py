"""LogisticRegression(maxIter=N) through pyspark-client on `ember server`: the same data and
fit as `lr_bench` (Parquet columns x0..x{d-1}, label), assembled and cached on the
executors, then a warm-up fit and timed fits (the median is reported).

    python bench/connect_lr.py --url sc://127.0.0.1:15002 --data DIR [--iterations 20]
"""

import argparse
import json
import statistics
import time
import warnings

warnings.filterwarnings("ignore")

from pyspark.ml.classification import LogisticRegression  # noqa: E402
from pyspark.ml.evaluation import BinaryClassificationEvaluator  # noqa: E402
from pyspark.ml.feature import VectorAssembler  # noqa: E402
from pyspark.sql import SparkSession  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out")
    a = p.parse_args()

    spark = SparkSession.builder.remote(a.url).getOrCreate()
    started = time.perf_counter()
    raw = spark.read.parquet(a.data)
    names = [c for c in raw.columns if c != "label"]
    df = VectorAssembler(inputCols=names, outputCol="features").transform(raw)
    df = df.select("features", "label").cache()
    rows = df.count()
    load = time.perf_counter() - started
    print(f"pyspark: load + assemble + cache {load:.2f} s ({rows} rows x {len(names)} features)")

    lr = LogisticRegression(maxIter=a.iterations)
    lr.fit(df)  # warm-up
    fits, model = [], None
    for _ in range(max(1, a.runs)):
        started = time.perf_counter()
        model = lr.fit(df)
        fits.append(time.perf_counter() - started)
    fit = statistics.median(fits)
    iterations = model.summary.totalIterations
    auc = BinaryClassificationEvaluator().evaluate(model.transform(df))
    print(
        f"pyspark: fit {fit:.3f} s (median of {len(fits)}), {iterations} iterations, "
        f"{fit / max(iterations, 1):.4f} s per iteration, training AUC {auc:.6f}"
    )
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"fit_s": fit, "iterations": iterations, "auc": auc, "rows": rows}, f)
    spark.stop()


if __name__ == "__main__":
    main()
