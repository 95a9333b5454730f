"""Every entry script turns huge pages on first thing in ``main`` (PyTorch reads the setting at its first CPU
allocation, and ``import sandbox`` no longer sets it; see ``sandbox/_alloc.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("run", "compare", "sweep", "evaluate", "visualize", "reproduce", "demo", "bench_dct", "bench")


@pytest.mark.parametrize("name", SCRIPTS)
def test_main_calls_enable_huge_pages_first(name):
    tree = ast.parse((ROOT / "experiments" / f"{name}.py").read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    body = [s for s in main.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]  # no docstring
    first = body[0]
    assert isinstance(first, ast.Expr) and isinstance(first.value, ast.Call), ast.unparse(first)
    assert ast.unparse(first.value.func) == "enable_huge_pages", ast.unparse(first)
