"""experiments/compare.py and sandbox.report, against a fake training engine (real tiny checkpoints, fake curves)."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sandbox import MIXERS, build_arch, plugins, report
from sandbox.errors import OptionError, SandboxError
from sandbox.evaluate import EvalResult

ROOT = Path(__file__).resolve().parents[1]
SCORE = {"conv": 27.0, "hco": 28.5, "pool": 26.0, "identity": 25.0}  # fake final PSNR per mixer name


def _load_compare():
    spec = importlib.util.spec_from_file_location("compare_script", ROOT / "experiments" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


compare = _load_compare()


@dataclass
class FakeRunResult:
    run_dir: Path
    config: object
    step: int
    best_psnr: float
    final: dict
    history: list
    params: int
    macs_per_mpx: int
    train_iters_per_sec: float
    infer_ms_per_mpx: float
    stopped: str


class FakeTrain:
    """Stands in for sandbox.engine.train: writes a run dir with a real tiny checkpoint, returns plausible results."""

    def __init__(self, fail_on: str | None = None, stopped: dict | None = None, diverge_on: str | None = None):
        self.calls = []
        self.fail_on = fail_on
        self.stopped = stopped or {}
        self.diverge_on = diverge_on

    def __call__(self, config, on_eval=None, resume=None, progress=True):
        self.calls.append((config, resume))
        run_dir = Path(config.out) / config.name
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=resume is not None)
        torch.manual_seed(0)
        net = build_arch(config.arch, mixer=config.mixer, preset="tiny", in_chans=1, task="denoise")
        ckpt = {"arch_spec": net.arch_spec, "model": net.state_dict()}
        torch.save(ckpt, run_dir / "checkpoints" / "best.pth")
        torch.save(ckpt, run_dir / "checkpoints" / "last.pth")  # what the engine resumes from
        (run_dir / "crops.png").write_bytes(b"")
        if config.mixer == self.fail_on:
            raise KeyboardInterrupt
        if config.mixer == self.diverge_on:
            raise sys.modules["sandbox.engine"].TrainingDiverged("loss became nan at iteration 7; no checkpoint")
        name = config.mixer.split(":")[0]
        top = SCORE.get(name, 24.0) + (0.1 if ":" in config.mixer else 0.0)
        history = [
            {"step": s, "wall": 2.0 * s, "psnr": top - 3.0 / (1 + s), "ssim": 0.8} for s in (0, 10, 20, config.iters)
        ]
        if on_eval:
            for h in history:
                on_eval(h["step"], {**h, "iters_per_sec": 5.0})
        # per image: the mixer's level, an image offset and a small seed-dependent wobble (paired by seed and image)
        wobble = np.random.default_rng([config.seed, len(name)]).normal(0, 0.01, 4)
        psnrs = [top + offset + w for offset, w in zip((-0.5, 0.3, 0.1, 0.1), wobble)]
        result = EvalResult("denoise", config.mixer, ("psnr", "ssim"), degradation="denoise:sigma=25")
        result.rows = [
            {"set": "embedded", "image": f"im{i}.png", "psnr": p, "ssim": 0.8, "input_psnr": 20.0 + i, "seconds": 0.1}
            for i, p in enumerate(psnrs)
        ]
        result.write_csv(run_dir / "per_image.csv")
        final = {"embedded": {"psnr": float(np.mean(psnrs)), "ssim": 0.8, "input_psnr": 20.2, "images": 4}}
        return FakeRunResult(
            run_dir=run_dir,
            config=config,
            step=config.iters,
            best_psnr=top,
            final=final,
            history=history,
            params=sum(p.numel() for p in net.parameters()),
            macs_per_mpx=int(1e9 * (1 + len(name))),
            train_iters_per_sec=5.0,
            infer_ms_per_mpx=12.5,
            stopped=self.stopped.get(config.mixer, "iters"),
        )


@pytest.fixture
def fake_engine(monkeypatch):
    """Install a FakeTrain as sandbox.engine.train."""
    import sandbox.engine as engine

    def install(fake):
        monkeypatch.setattr(engine, "train", fake)
        return fake

    install(FakeTrain())
    return install


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    monkeypatch.delenv("SANDBOX_DATA", raising=False)  # the embedded default: no download, deterministic
    monkeypatch.delenv("SANDBOX_PLUGINS", raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is fastest, and immune to a loaded machine
    yield
    torch.set_num_threads(threads)


ARGS = [
    "--task",
    "denoise",
    "--preset",
    "tiny",
    "--iters",
    "30",
    "--seed",
    "3",
    "--seeds",
    "1",
    "--no-progress",
    "--device",
    "cpu",
    "--crop",
    "40",
]


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_compare_end_to_end_with_fake_engine(tmp_path, fake_engine, capsys):
    fake = fake_engine(FakeTrain())
    out = tmp_path / "cmp"
    code = compare.main(["--mixers", "conv,identity", "--mixer", "hco", *ARGS, "--set", "lr=1e-3", "--out", str(out)])
    assert code == 0
    # identical settings: the configs differ only in mixer and name
    configs = [c for c, _ in fake.calls]
    assert [c.mixer for c in configs] == ["conv", "identity", "hco"]
    common = [dataclasses.replace(c, mixer=None, name=None) for c in configs]
    assert all(c == common[0] for c in common)
    assert configs[0].seed == 3 and configs[0].iters == 30 and configs[0].preset == "tiny" and configs[0].lr == 1e-3
    assert len({c.name for c in configs}) == 3 and all(Path(c.out) == out / "runs" for c in configs)

    for name in ("leaderboard.md", "leaderboard.csv", "state.json"):
        assert (out / name).is_file()
    for name in ("psnr_vs_time.png", "psnr_vs_iters.png", "psnr_vs_params.png", "crops_grid.png"):
        img = cv2.imread(str(out / name))
        assert img is not None and img.shape[0] > 50 and img.shape[1] > 50, name
    grid = cv2.imread(str(out / "crops_grid.png"))
    assert grid.shape[1] > grid.shape[0] * 2  # one row of 2 + 3 panels

    rows = _read_csv(out / "leaderboard.csv")
    assert list(rows[0]) == report.setting_columns(["embedded"])
    assert [r["mixer"] for r in rows] == ["hco", "conv", "identity"]  # sorted by PSNR, best first
    psnrs = [float(r["embedded_psnr"]) for r in rows]
    assert psnrs == sorted(psnrs, reverse=True) and psnrs[0] == pytest.approx(28.5, abs=0.05)
    assert all(float(r["iters"]) == 30 and all(Path(d).is_dir() for d in r["run_dirs"].split(";")) for r in rows)
    assert float(rows[0]["macs_g_per_mpx"]) == pytest.approx(4.0)  # 1e9 * (1 + len("hco")) MACs
    assert [r["embedded_resolved"] for r in rows] == ["False"] * 3  # one seed: nothing is resolved
    assert len(_read_csv(out / "runs.csv")) == 3

    md = (out / "leaderboard.md").read_text()
    assert "| 1 | `hco` | 28.4" in md and "no interval: 1 seed" in md and "NOT comparable" in md
    assert "1 seed: no interval covers training noise" in md and "![difference to conv on embedded](forest.png)" in md
    assert cv2.imread(str(out / "forest.png")) is not None
    printed = capsys.readouterr().out
    assert "| 1 | `hco` | 28.4" in printed and "`identity` |" in printed
    state = json.loads((out / "state.json").read_text())
    assert [m["status"] for m in state["mixers"]] == ["finished"] * 3


def test_unknown_mixer_exits_2_before_anything_is_written(tmp_path):
    out = tmp_path / "never"
    r = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "compare.py"), "--mixers", "hco,hyena_pixl", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown mixer 'hyena_pixl'"), r.stderr
    assert "hyena_pixel" in lines[0]
    assert not out.exists()


def test_bad_option_and_existing_out_fail_before_training(tmp_path, fake_engine):
    fake = fake_engine(FakeTrain())
    with pytest.raises(OptionError, match="mixer 'conv:kernel_sise=5'.*kernel_size"):
        compare.main(["--mixers", "hco;conv:kernel_sise=5", *ARGS, "--out", str(tmp_path / "a")])
    with pytest.raises(OptionError, match="--set mixer"):
        compare.main(["--mixers", "hco", *ARGS, "--set", "mixer=conv", "--out", str(tmp_path / "b")])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine")
    with pytest.raises(OptionError, match="never overwritten"):
        compare.main(["--mixers", "hco", *ARGS, "--out", str(tmp_path / "c")])
    assert fake.calls == [] and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["keep.txt"]


def test_config_file_sets_the_shared_run_config(tmp_path, fake_engine):
    fake = fake_engine(FakeTrain())
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text("lr: 0.004\nwarmup_iters: 7\nema: 0.99\niters: 99\n")
    compare.main(["--mixers", "conv", *ARGS, "--config", str(cfg), "--set", "ema=0.9", "--out", str(tmp_path / "a")])
    (run, _), *_ = fake.calls
    assert (run.lr, run.warmup_iters) == (0.004, 7)  # from the file
    assert run.ema == 0.9 and run.iters == 30  # --set and flags win over the file
    cfg.write_text("mixer: hco\nlr: 0.004\n")
    with pytest.raises(OptionError, match="recipe.yaml.*'mixer'.*--mixers"):
        compare.main(["--mixers", "conv", *ARGS, "--config", str(cfg), "--out", str(tmp_path / "b")])
    cfg.write_text("lr: [0.004\n")
    with pytest.raises(SandboxError, match="recipe.yaml.*invalid YAML"):
        compare.main(["--mixers", "conv", *ARGS, "--config", str(cfg), "--out", str(tmp_path / "c")])
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "experiments" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_run_configs_are_valid(path):
    from sandbox.config import RunConfig, apply_overrides
    from sandbox.engine import check_config, load_config_file

    recipe = load_config_file(path)
    check_config(apply_overrides(RunConfig(), recipe, str(path)))
    assert not set(compare.RESERVED_KEYS) & set(recipe), "a shared recipe must work in compare.py"


PLUGIN = textwrap.dedent(
    '''
    """A user's mixer for the compare test."""
    from torch import nn

    from sandbox import register_mixer


    @register_mixer("cmp_test_blur", paper="a user, 2026", family="conv", complexity="O(N)")
    class Blur(nn.Module):
        """3x3 depthwise blur. (B, C, H, W) -> (B, C, H, W)."""

        def __init__(self, dim: int):
            super().__init__()
            self.dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

        def forward(self, x):
            return self.dw(x)
    '''
)


@pytest.fixture
def plugin_file(tmp_path):
    path = tmp_path / "cmp_plugin.py"
    path.write_text(PLUGIN)
    yield path
    MIXERS.unregister("cmp_test_blur")
    plugins._loaded.pop(str(path.resolve()), None)
    sys.modules.pop("sandbox_plugin_cmp_plugin", None)


def test_plugin_mixer_is_compared(tmp_path, fake_engine, plugin_file):
    fake = fake_engine(FakeTrain())
    out = tmp_path / "cmp"
    assert compare.main(["--mixers", "cmp_test_blur,conv", "--plugin", str(plugin_file), *ARGS, "--out", str(out)]) == 0
    assert [c.mixer for c, _ in fake.calls] == ["cmp_test_blur", "conv"]
    assert fake.calls[0][0].plugins == (str(plugin_file.resolve()),)  # recorded so the runs can be reloaded
    assert [r["mixer"] for r in _read_csv(out / "leaderboard.csv")] == ["conv", "cmp_test_blur"]
    assert cv2.imread(str(out / "crops_grid.png")) is not None


def test_resume_skips_finished_and_resumes_the_interrupted_mixer(tmp_path, fake_engine):
    out = tmp_path / "cmp"
    first = fake_engine(FakeTrain(fail_on="identity"))
    with pytest.raises(KeyboardInterrupt):
        compare.main(["--mixers", "conv,identity,hco", *ARGS, "--out", str(out)])
    assert [c.mixer for c, _ in first.calls] == ["conv", "identity"]
    state = json.loads((out / "state.json").read_text())
    assert [m["status"] for m in state["mixers"]] == ["finished", "running", "pending"]

    with pytest.raises(OptionError, match="drop --mixers"):
        compare.main(["--resume", str(out), "--mixers", "conv"])
    second = fake_engine(FakeTrain())
    assert compare.main(["--resume", str(out), "--no-progress", "--crop", "40"]) == 0
    assert [(c.mixer, r) for c, r in second.calls] == [("identity", out / "runs" / "02_identity"), ("hco", None)]
    assert second.calls[0][0].seed == 3 and second.calls[0][0].iters == 30  # settings from state.json
    rows = _read_csv(out / "leaderboard.csv")
    assert [r["mixer"] for r in rows] == ["hco", "conv", "identity"]

    third = fake_engine(FakeTrain())
    assert (
        compare.main(["--resume", str(out), "--no-progress", "--crop", "40"]) == 0
    )  # all finished: only the report again
    assert third.calls == []


def test_resume_sets_aside_a_run_dir_without_checkpoint(tmp_path, fake_engine):
    out = tmp_path / "cmp"
    fake_engine(FakeTrain(fail_on="conv"))
    with pytest.raises(KeyboardInterrupt):
        compare.main(["--mixers", "conv", *ARGS, "--out", str(out)])
    (out / "runs" / "01_conv" / "checkpoints" / "last.pth").unlink()  # crashed before its first checkpoint
    again = fake_engine(FakeTrain())
    assert compare.main(["--resume", str(out), "--no-progress", "--crop", "40"]) == 0
    assert [(c.mixer, r) for c, r in again.calls] == [("conv", None)]
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["01_conv", "01_conv.incomplete1"]  # kept, not deleted


def test_interrupted_result_stops_and_is_resumable(tmp_path, fake_engine):
    out = tmp_path / "cmp"
    fake_engine(FakeTrain(stopped={"conv": "interrupted"}))
    assert compare.main(["--mixers", "conv,hco", *ARGS, "--out", str(out)]) == 130
    state = json.loads((out / "state.json").read_text())
    assert [m["status"] for m in state["mixers"]] == ["interrupted", "pending"]
    again = fake_engine(FakeTrain())
    assert compare.main(["--resume", str(out), "--no-progress", "--crop", "40"]) == 0
    assert [(c.mixer, r is not None) for c, r in again.calls] == [("conv", True), ("hco", False)]


def test_diverged_mixer_is_reported_and_the_others_still_run(tmp_path, fake_engine, capsys):
    out = tmp_path / "cmp"
    fake = fake_engine(FakeTrain(diverge_on="identity"))
    assert compare.main(["--mixers", "identity,conv", *ARGS, "--out", str(out)]) == 0
    assert [c.mixer for c, _ in fake.calls] == ["identity", "conv"]
    assert "identity (seed 3): diverged: loss became nan" in capsys.readouterr().err
    rows = _read_csv(out / "leaderboard.csv")
    assert [(r["mixer"], r["embedded_psnr"][:4]) for r in rows] == [("conv", "27.0"), ("identity", "")]
    assert "diverged (nan/inf, no scores): identity" in (out / "leaderboard.md").read_text()
    again = fake_engine(FakeTrain())
    assert compare.main(["--resume", str(out), "--no-progress", "--crop", "40"]) == 0
    assert again.calls == []  # a diverged mixer is a result, not retried


def test_split_mixers_and_parse_set():
    assert compare.split_specs("hco,attention_window, conv") == ["hco", "attention_window", "conv"]
    assert compare.split_specs("hco:k_mode=fixed,k=0.5,conv") == ["hco:k_mode=fixed,k=0.5", "conv"]
    assert compare.split_specs("mpfb:sizes=[3,5],conv:kernel_size=5") == ["mpfb:sizes=[3,5]", "conv:kernel_size=5"]
    assert compare.split_specs("hco;conv:kernel_size=5,bias=False;") == ["hco", "conv:kernel_size=5,bias=False"]
    assert compare.parse_set(["lr=1e-3", "eval_sets=Set12,BSD68", "arch_options.embed_dim=32"]) == {
        "lr": 1e-3,
        "eval_sets": ("Set12", "BSD68"),
        "arch_options": {"embed_dim": 32},
    }
    with pytest.raises(OptionError, match="KEY=VALUE"):
        compare.parse_set(["lr"])


def test_report_pieces_directly(tmp_path):
    from sandbox.report import crops_grid, leaderboard_rows, plot_curves, plot_params, write_leaderboard

    results = [
        {"config": {"mixer": "a"}, "final": {"S": {"psnr": 30.0, "ssim": 0.9}}, "history": [], "params": 10, "step": 5},
        {"config": {"mixer": {"name": "b", "k": 1}}, "final": {}, "history": [{"step": 1, "wall": 1, "psnr": 20}]},
        {"config": {"mixer": "c"}, "final": {"S": {"psnr": 31.0, "ssim": 0.91}}, "history": [], "params": 1000},
    ]
    rows = leaderboard_rows(results)
    assert [r["mixer"] for r in rows] == ["c", "a", "b:k=1"]  # missing PSNR last
    md, csv_path = write_leaderboard(rows, tmp_path)
    assert md.read_text().count("\n|") == 5 and len(_read_csv(csv_path)) == 3
    paths = [*plot_curves(results, tmp_path), plot_params(results, tmp_path)]
    gray = np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)
    rgb = np.zeros((64, 64, 3), np.uint8)
    paths.append(crops_grid([("gray", gray), ("rgb", rgb), ("float", gray / 255.0)], tmp_path / "grid.png"))
    assert all(cv2.imread(str(p)) is not None for p in paths)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporaries
    with pytest.raises(SandboxError):
        crops_grid([], tmp_path / "empty.png")


def test_plots_without_matplotlib_are_one_line_errors(tmp_path, monkeypatch):
    from sandbox.report import plot_params

    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    with pytest.raises(SandboxError, match="pip install matplotlib"):
        plot_params([{"config": {"mixer": "a"}, "final": {"S": {"psnr": 1.0}}, "params": 1}], tmp_path)


# ------------------------------------------------------------------------------------------- --jobs (real engine)
def _compare_cli(*args, cwd, timeout=600):
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_DATA"}  # the embedded default
    return subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "compare.py"), "--no-progress", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


@pytest.mark.slow
def test_jobs_train_mixers_in_parallel_processes_with_the_same_results_as_one_at_a_time(tmp_path):
    """--jobs 2 trains each mixer in its own process; the leaderboard matches a --jobs 1 run of the same seed."""
    common = ["--mixers", "conv,pool,identity", "--preset", "tiny", "--iters", "4", "--seeds", "1"]
    common += ["--set", "eval_every=2"]
    common += ["--set", "batch_size=2", "--set", "patch_size=32", "--device", "cpu"]
    par = _compare_cli(*common, "--jobs", "2", "--out", tmp_path / "par", cwd=tmp_path)
    assert par.returncode == 0, par.stdout + par.stderr
    assert "3 run(s), 2 at a time, 1 CPU thread(s) each" in par.stdout or os.cpu_count() != 2
    state = json.loads((tmp_path / "par" / "state.json").read_text())
    assert [m["status"] for m in state["mixers"]] == ["finished"] * 3
    for m in state["mixers"]:  # one process per mixer, each logged and trained once
        run = tmp_path / "par" / "runs" / m["name"]
        assert (run.parent / f"{m['name']}.log").is_file() and (run / "checkpoints" / "best.pth").is_file()
        events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [e["event"] for e in events].count("start") == 1
    seq = _compare_cli(*common, "--jobs", "1", "--out", tmp_path / "seq", cwd=tmp_path)
    assert seq.returncode == 0, seq.stdout + seq.stderr

    def scores(folder):
        rows = list(csv.DictReader((tmp_path / folder / "leaderboard.csv").open()))
        return {r["mixer"]: float(r["embedded_psnr"]) for r in rows}

    par_scores, seq_scores = scores("par"), scores("seq")  # thread counts may differ: equal to rounding
    assert par_scores.keys() == seq_scores.keys() and len(par_scores) == 3
    assert all(abs(par_scores[k] - seq_scores[k]) < 1e-3 for k in par_scores), (par_scores, seq_scores)
    # resuming a finished parallel comparison trains nothing again
    again = _compare_cli("--resume", tmp_path / "par", "--jobs", "2", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("skipped") == 3, again.stdout + again.stderr


def test_jobs_must_be_positive(tmp_path):
    r = _compare_cli("--mixers", "conv", "--jobs", "0", "--out", tmp_path / "x", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == (
        "error: --jobs 0 is not allowed; expected at least 1 (mixers trained at once)"
    ), r.stderr
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ seeds and intervals
def test_seeds_run_seed_by_seed_and_the_leaderboard_has_intervals(tmp_path, fake_engine, capsys):
    fake = fake_engine(FakeTrain())
    out = tmp_path / "cmp"
    args = list(ARGS)
    args[args.index("--seeds") + 1] = "2"
    assert compare.main(["--mixers", "conv,identity,hco", *args, "--baseline", "hco", "--out", str(out)]) == 0
    assert [(c.mixer, c.seed) for c, _ in fake.calls] == [
        ("conv", 3),
        ("identity", 3),
        ("hco", 3),
        ("conv", 4),
        ("identity", 4),
        ("hco", 4),
    ]  # every mixer at the first seed, then the next: finished runs come in pairs
    assert len({c.name for c, _ in fake.calls}) == 6 and fake.calls[0][0].name == "01_conv_seed3"
    state = json.loads((out / "state.json").read_text())
    assert state["version"] == 2 and state["seeds"] == [3, 4] and state["baseline"] == "hco"
    rows = {r["mixer"]: r for r in _read_csv(out / "leaderboard.csv")}
    assert {r["seeds"] for r in rows.values()} == {"2"}
    assert rows["identity"]["embedded_resolved"] == "True" and float(rows["identity"]["embedded_delta"]) < -3
    assert rows["hco"]["embedded_delta"] == "0.000000" and rows["hco"]["embedded_rank"] == "1"
    assert float(rows["conv"]["embedded_psnr_low"]) < float(rows["conv"]["embedded_psnr"])
    md = (out / "leaderboard.md").read_text()
    assert "Δ vs hco [95% CI]" in md and "(n=2)" in md and "so this design resolves" in md
    assert cv2.imread(str(out / "forest.png")) is not None and len(_read_csv(out / "runs.csv")) == 6
    # the report is rebuilt from the runs' files with another baseline, nothing trained again
    again = fake_engine(FakeTrain())
    assert compare.main(["--resume", str(out), "--baseline", "conv", "--no-progress", "--crop", "40"]) == 0
    assert again.calls == [] and "Δ vs conv [95% CI]" in (out / "leaderboard.md").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "0"], "error: --seeds 0 is not allowed; expected at least 1 (runs per mixer)"),
        (["--baseline", "pool"], "error: --baseline 'pool' is not one of the mixers compared: 'conv', 'identity'"),
    ],
)
def test_bad_seeds_and_baseline_are_one_line_errors(tmp_path, extra, message):
    r = _compare_cli("--mixers", "conv,identity", *extra, "--out", tmp_path / "x", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == message, r.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_two_seed_compare_end_to_end_with_the_real_engine(tmp_path):
    """A tiny two-seed comparison trains paired runs, keeps per-image results and reports intervals."""
    args = ["--mixers", "conv,identity", "--seeds", "2", "--preset", "tiny", "--iters", "6", "--set", "eval_every=3"]
    args += ["--set", "batch_size=2", "--set", "patch_size=32", "--device", "cpu", "--out", tmp_path / "cmp"]
    r = _compare_cli(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = sorted(p.name for p in (tmp_path / "cmp" / "runs").iterdir() if p.is_dir())
    assert runs == ["01_conv_seed0", "01_conv_seed1", "02_identity_seed0", "02_identity_seed1"]
    for run in runs:
        per_image = _read_csv(tmp_path / "cmp" / "runs" / run / "per_image.csv")
        assert len(per_image) >= 1 and per_image[0]["degradation"] == "denoise:sigma=25"
    rows = {r["mixer"]: r for r in _read_csv(tmp_path / "cmp" / "leaderboard.csv")}
    assert rows["conv"]["seeds"] == "2" and rows["identity"]["embedded_delta"] != ""
    assert "Δ vs conv [95% CI]" in r.stdout and "0.05 dB needs" in r.stdout
    # each finished run kept its restored crop: the report rebuilds, crops included, without any checkpoint
    for run in runs:
        assert len(list((tmp_path / "cmp" / "runs" / run).glob("crop_*.png"))) == 1
        shutil.rmtree(tmp_path / "cmp" / "runs" / run / "checkpoints")
    (tmp_path / "cmp" / "crops_grid.png").unlink()
    again = _compare_cli("--resume", tmp_path / "cmp", "--no-progress", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "no best checkpoint nor kept crop" not in again.stderr and (tmp_path / "cmp" / "crops_grid.png").is_file()
    assert _read_csv(tmp_path / "cmp" / "leaderboard.csv") == list(rows.values())


def test_default_output_folder_is_under_the_working_directory(tmp_path, fake_engine, monkeypatch):
    """Without --out the comparison goes to outputs/compare/<task>_<time> in the working directory."""
    monkeypatch.chdir(tmp_path)
    assert compare.main(["--mixers", "conv", *ARGS]) == 0
    (out,) = (tmp_path / "outputs" / "compare").iterdir()
    assert out.name.startswith("denoise_") and (out / "leaderboard.md").is_file()
    assert not any((ROOT / "outputs" / "compare").glob(f"{out.name}*"))


def test_resume_refuses_run_setting_flags(tmp_path, fake_engine):
    out = tmp_path / "cmp"
    assert compare.main(["--mixers", "conv", *ARGS, "--out", str(out)]) == 0
    with pytest.raises(OptionError, match=r"drop --eval-sets, --lr \(only --device"):
        compare.main(["--resume", str(out), "--lr", "1e-3", "--eval-sets", "all"])
    assert compare.main(["--resume", str(out), "--device", "cpu", "--no-progress", "--crop", "40"]) == 0


def test_resume_takes_a_moved_data_root(tmp_path, fake_engine):
    """A comparison continued where its data lives elsewhere (another machine): --resume --data-root DIR records the
    new root in state.json, where the --jobs children read it; a root that does not exist is one line."""

    def data(root):
        for name in ("Set12", "BSD68"):
            (root / "benchmarks" / name).mkdir(parents=True)
            cv2.imwrite(str(root / "benchmarks" / name / "01.png"), np.full((32, 32), 128, np.uint8))
        return root

    out, first, moved = tmp_path / "cmp", data(tmp_path / "a"), data(tmp_path / "b")
    args = [a for a in ARGS if a != "--no-progress"]
    assert compare.main(["--mixers", "conv", *args, "--data-root", str(first), "--out", str(out), "--no-progress"]) == 0
    state = lambda: json.loads((out / "state.json").read_text())  # noqa: E731
    assert state()["base_config"]["data_root"] == str(first.resolve())
    assert compare.main(["--resume", str(out), "--data-root", str(moved), "--no-progress", "--crop", "40"]) == 0
    assert state()["base_config"]["data_root"] == str(moved.resolve())
    with pytest.raises(SandboxError, match="does not exist"):
        compare.main(["--resume", str(out), "--data-root", str(tmp_path / "nowhere")])


@pytest.mark.parametrize("device", [[], ["--device", "cpu"]])
def test_jobs_children_get_the_device_only_when_given(tmp_path, fake_engine, monkeypatch, device):
    """The parent starts one `compare.py --resume OUT --only NAME` per run (its Popen stubbed here)."""
    import subprocess

    started = []

    class Done:
        returncode = 0

        def __init__(self, cmd, **kwargs):
            started.append(cmd)

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Done)
    monkeypatch.setattr(compare.time, "sleep", lambda s: None)
    args = compare.parse_args(["--mixers", "conv,identity", *device, "--jobs", "2"])
    state = {"mixers": [{"spec": m, "name": m, "status": "pending", "result": None} for m in ("conv", "identity")]}
    assert compare._run_jobs(args, tmp_path, state, torch.device("cpu")) == 0
    assert len(started) == 2 and all(("--device" in cmd) == bool(device) for cmd in started)
