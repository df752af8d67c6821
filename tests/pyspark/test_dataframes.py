"""DataFrame relations through Spark Connect: each is planned by DataFusion and run on
Ember's executors."""

import datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from pyspark.errors import AnalysisException
from pyspark.sql import Row, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DateType,
    DecimalType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)


def people(spark):
    return spark.createDataFrame(
        [
            (1, "alice", "eng", 100.0, datetime.date(2024, 1, 15)),
            (2, "bob", "eng", 80.0, datetime.date(2023, 6, 1)),
            (3, "carol", "ops", 120.0, datetime.date(2022, 3, 9)),
            (4, "dan", "ops", None, datetime.date(2021, 12, 31)),
            (5, "erin", None, 60.0, None),
        ],
        ["id", "name", "dept", "salary", "joined"],
    )


def test_sql_and_range(spark):
    assert spark.sql("SELECT 40 + 2 AS answer").collect() == [Row(answer=42)]
    assert spark.sql("SELECT :x + 1 AS y", args={"x": 41}).first().y == 42
    assert spark.sql("SELECT ? * 2 AS y", args=[21]).first().y == 42
    df = spark.range(10)
    assert df.columns == ["id"]
    assert [r.id for r in df.filter(F.col("id") >= 7).collect()] == [7, 8, 9]
    assert spark.range(2, 20, 5).count() == 4
    assert spark.range(0).count() == 0


def test_create_dataframe_from_rows_pandas_and_a_ddl_schema(spark):
    df = spark.createDataFrame([(1, "a"), (2, "b")], "k INT, v STRING")
    assert df.schema == StructType(
        [StructField("k", IntegerType(), True), StructField("v", StringType(), True)]
    )
    assert df.collect() == [Row(k=1, v="a"), Row(k=2, v="b")]
    pdf = pd.DataFrame({"x": [1.5, 2.5, None], "y": ["p", "q", "r"]})
    from_pandas = spark.createDataFrame(pdf)
    assert from_pandas.count() == 3
    back = from_pandas.toPandas()
    assert back["y"].tolist() == ["p", "q", "r"]
    assert back["x"].isna().tolist() == [False, False, True]
    empty = spark.createDataFrame([], "a LONG")
    assert empty.count() == 0 and empty.columns == ["a"]


def test_types_reach_the_client_as_spark_types(spark):
    df = spark.sql(
        "SELECT CAST(1 AS INT) AS i, CAST(2 AS BIGINT) AS l, CAST(1.5 AS DOUBLE) AS d, "
        "CAST('3.25' AS DECIMAL(10, 2)) AS m, 'text' AS s, DATE '2024-02-29' AS day, "
        "true AS b"
    )
    types = {f.name: f.dataType for f in df.schema.fields}
    assert types["i"] == IntegerType()
    assert types["l"] == LongType()
    assert types["d"] == DoubleType()
    assert types["m"] == DecimalType(10, 2)
    assert types["s"] == StringType()
    assert types["day"] == DateType()
    row = df.collect()[0]
    assert row.m == Decimal("3.25")
    assert row.day == datetime.date(2024, 2, 29)
    assert row.b is True
    assert dict(df.dtypes)["m"] == "decimal(10,2)"


def test_project_filter_and_expressions(spark):
    df = people(spark)
    out = (
        df.where((F.col("salary") > 70) & F.col("dept").isNotNull())
        .select(
            "name",
            (F.col("salary") * 2).alias("double"),
            F.upper("name").alias("upper"),
            F.when(F.col("salary") > 90, "high").otherwise("low").alias("band"),
            F.col("id").cast("string").alias("sid"),
            F.coalesce(F.col("dept"), F.lit("none")).alias("dept"),
        )
        .orderBy("name")
        .collect()
    )
    assert [r.name for r in out] == ["alice", "bob", "carol"]
    assert out[0].double == 200.0 and out[0].upper == "ALICE" and out[0].band == "high"
    assert out[1].band == "low" and out[2].sid == "3"
    assert df.selectExpr("id * 10 AS t").agg(F.sum("t")).collect()[0][0] == 150
    assert df.filter("dept = 'ops'").count() == 2
    # Spark's names for unaliased expressions.
    assert df.select(F.col("id") + 1).columns == ["(id + 1)"]
    assert df.select(F.max("salary")).columns == ["max(salary)"]
    first = df.filter("id = 1").select(-F.col("id"), ~F.col("dept").isNull()).first()
    assert tuple(first) == (-1, True)
    assert df.select(-F.col("id"), F.col("dept").isNull()).columns == ["(- id)", "(dept IS NULL)"]
    # Division is in floating point.
    assert spark.range(1).select((F.lit(7) / F.lit(2)).alias("q")).first().q == 3.5


def test_string_date_and_math_functions(spark):
    df = people(spark).filter(F.col("id") == 1)
    r = df.select(
        F.concat_ws("-", "name", "dept").alias("cw"),
        F.substring("name", 2, 3).alias("sub"),
        F.length("name").alias("len"),
        F.trim(F.lit("  x ")).alias("tr"),
        F.year("joined").alias("y"),
        F.month("joined").alias("m"),
        F.dayofmonth("joined").alias("d"),
        F.date_add("joined", 20).alias("later"),
        F.datediff(F.lit("2024-02-01").cast("date"), "joined").alias("dd"),
        F.date_format("joined", "yyyy/MM/dd").alias("fmt"),
        F.abs(F.lit(-3)).alias("abs"),
        F.sqrt(F.lit(16.0)).alias("sq"),
        F.round(F.lit(2.567), 2).alias("rd"),
        F.col("name").startswith("al").alias("sw"),
        F.col("name").like("a%").alias("lk"),
        F.col("id").isin(1, 2).alias("isin"),
        F.isnull("dept").alias("nul"),
        F.regexp_replace("name", "[aeiou]", "_").alias("re"),
    ).first()
    assert r.cw == "alice-eng" and r.sub == "lic" and r.len == 5 and r.tr == "x"
    assert (r.y, r.m, r.d) == (2024, 1, 15)
    assert r.later == datetime.date(2024, 2, 4) and r.dd == 17
    assert r.fmt == "2024/01/15"
    assert r.abs == 3 and r.sq == 4.0 and abs(r.rd - 2.57) < 1e-9
    assert r.sw and r.lk and r.isin and not r.nul
    assert r.re == "_l_c_"


def test_aggregates_rollup_cube_and_pivot(spark):
    df = people(spark)
    by_dept = {
        r.dept: r
        for r in df.groupBy("dept")
        .agg(
            F.count("*").alias("n"),
            F.sum("salary").alias("total"),
            F.avg("salary").alias("mean"),
            F.countDistinct("name").alias("names"),
            (F.max("salary") - F.min("salary")).alias("spread"),
        )
        .collect()
    }
    assert by_dept["eng"].n == 2 and by_dept["eng"].total == 180.0
    assert by_dept["ops"].mean == 120.0 and by_dept["eng"].spread == 20.0
    assert by_dept[None].names == 1
    assert df.groupBy("dept").count().orderBy("dept").first()["count"] == 1
    assert df.agg(F.max("id")).collect() == [Row(**{"max(id)": 5})]
    rollup = df.rollup("dept").agg(F.count("*").alias("n")).collect()
    assert sum(r.n for r in rollup if r.dept is None) == 6  # grand total 5 + null dept 1
    cube = df.cube("dept", F.col("id") > 2).count().collect()
    assert len(cube) > len(rollup)
    pivot = df.groupBy("dept").pivot("id", [1, 3]).agg(F.sum("salary")).orderBy("dept").collect()
    assert pivot[1]["1"] == 100.0 and pivot[2]["3"] == 120.0
    discovered = df.groupBy().pivot("dept").agg(F.count("id")).columns
    assert set(discovered) == {"null", "eng", "ops"}


def test_joins_of_every_type(spark):
    left = spark.createDataFrame([(1, "a"), (2, "b"), (3, "c")], ["id", "l"])
    right = spark.createDataFrame([(2, "x"), (3, "y"), (4, "z")], ["id", "r"])
    assert left.join(right, "id").orderBy("id").collect() == [
        Row(id=2, l="b", r="x"),
        Row(id=3, l="c", r="y"),
    ]
    assert left.join(right, "id", "left").count() == 3
    assert left.join(right, "id", "right").count() == 3
    full = left.join(right, "id", "full").orderBy("id").collect()
    assert [r.id for r in full] == [1, 2, 3, 4]
    assert [r.id for r in left.join(right, "id", "left_semi").orderBy("id").collect()] == [2, 3]
    assert [r.id for r in left.join(right, "id", "left_anti").collect()] == [1]
    assert left.crossJoin(right).count() == 9
    assert left.join(right.hint("broadcast"), "id").count() == 2
    cond = left.join(right, left.id == right.id, "inner").select(left.id, right.r)
    assert sorted(cond.collect()) == [Row(id=2, r="x"), Row(id=3, r="y")]
    aliased = left.alias("a").join(right.alias("b"), F.col("a.id") < F.col("b.id"))
    assert aliased.count() == 6
    with pytest.raises(Exception):
        left.join(right, left.id == right.id).select("id").collect()


def test_sort_limit_offset_and_tail(spark):
    df = spark.range(100)
    assert [r.id for r in df.orderBy(F.desc("id")).limit(3).collect()] == [99, 98, 97]
    assert [r.id for r in df.orderBy("id").offset(97).collect()] == [97, 98, 99]
    assert [r.id for r in df.orderBy("id").tail(2)] == [98, 99]
    assert [r.id for r in df.orderBy("id").take(2)] == [0, 1]
    assert df.orderBy("id").first().id == 0
    nulls = spark.createDataFrame([(1,), (None,), (3,)], "v INT")
    assert [r.v for r in nulls.orderBy("v").collect()] == [None, 1, 3]
    assert [r.v for r in nulls.orderBy(F.col("v").desc_nulls_first()).collect()] == [None, 3, 1]


def test_set_operations_and_deduplication(spark):
    a = spark.createDataFrame([(1, "x"), (2, "y"), (2, "y")], ["k", "v"])
    b = spark.createDataFrame([(2, "y"), (3, "z")], ["k", "v"])
    assert a.union(b).count() == 5
    assert a.union(b).distinct().count() == 3
    assert sorted(a.intersect(b).collect()) == [Row(k=2, v="y")]
    assert sorted(a.subtract(b).collect()) == [Row(k=1, v="x")]
    assert a.exceptAll(b).count() == 2
    swapped = spark.createDataFrame([("w", 9)], ["v", "k"])
    assert a.unionByName(swapped).filter("k = 9").first().v == "w"
    partial = spark.createDataFrame([(7,)], ["k"])
    filled = a.unionByName(partial, allowMissingColumns=True).filter("k = 7").first()
    assert filled.v is None
    assert a.dropDuplicates().count() == 2
    assert a.dropDuplicates(["k"]).count() == 2
    assert a.distinct().count() == 2


def test_columns_renamed_dropped_and_replaced(spark):
    df = people(spark)
    out = (
        df.withColumn("bonus", F.col("salary") * 0.1)
        .withColumn("salary", F.col("salary") + 1)
        .withColumnRenamed("name", "who")
        .withColumnsRenamed({"dept": "team"})
        .drop("joined", "no_such_column")
    )
    assert out.columns == ["id", "who", "team", "salary", "bonus"]
    assert out.filter("id = 1").first().salary == 101.0
    assert df.toDF("a", "b", "c", "d", "e").columns == ["a", "b", "c", "d", "e"]
    assert df.select(df["*"]).columns == df.columns


def test_window_functions(spark):
    df = people(spark).filter(F.col("dept").isNotNull())
    w = Window.partitionBy("dept").orderBy(F.desc("salary"))
    out = {
        r.name: r
        for r in df.select(
            "name",
            F.row_number().over(w).alias("rn"),
            F.rank().over(w).alias("rk"),
            F.lag("salary", 1).over(w).alias("prev"),
            F.sum("salary").over(Window.partitionBy("dept")).alias("dept_total"),
            F.sum("id")
            .over(Window.orderBy("id").rowsBetween(Window.unboundedPreceding, Window.currentRow))
            .alias("running"),
        ).collect()
    }
    assert out["alice"].rn == 1 and out["bob"].rn == 2 and out["bob"].prev == 100.0
    assert out["carol"].rk == 1 and out["alice"].dept_total == 180.0
    assert out["dan"].running == 10


def test_show_prints_sparks_table(spark, capsys):
    spark.createDataFrame([(1, "a" * 30), (2, None)], "id INT, s STRING").show()
    printed = capsys.readouterr().out
    assert printed.splitlines()[:5] == [
        "+---+--------------------+",
        "| id|                   s|",
        "+---+--------------------+",
        "|  1|aaaaaaaaaaaaaaaaa...|",
        "|  2|                NULL|",
    ]
    spark.range(30).show(5)
    assert "only showing top 5 rows" in capsys.readouterr().out
    spark.range(1).show(vertical=True)
    assert "-RECORD 0" in capsys.readouterr().out


def test_sample_fill_and_drop_nulls(spark):
    sample = spark.range(2000).sample(fraction=0.5).count()
    assert 700 < sample < 1300
    df = people(spark)
    filled = df.fillna(0.0).filter("id = 4").first()
    assert filled.salary == 0.0 and filled.dept == "ops"
    assert df.fillna("none", ["dept"]).filter("id = 5").first().dept == "none"
    assert df.na.drop().count() == 3
    assert df.dropna(how="all").count() == 5
    assert df.dropna(subset=["dept"]).count() == 4


def test_seeded_samples_and_random_splits_are_repeatable(spark):
    df = spark.range(2000)
    first = sorted(r.id for r in df.sample(fraction=0.3, seed=11).collect())
    again = sorted(r.id for r in df.sample(fraction=0.3, seed=11).collect())
    assert first == again and 400 < len(first) < 800
    parts = df.randomSplit([0.25, 0.75], seed=5)
    ids = [sorted(r.id for r in p.collect()) for p in parts]
    assert not set(ids[0]) & set(ids[1])
    assert sorted(ids[0] + ids[1]) == list(range(2000))
    assert 350 < len(ids[0]) < 650


def test_explode_arrays(spark):
    df = spark.createDataFrame(
        [(1, [10, 20]), (2, []), (3, None), (4, [40])], "id int, xs array<int>"
    )
    rows = df.select("id", F.explode("xs").alias("x")).orderBy("id", "x").collect()
    assert [(r.id, r.x) for r in rows] == [(1, 10), (1, 20), (4, 40)]
    assert df.select(F.explode("xs")).columns == ["col"]
    outer = df.select("id", F.explode_outer("xs")).orderBy("id", "col").collect()
    assert [(r.id, r.col) for r in outer] == [(1, 10), (1, 20), (2, None), (3, None), (4, 40)]
    with pytest.raises(AnalysisException, match="array"):
        df.select(F.explode("id")).collect()
    # Over a range the executors compute, and aggregated after.
    doubled = spark.range(1000).select(F.explode(F.array("id", F.col("id") * 2)).alias("v"))
    assert doubled.agg(F.count("v"), F.sum("v")).first() == (2000, 3 * 999 * 1000 // 2)


def test_posexplode_and_explode_of_maps(spark):
    df = spark.createDataFrame(
        [(1, [10, 20], {"a": 1, "b": 2}), (2, [], {}), (3, None, None)],
        "id int, xs array<int>, m map<string,int>",
    )
    pos = df.select("id", F.posexplode("xs")).orderBy("id", "pos")
    assert pos.columns == ["id", "pos", "col"]
    assert [tuple(r) for r in pos.collect()] == [(1, 0, 10), (1, 1, 20)]
    assert dict(pos.dtypes)["pos"] == "int"
    outer = df.select("id", F.posexplode_outer("xs")).orderBy("id", "pos").collect()
    assert [tuple(r) for r in outer] == [(1, 0, 10), (1, 1, 20), (2, None, None), (3, None, None)]
    named = df.select(F.posexplode("xs").alias("i", "x"), "id")
    assert named.columns == ["i", "x", "id"]
    entries = df.select("id", F.explode("m")).orderBy("id", "key")
    assert entries.columns == ["id", "key", "value"]
    assert [tuple(r) for r in entries.collect()] == [(1, "a", 1), (1, "b", 2)]
    outer_entries = df.select("id", F.explode_outer("m").alias("k", "v")).orderBy("id", "k")
    assert [tuple(r) for r in outer_entries.collect()] == [
        (1, "a", 1),
        (1, "b", 2),
        (2, None, None),
        (3, None, None),
    ]
    with pytest.raises(AnalysisException, match="aliases"):
        df.select(F.explode("m").alias("only_one")).collect()


def test_get_item_and_get_field(spark):
    df = spark.createDataFrame(
        [
            (1, [10, 20], {"a": 1}, (5, "x")),
            (2, [], {"b": 2}, (6, "y")),
            (3, None, None, None),
        ],
        "id int, xs array<int>, m map<string,int>, s struct<n:int,t:string>",
    )
    rows = (
        df.select(
            "id",
            df.xs[0],
            df.xs.getItem(1),
            df.xs[5],
            df.xs[-1],
            df.m["a"],
            df.m.getItem("b"),
            df.s.n,
            df.s.getField("t"),
        )
        .orderBy("id")
        .collect()
    )
    assert [tuple(r)[1:] for r in rows] == [
        (10, 20, None, None, 1, None, 5, "x"),
        (None, None, None, None, None, 2, 6, "y"),
        (None, None, None, None, None, None, None, None),
    ]
    assert sorted(r[0] for r in df.select(df["s"]["n"]).collect() if r[0] is not None) == [5, 6]
    assert df.select(df.xs[0], df.m["a"], df.s.n).columns == ["xs[0]", "m[a]", "s.n"]
    # Extracted values in filters and expressions, with the index from another column.
    assert df.filter(df.s.n > 5).select("id").collect() == [Row(id=2)]
    assert df.select((df.xs[df.id - 1] * 2).alias("v")).orderBy(F.desc("v")).first().v == 20
    with pytest.raises(AnalysisException, match="zzz"):
        df.select(df.s.zzz).collect()
    with pytest.raises(AnalysisException, match="complex type"):
        df.select(df.id[0]).collect()


def test_replace_cov_and_corr(spark):
    df = spark.createDataFrame(
        [(1, 2.0, "a"), (2, 4.5, "b"), (3, 5.0, None), (4, 9.0, "a")], ["i", "d", "s"]
    )
    replaced = df.na.replace("a", "z").collect()
    assert [r.s for r in replaced] == ["z", "b", None, "z"]
    assert [r.i for r in replaced] == [1, 2, 3, 4]
    numbers = df.replace({2.0: 20.0, 9.0: 90.0}, subset=["d"]).collect()
    assert [r.d for r in numbers] == [20.0, 4.5, 5.0, 90.0]
    assert [r.i for r in df.replace(2, 7).collect()] == [1, 7, 3, 4]
    i, d = np.array([1, 2, 3, 4.0]), np.array([2.0, 4.5, 5.0, 9.0])
    assert abs(df.stat.cov("i", "d") - np.cov(i, d, ddof=1)[0, 1]) < 1e-12
    assert abs(df.stat.corr("i", "d") - np.corrcoef(i, d)[0, 1]) < 1e-12
    with pytest.raises(AnalysisException, match="numeric"):
        df.stat.cov("i", "s")


def test_unpivot_and_melt(spark):
    df = spark.createDataFrame([(1, 11, 1.5), (2, 12, 2.5)], ["id", "a", "b"])
    long = df.unpivot("id", ["a", "b"], "var", "val")
    assert long.columns == ["id", "var", "val"]
    assert dict(long.dtypes)["val"] == "double"
    rows = sorted((r.id, r.var, r.val) for r in long.collect())
    assert rows == [(1, "a", 11.0), (1, "b", 1.5), (2, "a", 12.0), (2, "b", 2.5)]
    # Without values: every column that is not an id; melt is the same relation.
    assert sorted(df.melt(["id"], None, "k", "v").collect()) == sorted(
        df.unpivot(["id"], ["a", "b"], "k", "v").collect()
    )
    with pytest.raises(AnalysisException, match="UNPIVOT_REQUIRES_VALUE_COLUMNS"):
        df.unpivot(["id", "a", "b"], None, "k", "v").collect()


def test_crosstab_freq_items_quantiles_and_sample_by(spark):
    df = spark.createDataFrame(
        [(1, "x", 1.0), (1, "y", 2.0), (2, "x", 3.0), (2, "x", 4.0), (3, None, 5.0)],
        ["k", "s", "d"],
    )
    table = df.stat.crosstab("k", "s")
    assert table.columns == ["k_s", "null", "x", "y"]
    assert {r["k_s"]: (r["null"], r["x"], r["y"]) for r in table.collect()} == {
        "1": (0, 1, 1),
        "2": (0, 2, 0),
        "3": (1, 0, 0),
    }
    freq = df.freqItems(["k", "s"], support=0.4).first()
    assert sorted(freq["k_freqItems"]) == [1, 2]
    assert freq["s_freqItems"] == ["x"]
    assert df.freqItems(["k"], support=0.9).first()["k_freqItems"] == []
    assert df.approxQuantile("d", [0.0, 0.5, 1.0], 0.0) == [1.0, 3.0, 5.0]
    both = df.approxQuantile(["d", "k"], [0.0, 1.0], 0.01)
    assert both == [[1.0, 5.0], [1.0, 3.0]]
    assert spark.range(0).approxQuantile("id", [0.5], 0.0) == []
    with pytest.raises(AnalysisException, match="numeric"):
        df.approxQuantile("s", [0.5], 0.0)
    many = spark.range(2000).withColumn("g", F.col("id") % 3)
    sampled = many.sampleBy("g", {0: 0.5, 1: 0.0}, seed=7)
    counts = {r.g: r["count"] for r in sampled.groupBy("g").count().collect()}
    assert set(counts) == {0}, counts
    assert 250 < counts[0] < 420, counts
    again = many.sampleBy("g", {0: 0.5, 1: 0.0}, seed=7)
    assert sorted(r.id for r in again.collect()) == sorted(r.id for r in sampled.collect())


def test_html_string_for_notebooks(spark):
    df = spark.createDataFrame([(1, "<b>"), (2, "x" * 30)], ["n", "s"])
    spark.conf.set("spark.sql.repl.eagerEval.enabled", "true")
    spark.conf.set("spark.sql.repl.eagerEval.maxNumRows", "1")
    spark.conf.set("spark.sql.repl.eagerEval.truncate", "20")
    try:
        html = df._repr_html_()
    finally:
        spark.conf.set("spark.sql.repl.eagerEval.enabled", "false")
    assert html.startswith("<table border='1'>\n<tr><th>n</th><th>s</th></tr>\n"), html
    assert "<tr><td>1</td><td>&lt;b&gt;</td></tr>" in html
    assert "only showing top 1 row" in html


def test_describe_and_summary(spark):
    df = spark.createDataFrame([(1, 2.0, "a"), (3, 4.0, "b")], ["i", "d", "s"])
    rows = {r.summary: r for r in df.describe().collect()}
    assert rows["count"].i == "2" and rows["mean"].d == "3.0" and rows["max"].s == "b"
    assert rows["mean"].s is None
    summary = {r.summary: r for r in df.summary().collect()}
    assert set(summary) == {"count", "mean", "stddev", "min", "25%", "50%", "75%", "max"}
    assert summary["min"].i == "1"


def test_analysis_schema_explain_and_version(spark, capsys):
    df = spark.range(5).withColumn("x", F.col("id") * 2)
    df.printSchema()
    assert capsys.readouterr().out == (
        "root\n |-- id: long (nullable = false)\n |-- x: long (nullable = false)\n\n"
    )
    df.explain()
    assert capsys.readouterr().out.strip() != ""
    assert spark.version.startswith("4.")
    assert df.isLocal() is False
    assert df.sameSemantics(spark.range(5).withColumn("x", F.col("id") * 2))
    assert not df.sameSemantics(spark.range(6))
    assert isinstance(df.semanticHash(), int)
    assert df.isStreaming is False
    struct = spark.createDataFrame([], "a INT, b ARRAY<STRING>").schema
    assert struct.fields[1].dataType.simpleString() == "array<string>"


def test_a_deeply_chained_plan_is_translated(spark):
    df = spark.range(3)
    # 45 levels: the protobuf decoder refuses messages nested deeper than 100.
    for i in range(45):
        df = df.withColumn(f"c{i % 5}", F.col("id") + i)
    assert df.columns == ["id", "c0", "c1", "c2", "c3", "c4"]
    assert [r.c4 for r in df.orderBy("id").collect()] == [44, 45, 46]
