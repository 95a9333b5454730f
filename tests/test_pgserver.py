"""The throwaway PostgreSQL server of the tests (tests/pgserver.py) serves SQLAlchemy and Optuna's RDBStorage."""

import importlib
import os

import pytest


def _require(module):
    """Skip without the module, except under CI (CI=true), where it must be installed."""
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module)


def test_postgres_server_serves_sqlalchemy_and_optuna(postgres_url):
    sqlalchemy = _require("sqlalchemy")
    optuna = _require("optuna")
    _require("psycopg")

    assert postgres_url.startswith("postgresql://sandbox@127.0.0.1:") and postgres_url.endswith("/optuna")
    engine = sqlalchemy.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()

    storage = optuna.storages.RDBStorage(postgres_url)
    try:
        study = optuna.create_study(study_name="pgserver-smoke", storage=storage, direction="minimize")
        trial = study.ask()
        x = trial.suggest_float("x", -1.0, 1.0)
        study.tell(trial, x * x)
        reloaded = optuna.load_study(study_name="pgserver-smoke", storage=postgres_url)
        assert len(reloaded.trials) == 1 and reloaded.best_value == pytest.approx(x * x)
    finally:
        storage.remove_session()
        storage.engine.dispose()
