"""``bench.py official`` against stand-ins of the official modules written here (CI has no official code): the
loader, the weight mapping and equivalence check, the interleaved timing, the tables and the one-line errors."""

from __future__ import annotations

import csv
import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from sandbox.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


bench = _load("bench_script", ROOT / "experiments" / "bench.py")
official = bench._official()

# vHeat's Heat2D, written from the paper's formula: orthonormal DCT-II matrices, decay exp(-(w_n^2 + w_m^2)) ** k
VHEAT = """
import math

import torch
import torch.nn.functional as F
from torch import nn


def _dct(n):
    k, i = torch.arange(n)[:, None], torch.arange(n)[None]
    m = torch.cos(math.pi * k * (i + 0.5) / n) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m


class Heat2D(nn.Module):
    def __init__(self, infer_mode=False, res=14, dim=96, hidden_dim=96, **kwargs):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.linear = nn.Linear(hidden_dim, 2 * hidden_dim)
        self.out_norm = nn.LayerNorm(hidden_dim)
        self.out_linear = nn.Linear(hidden_dim, hidden_dim)
        self.to_k = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.ReLU())

    def forward(self, x, freq_embed):
        _, _, h, w = x.shape
        x, z = self.linear(self.dwconv(x).permute(0, 2, 3, 1)).chunk(2, dim=-1)  # (B, H, W, C) each
        ch, cw = _dct(h), _dct(w)
        wn = torch.linspace(0, math.pi, h + 1)[:h, None]
        wm = torch.linspace(0, math.pi, w + 1)[None, :w]
        decay = torch.exp(-(wn**2 + wm**2))[:, :, None] ** self.to_k(freq_embed)  # (H, W, C)
        spec = torch.einsum("nh,bhwc,mw->bnmc", ch, x, cw) * decay
        x = torch.einsum("nh,bnmc,mw->bhwc", ch, spec, cw)
        return self.out_linear(self.out_norm(x) * F.silu(z)).permute(0, 3, 1, 2)
"""

# GFNet's GlobalFilter; like the official file it imports numpy.lib.arraypad, which numpy 2 renamed
GFNET = """
import math

import torch
from numpy.lib.arraypad import pad  # noqa: F401
from torch import nn


class GlobalFilter(nn.Module):
    def __init__(self, dim, h=14, w=8):
        super().__init__()
        self.complex_weight = nn.Parameter(torch.randn(h, w, dim, 2) * 0.02)

    def forward(self, x):
        b, n, c = x.shape
        a = int(math.sqrt(n))
        spec = torch.fft.rfft2(x.view(b, a, a, c), dim=(1, 2), norm="ortho")
        y = torch.fft.irfft2(spec * torch.view_as_complex(self.complex_weight), s=(a, a), dim=(1, 2), norm="ortho")
        return y.reshape(b, n, c)
"""


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def standins(tmp_path):
    root = tmp_path / "official"
    _write(root, "vHeat/classification/models/vHeat.py", VHEAT)
    _write(root, "GFNet/gfnet.py", GFNET)
    return root


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


FAST = ["--sizes", "16", "--threads", "1", "--rounds", "3", "--warmup", "1", "--device", "cpu"]


def test_pairs_against_standins_are_equivalent_and_timed(standins, tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        bench.main(["official", "--official-dir", str(standins), "--pairs", "hco,gfnet", *FAST, "--out", str(out)]) == 0
    )
    rows = _rows(out / "results.csv")
    assert {(r["pair"], r["mode"]) for r in rows} == {
        (p, m) for p in ("hco", "gfnet") for m in ("fwd", "fwd_uncached", "fwd_bwd")
    }
    for r in rows:
        assert float(r["max_abs_diff"]) < 1e-4, r  # the weights were mapped: same outputs
        assert float(r["grad_max_abs_diff"]) < 1e-4, r  # and the same input gradients
        assert float(r["official_ms"]) > 0 and float(r["ours_ms"]) > 0
        ratio = float(r["official_ms"]) / float(r["ours_ms"])
        assert float(r["ratio"]) == pytest.approx(ratio, rel=1e-6)
        assert float(r["ratio_q25"]) <= float(r["ratio_q75"])
        assert (r["official_peak_mb"] != "") is (r["mode"] == "fwd_bwd")
    md = (out / "results.md").read_text()
    assert "hco vs Heat2D" in md and "gfnet vs GlobalFilter" in md and "## Targets" in md
    assert "MzeroMiko/vHeat bcc4da7" in md  # the configuration table names the source and commit
    assert "hco forward+backward >= 2x" in md
    assert "## Targets" in capsys.readouterr().out


def test_profile_lists_the_operators_of_both_sides(standins, tmp_path):
    """--profile N writes profile.md: per cell the operators with the most self CPU time, official and ours."""
    out = tmp_path / "out"
    argv = ["official", "--official-dir", str(standins), "--pairs", "gfnet", *FAST, "--profile", "2"]
    assert bench.main([*argv, "--out", str(out)]) == 0
    md = (out / "profile.md").read_text()
    assert md.count("## gfnet vs GlobalFilter, 16 px, 1 thread(s)") == 3  # one table per mode
    table = md.split("## gfnet vs GlobalFilter, 16 px, 1 thread(s), forward+backward")[1]
    assert "`aten::_fft_r2c`" in table  # both sides transform: the FFT operators are listed
    total = [line for line in table.splitlines() if line.startswith("| `(all operators)`")][0]
    assert all(float(v) > 0 for v in total.strip("|").split("|")[1:])
    # the summary: per cell, our time in products (here the FFTs) and the ceiling official total / that time
    row = [
        line for line in md.splitlines() if line.startswith("| gfnet vs GlobalFilter, 16 px, 1 thread(s), forward+b")
    ]
    _, ratio, target, products, ours_total, top, above = (v.strip() for v in row[0].strip("|").split("|"))
    official_total = float(total.strip("|").split("|")[1])
    assert 0 < float(products) <= float(ours_total)
    assert float(top) == pytest.approx(official_total / float(products), rel=0.05)  # of rounded values
    assert target == "1.5" and above == ("**yes**" if 1.5 > float(top) else "no")
    assert not (tmp_path / "plain" / "profile.md").exists()
    assert bench.main([*argv[:-2], "--out", str(tmp_path / "plain")]) == 0  # off by default
    assert not (tmp_path / "plain" / "profile.md").exists()


def test_a_wrong_standin_shows_as_a_large_difference(tmp_path):
    root = tmp_path / "official"
    _write(root, "GFNet/gfnet.py", GFNET.replace('norm="ortho")\n        return', 'norm="forward")\n        return'))
    off, ours = official.PAIRS["gfnet"].build(root, 8, 16)
    x = torch.randn(1, 8, 16, 16)
    diff, gdiff = bench._differences(off, ours, x, torch.randn_like(x), grads=True)
    assert diff > 1e-3 and gdiff > 1e-3


@pytest.mark.parametrize("pair", ["hco", "hyena_pixel", "hyena_bi", "attention_window", "gfnet"])
def test_missing_official_file_is_one_line_naming_it(tmp_path, pair):
    (tmp_path / "empty").mkdir()
    with pytest.raises(OptionError) as err:
        official.PAIRS[pair].build(tmp_path / "empty", 8, 16)
    msg = str(err.value)
    assert "\n" not in msg and "official file not found" in msg
    repo = official.PAIRS[pair].repo
    assert repo in msg and official.REPOS[repo][1] in msg  # the folder and the commit to take it from


def test_missing_dependency_is_one_line(tmp_path):
    root = tmp_path / "official"
    _write(root, "GFNet/gfnet.py", "import no_such_module_here\n" + GFNET)
    with pytest.raises(OptionError, match="imports 'no_such_module_here', which is not installed"):
        official.PAIRS["gfnet"].build(root, 8, 16)


def test_bad_options_are_one_line(standins, tmp_path):
    base = ["official", "--official-dir", str(standins), *FAST]
    with pytest.raises(OptionError, match="--pairs: 'nope' is not one of"):
        bench.main([*base, "--pairs", "nope", "--out", str(tmp_path / "a")])
    with pytest.raises(OptionError, match="is not a folder"):
        bench.main(["official", "--official-dir", str(tmp_path / "missing"), *FAST])
    with pytest.raises(OptionError, match="nothing to run"):
        bench.main([*base, "--pairs", "none", "--out", str(tmp_path / "b")])
    with pytest.raises(OptionError, match="--profile -1 is not valid"):
        bench.main([*base, "--profile", "-1", "--out", str(tmp_path / "c")])


def test_interleaved_alternates_and_ratio_summary():
    calls: list[str] = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    samples = bench.interleaved(fns, torch.device("cpu"), rounds=4, warmup=1)
    assert [len(s) for s in samples] == [4, 4]
    timed = calls[2:]  # after one warm-up call each
    n = timed.count("a") // 4  # calls per sample (as many as fill 10 ms)
    assert timed == (["a"] * n + ["b"] * n + ["b"] * n + ["a"] * n) * 2  # ABBA
    ratio, q25, q75 = bench.ratio_summary([2.0, 2.0, 4.0], [1.0, 1.0, 1.0])
    assert ratio == 2.0 and q25 == 2.0 and q75 == 3.0


def _tiny_net_pair(monkeypatch):
    """A stand-in pair of networks: two copies of one small network, so they are equivalent."""
    from sandbox import build_arch

    def build(root, dim, size):
        torch.manual_seed(0)
        a = build_arch({"name": "ir", "preset": "tiny", "in_chans": 3, "mixer": "conv"})
        b = build_arch({"name": "ir", "preset": "tiny", "in_chans": 3, "mixer": "conv"})
        b.load_state_dict(a.state_dict())
        return official.Side(a), official.Side(b)

    pair = official.Pair("tinynet", "the same network", "GFNet", "tiny conv ir", "nothing", build)
    monkeypatch.setattr(official, "NETS", {"tinynet": pair})


def test_networks_path_times_inference_and_a_training_step(standins, tmp_path, monkeypatch):
    _tiny_net_pair(monkeypatch)
    out = tmp_path / "out"
    argv = ["official", "--official-dir", str(standins), "--pairs", "none", "--nets", "--net-sizes", "16", *FAST]
    assert bench.main([*argv, "--out", str(out)]) == 0
    rows = _rows(out / "results.csv")
    assert [r["mode"] for r in rows] == ["infer", "train"]
    assert all(r["kind"] == "network" and float(r["max_abs_diff"]) == 0.0 for r in rows)
    assert rows[1]["official_peak_mb"] != "" and rows[0]["official_peak_mb"] == ""
    assert "## Networks, 1 thread" in (out / "results.md").read_text()


def test_a_mode_predicted_to_exceed_the_memory_limit_is_skipped(standins, tmp_path, monkeypatch):
    """The training step's peak at 16 px, scaled to 32 px with the margin, exceeds a tiny limit: n/a, and the run
    goes on (inference, which has no measured peak to predict from, still runs)."""
    _tiny_net_pair(monkeypatch)
    out = tmp_path / "out"
    argv = ["official", "--official-dir", str(standins), "--pairs", "none", "--nets", "--net-sizes", "16,32", *FAST]
    assert bench.main([*argv, "--max-memory-gb", "0.0001", "--out", str(out)]) == 0
    rows = {(r["size"], r["mode"]): r for r in _rows(out / "results.csv")}
    assert rows[("16", "train")]["status"] == "" and rows[("32", "infer")]["status"] == ""
    assert rows[("32", "train")]["status"].startswith("n/a (predicted") and rows[("32", "train")]["ratio"] == ""
    assert "n/a (predicted" in (out / "results.md").read_text()


def test_ceiling_counts_only_our_products():
    """ceiling(): the official total over our time in products; overhead on our side does not lower it."""
    off = {"aten::mm": 6.0, "aten::copy_": 4.0, "(all operators)": 10.0}
    ours = {"aten::bmm": 2.0, "aten::_fft_r2c": 0.5, "aten::mul": 3.0, "(all operators)": 5.5}
    assert bench.ceiling(off, ours) == (2.5, 4.0)
    assert bench.ceiling(off, {"aten::mul": 1.0, "(all operators)": 1.0}) == (0.0, None)  # no products: no ceiling
