"""Times scikit-learn on the rows an Ember bench generated, so the bench can print its
figures beside Ember's from the same run.

Usage: sklearn_baseline.py logistic|kmeans PREFIX ROWS FEATURES ITERATIONS [K] [SEED]

PREFIX.x.f32 holds the row-major features (little-endian f32), PREFIX.y.f64 the labels
(little-endian f64, logistic only). Prints one JSON object: seconds of the fit (the
median of 3 after a warm-up), iterations, seconds per iteration, and for k-means the
inertia (sum of squared distances to the nearest centre).
"""

import json
import statistics
import sys
import time

import numpy as np


def main() -> None:
    kind, prefix = sys.argv[1], sys.argv[2]
    rows, d, iterations = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    x = np.fromfile(prefix + ".x.f32", dtype="<f4").reshape(rows, d)
    extra = {}
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        y = np.fromfile(prefix + ".y.f64", dtype="<f8")

        def fit():
            model = LogisticRegression(penalty=None, tol=1e-6, max_iter=iterations)
            model.fit(x, y)
            return int(np.max(model.n_iter_))

    elif kind == "kmeans":
        from sklearn.cluster import KMeans

        k, seed = int(sys.argv[6]), int(sys.argv[7])

        def fit():
            model = KMeans(
                n_clusters=k,
                n_init=1,
                max_iter=iterations,
                random_state=seed,
                algorithm="lloyd",
            )
            model.fit(x)
            extra["inertia"] = float(model.inertia_)
            return int(model.n_iter_)

    else:
        raise SystemExit(f"unknown kind {kind!r} (expected logistic or kmeans)")
    fit()
    times, iters = [], 0
    for _ in range(3):
        started = time.perf_counter()
        iters = fit()
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    print(
        json.dumps(
            {
                "fit_s": seconds,
                "iterations": iters,
                "per_iteration_s": seconds / max(iters, 1),
                **extra,
            }
        )
    )


if __name__ == "__main__":
    main()
