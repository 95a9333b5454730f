import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests also run from a plain checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_addoption(parser):
    parser.addoption(
        "--plugin", action="append", default=[], help="plugin module(s) whose mixers join the conformance suite"
    )


def pytest_configure(config):
    from sandbox import load_plugins

    load_plugins(config.getoption("--plugin"))


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread: tiny networks gain nothing from two, and a busy machine makes two much slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_data(monkeypatch):
    """The embedded default (no data root) and no test kill switch."""
    monkeypatch.delenv("SANDBOX_DATA", raising=False)
    monkeypatch.delenv("SANDBOX_TEST_KILL_AT_STEP", raising=False)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """SQLAlchemy URL of a throwaway PostgreSQL server on loopback (tests/pgserver.py),
    postgresql://sandbox@127.0.0.1:PORT/optuna.

    Skipped when the server cannot be started, except under CI (CI=true), where that fails the test."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from pgserver import PostgresServer
    finally:
        sys.path.pop(0)

    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    try:
        url = server.start()
    except RuntimeError as exc:
        message = f"PostgreSQL test server could not be started: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield url
    finally:
        server.stop()
