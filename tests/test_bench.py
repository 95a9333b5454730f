"""experiments/bench.py: the exponent fit, the per-call memory measure, n/a cells, and both commands at tiny sizes."""

from __future__ import annotations

import csv
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sandbox import MIXERS, register_mixer
from sandbox.errors import OptionError, UnknownNameError

ROOT = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "experiments" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


bench = _load_bench()
FAST = ["--repeats", "1", "--warmup", "1", "--threads", "1", "--device", "cpu"]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()  # --threads sets the process-wide count; give it back
    yield
    torch.set_num_threads(threads)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------------- units
@pytest.mark.parametrize("p", [1.0, 1.5, 2.0])
def test_fit_exponent_recovers_a_power_law(p):
    tokens = [64**2, 128**2, 256**2]
    noise = [1.03, 0.98, 1.01]  # a few percent, as timings have
    seconds = [2e-7 * n**p * e for n, e in zip(tokens, noise)]
    assert bench.fit_exponent(tokens, seconds) == pytest.approx(p, abs=0.03)


def test_fit_exponent_is_least_squares_over_the_points_given():
    tokens, seconds = [1, 10, 100], [1.0, 10.0, 1000.0]  # log slopes 1 and 2: least squares gives 1.5
    assert bench.fit_exponent(tokens, seconds) == pytest.approx(1.5)
    assert bench.fit_exponent([64], [1.0]) is None  # one size: nothing to fit
    assert bench.fit_exponent([64, 128], [1.0, None]) is None


def test_parse_sizes():
    assert bench.parse_sizes("64, 32,64") == [32, 64]
    for bad in ("32,x", "0,32", "", "32,,64", "-8"):
        with pytest.raises(OptionError, match="--sizes"):
            bench.parse_sizes(bad)


def test_split_specs():
    assert bench.split_specs("hco:k_mode=fixed,k=0.5,conv") == ["hco:k_mode=fixed,k=0.5", "conv"]
    assert bench.split_specs("hco;conv:kernel_size=5") == ["hco", "conv:kernel_size=5"]


def test_cpu_peak_memory_is_that_of_one_call():
    keep = torch.ones(4 * 2**20 // 4)  # allocated before: not counted, and freeing nothing of it

    def call():
        a = torch.ones(2**20)  # 4 MiB
        b = a + 1  # 8 MiB live
        del a
        c = b * 2  # 8 MiB live again
        return c.sum()

    peak = bench.peak_memory(call, torch.device("cpu"))
    assert 8 * 2**20 <= peak < 8.1 * 2**20, peak / 2**20
    assert keep.numel()


def test_guard_predicts_from_the_previous_size():
    guard = bench.Guard(max_seconds=10.0, max_bytes=2**30)
    guard.record("train", 100, bench.Phase(1.0, 2**20))
    guard.check("train", 200)  # predicted 4 s, 2 MiB: fine
    with pytest.raises(bench.CellSkipped, match="predicted 16 s"):
        guard.check("train", 400)
    guard = bench.Guard(max_seconds=1e9, max_bytes=2**30)
    guard.record("train", 100, bench.Phase(1e-3, 2**27))
    guard.check("train", 400)  # predicted 0.5 GB, 0.75 GB with the margin: fine
    guard.record("train", 100, bench.Phase(1e-3, 2**28))
    with pytest.raises(bench.CellSkipped, match="--max-memory-gb"):
        guard.check("train", 300)  # predicted 0.75 GB, 1.1 GB with the margin


# ---------------------------------------------------------------------------------------------------- mixers
def test_mixers_command_writes_csv_markdown_and_plot(tmp_path, capsys):
    out = tmp_path / "bench"
    code = bench.main(["mixers", "--mixers", "conv;hco", "--sizes", "8,16", "--dim", "8", "--out", str(out), *FAST])
    assert code == 0
    rows = _rows(out / "results.csv")
    assert [(r["mixer"], r["size"]) for r in rows] == [("conv", "8"), ("conv", "16"), ("hco", "8"), ("hco", "16")]
    assert list(rows[0]) == bench.MIXER_COLUMNS
    for r in rows:
        assert r["fwd_status"] == r["fwdbwd_status"] == "ok"
        assert float(r["fwd_ms"]) > 0 and float(r["fwdbwd_ms"]) > 0
        assert float(r["fwdbwd_peak_mb"]) > 0 and int(r["macs"]) > 0 and int(r["params"]) > 0
    assert rows[0]["tokens"] == "64" and rows[0]["dim"] == "8"
    exps = _rows(out / "exponents.csv")
    assert [e["mixer"] for e in exps] == ["conv", "hco"] and all(e["sizes_fwd"] == "8,16" for e in exps)
    md = (out / "results.md").read_text()
    assert "| " + " | ".join(bench.MIXER_TABLE) + " |" in md
    assert "| " + " | ".join(bench.EXPONENT_TABLE) + " |" in md
    assert (out / "time_vs_tokens.png").stat().st_size > 1000
    printed = capsys.readouterr().out
    assert "| conv | 8 | 64 |" in printed and "time_vs_tokens.png" in printed


def test_mixer_targets_report_time_and_mac_ratios():
    def cell(name, seconds, macs):
        return bench.MixerCell(name, 256, 65536, bench.Phase(seconds / 3), bench.Phase(seconds), macs=macs)

    lines = bench._mixer_targets([cell("hco", 0.2, 800), cell("attention_window", 0.5, 1600)], [])
    assert lines == [
        "hco / attention_window fwd+bwd time at 256x256: 0.40 (MACs ratio 0.50: the time ratio at equal MAC/s) "
        "(target <= 0.33: NOT met)"
    ]


@pytest.fixture
def fussy_mixers():
    """Two mixers that cannot run everywhere: one declares size_multiple=16, one fails above 8 px."""

    @register_mixer("bench_needs16", paper="test", family="test", complexity="O(N)", size_multiple=16)
    class Needs16(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.scale

    @register_mixer("bench_small_only", paper="test", family="test", complexity="O(N)")
    class SmallOnly(Needs16):
        def forward(self, x):
            if x.shape[-1] > 8:
                raise RuntimeError("this mixer has a fixed length of 64 tokens")
            return x * self.scale

    yield
    MIXERS.unregister("bench_needs16")
    MIXERS.unregister("bench_small_only")


def test_cells_that_cannot_run_are_na_and_the_run_goes_on(tmp_path, fussy_mixers):
    out = tmp_path / "bench"
    argv = ["mixers", "--mixers", "bench_needs16,bench_small_only,conv", "--sizes", "8,16", "--dim", "4"]
    assert bench.main([*argv, "--out", str(out), *FAST]) == 0
    rows = {(r["mixer"], r["size"]): r for r in _rows(out / "results.csv")}
    assert rows[("bench_needs16", "8")]["fwd_status"] == "n/a (needs H, W multiples of 16)"
    assert rows[("bench_needs16", "16")]["fwd_status"] == "ok"
    assert rows[("bench_small_only", "8")]["fwd_status"] == "ok"
    assert (
        rows[("bench_small_only", "16")]["fwd_status"]
        == "n/a (RuntimeError: this mixer has a fixed length of 64 tokens)"
    )
    assert rows[("bench_small_only", "16")]["fwd_ms"] == ""
    assert rows[("conv", "16")]["fwdbwd_status"] == "ok"  # later mixers still run
    md = (out / "results.md").read_text()
    assert "| bench_small_only | 16 | 256 | n/a (RuntimeError: this mixer has a fixed length of 64 tokens) |" in md
    exps = {e["mixer"]: e for e in _rows(out / "exponents.csv")}
    assert exps["bench_small_only"]["exponent_fwd"] == "" and exps["bench_small_only"]["sizes_fwd"] == "8"


def test_bad_input_is_one_line_error(tmp_path):
    with pytest.raises(OptionError, match="--sizes '32,x' is not valid"):
        bench.main(["mixers", "--sizes", "32,x", "--out", str(tmp_path / "a"), *FAST])
    with pytest.raises(UnknownNameError, match="did you mean 'hyena_pixel'"):
        bench.main(["mixers", "--mixers", "hyena_pixl", "--out", str(tmp_path / "b"), *FAST])
    with pytest.raises(OptionError, match="--fit-sizes"):
        bench.main(["mixers", "--sizes", "8,16", "--fit-sizes", "32", "--out", str(tmp_path / "c"), *FAST])
    assert not any(tmp_path.iterdir())  # nothing written
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "bench.py"), "mixers", "--mixers", "nope", "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown mixer 'nope'") and proc.stderr.count("\n") == 1, proc.stderr


# ---------------------------------------------------------------------------------------------------- archs
def test_archs_command_restoration_and_classification(tmp_path, capsys):
    out = tmp_path / "archs"
    cls = "metaformer:dims=[8,8,8,8],depths=[1,1,1,1],mixer=pool,num_classes=10"
    argv = ["archs", "--archs", "swinir;vheatir", "--preset", "tiny", "--embed-dim", "8", "--depths", "1,1"]
    argv += ["--sizes", "16", "--cls", cls, "--cls-size", "32", "--cls-batch", "2", "--out", str(out), *FAST]
    assert bench.main(argv) == 0
    rows = _rows(out / "results.csv")
    assert list(rows[0]) == bench.ARCH_COLUMNS
    assert [(r["family"], r["network"], r["size"]) for r in rows] == [
        ("restoration", "swinir", "16"),
        ("restoration", "vheatir", "16"),
        ("classification", cls, "32"),
    ]
    for r in rows[:2]:
        assert r["infer_status"] == r["train_status"] == "ok" and float(r["train_ms"]) > 0
    assert rows[2]["batch"] == "2" and float(rows[2]["infer_img_s"]) > 0 and rows[2]["train_ms"] == ""
    md = (out / "results.md").read_text()
    assert "| " + " | ".join(bench.RESTORATION_TABLE) + " |" in md
    assert "| " + " | ".join(bench.CLASSIFICATION_TABLE) + " |" in md
    assert "embed_dim 8, depths (1, 1)" in md and "speed-up of vheatir over swinir at 16x16" in md
    mac_ratio = int(rows[0]["macs"]) / int(rows[1]["macs"])
    assert f"swinir / vheatir MACs at 16x16: {mac_ratio:.2f}x (the speed-up at equal MAC/s)" in md
    assert (out / "time_vs_tokens.png").is_file()
    assert "## Classification configurations" in capsys.readouterr().out


def test_archs_default_list_is_swinir_vheatir_and_ir_per_mixer():
    args = bench.parse_args(["archs", "--mixers", "conv,attention_window,hco"])
    labels = [label for label, _ in bench.restoration_specs(args)]
    assert labels == ["swinir", "vheatir", "ir:conv", "ir:hco"]  # ir with attention_window is swinir
    with pytest.raises(OptionError, match="is a classification network"):
        bench.main(["archs", "--archs", "vheat_tiny", "--family", "restoration", "--sizes", "16", *FAST])


@pytest.mark.parametrize("value", ["0", "4,x"])
def test_archs_bad_depths(value):
    with pytest.raises(OptionError, match="--depths"):
        bench.restoration_specs(bench.parse_args(["archs", "--depths", value]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_memory_cuda_matches_allocation():
    device = torch.device("cuda")

    def call():
        a = torch.ones(2**20, device=device)
        return (a + 1).sum()

    assert 8 * 2**20 <= bench.peak_memory(call, device) < 9 * 2**20
    assert math.isfinite(bench.time_call(call, device, repeats=2, warmup=1))
