"""Optuna sweeps (experiments/sweep.py, sandbox/sweep.py): study files, the objective, pruning, reports, storages
(SQLite, journal, PostgreSQL), parallel workers, a worker killed mid-trial and resumed, and one-line errors.

The logic tests use a fake ``train`` (instant, scripted PSNRs); the end-to-end ones train tiny networks on the embedded
default in subprocesses."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

optuna = pytest.importorskip("optuna") if os.environ.get("CI") != "true" else __import__("optuna")

from sandbox.errors import SandboxError  # noqa: E402
from sandbox.registry import list_mixers  # noqa: E402
from sandbox.sweep import (  # noqa: E402
    SweepOptions,
    ablation_rows,
    load_study_spec,
    prepare_study,
    run_worker,
    storage_url,
    write_reports,
)

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "experiments" / "sweep.py"
STUDIES = ROOT / "experiments" / "sweeps"
TINY = [
    "--preset", "tiny", "--iters", "8", "--set", "batch_size=2", "--set", "patch_size=16", "--set", "eval_every=2",
    "--set", "save_every=2", "--set", "val_images=1", "--set", "val_crop=32", "--heartbeat", "1", "--no-progress",
    "--seeds", "1",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("no_data")  # tests/conftest.py: the embedded default


def cli(*args, timeout=600, **popen):
    env = {k: v for k, v in os.environ.items() if k not in ("SANDBOX_DATA", "SANDBOX_TEST_KILL_AT_STEP")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, str(SWEEP), *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, text=True, **popen)
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def load_sqlite_study(out: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'study.db'}")


# ---------------------------------------------------------------------------------------------------- study files
def test_ready_studies_load_with_the_papers_settings():
    mixers = list_mixers()
    hco = load_study_spec("hco_k", STUDIES, mixers)
    assert [hco.label(v) for v in hco.grid()] == [
        "fixed k=0", "fixed k=1", "fixed k=5", "fixed k=10", "learnable k", "predicted k, per layer",
        "predicted k, shared per stage",
    ]  # fmt: skip
    assert hco.overrides({"k": "learnable k"})["mixer"] == "hco:k_mode=learnable"
    mpfb = load_study_spec("mpfb_fusion", STUDIES, mixers)
    mixers_of = {mpfb.overrides(v)["mixer"] for v in mpfb.grid()}
    assert {"mpfb:fusion=average", "mpfb:fusion=concat", "mpfb:fusion=se", "mpfb:fusion=attention"} <= mixers_of
    assert {"mpfb:phases=1", "mpfb:phases=2", "mpfb:phases=4"} <= mixers_of
    assert {"mpfb:activation=sigmoid", "mpfb:activation=relu", "mpfb:activation=linear"} <= mixers_of
    kernel = load_study_spec("kernel_size", STUDIES, mixers)
    specs = [kernel.overrides(v) for v in kernel.grid()]
    assert [s["mixer"] for s in specs[:6]] == [f"conv:kernel_size={k}" for k in (3, 5, 7, 9, 11, 13)]
    assert specs[-1]["arch_options"] == {"window_size": 16}
    search = load_study_spec("mixer", STUDIES, mixers)
    assert not search.finite and search.params[0].choices == mixers
    # every setting builds a network (checked without training)
    from sandbox.engine import build_network
    from sandbox.sweep import check_overrides

    for spec in (hco, mpfb, kernel):
        for values in spec.grid():
            build_network(check_overrides(spec.overrides(values), "test"))


def test_mixer_study_includes_plugin_mixers(tmp_path):
    from sandbox.registry import MIXERS

    plugin = tmp_path / "my_mixers.py"
    plugin.write_text(
        "import torch.nn as nn\nfrom sandbox.registry import register_mixer\n\n"
        "@register_mixer('sweep_test_mixer', paper='a user', family='conv', complexity='O(N)')\nclass M(nn.Module):\n"
        "    '''(B, C, H, W) -> (B, C, H, W).'''\n"
        "    def __init__(self, dim):\n        super().__init__()\n        self.p = nn.Conv2d(dim, dim, 1)\n"
        "    def forward(self, x):\n        return self.p(x)\n"
    )
    from sandbox.plugins import load_plugins

    try:
        load_plugins([str(plugin)])
        spec = load_study_spec("mixer", STUDIES, list_mixers())
        assert "sweep_test_mixer" in spec.params[0].choices
    finally:
        MIXERS.unregister("sweep_test_mixer")


@pytest.mark.parametrize(
    "text, message",
    [
        ("params:\n  k:\n    settings:\n      a: {mixer: hco\n", "line 5: YAML syntax error"),
        ("base: {mixer: hco}\nparms:\n  k: [1, 2]\n", "line 2: unknown key 'parms'"),
        ("params:\n  k:\n    chioces: [1, 2]\n", "line 2: parameter 'k': unknown key 'chioces'"),
        ("params:\n  lr: {low: 1.0e-3, high: 1.0e-4, key: lr}\n", "line 2: parameter 'lr': low="),
        ("params:\n  rate: {low: 1.0e-4, high: 1.0e-3}\n", "needs 'key'"),
        ("params:\n  k:\n    settings:\n      a: {mixr: hco}\n", "has no field 'mixr'; did you mean 'mixer'?"),
        ("base: {mixer: 'hco:k={kk}'}\nparams:\n  k: {choices: [1]}\n", "placeholder {kk} names no parameter"),
    ],
)
def test_malformed_study_files_are_one_line_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SandboxError) as e:
        load_study_spec(str(path), STUDIES, list_mixers())
    assert message in str(e.value) and "\n" not in str(e.value)
    assert str(path) in str(e.value)


def test_unknown_study_lists_the_available_ones():
    with pytest.raises(SandboxError, match="unknown study 'hco_kk'; available: hco_k, kernel_size, mixer, mpfb_fusion"):
        load_study_spec("hco_kk", STUDIES)


def test_placeholders_fill_one_mixer_spec_from_several_parameters(tmp_path):
    path = tmp_path / "factorial.yaml"
    path.write_text(
        "base: {mixer: 'mpfb:fusion={fusion},phases={phases}'}\n"
        "params:\n  fusion: [average, se]\n  phases: [1, 2]\n  width: {choices: [8, 16], key: arch_options.embed_dim}\n"
    )
    spec = load_study_spec(str(path), STUDIES)
    assert len(spec.grid()) == 8
    values = {"fusion": "se", "phases": 2, "width": 16}
    assert spec.overrides(values) == {"mixer": "mpfb:fusion=se,phases=2", "arch_options": {"embed_dim": 16}}
    assert spec.label(values) == "fusion=se, phases=2, width=16"


def test_storage_urls():
    out = Path("/tmp/x")
    assert storage_url(None, out) == "sqlite:////tmp/x/study.db"
    assert storage_url("journal:/tmp/j.log", out) == "journal:/tmp/j.log"
    assert storage_url("/tmp/j.log", out) == "journal:/tmp/j.log"
    assert storage_url("postgresql://u:pw@h/db", out) == "postgresql://u:pw@h/db"
    with pytest.raises(SandboxError, match="storage 'redis://h' is not valid; expected sqlite:///FILE"):
        storage_url("redis://h", out)


# --------------------------------------------------------------------------------- the objective, with a fake train
def fake_train(psnr_of, calls=None, fail_on=None):
    """A stand-in for engine.train: validation PSNR rises to psnr_of(config) over 4 evaluations."""

    def train(config, on_eval=None, resume=None, progress=False, echo=None):
        if calls is not None:
            calls.append((config, resume))
        if fail_on and fail_on in str(config.mixer):
            raise ValueError(f"mixer {config.mixer} exploded")
        target = psnr_of(config)
        for i, step in enumerate((2, 4, 6, 8)):
            if on_eval is not None:
                on_eval(step, {"psnr": target - (3 - i), "ssim": 0.5, "step": step, "wall": step, "iters_per_sec": 1})
        return SimpleNamespace(
            final={"embedded": {"psnr": target + 0.01 * config.seed, "ssim": 0.8}},
            params=1000,
            macs_per_mpx=10,
            history=[{"wall": 60.0}],
            step=8,
            train_iters_per_sec=2.0,
        )

    return train


def k_psnr(config) -> float:
    return {"0": 25.0, "1": 26.0, "5": 27.0, "10": 20.0}.get(str(config.mixer).rsplit("=", 1)[-1], 28.0)


def opts(tmp_path, **kw) -> SweepOptions:
    base = dict(study="hco_k", trials=7, out=tmp_path, progress=False, heartbeat=1, pruner="none", seeds=1)
    return SweepOptions(**{**base, **kw})


def test_grid_study_runs_every_setting_once_and_tables_mean_and_std(tmp_path):
    spec = load_study_spec("hco_k", STUDIES)
    calls = []
    counts = run_worker(spec, opts(tmp_path, seeds=2), fake_train(k_psnr, calls))
    assert counts["COMPLETE"] == 7 and counts["done"] == 7
    assert len(calls) == 14 and sorted({c.seed for c, _ in calls}) == [0, 1]
    study = load_sqlite_study(tmp_path, "hco_k")
    rows = ablation_rows(study, spec)
    assert [r["setting"] for r in rows] == [spec.label(v) for v in spec.grid()]  # the paper's order
    k5 = rows[2]
    assert k5["setting"] == "fixed k=5" and k5["runs"] == 2
    assert k5["psnr"] == pytest.approx(27.005) and k5["std"] == pytest.approx(0.00707107, rel=1e-4)
    paths = write_reports(study, spec, tmp_path, storage_url(None, tmp_path))
    table = paths["table"].read_text()
    assert "| fixed k=5 | 27.005 ± 0.007 | 2 |" in table
    assert "| predicted k, shared per stage | **28.005 ± 0.007** |" in table
    rows_csv = list(csv.DictReader(paths["csv"].open()))
    assert len(rows_csv) == 7 and {r["state"] for r in rows_csv} == {"COMPLETE"}
    assert json.loads(rows_csv[0]["attr_psnr_seeds"]) == [25.0, 25.01]
    for key in ("history_png", "importance_png", "history_html", "importance_html"):
        assert paths[key].stat().st_size > 1000, key
    # a second command with the same options finds the study finished and runs nothing
    calls.clear()
    run_worker(spec, opts(tmp_path, seeds=2), fake_train(k_psnr, calls))
    assert calls == []


def test_median_pruner_stops_a_trial_below_the_median(tmp_path):
    spec = load_study_spec("hco_k", STUDIES)
    run_worker(spec, opts(tmp_path, trials=4, pruner="median"), fake_train(k_psnr))
    study = load_sqlite_study(tmp_path, "hco_k")
    states = {t.user_attrs["setting"]: t.state.name for t in study.trials}
    assert states == {"fixed k=0": "COMPLETE", "fixed k=1": "COMPLETE", "fixed k=5": "COMPLETE", "fixed k=10": "PRUNED"}
    table = (write_reports(study, spec, tmp_path, storage_url(None, tmp_path))["table"]).read_text()
    assert "| fixed k=10 | pruned |" in table


def test_tpe_sampler_on_the_mixer_study_and_the_trial_count(tmp_path):
    spec = load_study_spec("mixer", STUDIES, list_mixers())
    calls = []
    counts = run_worker(spec, opts(tmp_path, study="mixer", trials=5, sampler=None), fake_train(lambda c: 30.0, calls))
    assert counts["COMPLETE"] == 5 and len(calls) == 5
    lrs = [c.lr for c, _ in calls]
    assert all(2e-4 <= lr <= 2e-3 for lr in lrs) and len(set(lrs)) == 5
    assert {c.arch_options["embed_dim"] for c, _ in calls} <= {16, 24, 32, 48}


def test_a_trial_that_raises_is_failed_with_its_error_and_the_study_goes_on(tmp_path):
    spec = load_study_spec("hco_k", STUDIES)
    counts = run_worker(spec, opts(tmp_path, trials=3), fake_train(k_psnr, fail_on="k=1"))
    assert counts["COMPLETE"] == 2 and counts["error"] == 1 and counts["done"] == 3
    study = load_sqlite_study(tmp_path, "hco_k")
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert failed[0].user_attrs["error"] == "ValueError: mixer hco:k_mode=fixed,k=1 exploded"
    table = write_reports(study, spec, tmp_path, storage_url(None, tmp_path))["table"].read_text()
    assert "| fixed k=1 | failed: ValueError: mixer hco:k_mode=fixed,k=1 exploded |" in table


def test_resuming_with_other_settings_is_refused(tmp_path):
    spec = load_study_spec("hco_k", STUDIES)
    run_worker(spec, opts(tmp_path, trials=1), fake_train(k_psnr))
    with pytest.raises(SandboxError, match=r"was made with other settings \(seeds differ\)"):
        prepare_study(spec, opts(tmp_path, trials=1, seeds=3))


def test_grid_sampler_needs_a_finite_space(tmp_path):
    spec = load_study_spec("mixer", STUDIES, list_mixers())
    with pytest.raises(SandboxError, match="--sampler grid needs a finite space; parameter 'lr' is a float range"):
        prepare_study(spec, opts(tmp_path, study="mixer", sampler="grid"))


def test_journal_storage(tmp_path):
    spec = load_study_spec("hco_k", STUDIES)
    o = opts(tmp_path, trials=2, storage=f"journal:{tmp_path / 'journal.log'}")
    counts = run_worker(spec, o, fake_train(k_psnr))
    assert counts["COMPLETE"] == 2 and (tmp_path / "journal.log").stat().st_size > 0


# ------------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_tiny_study_end_to_end_on_sqlite(tmp_path):
    out = tmp_path / "sweep"
    r = cli("--study", "hco_k", "--trials", "3", *TINY, "--seeds", "2", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    study = load_sqlite_study(out, "hco_k")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    for t in study.trials:
        assert t.user_attrs["seeds"] == [0, 1]
        finals = []
        for run_dir in map(Path, t.user_attrs["run_dirs"]):
            assert (run_dir / "results.json").is_file() and (run_dir / "per_image.csv").is_file()
            finals.append(json.loads((run_dir / "results.json").read_text())["final"]["embedded"]["psnr"])
        assert t.value == pytest.approx(sum(finals) / 2)
    assert "| fixed k=0 |" in r.stdout and "optuna-dashboard sqlite:///" in r.stdout
    table = (out / "ablation.md").read_text()
    assert "| fixed k=1 |" in table and "(n=2)" in table and "Δ vs fixed k=0 [95% CI]" in table
    assert "**Resolution**" in table  # paired on the engine's per_image.csv
    for name in ("trials.csv", "ablation.md", "ablation.csv", "forest.png", "history.png", "history.html",
                 "importance.png"):  # fmt: skip
        assert (out / name).is_file(), name


def _wait_for(predicate, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _running_with_checkpoint(db: Path):
    """(trial number, run dir) of a RUNNING trial whose run has a checkpoint, read straight from the SQLite file."""
    if not db.exists():
        return None
    con = sqlite3.connect(db, timeout=30)
    try:
        rows = con.execute(
            "select t.number, a.value_json from trials t join trial_user_attributes a on a.trial_id = t.trial_id "
            "where t.state = 'RUNNING' and a.key = 'run_dirs'"
        ).fetchall()
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()
    for number, dirs in rows:
        for d in json.loads(dirs):
            if (Path(d) / "checkpoints" / "last.pth").is_file() and number >= 1:
                return number, Path(d)
    return None


@pytest.mark.slow
def test_worker_killed_mid_trial_then_resumed(tmp_path):
    out = tmp_path / "sweep"
    args = ["--study", "hco_k", "--trials", "3", *TINY, "--set", "iters=40", "--out", out]
    proc = cli(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        number, run_dir = _wait_for(lambda: _running_with_checkpoint(out / "study.db"), 300, "trial 1 to checkpoint")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert number == 1 and proc.returncode == -signal.SIGKILL
    study = load_sqlite_study(out, "hco_k")
    assert [t.state.name for t in study.trials][:2] == ["COMPLETE", "RUNNING"]
    first_value = study.trials[0].value

    r = cli(*args)  # the same command resumes
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    study = load_sqlite_study(out, "hco_k")
    states = [t.state.name for t in study.trials]
    assert states.count("COMPLETE") == 3 and states[1] == "FAIL" and len(states) == 4
    assert study.trials[0].value == first_value  # completed trials kept
    retry = study.trials[3]
    assert retry.system_attrs["failed_trial"] == 1 and retry.user_attrs["setting"] == "fixed k=1"
    assert retry.user_attrs["run_dirs"] == [str(run_dir)]  # the killed run was resumed, not restarted
    events = [json.loads(line)["event"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert events.count("start") == 1 and events.count("resume") == 1
    assert "trial 3 retries trial 1 (fixed k=1)" in r.stdout
    assert "| fixed k=1 |" in (out / "ablation.md").read_text()


def _check_parallel_study(study, n: int) -> None:
    trials = [t for t in study.trials if not t.user_attrs.get("surplus")]
    assert sum(t.state.name == "COMPLETE" for t in trials) == n, [t.state.name for t in study.trials]
    settings = [t.user_attrs["setting"] for t in trials]
    assert len(set(settings)) == n  # no setting run twice
    dirs = [d for t in trials for d in t.user_attrs["run_dirs"]]
    assert len(set(dirs)) == n
    for d in dirs:  # each run trained once, by one worker
        events = [json.loads(line)["event"] for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]
        assert events.count("start") == 1 and "resume" not in events


@pytest.mark.slow
def test_two_workers_share_one_sqlite_storage(tmp_path):
    out = tmp_path / "sweep"
    r = cli("--study", "hco_k", "--trials", "4", "--workers", "2", *TINY, "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    _check_parallel_study(load_sqlite_study(out, "hco_k"), 4)
    assert "[worker 0] trial" in r.stdout and "[worker 1] trial" in r.stdout


@pytest.mark.slow
def test_two_workers_share_a_postgresql_server(tmp_path, postgres_url):
    out = tmp_path / "sweep"
    name = f"hco_k_{int(time.time() * 1000)}"
    r = cli("--study", "hco_k", "--trials", "3", "--workers", "2", *TINY, "--out", out, "--storage", postgres_url,
            "--study-name", name)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    from sandbox.sweep import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(postgres_url, heartbeat=None))
    _check_parallel_study(study, 3)
    assert not (out / "study.db").exists()


def test_unreachable_storage_is_one_line(tmp_path):
    r = cli("--study", "hco_k", "--trials", "1", "--storage", "postgresql://nobody@127.0.0.1:9/none", "--out", tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open storage postgresql://nobody@127.0.0.1:9/none:")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--study", "nope"], "unknown study 'nope'; available: hco_k"),
        (["--study", "hco_k", "--trials", "0"], "--trials 0 is not valid; expected an integer >= 1"),
        (["--study", "hco_k", "--budget-minutes", "-1"], "--budget-minutes -1 is not valid"),
        (["--study", "hco_k", "--sampler", "cmaes"], "--sampler 'cmaes' is not valid; expected tpe, grid or random"),
        (["--study", "hco_k", "--pruner", "sha"], "--pruner 'sha' is not valid; expected patient, median, hyperband"),
        (["--study", "hco_k", "--seeds", "0"], "--seeds 0 is not valid; expected an integer >= 1"),
        (["--study", "hco_k", "--seeds", "-2"], "--seeds -2 is not valid; expected an integer >= 1"),
        (["--study", "hco_k", "--prune-warmup", "1.5"], "--prune-warmup 1.5 is not valid"),
        (["--study", "hco_k", "--prune-margin", "-0.1"], "--prune-margin -0.1 is not valid; expected dB >= 0"),
        (["--study", "hco_k", "--baseline", "k=5"], "--baseline 'k=5' is not one of the settings: 'fixed k=0', "),
        (["--study", "hco_k", "--set", "lrr=1"], "has no field 'lrr'; did you mean 'lr'?"),
        (["--study", "hco_k", "--task", "denoize"], "unknown task 'denoize'"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    spec = importlib.util.spec_from_file_location("sandbox_sweep_cli", SWEEP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as e:
        from sandbox.cli import run_main

        run_main(module.main, [*args, "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "o").exists()  # nothing written


def test_a_range_named_after_a_run_config_field_sets_that_field(tmp_path):
    """The RunConfig declaration is the sweep's parameter name too: a range called lr goes to RunConfig.lr."""
    path = tmp_path / "s.yaml"
    path.write_text("params:\n  lr: {low: 1.0e-4, high: 1.0e-3, log: true}\n  iters: {low: 5, high: 9}\n")
    spec = load_study_spec(str(path), STUDIES)
    assert [(p.name, p.key) for p in spec.params] == [("lr", "lr"), ("iters", "iters")]
    assert spec.overrides({"lr": 5e-4, "iters": 7}) == {"lr": 5e-4, "iters": 7}


def test_sweep_uses_optuna_public_api_only():
    source = (ROOT / "sandbox" / "sweep.py").read_text()
    assert not re.search(r"\._storage\b|\._trial_id\b|\._system_attrs\b", source)


def test_frozen_trial_gives_an_enqueued_trials_fixed_params_and_a_sampled_trial_none():
    import optuna

    from sandbox.sweep import frozen_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"x": 1})
    seen = []

    def objective(trial):
        seen.append(frozen_trial(trial.study, trial.number).system_attrs.get("fixed_params"))
        return trial.suggest_int("x", 0, 2)

    study.optimize(objective, n_trials=2)
    assert seen == [{"x": 1}, None]
