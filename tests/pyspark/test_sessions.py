"""Sessions, SQL, files, configuration, caching, errors, concurrency and interruption."""

import os
import signal
import threading
import time

import pytest
from pyspark.errors import (
    AnalysisException,
    ParseException,
    PySparkException,
    UnsupportedOperationException,
)
from pyspark.sql import Row
from pyspark.sql import functions as F

from conftest import TPCH_DIR, executor_pids, new_session


def test_temp_views_sql_and_the_catalog(spark):
    spark.range(5).createOrReplaceTempView("nums")
    assert spark.sql("SELECT sum(id) AS s FROM nums").first().s == 10
    assert spark.table("nums").count() == 5
    assert spark.catalog.tableExists("nums")
    names = [t.name for t in spark.catalog.listTables()]
    assert "nums" in names and "lineitem" in names
    cols = spark.catalog.listColumns("nums")
    assert [(c.name, c.dataType) for c in cols] == [("id", "bigint")]
    assert spark.catalog.currentDatabase() == "default"
    with pytest.raises(AnalysisException, match="already exists"):
        spark.range(1).createTempView("nums")
    spark.sql("CREATE VIEW evens AS SELECT id FROM nums WHERE id % 2 = 0")
    assert spark.sql("SELECT count(*) AS n FROM evens").first().n == 3
    assert spark.catalog.dropTempView("nums") is True
    assert not spark.catalog.tableExists("nums")
    described = spark.sql("DESCRIBE evens").collect()
    assert described[0][0] == "id"


def test_sessions_are_isolated(spark):
    other = new_session()
    try:
        spark.range(3).createOrReplaceTempView("mine")
        assert not other.catalog.tableExists("mine")
        other.conf.set("spark.sql.shuffle.partitions", "7")
        assert spark.conf.get("spark.sql.shuffle.partitions") != "7"
        # Tables given to the server are seen by every session.
        assert other.table("nation").count() == 25
    finally:
        other.stop()


def test_global_temp_views_are_shared_by_sessions(spark):
    other = new_session()
    try:
        spark.range(4).createGlobalTempView("shared_nums")
        # Another session sees it in `global_temp`, not among its own views.
        assert other.sql("SELECT sum(id) AS s FROM global_temp.shared_nums").first().s == 6
        assert other.table("global_temp.shared_nums").count() == 4
        assert not other.catalog.tableExists("shared_nums")
        with pytest.raises(AnalysisException, match="already exists"):
            other.range(1).createGlobalTempView("shared_nums")
        other.range(10).createOrReplaceGlobalTempView("shared_nums")
        assert spark.table("global_temp.shared_nums").count() == 10
        assert spark.catalog.dropGlobalTempView("shared_nums") is True
        assert spark.catalog.dropGlobalTempView("shared_nums") is False
        with pytest.raises(AnalysisException, match="shared_nums"):
            other.sql("SELECT * FROM global_temp.shared_nums").collect()
    finally:
        other.stop()


def test_configuration(spark):
    assert spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.ember.test", "1")
    assert spark.conf.get("spark.ember.test") == "1"
    spark.conf.unset("spark.ember.test")
    assert spark.conf.get("spark.ember.test", "fallback") == "fallback"
    with pytest.raises(PySparkException, match="spark.ember.nothing"):
        spark.conf.get("spark.ember.nothing")
    assert spark.conf.isModifiable("spark.sql.shuffle.partitions")
    assert "spark.app.name" in spark.conf.getAll
    spark.conf.set("datafusion.execution.batch_size", "1024")
    with pytest.raises(Exception):
        spark.conf.set("datafusion.no_such_option", "1")


def test_reading_parquet_csv_and_json(spark, workdir):
    nation = spark.read.parquet(os.path.join(TPCH_DIR, "nation"))
    assert nation.count() == 25
    assert len(nation.inputFiles()) >= 1
    csv = os.path.join(workdir, "people.csv")
    with open(csv, "w") as f:
        f.write("id;name;score\n1;ann;2.5\n2;ben;3.5\n")
    as_strings = spark.read.option("header", True).option("sep", ";").csv(csv)
    assert dict(as_strings.dtypes) == {"id": "string", "name": "string", "score": "string"}
    inferred = spark.read.csv(csv, header=True, sep=";", inferSchema=True)
    assert dict(inferred.dtypes)["score"] == "double"
    assert inferred.agg(F.sum("score")).first()[0] == 6.0
    typed = spark.read.csv(csv, header=True, sep=";", schema="id INT, name STRING, score DOUBLE")
    assert typed.filter("id = 2").first().name == "ben"
    headless = spark.read.csv(csv, sep=";")
    assert headless.columns == ["_c0", "_c1", "_c2"] and headless.count() == 3
    js = os.path.join(workdir, "rows.json")
    with open(js, "w") as f:
        f.write('{"a": 1, "b": "x"}\n{"a": 2, "b": "y"}\n')
    assert spark.read.json(js).agg(F.sum("a")).first()[0] == 3


def test_writing_with_every_mode(spark, workdir):
    out = os.path.join(workdir, "written")
    df = spark.range(10).withColumn("g", F.col("id") % 3)
    df.write.parquet(out)
    assert spark.read.parquet(out).count() == 10
    with pytest.raises(AnalysisException, match="already exists"):
        df.write.parquet(out)
    df.write.mode("ignore").parquet(out)
    assert spark.read.parquet(out).count() == 10
    df.write.mode("append").parquet(out)
    assert spark.read.parquet(out).count() == 20
    df.filter("id < 4").write.mode("overwrite").parquet(out)
    assert spark.read.parquet(out).count() == 4
    parts = os.path.join(workdir, "parts")
    df.write.partitionBy("g").parquet(parts)
    assert sorted(os.listdir(parts)) == ["g=0", "g=1", "g=2"]
    csv = os.path.join(workdir, "csv")
    df.write.option("header", True).csv(csv)
    assert spark.read.csv(csv, header=True, inferSchema=True).agg(F.sum("id")).first()[0] == 45
    js = os.path.join(workdir, "json")
    df.write.json(js)
    assert spark.read.json(js).count() == 10


def test_cache_persist_and_the_catalog_cache(spark):
    df = spark.read.parquet(os.path.join(TPCH_DIR, "orders")).filter("o_totalprice > 1000")
    expected = df.count()
    cached = df.cache()
    assert cached.is_cached
    assert cached.storageLevel.useMemory
    assert cached.count() == expected
    assert cached.groupBy("o_orderstatus").count().agg(F.sum("count")).first()[0] == expected
    cached.unpersist()
    assert not cached.is_cached
    assert cached.count() == expected
    spark.read.parquet(os.path.join(TPCH_DIR, "nation")).createOrReplaceTempView("n")
    spark.catalog.cacheTable("n")
    assert spark.catalog.isCached("n")
    assert spark.sql("SELECT count(*) AS c FROM n").first().c == 25
    spark.catalog.clearCache()
    assert not spark.catalog.isCached("n")
    assert spark.table("n").count() == 25


def test_cached_partitions_survive_a_killed_executor(spark):
    df = spark.read.parquet(os.path.join(TPCH_DIR, "lineitem")).select(
        "l_orderkey", "l_quantity"
    )
    cached = df.persist()
    total = cached.agg(F.sum("l_quantity")).first()[0]
    count = cached.count()
    before = executor_pids()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    # The lost partitions are recomputed from lineage; the answer does not change.
    assert cached.count() == count
    assert cached.agg(F.sum("l_quantity")).first()[0] == total
    cached.unpersist()
    deadline = time.time() + 20
    while len(executor_pids()) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert len(executor_pids()) == 2, "the local cluster replaces the killed executor"


def test_errors_name_what_is_wrong_and_the_session_goes_on(spark, workdir):
    df = spark.range(3)
    with pytest.raises(AnalysisException, match="no_such_col") as e:
        df.select("no_such_col").collect()
    assert e.value.getCondition().startswith("UNRESOLVED_COLUMN")
    with pytest.raises(AnalysisException, match="missing_table"):
        spark.table("missing_table").collect()
    with pytest.raises(AnalysisException):
        spark.sql("SELECT * FROM missing_table").collect()
    with pytest.raises(ParseException, match="(?i)line|column|position"):
        spark.sql("SELEC 1").collect()
    missing = os.path.join(workdir, "nope.parquet")
    with pytest.raises(AnalysisException, match="nope.parquet"):
        spark.read.parquet(missing).collect()
    with pytest.raises(UnsupportedOperationException, match="UNIMPLEMENTED: function"):
        df.select(F.inline(F.array(F.struct(F.lit(1))))).collect()
    with pytest.raises(AnalysisException, match="UNPIVOT_REQUIRES_VALUE_COLUMNS"):
        df.unpivot(df.columns, None, "var", "val").collect()
    bad = spark.createDataFrame([("12",), ("x",)], "s STRING")
    with pytest.raises(PySparkException) as e:
        bad.select(F.col("s").cast("int")).collect()
    assert "partition" in str(e.value) or "x" in str(e.value)
    assert spark.sql("SELECT 1 AS ok").first().ok == 1


def test_concurrent_clients_in_separate_sessions():
    errors = []

    def client(i):
        try:
            s = new_session()
            try:
                s.range(i * 10, i * 10 + 100).createOrReplaceTempView("t")
                for _ in range(3):
                    got = s.sql("SELECT min(id) AS lo, count(*) AS n FROM t").first()
                    assert (got.lo, got.n) == (i * 10, 100), got
                q6 = s.sql(
                    "SELECT sum(l_extendedprice * l_discount) AS revenue FROM lineitem "
                    "WHERE l_discount BETWEEN 0.05 AND 0.07 AND l_quantity < 24"
                ).first()
                assert q6.revenue is not None
            finally:
                s.stop()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors


def long_query(spark):
    # Billions of pairs: runs until interrupted.
    return spark.range(2_000_000).crossJoin(spark.range(200_000).withColumnRenamed("id", "j"))


def run_in_thread(fn):
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except Exception as e:  # noqa: BLE001 - inspected by the test
            outcome["error"] = e

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


def interrupt_when_running(interrupt):
    """Interrupts as soon as the server has the operation (it may take a moment to arrive
    on a loaded machine); returns what was interrupted."""
    deadline = time.time() + 30
    while time.time() < deadline:
        interrupted = interrupt()
        if interrupted:
            return interrupted
        time.sleep(0.2)
    return []


def test_interrupt_all_stops_a_long_query(spark):
    thread, outcome = run_in_thread(lambda: long_query(spark).count())
    time.sleep(1)
    started = time.time()
    interrupted = interrupt_when_running(spark.interruptAll)
    thread.join(timeout=30)
    assert not thread.is_alive(), "the query stopped"
    assert time.time() - started < 30
    assert len(interrupted) == 1
    assert "error" in outcome and "CANCEL" in str(outcome["error"]).upper()
    assert spark.range(3).count() == 3


def test_interrupt_by_tag(spark):
    def tagged():
        # Tags belong to the thread that sets them.
        spark.addTag("slow")
        return long_query(spark).count()

    thread, outcome = run_in_thread(tagged)
    untagged, other = run_in_thread(lambda: spark.range(1000).count())
    time.sleep(1)
    assert len(interrupt_when_running(lambda: spark.interruptTag("slow"))) == 1
    thread.join(timeout=30)
    untagged.join(timeout=30)
    assert not thread.is_alive() and "error" in outcome
    assert other.get("value") == 1000
    assert spark.interruptTag("slow") == []


def test_progress_handlers_follow_the_stages_of_a_query(spark):
    reports = []
    lock = threading.Lock()

    def handler(stages, inflight_tasks, operation_id, done):
        with lock:
            reports.append((list(stages or []), inflight_tasks, operation_id, done))

    spark.conf.set("spark.connect.progress.reportInterval", "100ms")
    spark.registerProgressHandler(handler)
    try:
        # A short query: when it ends, its handlers see each stage done.
        df = spark.range(0, 100_000, numPartitions=4).groupBy((F.col("id") % 7).alias("k"))
        assert sorted(r["count"] for r in df.count().collect())[0] == 100_000 // 7
        with lock:
            last = reports[-1]
        stages, _, operation_id, done = last
        assert done and operation_id
        assert all(s.done and s.num_completed_tasks == s.num_tasks for s in stages)
        assert any(s.num_tasks == 4 for s in stages), stages

        # A long one: reports arrive while its tasks run, before it is interrupted.
        with lock:
            reports.clear()
        thread, outcome = run_in_thread(lambda: long_query(spark).count())
        deadline = time.time() + 60
        live = None
        while live is None and time.time() < deadline:
            with lock:
                live = next((r for r in reports if not r[3] and r[1] > 0), None)
            time.sleep(0.1)
        assert live is not None, "a report while the query ran"
        assert any(not s.done and s.num_tasks > 0 for s in live[0])
        interrupt_when_running(spark.interruptAll)
        thread.join(timeout=30)
        assert "error" in outcome
    finally:
        spark.clearProgressHandlers()
        spark.conf.unset("spark.connect.progress.reportInterval")


def test_checkpoints_are_kept_on_the_executors(spark):
    df = spark.range(100).filter("id % 3 = 0")
    local = df.localCheckpoint()
    assert local.count() == 34
    assert local.agg(F.sum("id")).first()[0] == sum(range(0, 100, 3))
    lazy = df.checkpoint(eager=False)
    assert lazy.filter("id > 50").count() == 17
