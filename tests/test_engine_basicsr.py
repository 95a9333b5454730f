"""The BasicSR engine: options, datasets, the basicsr fixes, and a short CPU run + resume through BasicSR's pipeline."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("sandbox.compat.basicsr")  # torchvision shim first, then basicsr
pytest.importorskip("cv2")

from sandbox import build_arch, build_task, load_checkpoint  # noqa: E402
from sandbox.config import RunConfig  # noqa: E402
from sandbox.engine_basicsr import (  # noqa: E402
    NEVER,
    OPTIONS_FILE,
    _locate_resume,
    basicsr_command,
    basicsr_options,
    experiment_dir,
    latest_state,
    train_basicsr,
)
from sandbox.errors import OptionError, SandboxError  # noqa: E402


def tiny(**kw) -> RunConfig:
    base = dict(
        task="denoise",
        arch="ir",
        mixer="hco",
        preset="tiny",
        patch_size=32,
        batch_size=2,
        iters=6,
        eval_every=3,
        save_every=3,
        log_every=1,
        val_images=1,
        val_crop=32,
        data_root=None,
        device="cpu",
    )
    base.update(kw)
    return RunConfig(**base)


@pytest.fixture(autouse=True)
def _no_data_root(monkeypatch):
    monkeypatch.delenv("SANDBOX_DATA", raising=False)  # the embedded split, whatever the machine has


def _paths(opt: dict) -> list[str]:
    return [opt["root_path"]] + [v for v in opt["path"].values() if isinstance(v, str)]


# ----------------------------------------------------------------------------------------------------- options
def test_options_contents_and_file(tmp_path):
    run_dir = tmp_path / "runs" / "exp1"
    opt = basicsr_options(tiny(), run_dir)
    assert opt["name"] == "exp1" and opt["model_type"] == "SRModel" and opt["num_gpu"] == 0
    assert opt["network_g"] == {"type": "SandboxIR", "preset": "tiny", "task": "denoise", "in_chans": 1, "mixer": "hco"}
    train = opt["datasets"]["train"]
    assert train["type"] == "SandboxDegradationDataset" and train["patch_size"] == 32
    assert train["batch_size_per_gpu"] == 2 and train["task"]["name"] == "denoise" and train["data_root"] is None
    val = opt["datasets"]["val"]
    assert val["type"] == "SandboxEvalDataset" and val["val_images"] == 1 and val["val_crop"] == 32
    assert opt["train"]["total_iter"] == 6 and opt["train"]["ema_decay"] == 0.999
    assert opt["train"]["optim_g"] == {"type": "Adam", "lr": 2e-4, "weight_decay": 0.0, "betas": [0.9, 0.999]}
    assert opt["train"]["scheduler"] == {
        "type": "CosineAnnealingRestartLR",
        "periods": [6],
        "restart_weights": [1.0],
        "eta_min": 0.0,
    }
    assert opt["train"]["pixel_opt"]["type"] == "CharbonnierLoss"
    assert opt["train"]["pixel_opt"]["eps"] == pytest.approx(1e-6)  # basicsr: sqrt(d^2 + eps)
    assert opt["val"]["val_freq"] == 3
    for name in ("psnr", "ssim"):
        assert opt["val"]["metrics"][name] == {"type": f"calculate_{name}", "crop_border": 0, "test_y_channel": False}
    assert opt["logger"]["save_checkpoint_freq"] == 3 and opt["logger"]["print_freq"] == 1
    assert opt["logger"]["use_tb_logger"] is False
    # every path absolute, under the run dir; BasicSR's derivation from root_path gives the same ones
    assert all(os.path.isabs(p) and Path(p).is_relative_to(run_dir) for p in _paths(opt))
    assert opt["root_path"] == str(run_dir)
    exp = run_dir / "experiments" / "exp1"
    assert opt["path"]["experiments_root"] == str(exp) == str(experiment_dir(run_dir))
    assert opt["path"]["training_states"] == str(exp / "training_states")
    # the file holds the same dict and names the command to run it
    text = (run_dir / OPTIONS_FILE).read_text()
    assert yaml.safe_load(text) == opt
    assert f"python -m sandbox.compat.basicsr_train -opt {run_dir / OPTIONS_FILE}" in text
    assert basicsr_command(run_dir, nproc=4).startswith("torchrun --nproc_per_node=4 -m sandbox.compat.basicsr_train")
    assert basicsr_command(run_dir, nproc=4).endswith("--launcher pytorch")


def test_options_variants(tmp_path):
    cfg = tiny(
        task="jpeg_color",
        quality=20,
        arch="vheatir",
        arch_options={"embed_dim": 12},
        optimizer="adamw",
        weight_decay=0.01,
        betas=(0.9, 0.99),
        grad_clip=0.5,
        schedule="multistep",
        milestones=(0.5, 0.75),
        gamma=0.5,
        loss="l1",
        eval_every=0,
        save_every=0,
        amp="bf16",
    )
    opt = basicsr_options(cfg, tmp_path / "r")
    assert opt["network_g"] == {
        "type": "VHeatIR",
        "preset": "tiny",
        "task": "jpeg_color",
        "in_chans": 3,
        "embed_dim": 12,
    }
    assert opt["model_type"] == "SandboxSRModel" and opt["train"]["optim_g"]["type"] == "AdamW"
    assert opt["train"]["optim_g"]["betas"] == [0.9, 0.99]
    assert opt["train"]["grad_clip"] == 0.5
    assert opt["train"]["scheduler"] == {"type": "MultiStepLR", "milestones": [3, 4], "gamma": 0.5}
    assert opt["train"]["pixel_opt"]["type"] == "L1Loss"
    assert opt["datasets"]["train"]["task"] == {"name": "jpeg_color", "quality": 20, "quality_range": None}
    assert opt["val"]["val_freq"] == NEVER and opt["logger"]["save_checkpoint_freq"] == NEVER
    assert any("amp" in note for note in opt["sandbox"]["ignored"])
    assert basicsr_options(tiny(arch="swinir", val_images=0), tmp_path / "s")["network_g"]["type"] == "SandboxSwinIR"
    assert "val" not in basicsr_options(tiny(val_images=0), tmp_path / "s")
    with pytest.raises(OptionError, match="dncnn"):
        basicsr_options(tiny(arch="dncnn"), tmp_path / "x")
    with pytest.raises(SandboxError, match="channel"):
        basicsr_options(tiny(arch_options={"in_chans": 3}), tmp_path / "x")


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"betas": (0.9, 1.5)}, "betas"),
        ({"ema": 1.0}, "ema"),
        ({"patch_size": 4}, "patch_size"),
        ({"loss": "huber"}, "loss"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"schedule": "constant"}, "constant"),
    ],
)
def test_bad_options_fail_before_anything_is_written(tmp_path, bad, match):
    """The BasicSR engine applies the built-in engine's checks (a bad value never reaches BasicSR) plus its own."""
    with pytest.raises(OptionError, match=match):
        basicsr_options(tiny(**bad), tmp_path / "opt")
    with pytest.raises(OptionError, match=match):
        train_basicsr(tiny(out=str(tmp_path / "runs"), name="r", **bad))
    assert not (tmp_path / "opt").exists() and not (tmp_path / "runs").exists()


def test_locate_resume(tmp_path):
    run = tmp_path / "runs" / "r1"
    states = run / "experiments" / "r1" / "training_states"
    states.mkdir(parents=True)
    (states / "3.state").write_bytes(b"")
    (states / "12.state").write_bytes(b"")
    assert latest_state(run) == states / "12.state"
    assert _locate_resume(run) == (run, None)
    assert _locate_resume(run / "experiments" / "r1") == (run, None)
    assert _locate_resume(states / "3.state") == (run, states / "3.state")
    with pytest.raises(SandboxError, match="cannot resume"):
        _locate_resume(tmp_path)


# ---------------------------------------------------------------------------------------------------- datasets
def test_training_dataset_items():
    from sandbox.compat.basicsr_train import SandboxDegradationDataset, dihedral

    opt = {"task": {"name": "denoise_color", "sigma": 25}, "data_root": None, "patch_size": 24, "seed": 3}
    ds = SandboxDegradationDataset({**opt, "patches_per_epoch": 10})
    assert len(ds) == 10
    item = ds[4]
    assert set(item) == {"lq", "gt", "lq_path", "gt_path"} and item["lq_path"].startswith("embedded/")
    assert item["gt"].shape == item["lq"].shape == (3, 24, 24) and item["gt"].dtype == torch.float32
    assert 0 <= item["gt"].min() and item["gt"].max() <= 1
    noise_std = (item["lq"] - item["gt"]).std().item() * 255
    assert 15 < noise_std < 35
    again = SandboxDegradationDataset({**opt, "patches_per_epoch": 10})[4]  # per-item seeding: reproducible
    assert torch.equal(again["lq"], item["lq"]) and torch.equal(again["gt"], item["gt"])
    ds.set_epoch(1)
    assert not torch.equal(ds[4]["lq"], item["lq"])  # a new epoch draws new patches
    resumed = SandboxDegradationDataset({**opt, "patches_per_epoch": 10, "resume_iter": 6})
    assert not torch.equal(resumed[4]["lq"], item["lq"])
    gray = SandboxDegradationDataset({**opt, "task": "jpeg:quality=10"})[0]
    assert gray["gt"].shape == (1, 24, 24)
    img = np.arange(12).reshape(3, 4)
    assert len({dihedral(img, m).tobytes() + bytes(dihedral(img, m).shape) for m in range(8)}) == 8


def test_eval_dataset_is_the_protocol_pair():
    from sandbox.compat.basicsr_train import SandboxEvalDataset
    from sandbox.data import embedded_split

    task = build_task("denoise_color")
    ds = SandboxEvalDataset({"task": task.spec, "data_root": None, "val_images": 2, "val_crop": 40})
    assert len(ds) == 2
    item = ds[0]
    assert item["gt"].shape == item["lq"].shape == (3, 40, 40)
    name, rgb = next((n, i) for n, i in embedded_split()[1] if i.ndim == 3)
    assert item["lq_path"] == f"embedded/{name}"
    h, w = rgb.shape[:2]
    bgr = np.ascontiguousarray(rgb[(h - 40) // 2 : (h - 40) // 2 + 40, (w - 40) // 2 : (w - 40) // 2 + 40, ::-1])
    gt, lq = task.prepare_eval(bgr)
    assert torch.equal(item["gt"], torch.from_numpy(gt.transpose(2, 0, 1).astype(np.float32) / 255))
    assert torch.equal(item["lq"], torch.from_numpy(lq.transpose(2, 0, 1).copy()))


# ------------------------------------------------------------------------------------------------------- fixes
def test_load_resume_state_cpu_auto_and_longer_schedule(tmp_path):
    """Fixes 2-4 in process: auto-resume from the absolute folder (cwd elsewhere), CPU map, schedule reshaped."""
    from basicsr.models.lr_scheduler import CosineAnnealingRestartLR

    from sandbox.compat.basicsr_train import apply_fixes, load_resume_state

    apply_fixes()
    import basicsr.train

    assert basicsr.train.load_resume_state is load_resume_state
    p = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.Adam([p], 1e-3)
    scheduler = CosineAnnealingRestartLR(optimizer, periods=[6], eta_min=0.0)
    states = tmp_path / "training_states"
    states.mkdir()
    for it in (3, 6):
        state = {"epoch": 0, "iter": it, "optimizers": [optimizer.state_dict()], "schedulers": [scheduler.state_dict()]}
        torch.save(state, states / f"{it}.state")
    opt = {
        "auto_resume": True,
        "num_gpu": 0,
        "network_g": {},
        "path": {"training_states": str(states), "models": str(tmp_path / "models"), "resume_state": None},
        "datasets": {"train": {}},
    }
    state = load_resume_state(opt)
    assert state["iter"] == 6 and opt["path"]["resume_state"] == str(states / "6.state")
    assert opt["path"]["pretrain_network_g"] == str(tmp_path / "models" / "net_g_6.pth")
    assert opt["datasets"]["train"]["resume_iter"] == 6
    assert "periods" not in state["schedulers"][0] and "last_epoch" in state["schedulers"][0]
    longer = CosineAnnealingRestartLR(optimizer, periods=[9], eta_min=0.0)
    longer.load_state_dict(state["schedulers"][0])
    assert longer.periods == [9]
    opt.update(auto_resume=False, path={**opt["path"], "training_states": str(tmp_path / "none")})
    opt["path"]["resume_state"] = None
    assert load_resume_state(opt) is None


# ------------------------------------------------------------------------------------------------ end to end
def test_train_and_resume_on_cpu_from_another_cwd(tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the child's threads; a tiny network on a busy machine: 1 is fastest
    runs = tmp_path / "runs"
    (tmp_path / "cwd1").mkdir()
    (tmp_path / "cwd2").mkdir()
    monkeypatch.chdir(tmp_path / "cwd1")
    cfg = tiny(out=str(runs), name="bsr")
    exp = train_basicsr(cfg)
    assert exp == runs / "bsr" / "experiments" / "bsr"
    models, states = exp / "models", exp / "training_states"
    assert sorted(p.name for p in models.iterdir()) == ["net_g_3.pth", "net_g_6.pth", "net_g_latest.pth"]
    assert sorted(p.name for p in states.iterdir()) == ["3.state", "6.state"]
    assert not list((tmp_path / "cwd1").iterdir())  # nothing written relative to the working directory
    out = capfd.readouterr()
    assert "torchrun --nproc_per_node=" in out.err and "Validation embedded" in out.err + out.out

    saved = torch.load(models / "net_g_6.pth", weights_only=True)
    assert set(saved) == {"params", "params_ema"}
    net = build_arch({"name": "ir", "mixer": "hco", "preset": "tiny", "task": "denoise", "in_chans": 1})
    load_checkpoint(net, models / "net_g_6.pth")  # params_ema
    ema = {k: v.clone() for k, v in net.state_dict().items()}
    load_checkpoint(net, models / "net_g_6.pth", param_key="params")
    assert any(not torch.equal(ema[k], v) for k, v in net.state_dict().items())
    state = torch.load(states / "6.state", map_location="cpu", weights_only=True)
    assert state["iter"] == 6 and len(state["optimizers"]) == len(state["schedulers"]) == 1

    with pytest.raises(SandboxError, match="already has a BasicSR experiment"):
        train_basicsr(cfg)  # never overwritten (BasicSR would archive it)

    monkeypatch.chdir(tmp_path / "cwd2")
    exp2 = train_basicsr(tiny(out=str(runs), name="bsr", iters=9), resume="auto")
    assert exp2 == exp
    assert (models / "net_g_9.pth").is_file() and (states / "9.state").is_file()
    assert not list(runs.glob("bsr/experiments/*_archived_*"))
    logs = sorted(exp.glob("train_bsr_*.log"))
    assert len(logs) == 2
    log = logs[-1].read_text()
    assert "Resuming training from epoch: 0, iter: 6." in log
    assert re.search(r"iter:\s+7, lr:\(5\.000e-05,\)", log)  # cosine over the new 9 iterations, at position 6
    assert "iter:       9" in log
    load_checkpoint(net, models / "net_g_9.pth")


def test_run_py_engine_basicsr(tmp_path):
    """`python experiments/run.py --engine basicsr` trains through BasicSR's pipeline and writes its experiment."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SANDBOX_DATA", None)
    args = [sys.executable, str(root / "experiments" / "run.py"), "--engine", "basicsr", "--preset", "tiny"]
    args += ["--iters", "2", "--patch-size", "32", "--batch-size", "2", "--out", str(tmp_path), "--name", "cli"]
    args += ["--set", "save_every=2", "--set", "eval_every=2", "--set", "val_images=1", "--no-progress"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    models = tmp_path / "cli" / "experiments" / "cli" / "models"
    assert (models / "net_g_2.pth").is_file() and "BasicSR experiment" in out.stdout
