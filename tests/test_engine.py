"""The training engine (sandbox.engine) and experiments/run.py: run directory, resume after SIGKILL, divergence,
on_eval, one-line errors for bad input, config precedence. Everything runs on the embedded default (no data root)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sandbox import engine
from sandbox.checkpoint import torch_load
from sandbox.config import RunConfig, apply_overrides
from sandbox.engine import (
    PatchBatches,
    RunResult,
    TrainingDiverged,
    build_network,
    build_task_from,
    lr_factor,
    quick_eval_sets,
    train,
)
from sandbox.errors import SandboxError

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "experiments" / "run.py"
KILLER = ROOT / "tests" / "kill_during_run.py"  # run.py with a SIGKILL from a TrainCallback
TINY_ARGS = [
    "--preset", "tiny", "--mixer", "conv", "--iters", "16", "--batch-size", "2", "--patch-size", "32",
    "--set", "eval_every=4", "--set", "save_every=4", "--set", "val_images=1", "--set", "val_crop=32",
    "--set", "arch_options={'drop_path_rate': 0.1}",  # stochastic depth: the global torch RNG must resume too
]  # fmt: skip


def tiny(out: Path, **changes) -> RunConfig:
    """A run of a few seconds on the embedded default."""
    cfg = RunConfig(
        arch="ir",
        mixer="conv",
        preset="tiny",
        patch_size=32,
        batch_size=2,
        iters=12,
        eval_every=4,
        save_every=4,
        val_images=1,
        val_crop=32,
        out=str(out),
        name="tiny",
        data_root=None,
    )
    return dataclasses.replace(cfg, **changes)


pytestmark = pytest.mark.usefixtures("one_thread", "no_data")  # tests/conftest.py


@pytest.fixture(scope="module")
def run_module():
    spec = importlib.util.spec_from_file_location("sandbox_run_cli", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny hco run, with the on_eval calls it made."""
    out = tmp_path_factory.mktemp("engine") / "runs"
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SANDBOX_DATA", raising=False)
        result = train(tiny(out, mixer="hco"), on_eval=lambda step, m: calls.append((step, m)), progress=False)
    return result, calls


def cli(*args, env_extra=None, timeout=300, kill=None):
    """experiments/run.py in a subprocess on the embedded default; ``kill="after:8"`` SIGKILLs it right after the
    checkpoint of step 8, ``kill="during:8"`` in the middle of the save after that one (tests/kill_during_run.py)."""
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_DATA"}
    env.update({"OMP_NUM_THREADS": "1", **(env_extra or {})})
    script = [str(KILLER), kill] if kill else [str(RUN)]
    return subprocess.run(
        [sys.executable, *script, "--no-progress", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


# ------------------------------------------------------------------------------------------------- run directory
def test_run_directory_contents(trained):
    result, _ = trained
    assert isinstance(result, RunResult) and result.stopped == "iters" and result.step == 12
    run = result.run_dir
    assert run.name == "tiny"
    for rel in ("config.yaml", "checkpoints/last.pth", "checkpoints/best.pth", "metrics.jsonl", "results.json"):
        assert (run / rel).is_file(), rel
    # config.yaml is the resolved config and reads back as a RunConfig
    import yaml

    saved = apply_overrides(RunConfig(), yaml.safe_load((run / "config.yaml").read_text()))
    assert saved.mixer == "hco" and saved.iters == 12 and saved.name == "tiny"
    # metrics.jsonl: one JSON object per line, validation at 4, 8, 12
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "val"] == [4, 8, 12]
    assert events[0]["event"] == "start" and events[-1]["event"] == "final"
    assert any(e["event"] == "stop" and e["stopped"] == "iters" for e in events)
    # results
    record = json.loads((run / "results.json").read_text())
    assert set(record["final"]) == {"embedded"} and record["final"]["embedded"]["images"] == 4
    for key in ("psnr", "ssim", "input_psnr"):
        assert record["final"]["embedded"][key] == pytest.approx(result.final["embedded"][key])
    assert record["params"] == result.params > 0 and result.macs_per_mpx > 0 and result.infer_ms_per_mpx > 0
    assert result.train_iters_per_sec > 0 and len(result.history) == 3
    assert result.best_psnr == max(h["psnr"] for h in result.history)
    md = (run / "results.md").read_text()
    assert "| embedded | 4 |" in md and "input PSNR" in md and "MACs" in md
    crops = cv2.imread(str(run / "crops.png"), cv2.IMREAD_UNCHANGED)
    assert crops is not None and crops.shape[1] == 3 * 32 + 2 * 4  # clean | degraded | restored


def test_checkpoints_are_self_describing_and_evaluate_the_ema(trained):
    from sandbox.evaluate import load_network

    result, _ = trained
    last = torch_load(result.run_dir / "checkpoints" / "last.pth")
    for key in ("arch_spec", "config", "model", "ema", "optimizer", "scheduler", "step", "best_psnr", "rng"):
        assert key in last, key
    assert last["step"] == 12 and last["history"] == result.history and last["wall"] > 0
    assert last["arch_spec"]["mixer"] == "hco" and last["arch_spec"]["in_chans"] == 1
    assert tuple(last["optimizer"]["param_groups"][0]["betas"]) == result.config.betas == (0.9, 0.999)
    task = build_task_from(result.config)
    net = load_network(None, str(result.run_dir / "checkpoints" / "last.pth"), task)
    for k, v in net.state_dict().items():  # the evaluator picks the EMA weights, not the raw training weights
        assert torch.equal(v, last["ema"][k]), k
    assert any(not torch.equal(last["ema"][k], last["model"][k]) for k in last["model"])
    best = torch_load(result.run_dir / "checkpoints" / "best.pth")
    assert best["best_psnr"] == result.best_psnr


def test_on_eval_gets_the_documented_metrics(trained):
    _, calls = trained
    assert [s for s, _ in calls] == [4, 8, 12]
    for step, metrics in calls:
        assert set(metrics) == {"psnr", "ssim", "step", "wall", "iters_per_sec"}
        assert metrics["step"] == step and metrics["wall"] > 0 and metrics["iters_per_sec"] > 0


def test_name_is_never_overwritten_and_budget_stops(tmp_path):
    (tmp_path / "tiny").mkdir()  # taken by an older run
    result = train(tiny(tmp_path, iters=1000, budget_minutes=0.002, eval_every=0), progress=False)
    assert result.run_dir == tmp_path / "tiny-2"
    assert result.stopped == "budget" and 0 < result.step < 1000
    assert result.history[-1]["step"] == result.step  # validated at the stop
    assert torch_load(result.run_dir / "checkpoints" / "last.pth")["step"] == result.step


@pytest.mark.parametrize("native", [True, False])
def test_bf16_autocast_trains_on_cpu(tmp_path, monkeypatch, capsys, native):
    """amp=bf16 on the CPU trains (the 30-minute recipe uses it); a CPU without bf16 kernels gets a note, not a
    silent slowdown."""
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: native)
    result = train(tiny(tmp_path, iters=2, eval_every=0, amp="bf16", device="cpu"), progress=True)
    header = capsys.readouterr().out
    assert "device cpu, bf16" in header
    assert (engine.BF16_CPU_NOTE in header) is not native
    assert result.step == 2 and np.isfinite(result.final[next(iter(result.final))]["psnr"])


@pytest.mark.parametrize("flags,native", [({"avx512f", "avx512_bf16"}, True), ({"amx_bf16"}, True), ({"sse"}, False)])
def test_amp_auto_uses_bf16_where_the_cpu_has_it(monkeypatch, flags, native):
    """amp=auto: bf16 on CUDA and on CPUs with bf16 instructions; an AVX512 CPU without them (oneDNN emulates bf16
    there) stays in fp32. bf16 and off are what they say."""
    from sandbox import optim

    monkeypatch.setattr(optim, "_cpu_flags", lambda: flags)  # the bf16 helpers live in sandbox.optim
    cpu = torch.device("cpu")
    assert engine.cpu_has_bf16() is native
    assert engine.use_bf16("auto", cpu) is native
    assert engine.use_bf16("auto", torch.device("cuda")) is True
    assert engine.use_bf16("bf16", cpu) is True and engine.use_bf16("off", torch.device("cuda")) is False


class Pruned(Exception):
    pass


def test_raising_on_eval_stops_and_keeps_the_checkpoint(tmp_path):
    def prune(step, metrics):
        if step >= 4:
            raise Pruned

    with pytest.raises(Pruned):
        train(tiny(tmp_path, save_every=100), on_eval=prune, progress=False)
    run = tmp_path / "tiny"
    assert torch_load(run / "checkpoints" / "last.pth")["step"] == 4
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["event"] == "stop" and events[-1]["stopped"] == "pruned"
    assert not (run / "results.json").exists()


def test_divergence_is_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged) as info:
        train(tiny(tmp_path, lr=1e6, iters=30, save_every=1, eval_every=0), progress=False)
    message = str(info.value)
    assert "\n" not in message and "loss became" in message and "lower --lr" in message
    run = tmp_path / "tiny"
    assert str(run / "checkpoints" / "last.pth") in message
    iteration = int(message.split("at iteration ")[1].split(";")[0])
    last = torch_load(run / "checkpoints" / "last.pth")
    assert last["step"] == iteration - 1  # the step before the divergence, never overwritten after it
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert events[-1]["stopped"] == "nan"


# -------------------------------------------------------------------------------------------------------- resume
@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    out = tmp_path / "runs"
    killed = cli(*TINY_ARGS, "--out", out, "--name", "a", kill="after:8")
    assert killed.returncode == -9, killed.stderr
    run = out / "a"
    assert torch_load(run / "checkpoints" / "last.pth")["step"] == 8 and not (run / "results.json").exists()
    resumed = cli("--resume", run)
    assert resumed.returncode == 0, resumed.stderr
    assert f"run directory: {run}" in resumed.stdout
    whole = cli(*TINY_ARGS, "--out", out, "--name", "b", "--set", "workers=1")  # the worker count changes nothing
    assert whole.returncode == 0, whole.stderr
    a, b = (torch_load(out / n / "checkpoints" / "last.pth") for n in ("a", "b"))
    assert a["step"] == b["step"] == 16
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    ra, rb = (json.loads((out / n / "results.json").read_text()) for n in ("a", "b"))
    assert ra["final"] == rb["final"] and ra["best_psnr"] == rb["best_psnr"]
    assert [h["psnr"] for h in ra["history"]] == [h["psnr"] for h in rb["history"]]
    events = [json.loads(line)["event"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "resume" in events and events[-1] == "final"

    def timeline(name):  # train/val events without times: the killed-and-resumed log equals the uninterrupted one
        lines = (out / name / "metrics.jsonl").read_text().splitlines()
        keep = ("step", "lr", "psnr", "ssim")  # not "loss": a train event averages the iterations since the last one
        return [{k: e[k] for k in keep if k in e} for e in map(json.loads, lines) if e["event"] in ("train", "val")]

    assert timeline("a") == timeline("b")


def test_a_kill_during_a_save_leaves_no_orphan_after_resume(tmp_path):
    """A SIGKILL in the middle of a checkpoint save leaves its temporary file (.last.pth.*.tmp or .best.pth.*.tmp);
    the resumed run removes it and finishes."""
    out = tmp_path / "runs"
    killed = cli(*TINY_ARGS, "--out", out, "--name", "a", "--iters", "8", kill="during:4")
    assert killed.returncode == -9, killed.stderr
    ckpts = out / "a" / "checkpoints"
    orphans = sorted(p.name for p in ckpts.glob(".*.tmp"))
    assert len(orphans) == 1 and orphans[0].startswith((".last.pth.", ".best.pth.")), orphans
    resumed = cli("--resume", out / "a")
    assert resumed.returncode == 0, resumed.stderr
    assert not list(ckpts.glob(".*.tmp")) and torch_load(ckpts / "last.pth")["step"] == 8


def test_orphan_temps_are_removed_on_the_next_save_and_on_resume(tmp_path):
    """Temporary files of interrupted saves (4 kills leave 4) go at the next save, and on resume before training."""
    ckpts = tmp_path / "tiny" / "checkpoints"

    def plant(n):
        for i in range(n):
            (ckpts / f".last.pth.kill{i}.tmp").write_bytes(b"partial")
        (ckpts / f".best.pth.kill{n}.tmp").write_bytes(b"partial")

    class Orphans(engine.TrainCallback):
        seen: list = []

        def on_checkpoint_saved(self, step, path):
            assert path == ckpts / "last.pth"
            self.seen.append((step, len(list(ckpts.glob(".*.tmp")))))
            plant(4)  # as if 4 later saves had been killed: the next save must clean them up

    first = train(tiny(tmp_path, iters=8, eval_every=4, save_every=4), progress=False, callbacks=[Orphans()])
    assert Orphans.seen == [(4, 0), (8, 0)]  # every save found the orphans of the step before removed
    assert len(list(ckpts.glob(".*.tmp"))) == 5  # planted after the last save
    train(dataclasses.replace(first.config, iters=9), resume=first.run_dir, progress=False)
    assert not list(ckpts.glob(".*.tmp"))


def test_checkpoints_record_threads_and_a_resume_with_other_threads_warns(tmp_path, capfd):
    first = train(tiny(tmp_path, iters=2, eval_every=0, save_every=0), progress=False)
    last = first.run_dir / "checkpoints" / "last.pth"
    assert torch_load(last)["threads"] == torch.get_num_threads() == 1  # the one_thread fixture
    same = train(dataclasses.replace(first.config, iters=3), resume=first.run_dir, progress=False)
    assert same.step == 3 and "thread" not in capfd.readouterr().err
    torch.set_num_threads(2)
    try:
        other = train(dataclasses.replace(first.config, iters=4), resume=first.run_dir, progress=False)
    finally:
        torch.set_num_threads(1)
    err = [line for line in capfd.readouterr().err.splitlines() if "thread" in line]
    assert other.step == 4 and len(err) == 1, err
    assert "resuming with 2 intra-op thread(s)" in err[0] and "written with 1" in err[0] and "bit-identical" in err[0]
    events = [json.loads(line) for line in (first.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["threads"] for e in events if e["event"] in ("start", "resume")] == [1, 1, 2]


def test_resume_rewinds_the_log_to_the_checkpoint(tmp_path):
    from sandbox.engine import _Events

    events = _Events(tmp_path / "metrics.jsonl")
    events("start", config={})
    for step in (4, 8, 12):
        events("train", step=step, loss=1.0)
        events("val", step=step, psnr=20.0)
    with open(events.path, "a") as f:
        f.write('{"event": "train", "st')  # a line cut by the kill
    assert events.rewind(8) == 3
    kept = [(e["event"], e.get("step")) for e in map(json.loads, events.path.read_text().splitlines())]
    assert kept == [("start", None), ("train", 4), ("val", 4), ("train", 8), ("val", 8)]
    assert events.rewind(8) == 0


def test_resume_may_extend_iters(tmp_path):
    first = train(tiny(tmp_path, iters=4, eval_every=0, save_every=0), progress=False)
    assert first.step == 4 and [h["step"] for h in first.history] == [4]
    more = train(dataclasses.replace(first.config, iters=6), resume=first.run_dir, progress=False)
    assert more.run_dir == first.run_dir and more.step == 6 and [h["step"] for h in more.history] == [4, 6]
    import yaml

    assert yaml.safe_load((first.run_dir / "config.yaml").read_text())["iters"] == 6
    events = [json.loads(line) for line in (first.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert next(e for e in events if e["event"] == "resume")["changes"] == {"iters": 6}


def test_resume_refuses_shape_changes_and_non_runs(trained, tmp_path):
    result, _ = trained
    with pytest.raises(SandboxError, match="cannot change mixer"):
        train(dataclasses.replace(result.config, mixer="conv"), resume=result.run_dir, progress=False)
    with pytest.raises(SandboxError, match="not a run directory"):
        train(None, resume=tmp_path, progress=False)
    (tmp_path / "config.yaml").write_text("iters: 3\n")
    with pytest.raises(SandboxError, match="no checkpoint"):
        train(None, resume=tmp_path, progress=False)


def test_lr_schedule_warms_up_and_decays_to_the_end_of_iters_or_budget():
    c = RunConfig(iters=100, warmup_iters=10, lr=1.0)
    assert lr_factor(c, 0) == pytest.approx(0.1) and lr_factor(c, 9) == pytest.approx(1.0)
    assert lr_factor(c, 10) == pytest.approx(1.0)
    assert lr_factor(c, 55) == pytest.approx(0.5) and lr_factor(c, 100) == pytest.approx(0.0)
    # a budget-bound run follows the larger of its iteration and its time progress
    b = dataclasses.replace(c, iters=10**6, budget_minutes=1.0)
    assert lr_factor(b, 50, wall=30.0) == pytest.approx(0.5)
    assert lr_factor(b, 50, wall=60.0) == pytest.approx(0.0)
    assert lr_factor(b, 5, wall=60.0) == pytest.approx(0.6)  # warm-up first
    m = dataclasses.replace(c, schedule="multistep", warmup_iters=0, milestones=(0.5, 0.9), gamma=0.1)
    assert [lr_factor(m, i) for i in (49, 50, 89, 90)] == pytest.approx([1.0, 0.1, 0.1, 0.01])


@pytest.mark.parametrize("loss", ["l1", "l2", "charbonnier"])
def test_losses_match_their_formulas(loss):
    from sandbox.engine import _loss

    out, target = torch.tensor([0.5, -0.25, 0.0]), torch.zeros(3)
    expected = {"l1": 0.25, "l2": (0.25 + 0.0625) / 3, "charbonnier": (0.5 + 0.25 + 1e-3) / 3}[loss]
    got = _loss(out, target, RunConfig(loss=loss, charbonnier_eps=1e-3))
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_batches_depend_on_seed_and_step_only():
    from sandbox.data import embedded_split

    task = build_task_from(RunConfig())
    images = [img[..., None] for _, img in embedded_split(color=False)[0][:2]]
    ds = PatchBatches(images, task, 16, 3, seed=5)
    c5, d5 = ds[5]
    assert c5.shape == (3, 1, 16, 16) and c5.dtype == torch.float32 and 0 <= c5.min() and c5.max() <= 1
    ds[4]  # drawing another step first changes nothing
    assert torch.equal(ds[5][0], c5) and torch.equal(ds[5][1], d5)
    assert not torch.equal(ds[6][0], c5)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, sampler=[5], num_workers=1)
    c, d = next(iter(loader))
    assert torch.equal(c, c5) and torch.equal(d, d5)


def test_build_network_fills_the_options_it_takes():
    cfg = RunConfig(task="denoise_color", sigma=50, arch="ir", mixer="conv:kernel_size=5", preset="tiny")
    task = build_task_from(cfg)
    assert task.sigma == 50 and task.channels == 3
    net = build_network(cfg, task)
    assert net.arch_spec == {
        "name": "ir",
        "mixer": "conv:kernel_size=5",
        "preset": "tiny",
        "in_chans": 3,
        "task": "denoise_color",
    }
    net = build_network(dataclasses.replace(cfg, arch="swinir", arch_options={"embed_dim": 12}))
    assert "mixer" not in net.arch_spec and net.arch_spec["embed_dim"] == 12
    dncnn = build_network(RunConfig(arch="dncnn:variant=s,sigma=25"))
    assert dncnn.arch_spec["name"] == "dncnn"


# ----------------------------------------------------------------------------------------------------------- CLI
def test_config_file_flags_and_set_precedence(run_module, tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("iters: 7\nlr: 0.1\nbatch_size: 3\nmixer: pool\n")
    args = ["--config", f, "--iters", "9", "--mixer", "sepconv"]
    cfg = apply_overrides(RunConfig(), run_module.overrides_from(run_module.parse_args(list(map(str, args)))))
    assert (cfg.iters, cfg.lr, cfg.batch_size, cfg.mixer) == (9, 0.1, 3, "sepconv")  # flags beat --config
    sets = ["--set", "iters=11", "--set", "milestones=[0.5,0.8]", "--set", "ema=0", "--set", "mixer=conv:kernel_size=5"]
    sets += ["--set", "betas=0.9,0.99"]
    cfg = apply_overrides(RunConfig(), run_module.overrides_from(run_module.parse_args(list(map(str, args + sets)))))
    assert cfg.iters == 11 and cfg.milestones == (0.5, 0.8) and cfg.ema == 0.0 and isinstance(cfg.ema, float)
    assert cfg.mixer == "conv:kernel_size=5" and cfg.lr == 0.1 and cfg.betas == (0.9, 0.99)
    eval_sets = run_module.overrides_from(run_module.parse_args(["--eval-sets", "Set12, BSD68"]))["eval_sets"]
    assert eval_sets == ("Set12", "BSD68")


def test_default_command_evaluates_the_first_benchmark_only(run_module, tmp_path):
    with_data = quick_eval_sets(RunConfig(data_root=str(tmp_path)))
    assert with_data.eval_sets == ("Set12",)
    assert quick_eval_sets(RunConfig(task="jpeg_color", data_root=str(tmp_path))).eval_sets == ("LIVE1",)
    assert quick_eval_sets(RunConfig()).eval_sets is None  # no data: the embedded eval split
    args = run_module.parse_args(["--eval-sets", "all"])
    assert run_module.overrides_from(args)["eval_sets"] is None  # all: the task's benchmarks


def bad_cases(tmp_path: Path, trained_run: Path) -> list[tuple[list, str]]:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("iters: 10\nlr: 1e-3: 2\nseed: 1\n")
    other = tmp_path / "other_net"
    shutil.copytree(trained_run, other)
    text = (other / "config.yaml").read_text()
    (other / "config.yaml").write_text(text.replace("mixer: hco", "mixer: pool"))
    return [
        (["--mixer", "hcoo"], "unknown mixer 'hcoo'"),
        (["--arch", "irr"], "unknown network 'irr'"),
        (["--task", "denoize"], "unknown task 'denoize'"),
        (["--mixer", "conv:kernel=3"], "has no option 'kernel'"),
        (["--arch", "swinir", "--mixer", "conv"], "takes no mixer"),
        (["--arch", "caformer_s18"], "classification network"),
        (["--config", bad_yaml], "line 2"),
        (["--config", tmp_path / "missing.yaml"], "does not exist"),
        (["--budget-minutes", "-1"], "budget_minutes=-1"),
        (["--set", "lrr=1"], "did you mean 'lr'"),
        (["--set", "batch_size=2.5"], "expected int"),
        (["--set", "betas=0.9,1.5"], "betas=(0.9, 1.5) is not valid"),
        (["--resume", tmp_path / "nowhere"], "not a run directory"),
        (["--resume", other], "another network"),
        (["--resume", trained_run, "--mixer", "conv"], "cannot change mixer"),
    ]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_module, trained, tmp_path, capsys):
    from sandbox.cli import run_main

    out = tmp_path / "out"
    for args, expected in bad_cases(tmp_path, trained[0].run_dir):
        with pytest.raises(SystemExit) as info:
            run_main(run_module.main, [*map(str, args), "--out", str(out), "--no-progress"])
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2, (args, err)
        assert err.startswith("error: ") and "\n" not in err and expected in err, (args, err)
        assert not out.exists(), args


def test_bad_input_from_the_command_line(tmp_path):
    res = cli("--mixer", "hyena_pixl", "--out", tmp_path / "out")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().count("\n") == 0 and "did you mean 'hyena_pixel'" in res.stderr
    assert not (tmp_path / "out").exists()


def test_embedded_color_training_skips_gray_sources(tmp_path):
    from sandbox.engine import _train_images

    cfg = tiny(tmp_path, task="denoise_color")
    images, desc = _train_images(build_task_from(cfg), cfg, None)
    assert images and all(im.ndim == 3 and im.shape[2] == 3 for im in images) and "3 images" in desc
    gray, _ = _train_images(build_task_from(tiny(tmp_path)), tiny(tmp_path), None)
    assert len(gray) == 7 and all(im.shape[2] == 1 for im in gray)
    assert np.array_equal(gray[0][..., 0], __import__("sandbox.tasks").tasks.rgb_to_y_uint8(images[0]))
