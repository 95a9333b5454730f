"""The small helpers that exist once (sandbox/utils.py): atomic text writes, plain values, human sizes, slugs."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from sandbox.utils import human, plain, slug, write_text_atomic


def test_write_text_atomic_replaces_whole_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "results.json"
    assert write_text_atomic(path, "old\n") == path
    write_text_atomic(str(path), "new ü\n")
    assert path.read_text(encoding="utf-8") == "new ü\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.json"]


def test_write_text_atomic_removes_its_temporary_on_failure(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("kept")
    with pytest.raises(TypeError):
        write_text_atomic(path, 12345)  # not text: the write fails after the temporary file was created
    assert path.read_text() == "kept" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


@dataclasses.dataclass
class _Rec:
    name: str
    sizes: tuple[int, ...]
    where: Path


def test_plain_converts_for_json_and_yaml():
    value = {"rec": _Rec("a", (1, 2), Path("x/y")), 3: (np.float32(0.5), torch.tensor(2)), "nan": math.nan}
    out = plain(value)
    assert out == {"rec": {"name": "a", "sizes": [1, 2], "where": "x/y"}, "3": [0.5, 2], "nan": out["nan"]}
    assert math.isnan(out["nan"]) and type(out["3"][1]) is int
    assert plain({"a": [math.inf, np.float64(-math.inf), 1.0]}, finite=True) == {"a": [None, None, 1.0]}
    json.dumps(plain(value, finite=True), allow_nan=False)


@pytest.mark.parametrize(
    "args, kwargs, text",
    [
        ((1234567,), {}, "1.23M"),  # parameter and MAC counts (complexity, report, bench)
        ((2.5e12, "MACs"), {}, "2.50TMACs"),
        ((999,), {}, "999"),
        ((None,), {}, "-"),  # a count that was not measured
        ((2e6,), {"digits": 0}, "2M"),  # plot axes
        ((512, "B"), {"digits": 1, "sep": " "}, "512 B"),  # downloaded bytes (python -m sandbox data)
        ((1_500_000, "B"), {"digits": 1, "sep": " "}, "1.5 MB"),
    ],
)
def test_human(args, kwargs, text):
    assert human(*args, **kwargs) == text


def test_slug():
    assert slug("hco:k_mode=fixed,k=0.5") == "hco_k_mode=fixed_k=0.5"
    assert slug("a" * 100, max_len=60) == "a" * 60
    assert slug("::", empty="mixer") == "mixer"


def test_atomic_path_keeps_the_suffix_and_removes_the_temporary_when_the_writer_fails(tmp_path):
    from sandbox.utils import atomic_path

    path = tmp_path / "grid.png"
    with atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp.name.startswith(".grid.")
        tmp.write_bytes(b"png")
    assert path.read_bytes() == b"png"
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("the writer failed")
    assert path.read_bytes() == b"png" and sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]
