"""Sweeps that do not decide on noise: the patient pruner, 3 seeds, and ablation.md with paired intervals
(sandbox/sweep.py with sandbox.stats).

A fake ``train`` writes each run's ``per_image.csv`` as the engine does: per-image PSNRs = the setting's target + an
image offset shared by every setting (the same degraded images) + a seed shift shared by every setting (seed k: the
same patches, noise and initialisation) + a little setting x seed x image noise."""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

optuna = pytest.importorskip("optuna") if os.environ.get("CI") != "true" else __import__("optuna")

from optuna.trial import TrialState, create_trial  # noqa: E402

from sandbox.errors import SandboxError  # noqa: E402
from sandbox.evaluate import EvalResult  # noqa: E402
from sandbox.sweep import (  # noqa: E402
    PatientMedianPruner,
    SweepOptions,
    load_study_spec,
    prepare_study,
    run_worker,
    storage_url,
    write_reports,
)

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "experiments" / "sweep.py"
STUDIES = ROOT / "experiments" / "sweeps"
IMAGES = 8


pytestmark = pytest.mark.usefixtures("no_data")  # tests/conftest.py: the embedded default


# ------------------------------------------------------------------------------------------------ the pruner alone
def _study(pruner, direction="maximize", finals=(30.0, 30.2, 29.9)):
    """An in-memory study with completed trials whose validation PSNR rises by 1 dB per step to ``finals``."""
    study = optuna.create_study(storage=None, direction=direction, pruner=pruner)
    for v in finals:
        study.add_trial(create_trial(value=v, intermediate_values={2: v - 3, 4: v - 2, 6: v - 1, 8: v}))
    return study  # medians at steps 2, 4, 6, 8: 27.0, 28.0, 29.0, 30.0


def _asks(study, values: dict[int, float], run_steps: int | None = None) -> bool:
    trial = study.ask()
    if run_steps is not None:
        trial.set_user_attr("run_steps", run_steps)
    for step, v in values.items():
        trial.report(v, step)
    return trial.should_prune()


def test_patient_pruner_ignores_differences_within_the_margin():
    study = _study(PatientMedianPruner(warmup=0.5, margin=0.1, run_steps=8))
    assert not _asks(study, {2: 27.0, 4: 28.0 - 0.05})  # 0.05 dB below the median: noise, kept
    assert not _asks(study, {2: 27.0, 4: 28.0 - 0.1})  # at the margin: kept (more than the margin prunes)
    assert _asks(study, {2: 27.0, 4: 28.0 - 0.5})  # 0.5 dB below: pruned
    assert not _asks(study, {2: 27.0, 4: 28.0 + 3})  # above: kept


def test_patient_pruner_decides_nothing_before_the_warmup():
    study = _study(PatientMedianPruner(warmup=0.5, margin=0.1, run_steps=8))
    assert not _asks(study, {2: 20.0})  # step 2 of 8 < 50%: 7 dB below is not pruned yet
    assert _asks(study, {2: 20.0, 4: 21.0})  # at 50% it is
    late = _study(PatientMedianPruner(warmup=0.75, margin=0.1, run_steps=8))
    assert not _asks(late, {2: 20.0, 4: 21.0}) and _asks(late, {2: 20.0, 4: 21.0, 6: 22.0})
    # the run's length comes from the trial's run_steps attribute (the objective sets it) before the constructor's
    assert not _asks(study, {2: 20.0, 4: 21.0}, run_steps=100)
    assert _asks(study, {2: 20.0}, run_steps=4)
    # a trial whose length is unknown is never pruned
    unknown = _study(PatientMedianPruner(warmup=0.5, margin=0.1))
    assert not _asks(unknown, {2: 20.0, 4: 21.0, 6: 22.0})
    assert _asks(unknown, {2: 20.0, 4: 21.0, 6: 22.0}, run_steps=8)
    # warm-up 0: decides at the first validation
    eager = _study(PatientMedianPruner(warmup=0.0, margin=0.1, run_steps=8))
    assert _asks(eager, {2: 20.0})


def test_patient_pruner_needs_two_completed_trials_at_the_same_step():
    one = _study(PatientMedianPruner(warmup=0.5, margin=0.1, run_steps=8), finals=(30.0,))
    assert not _asks(one, {2: 20.0, 4: 21.0})
    two = _study(PatientMedianPruner(warmup=0.5, margin=0.1, run_steps=8), finals=(30.0, 30.2))
    assert _asks(two, {2: 20.0, 4: 21.0})
    # values at other steps do not count: nobody else validated at step 5
    assert not _asks(two, {2: 20.0, 5: 21.0})
    # pruned and running trials do not count either, only completed ones
    study = _study(PatientMedianPruner(warmup=0.5, margin=0.1, run_steps=8), finals=(30.0,))
    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={2: 27.0, 4: 28.0}))
    assert not _asks(study, {2: 20.0, 4: 21.0})


def test_patient_pruner_nan_and_minimisation():
    study = _study(PatientMedianPruner(warmup=0.5, margin=0.1, run_steps=8))
    assert not _asks(study, {2: math.nan})  # diverged, but within the warm-up
    assert _asks(study, {2: 27.0, 4: math.nan})
    low = _study(PatientMedianPruner(warmup=0.5, margin=0.1, run_steps=8), direction="minimize")
    assert not _asks(low, {4: 28.05}) and _asks(low, {4: 28.5}) and not _asks(low, {4: 20.0})


@pytest.mark.parametrize(
    "kw, message", [({"warmup": 1.5}, "--prune-warmup 1.5"), ({"margin": -1}, "--prune-margin -1")]
)
def test_patient_pruner_options_are_checked(kw, message):
    with pytest.raises(SandboxError, match=message):
        PatientMedianPruner(**kw)


# --------------------------------------------------------------------------------------- a small study, fake train
def per_image_train(psnr_of, degradation=lambda config: "denoise:sigma=25", images=IMAGES):
    """A stand-in for engine.train that writes per_image.csv; validation PSNR rises to psnr_of(config) by 0.3 dB per
    evaluation (steps 2, 4, 6, 8)."""

    def train(config, on_eval=None, resume=None, progress=False, echo=None):
        target = psnr_of(config)
        offsets = np.random.default_rng(1234).normal(0.0, 1.0, images)  # the same images for everyone
        shift = np.random.default_rng(config.seed).normal(0.0, 0.03)  # seed k: the same for every setting
        own = np.random.default_rng([config.seed, zlib.crc32(str(config.mixer).encode())]).normal(0.0, 0.02, images)
        psnr = target + shift + offsets + own
        for i, step in enumerate((2, 4, 6, 8)):
            if on_eval is not None:
                metrics = {"psnr": target - 0.3 * (3 - i), "ssim": 0.5, "step": step, "wall": step}
                on_eval(step, {**metrics, "iters_per_sec": 1.0})
        rows = [
            {"set": "embedded", "image": f"{i:02d}.png", "psnr": float(psnr[i]), "ssim": 0.8,
             "input_psnr": 20.0 + 0.1 * i, "seconds": 0.01}
            for i in range(images)
        ]  # fmt: skip
        run_dir = Path(config.out) / config.name
        EvalResult("denoise", config.name, ("psnr", "ssim"), rows, degradation=degradation(config)).write_csv(
            run_dir / "per_image.csv"
        )
        return SimpleNamespace(
            final={"embedded": {"psnr": float(psnr.mean()), "ssim": 0.8}},
            params=1000,
            macs_per_mpx=10,
            history=[{"wall": 60.0}],
            step=8,
            train_iters_per_sec=2.0,
        )

    return train


CLOSE = {"0": 28.0, "1": 28.03, "5": 28.06, "10": 27.97}  # dB: every setting within 0.1 dB of the others


def close_psnr(config) -> float:
    return CLOSE.get(str(config.mixer).rsplit("=", 1)[-1], 28.02)


def opts(tmp_path, **kw) -> SweepOptions:
    base = dict(study="hco_k", trials=7, out=tmp_path, progress=False, heartbeat=1, overrides={"iters": 8})
    return SweepOptions(**{**base, **kw})


def load(tmp_path):
    return optuna.load_study(study_name="hco_k", storage=storage_url(None, tmp_path))


def table_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")][1:]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]


def test_small_study_within_the_margin_prunes_nothing_and_scores_every_row(tmp_path):
    spec = load_study_spec("hco_k", STUDIES)
    o = opts(tmp_path)
    assert (o.seeds, o.pruner, o.prune_warmup, o.prune_margin) == (3, "patient", 0.5, 0.1)  # the defaults
    counts = run_worker(spec, o, per_image_train(close_psnr))
    assert counts["COMPLETE"] == 7 and counts["PRUNED"] == 0
    study = load(tmp_path)
    assert all(t.user_attrs["seeds"] == [0, 1, 2] and t.user_attrs["run_steps"] == 8 for t in study.trials)
    paths = write_reports(study, spec, tmp_path, storage_url(None, tmp_path))
    table = paths["table"].read_text()
    rows = table_rows(table)
    assert [r[0] for r in rows] == [spec.label(v) for v in spec.grid()]
    assert all("(n=3)" in r[1] and "±" in r[1] for r in rows)  # a score with its interval in every row
    assert rows[0][2] == "baseline" and all(r[2].count("[") == 1 for r in rows[1:])
    header = [line for line in table.splitlines() if line.startswith("| ")][0]
    for column in ("PSNR mean ± 95% CI", "Δ vs fixed k=0 [95% CI]", "p (Holm)", "rank", "params", "iters",
                   "train min", "pruned/failed"):  # fmt: skip
        assert column in header, column
    assert "**Resolution**" in table and "so this design resolves" in table
    assert "![difference to fixed k=0](forest.png)" in table
    assert paths["forest_png"].stat().st_size > 1000
    records = list(csv.DictReader(paths["ablation_csv"].open()))
    assert [r["setting"] for r in records] == [r[0] for r in rows]
    assert {r["status"] for r in records} == {"complete"} and {r["seeds"] for r in records} == {"3"}
    assert records[0]["baseline"] == "fixed k=0" and float(records[0]["delta"]) == 0.0
    assert float(records[2]["delta"]) == pytest.approx(0.06, abs=0.03)  # fixed k=5 - fixed k=0
    # Optuna's median rule on the same study stops settings over differences of hundredths of a dB
    median = tmp_path / "median"
    run_worker(spec, opts(median, out=median, pruner="median"), per_image_train(close_psnr))
    assert load(median).trials and any(t.state.name == "PRUNED" for t in load(median).trials)


def test_patient_pruner_in_a_study_stops_a_far_worse_setting_after_the_warmup(tmp_path):
    spec = load_study_spec("hco_k", STUDIES)
    far = {**CLOSE, "10": 25.0}
    run_worker(spec, opts(tmp_path, trials=4), per_image_train(lambda c: far.get(str(c.mixer).rsplit("=", 1)[-1])))
    study = load(tmp_path)
    states = {t.user_attrs["setting"]: t.state.name for t in study.trials}
    assert states == {"fixed k=0": "COMPLETE", "fixed k=1": "COMPLETE", "fixed k=5": "COMPLETE", "fixed k=10": "PRUNED"}
    pruned = next(t for t in study.trials if t.state.name == "PRUNED")
    assert max(pruned.intermediate_values) == 4  # not at step 2 (25% of 8 iterations), at the first one past 50%
    rows = table_rows(write_reports(study, spec, tmp_path, storage_url(None, tmp_path))["table"].read_text())
    assert rows[3][:5] == ["fixed k=10", "pruned", "", "", ""] and rows[3][-1] == "1"


def test_budget_runs_project_their_length_for_the_warmup(tmp_path):
    spec = load_study_spec("hco_k", STUDIES)
    o = opts(tmp_path, trials=1, overrides={"iters": 10**9, "budget_minutes": 8 / 60})  # "wall" = step seconds
    run_worker(spec, o, per_image_train(close_psnr))
    assert load(tmp_path).trials[0].user_attrs["run_steps"] == 8


def test_one_seed_report_says_no_interval(tmp_path):
    spec = load_study_spec("hco_k", STUDIES)
    run_worker(spec, opts(tmp_path, trials=3, seeds=1), per_image_train(close_psnr))
    table = write_reports(load(tmp_path), spec, tmp_path, storage_url(None, tmp_path))["table"].read_text()
    assert all(r[1].strip("*").endswith("(no interval: 1 seed)") for r in table_rows(table))
    assert "1 seed: no interval covers training noise" in table
    # --report reads a 1-seed study whatever --seeds says; running it with another seed count is refused
    prepare_study(spec, opts(tmp_path, trials=3, seeds=3), report=True)
    with pytest.raises(SandboxError, match=r"was made with other settings \(seeds differ\)"):
        prepare_study(spec, opts(tmp_path, trials=3, seeds=3))


def test_default_baseline_without_runs_moves_to_the_next_setting(tmp_path):
    spec = load_study_spec("hco_k", STUDIES)

    def train(config, **kw):
        if str(config.mixer).endswith("k=0"):
            raise ValueError("boom")
        return per_image_train(close_psnr)(config, **kw)

    run_worker(spec, opts(tmp_path, trials=3), train)
    table = write_reports(load(tmp_path), spec, tmp_path, storage_url(None, tmp_path))["table"].read_text()
    rows = table_rows(table)
    assert rows[0][:3] == ["fixed k=0", "failed: ValueError: boom", ""] and rows[1][2] == "baseline"
    assert "The first setting `fixed k=0` has no finished run (failed: ValueError: boom): differences are to " in table
    # asked for by name, a baseline without runs is an error
    with pytest.raises(SandboxError, match=r"--baseline 'fixed k=0' has no finished run \(failed: ValueError: boom\)"):
        write_reports(load(tmp_path), spec, tmp_path, storage_url(None, tmp_path), baseline="fixed k=0")


def test_runs_without_per_image_results_keep_the_mean_and_std_table(tmp_path):
    from test_sweep import fake_train, k_psnr

    spec = load_study_spec("hco_k", STUDIES)
    run_worker(spec, opts(tmp_path, trials=2, seeds=2), fake_train(k_psnr))
    paths = write_reports(load(tmp_path), spec, tmp_path, storage_url(None, tmp_path))
    table = paths["table"].read_text()
    assert "| fixed k=0 | 25.005 ± 0.007 | 2 |" in table
    assert "**No paired intervals:** per-image results (per_image.csv) are missing for 4 of 4 runs" in table
    assert "forest_png" not in paths
    records = list(csv.DictReader(paths["ablation_csv"].open()))
    assert float(records[0]["mean"]) == pytest.approx(25.005) and records[0]["delta"] == ""


# ----------------------------------------------------------------------------------------------- the command line
def cli(tmp_path, capsys, *args):
    """Run experiments/sweep.py in this process; (exit code, stdout, stderr)."""
    spec = importlib.util.spec_from_file_location("sandbox_sweep_cli_stats", SWEEP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from sandbox.cli import run_main

    with pytest.raises(SystemExit) as e:
        run_main(module.main, [*map(str, args), "--out", str(tmp_path), "--no-progress"])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_report_baseline_flag(tmp_path, capsys):
    spec = load_study_spec("hco_k", STUDIES)
    run_worker(spec, opts(tmp_path, trials=3), per_image_train(close_psnr))
    code, out, err = cli(tmp_path, capsys, "--study", "hco_k", "--iters", "8", "--report", "--baseline", "fixed k=5")
    assert code == 0, err
    rows = table_rows((tmp_path / "ablation.md").read_text())
    assert rows[2][2] == "baseline" and "Δ vs fixed k=5 [95% CI]" in out
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.suffix in (".md", ".csv")}
    code, out, err = cli(tmp_path, capsys, "--study", "hco_k", "--iters", "8", "--report", "--baseline", "k=5")
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --baseline 'k=5' is not one of the settings: 'fixed k=0',")
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.suffix in (".md", ".csv")}
    assert after == before  # nothing overwritten


def test_mixed_degradations_are_one_error_line(tmp_path, capsys):
    spec = load_study_spec("hco_k", STUDIES)
    sigma = lambda config: "denoise:sigma=50" if str(config.mixer).endswith("k=1") else "denoise:sigma=25"  # noqa: E731
    run_worker(spec, opts(tmp_path, trials=2), per_image_train(close_psnr, degradation=sigma))
    with pytest.raises(SandboxError, match="evaluated on different degradations"):
        write_reports(load(tmp_path), spec, tmp_path, storage_url(None, tmp_path))
    assert not (tmp_path / "ablation.md").exists()
    code, _, err = cli(tmp_path, capsys, "--study", "hco_k", "--iters", "8", "--report")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: cannot pair")
    assert "different degradations" in lines[0]
