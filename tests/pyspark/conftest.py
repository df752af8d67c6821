"""Fixtures of the PySpark suite: sessions on the `ember server` that tests/it/pyspark.rs
started (its URL, pid and data come in environment variables)."""

import os
import warnings

import pytest

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

from pyspark.sql import SparkSession  # noqa: E402

URL = os.environ["EMBER_CONNECT_URL"]
SERVER_PID = int(os.environ["EMBER_SERVER_PID"])
TPCH_DIR = os.environ["EMBER_TPCH_DIR"]
EXPECTED_DIR = os.environ["EMBER_EXPECTED_DIR"]
WORK_DIR = os.environ["EMBER_WORK_DIR"]


def new_session():
    """A session of its own (own temporary views, configuration and cache)."""
    return SparkSession.builder.remote(URL).create()


@pytest.fixture
def spark():
    session = new_session()
    yield session
    session.stop()


@pytest.fixture
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("out", numbered=True))


def executor_pids():
    """Pids of the executor processes of the server."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == SERVER_PID and fields[0] != "Z":
            pids.append(int(entry))
    return sorted(pids)
