import os
import sys
from pathlib import Path

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
