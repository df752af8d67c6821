"""The README's Python examples, run as written against the server (with the test's URL,
data and output paths put in for the README's)."""

import os
import re

from conftest import URL, new_session

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def python_blocks():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readme_has_python_examples():
    assert len(python_blocks()) >= 2


def test_readme_python_examples_run(workdir, capsys):
    spark = new_session()
    orders = os.path.join(workdir, "orders")
    spark.createDataFrame(
        [("north", 120.0), ("south", 30.0), ("north", 75.5), ("east", 51.0)],
        "region string, amount double",
    ).write.parquet(orders)
    # `ember server --table orders=data/orders` registers the table the README queries.
    spark.read.parquet(orders).createOrReplaceTempView("orders")
    namespace = {}
    try:
        for block in python_blocks():
            code = (
                block.replace("sc://localhost:15002", URL)
                .replace('"data/orders"', repr(orders))
                .replace('"tests/data/', '"' + os.path.abspath(os.path.join(ROOT, "tests", "data")) + "/")
                .replace("/tmp/ember-iris-model", os.path.join(workdir, "iris-model"))
            )
            exec(compile(code, "README.md", "exec"), namespace)
        out = capsys.readouterr().out
        # The orders example showed its aggregate; the ML example printed an accuracy.
        assert "sum(amount)" in out
        evaluator = namespace["MulticlassClassificationEvaluator"](metricName="accuracy")
        assert 0.8 < evaluator.evaluate(namespace["predictions"]) <= 1.0
        assert os.path.isdir(os.path.join(workdir, "iris-model", "stages"))
    finally:
        spark.stop()
