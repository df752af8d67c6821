"""The 22 TPC-H queries through `spark.sql`, and several written with the DataFrame API,
compared with Ember's own answers (computed by tests/it/pyspark.rs over the same data)."""

import datetime
import os
from decimal import Decimal

import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from conftest import EXPECTED_DIR

QUERIES = os.path.join(os.path.dirname(__file__), "..", "..", "tpch", "queries")


def normalize(value):
    if isinstance(value, (float, Decimal)):
        return round(float(value), 2)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def rows(values):
    return sorted(
        (tuple(normalize(v) for v in r) for r in values),
        key=lambda r: tuple((v is None, str(v)) for v in r),
    )


def expected(n):
    table = pq.read_table(os.path.join(EXPECTED_DIR, f"q{n:02}.parquet"))
    return rows(tuple(d.values()) for d in table.to_pylist())


def query_text(n):
    path = os.path.join(QUERIES, f"q{n}.sql")
    if not os.path.exists(path):
        path = os.path.join(QUERIES, f"q{n:02}.sql")
    with open(path) as f:
        return f.read().strip().rstrip(";")


@pytest.mark.parametrize("n", range(1, 23))
def test_tpch_query_through_spark_sql(spark, n):
    got = spark.sql(query_text(n)).collect()
    assert rows(got) == expected(n)


def test_q1_q3_q6_with_the_dataframe_api(spark):
    lineitem, orders, customer = spark.table("lineitem"), spark.table("orders"), spark.table("customer")
    q1 = (
        lineitem.filter(F.col("l_shipdate") <= F.lit("1998-09-02").cast("date"))
        .groupBy("l_returnflag", "l_linestatus")
        .agg(
            F.sum("l_quantity").alias("sum_qty"),
            F.sum("l_extendedprice").alias("sum_base_price"),
            F.sum(F.col("l_extendedprice") * (1 - F.col("l_discount"))).alias("sum_disc_price"),
            F.sum(
                F.col("l_extendedprice") * (1 - F.col("l_discount")) * (1 + F.col("l_tax"))
            ).alias("sum_charge"),
            F.avg("l_quantity").alias("avg_qty"),
            F.avg("l_extendedprice").alias("avg_price"),
            F.avg("l_discount").alias("avg_disc"),
            F.count("*").alias("count_order"),
        )
        .orderBy("l_returnflag", "l_linestatus")
    )
    assert rows(q1.collect()) == expected(1)
    q3 = (
        customer.filter(F.col("c_mktsegment") == "BUILDING")
        .join(orders, F.col("c_custkey") == F.col("o_custkey"))
        .join(lineitem, F.col("l_orderkey") == F.col("o_orderkey"))
        .filter(
            (F.col("o_orderdate") < F.lit("1995-03-15").cast("date"))
            & (F.col("l_shipdate") > F.lit("1995-03-15").cast("date"))
        )
        .groupBy("l_orderkey", "o_orderdate", "o_shippriority")
        .agg(F.sum(F.col("l_extendedprice") * (1 - F.col("l_discount"))).alias("revenue"))
        .select("l_orderkey", "revenue", "o_orderdate", "o_shippriority")
        .orderBy(F.desc("revenue"), "o_orderdate")
        .limit(10)
    )
    assert rows(q3.collect()) == expected(3)
    q6 = lineitem.filter(
        (F.col("l_shipdate") >= F.lit("1994-01-01").cast("date"))
        & (F.col("l_shipdate") < F.lit("1995-01-01").cast("date"))
        & F.col("l_discount").between(0.05, 0.07)
        & (F.col("l_quantity") < 24)
    ).agg(F.sum(F.col("l_extendedprice") * F.col("l_discount")).alias("revenue"))
    assert rows(q6.collect()) == expected(6)
