"""The baseline of bench/serve.sh: the Iris model of `ml_pipeline` trained with
scikit-learn (multinomial logistic regression on the four measurements) and served by
FastAPI + uvicorn with the same request and answer as `ember serve`'s
`POST /v1/models/iris:predict` ({"instances": [...]} in, {"predictions": [...]} out).

    python bench/serve_sklearn.py --csv tests/data/iris.csv --port 8081
"""

import argparse

import numpy as np
import pandas as pd
import uvicorn
from fastapi import FastAPI, Request
from sklearn.linear_model import LogisticRegression

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def build_app(csv: str) -> FastAPI:
    data = pd.read_csv(csv)
    counts = data["species"].value_counts()
    # Indexed as Ember's StringIndexer does: by descending frequency, ties by label.
    labels = sorted(counts.index, key=lambda label: (-counts[label], label))
    y = data["species"].map({label: i for i, label in enumerate(labels)})
    # L2 strength of ml_pipeline's reg_param(0.01) over 150 rows.
    model = LogisticRegression(C=1.0 / (0.01 * len(data)), max_iter=200).fit(data[COLUMNS].to_numpy(), y)
    app = FastAPI()

    @app.post("/v1/models/iris:predict")
    async def predict(request: Request):
        body = await request.json()
        x = np.array([[row[c] for c in COLUMNS] for row in body["instances"]], dtype=float)
        probability = model.predict_proba(x)
        prediction = probability.argmax(axis=1)
        raw = model.decision_function(x)
        return {
            "predictions": [
                {
                    "rawPrediction": raw[i].tolist(),
                    "probability": probability[i].tolist(),
                    "prediction": float(prediction[i]),
                    "predicted_species": labels[prediction[i]],
                }
                for i in range(len(x))
            ]
        }

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--csv", required=True)
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    uvicorn.run(build_app(args.csv), host="127.0.0.1", port=args.port, log_level="warning")
