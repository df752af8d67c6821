"""pyspark.ml on Ember: pipelines fitted, applied, evaluated, saved and loaded through the
unchanged client; models compared with scikit-learn fitted on the same data here."""

import gc
import os
import threading
import time

import numpy as np
import pytest
from pyspark.errors import PySparkException
from pyspark.errors.exceptions.connect import SparkConnectGrpcException
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.clustering import KMeans
from pyspark.ml.evaluation import (
    BinaryClassificationEvaluator,
    ClusteringEvaluator,
    MulticlassClassificationEvaluator,
    RegressionEvaluator,
)
from pyspark.ml.feature import (
    Imputer,
    MinMaxScaler,
    OneHotEncoder,
    StandardScaler,
    StringIndexer,
    VectorAssembler,
)
from pyspark.ml.linalg import DenseVector, Vectors
from pyspark.ml.param import Param
from pyspark.ml.regression import LinearRegression
from pyspark.sql import functions as F

from conftest import executor_pids

DATA = os.path.join(os.path.dirname(__file__), "..", "data")
IRIS = os.path.join(DATA, "iris.csv")
CANCER = os.path.join(DATA, "breast_cancer.csv")
IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

ClientError = (PySparkException, SparkConnectGrpcException)


def read_csv(spark, path):
    return spark.read.csv(path, header=True, inferSchema=True)


def numpy_csv(path):
    """Features (float64) and the last column (strings) of a data set."""
    with open(path) as f:
        header = f.readline().strip().split(",")
        rows = [line.strip().split(",") for line in f if line.strip()]
    x = np.array([[float(v) for v in r[:-1]] for r in rows])
    y = np.array([r[-1] for r in rows])
    return header, x, y


def standardized(x):
    return (x - x.mean(axis=0)) / x.std(axis=0)


def vector_frame(spark, x, y):
    """A DataFrame of `features` vectors (sent as Spark's VectorUDT) and `label`."""
    rows = [(Vectors.dense(r.tolist()), float(label)) for r, label in zip(x, y)]
    return spark.createDataFrame(rows, ["features", "label"])


def predictions(df, column="prediction"):
    return [r[0] for r in df.select(column).collect()]


def test_iris_pipeline_fits_evaluates_saves_and_loads(spark, workdir):
    df = read_csv(spark, IRIS)
    pipeline = Pipeline(
        stages=[
            StringIndexer(inputCol="species", outputCol="label"),
            VectorAssembler(inputCols=IRIS_FEATURES, outputCol="raw"),
            StandardScaler(inputCol="raw", outputCol="features", withMean=True),
            LogisticRegression(regParam=0.01),
        ]
    )
    model = pipeline.fit(df)
    out = model.transform(df)
    types = dict(out.dtypes)
    assert types["features"] == "vector" and types["probability"] == "vector"

    first = out.select("features", "probability", "rawPrediction").first()
    assert isinstance(first.features, DenseVector) and len(first.features) == 4
    assert isinstance(first.probability, DenseVector) and len(first.probability) == 3
    assert abs(sum(first.probability) - 1.0) < 1e-9

    accuracy = MulticlassClassificationEvaluator(metricName="accuracy").evaluate(out)
    assert accuracy > 0.9
    f1 = MulticlassClassificationEvaluator().evaluate(out)
    assert 0.9 < f1 <= 1.0

    indexer, scaler, lr = model.stages[0], model.stages[2], model.stages[3]
    # Equal counts: ties go in alphabetical order.
    assert indexer.labels == ["setosa", "versicolor", "virginica"]
    _, x, _ = numpy_csv(IRIS)
    assert np.allclose(scaler.mean.toArray(), x.mean(axis=0), atol=1e-5)
    assert np.allclose(scaler.std.toArray(), x.std(axis=0, ddof=1), atol=1e-5)
    assert lr.numClasses == 3 and lr.numFeatures == 4
    assert lr.coefficientMatrix.toArray().shape == (3, 4)
    assert len(lr.interceptVector) == 3
    history = lr.summary.objectiveHistory
    assert len(history) >= 2 and history[-1] < history[0]
    assert lr.summary.totalIterations > 0
    assert abs(lr.summary.accuracy - accuracy) < 1e-12

    path = os.path.join(workdir, "iris-model")
    model.write().overwrite().save(path)
    loaded = PipelineModel.load(path)
    assert [type(s).__name__ for s in loaded.stages] == [
        "StringIndexerModel",
        "VectorAssembler",
        "StandardScalerModel",
        "LogisticRegressionModel",
    ]
    assert predictions(loaded.transform(df)) == predictions(out)
    assert np.allclose(
        loaded.stages[3].coefficientMatrix.toArray(), lr.coefficientMatrix.toArray(), atol=0
    )
    # The unfitted pipeline saves and loads too, and fits to the same model.
    unfitted = os.path.join(workdir, "iris-pipeline")
    pipeline.save(unfitted)
    refit = Pipeline.load(unfitted).fit(df)
    assert predictions(refit.transform(df)) == predictions(out)
    # Saving again without overwrite() is refused and leaves the saved model intact.
    with pytest.raises(ClientError, match="already exists"):
        lr.write().save(os.path.join(path, "stages", sorted(os.listdir(os.path.join(path, "stages")))[3]))
    assert predictions(PipelineModel.load(path).transform(df)) == predictions(out)


def test_breast_cancer_binary_pipeline(spark, workdir):
    df = read_csv(spark, CANCER)
    header, _, _ = numpy_csv(CANCER)
    pipeline = Pipeline(
        stages=[
            StringIndexer(inputCol="diagnosis", outputCol="label"),
            VectorAssembler(inputCols=header[:-1], outputCol="raw"),
            StandardScaler(inputCol="raw", outputCol="features", withMean=True),
            LogisticRegression(regParam=0.01, maxIter=200),
        ]
    )
    model = pipeline.fit(df)
    out = model.transform(df)
    auc = BinaryClassificationEvaluator().evaluate(out)
    assert auc > 0.99
    lr = model.stages[-1]
    assert lr.numClasses == 2 and len(lr.coefficients) == 30
    assert abs(lr.summary.areaUnderROC - auc) < 1e-12
    # B (357 rows) is more frequent than M (212): index 0.
    assert model.stages[0].labels == ["B", "M"]

    path = os.path.join(workdir, "cancer-model")
    model.write().save(path)
    again = PipelineModel.load(path).transform(df)
    assert predictions(again) == predictions(out)
    assert predictions(again, "probability") == predictions(out, "probability")


def sklearn_logistic(x, y, reg, l1_ratio=0.0):
    from sklearn.linear_model import LogisticRegression as SkLogistic

    n = len(y)
    kwargs = dict(C=1.0 / (n * reg), tol=1e-12, max_iter=100000)
    if l1_ratio > 0:
        kwargs.update(solver="saga", l1_ratio=l1_ratio)
    return SkLogistic(**kwargs).fit(x, y)


def ember_logistic(df, reg, alpha=0.0):
    """Ember's fit of the objective `sklearn_logistic` minimizes, converged tightly."""
    return LogisticRegression(
        regParam=reg, elasticNetParam=alpha, standardization=False, maxIter=1000, tol=1e-12
    ).fit(df)


def cancer_standardized():
    """Breast cancer features standardized, label 1 for malignant."""
    _, x, y = numpy_csv(CANCER)
    return standardized(x), (y == "M").astype(float)


def test_binary_logistic_regression_matches_scikit_learn(spark):
    x, y = cancer_standardized()
    reg = 0.01
    model = ember_logistic(vector_frame(spark, x, y), reg)
    sk = sklearn_logistic(x, y, reg)
    assert np.abs(model.coefficients.toArray() - sk.coef_[0]).max() < 1e-3
    assert abs(model.intercept - sk.intercept_[0]) < 1e-3
    # One row at a time, as the transform computes it.
    first = model.transform(vector_frame(spark, x[:1], y[:1])).first()
    assert model.predict(Vectors.dense(x[0].tolist())) == first.prediction
    probability = model.predictProbability(Vectors.dense(x[0].tolist()))
    assert np.allclose(probability.toArray(), first.probability.toArray(), atol=1e-12)
    with pytest.raises(ClientError, match="30"):
        model.predict(Vectors.dense([1.0, 2.0]))


def test_elastic_net_logistic_regression_matches_scikit_learn(spark):
    x, y = cancer_standardized()
    reg, alpha = 0.02, 0.5
    model = ember_logistic(vector_frame(spark, x, y), reg, alpha)
    coefficients = model.coefficients.toArray()
    sk = sklearn_logistic(x, y, reg, l1_ratio=alpha)
    assert np.abs(coefficients - sk.coef_[0]).max() < 1e-3
    # The L1 part zeroes some coefficients, as scikit-learn's does.
    assert (coefficients == 0).sum() > 0
    assert ((coefficients == 0) == (np.abs(sk.coef_[0]) < 1e-6)).mean() > 0.9


def test_multinomial_logistic_regression_matches_scikit_learn(spark):
    _, x, species = numpy_csv(IRIS)
    x = standardized(x)
    classes = sorted(set(species))
    y = np.array([classes.index(s) for s in species], dtype=float)
    reg = 0.01
    model = ember_logistic(vector_frame(spark, x, y), reg)
    sk = sklearn_logistic(x, y, reg)
    coefficients = model.coefficientMatrix.toArray()
    assert coefficients.shape == (3, 4)
    assert np.abs(coefficients - sk.coef_).max() < 1e-3
    # Intercepts are defined up to a constant without a penalty on them: compare centred.
    ours = model.interceptVector.toArray()
    assert np.abs((ours - ours.mean()) - (sk.intercept_ - sk.intercept_.mean())).max() < 1e-3
    with pytest.raises(ClientError, match="coefficientMatrix"):
        model.coefficients


def test_linear_regression_matches_scikit_learn(spark):
    from sklearn.linear_model import LinearRegression as SkLinear
    from sklearn.metrics import mean_squared_error, r2_score

    _, x, _ = numpy_csv(IRIS)
    features, label = x[:, :3], x[:, 3]
    df = vector_frame(spark, features, label)
    model = LinearRegression().fit(df)
    sk = SkLinear().fit(features, label)
    assert np.abs(model.coefficients.toArray() - sk.coef_).max() < 1e-3
    assert abs(model.intercept - sk.intercept_) < 1e-3
    fitted = sk.predict(features)
    summary = model.summary
    assert abs(summary.r2 - r2_score(label, fitted)) < 1e-4
    assert abs(summary.rootMeanSquaredError - mean_squared_error(label, fitted) ** 0.5) < 1e-4
    out = model.transform(df)
    rmse = RegressionEvaluator().evaluate(out)
    assert abs(rmse - summary.rootMeanSquaredError) < 1e-9
    assert abs(RegressionEvaluator(metricName="r2").evaluate(out) - summary.r2) < 1e-9


def test_kmeans_cost_matches_scikit_learn(spark):
    from sklearn.cluster import KMeans as SkKMeans

    _, x, _ = numpy_csv(IRIS)
    df = vector_frame(spark, x, np.zeros(len(x)))
    model = KMeans(k=3, seed=7).fit(df)
    centers = np.array(model.clusterCenters())
    assert centers.shape == (3, 4)
    cost = model.summary.trainingCost
    best = SkKMeans(n_clusters=3, n_init=10, random_state=0).fit(x).inertia_
    assert cost <= best * 1.01
    # From Ember's centres, Lloyd's algorithm in scikit-learn finds nothing better.
    polished = SkKMeans(n_clusters=3, init=centers, n_init=1).fit(x).inertia_
    assert abs(cost - polished) <= 0.01 * polished
    assert sorted(model.summary.clusterSizes) == sorted(
        np.bincount(SkKMeans(n_clusters=3, init=centers, n_init=1).fit(x).labels_).tolist()
    )
    clustered = model.transform(df)
    first = clustered.first()
    assert model.predict(first.features) == first.prediction
    silhouette = ClusteringEvaluator().evaluate(clustered)
    assert 0.5 < silhouette <= 1.0


def test_feature_transformers_match_numpy(spark):
    rows = [(1.0, 0.0, None), (3.0, 2.0, 4.0), (5.0, 1.0, 8.0), (9.0, 2.0, float("nan"))]
    df = spark.createDataFrame(rows, "a double, cat double, gap double")
    assembled = VectorAssembler(inputCols=["a", "cat"], outputCol="v").transform(df)

    scaler = MinMaxScaler(inputCol="v", outputCol="scaled").fit(assembled)
    assert scaler.originalMin.toArray().tolist() == [1.0, 0.0]
    assert scaler.originalMax.toArray().tolist() == [9.0, 2.0]
    scaled = [r.scaled.toArray().tolist() for r in scaler.transform(assembled).collect()]
    assert scaled == [[0.0, 0.0], [0.25, 1.0], [0.5, 0.5], [1.0, 1.0]]

    encoder = OneHotEncoder(inputCols=["cat"], outputCols=["onehot"]).fit(df)
    assert encoder.categorySizes == [3]
    encoded = [r.onehot.toArray().tolist() for r in encoder.transform(df).collect()]
    assert encoded == [[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 0.0]]

    imputer = Imputer(inputCols=["gap"], outputCols=["filled"]).fit(df)
    assert imputer.surrogateDF.collect()[0]["gap"] == 6.0
    assert [r.filled for r in imputer.transform(df).collect()] == [6.0, 4.0, 8.0, 6.0]


def test_vectors_from_the_client_arrive_dense(spark):
    df = spark.createDataFrame(
        [(Vectors.dense([1.0, 2.0, 3.0]),), (Vectors.sparse(3, [1], [5.0]),)], ["v"]
    )
    got = [r.v.toArray().tolist() for r in df.collect()]
    assert got == [[1.0, 2.0, 3.0], [0.0, 5.0, 0.0]]
    with pytest.raises(ClientError, match="different sizes"):
        spark.createDataFrame(
            [(Vectors.dense([1.0, 2.0]),), (Vectors.dense([1.0]),)], ["v"]
        ).collect()


def test_errors_reach_the_client_clearly(spark):
    from pyspark.ml.classification import RandomForestClassifier

    df = read_csv(spark, IRIS)
    vectors = VectorAssembler(inputCols=IRIS_FEATURES, outputCol="features").transform(
        StringIndexer(inputCol="species", outputCol="label").fit(df).transform(df)
    )
    with pytest.raises(ClientError, match="RandomForestClassifier is not supported by Ember"):
        RandomForestClassifier().fit(vectors)

    lr = LogisticRegression()
    lr._paramMap[Param(lr, "bogusParam", "not a Spark param")] = 1
    with pytest.raises(ClientError, match="LogisticRegression has no param 'bogusParam'"):
        lr.fit(vectors)

    with pytest.raises(ClientError, match="weightCol"):
        LogisticRegression(weightCol="w").fit(vectors)

    with pytest.raises(ClientError, match="species"):
        VectorAssembler(inputCols=["sepal_length", "species"], outputCol="f").transform(
            df
        ).collect()

    nan_label = vectors.withColumn(
        "label", F.when(F.col("sepal_length") > 7.5, F.lit(float("nan"))).otherwise(F.col("label"))
    )
    with pytest.raises(ClientError, match="(?i)nan"):
        LogisticRegression().fit(nan_label)

    with pytest.raises(ClientError, match="does not exist|Path"):
        PipelineModel.load("/nonexistent/ember-model")


def test_models_leave_the_cache_when_deleted(spark):
    df = vector_frame(spark, np.array([[1.0, 2.0], [3.0, 5.0], [4.0, 1.0]]), np.zeros(3))
    before = len(spark.client._get_ml_cache_info())
    model = StandardScaler(inputCol="features", outputCol="s").fit(df)
    assert len(spark.client._get_ml_cache_info()) == before + 1
    del model
    gc.collect()
    assert len(spark.client._get_ml_cache_info()) == before


def test_a_fit_survives_an_executor_killed_under_it(spark):
    """`kill -9` of an executor during a fit: the lost partitions are recomputed and the
    model is the one an undisturbed fit gives."""
    n = 100_000
    df = spark.range(n).select(
        F.sin(F.col("id") * 0.37).alias("x1"),
        F.cos(F.col("id") * 0.11).alias("x2"),
        F.sin(F.col("id") * 0.013 + 1.0).alias("x3"),
        F.cos(F.col("id") * 0.0071 + 2.0).alias("x4"),
    )
    df = df.withColumn(
        "label",
        F.when(F.col("x1") + 0.5 * F.col("x2") - F.col("x3") + 0.1 * F.sin(F.col("x4") * 40) > 0, 1.0)
        .otherwise(0.0),
    )
    data = VectorAssembler(inputCols=["x1", "x2", "x3", "x4"], outputCol="features").transform(df)
    estimator = LogisticRegression(maxIter=20, tol=0.0, regParam=0.001)

    # The first fit pays one-time costs (the executors' kernel setup); the second is the
    # reference and its time says when to strike.
    estimator.fit(data)
    started = time.time()
    reference = estimator.fit(data)
    undisturbed = time.time() - started
    print(f"undisturbed fit: {undisturbed:.2f} s")
    expected = reference.coefficients.toArray()

    # The fit runs here (the client's active session is per thread); another thread
    # kills an executor part way through it.
    victims = executor_pids()
    assert len(victims) >= 2
    state = {"fitting": True, "killed_during_fit": False}

    def kill():
        time.sleep(min(1.0, undisturbed / 4))
        state["killed_during_fit"] = state["fitting"]
        os.kill(victims[0], 9)

    killer = threading.Thread(target=kill)
    killer.start()
    recovered = estimator.fit(data)
    state["fitting"] = False
    killer.join()
    assert state["killed_during_fit"], "the fit ended before the executor was killed"
    assert np.abs(recovered.coefficients.toArray() - expected).max() < 1e-6
    assert abs(recovered.intercept - reference.intercept) < 1e-6
