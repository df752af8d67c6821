"""A server started with a secret: PySpark clients give it as the token of their URL (sent
as a Bearer token; in plain text only to localhost), and a client without it, or with
another, is refused with UNAUTHENTICATED."""

import os
import subprocess

import pytest
from pyspark.sql import SparkSession

SECRET = "pyspark-auth-test-secret-0123456789abcdef"


@pytest.fixture(scope="module")
def secured_url():
    env = dict(os.environ, EMBER_SECRET=SECRET, RUST_LOG="error")
    server = subprocess.Popen(
        [os.environ["EMBER_BIN"], "server", "--port", "0", "--executors", "1", "--memory", "256MiB"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        for line in server.stdout:
            if "sc://" in line:
                url = line[line.index("sc://"):].strip()
                break
        assert url, "the server printed its URL"
        assert url.startswith("sc://localhost:"), url
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _first_row(url):
    session = SparkSession.builder.remote(url).create()
    try:
        return session.sql("SELECT 1 AS one").collect()[0]
    finally:
        try:
            session.stop()
        except Exception:  # noqa: BLE001 - stopping a refused session may fail too
            pass


def test_the_token_opens_the_door(secured_url, monkeypatch):
    monkeypatch.delenv("SPARK_CONNECT_AUTHENTICATE_TOKEN", raising=False)
    assert _first_row(secured_url + "/;token=" + SECRET).one == 1
    # PySpark also reads the token from its environment.
    monkeypatch.setenv("SPARK_CONNECT_AUTHENTICATE_TOKEN", SECRET)
    assert _first_row(secured_url).one == 1


def test_a_client_without_the_token_is_refused(secured_url, monkeypatch):
    monkeypatch.delenv("SPARK_CONNECT_AUTHENTICATE_TOKEN", raising=False)
    with pytest.raises(Exception) as refused:
        _first_row(secured_url)
    text = str(refused.value)
    assert "UNAUTHENTICATED" in text or "Unauthenticated" in text, text
    assert "token" in text, text


def test_a_wrong_token_is_refused(secured_url, monkeypatch):
    monkeypatch.delenv("SPARK_CONNECT_AUTHENTICATE_TOKEN", raising=False)
    with pytest.raises(Exception) as refused:
        _first_row(secured_url + "/;token=not-the-secret-of-this-server")
    text = str(refused.value)
    assert "UNAUTHENTICATED" in text or "Unauthenticated" in text, text
    assert "wrong token" in text, text
