"""Train a :class:`~sandbox.config.RunConfig` with BasicSR's own training pipeline (``--engine basicsr``).

The same experiment as :mod:`sandbox.engine` (network, task, data, optimiser, schedule, loss, EMA, validation), but
run by BasicSR 1.4.2's ``train_pipeline`` with its ``SRModel``: a cross-check of our engine against the framework
most restoration papers train with, and a way to use BasicSR's multi-GPU launcher.

    >>> from sandbox.config import RunConfig
    >>> from sandbox.engine_basicsr import train_basicsr
    >>> exp = train_basicsr(RunConfig(task="denoise", arch="ir", mixer="hco", preset="tiny", iters=1000))
    >>> exp                                  # <out>/<name>/experiments/<name>: models/, training_states/, train_*.log
    >>> train_basicsr(config, resume="auto")  # continue from the newest training state (e.g. after raising iters)

:func:`basicsr_options` turns the config into BasicSR's options dict and writes it to
``<run dir>/basicsr_options.yml``; the training runs in a fresh process (``python -m sandbox.compat.basicsr_train
-opt FILE``, which registers our types and patches basicsr, see :mod:`sandbox.compat.basicsr_train`), so BasicSR's
process-wide logger and registries start clean. For several GPUs run the printed command yourself::

    torchrun --nproc_per_node=4 -m sandbox.compat.basicsr_train -opt runs/NAME/basicsr_options.yml --launcher pytorch

Mapping (RunConfig -> BasicSR): ``arch`` ir/vheatir/swinir -> ``network_g.type`` SandboxIR/VHeatIR/SandboxSwinIR with
``preset``, ``task``, ``in_chans`` (the task's channels), ``mixer`` (ir only) and ``arch_options``;
``patch_size``/``batch_size``/``workers`` -> ``datasets.train`` (``batch_size_per_gpu``: BasicSR's batch is per GPU);
``lr``/``weight_decay``/``betas``/``optimizer`` -> ``train.optim_g`` (Adam; AdamW via :class:`SandboxSRModel`);
``schedule`` -> ``CosineAnnealingRestartLR`` (one period of ``iters``, ``eta_min`` 0) or ``MultiStepLR`` (milestones as
fractions of ``iters``); ``warmup_iters`` -> ``warmup_iter``; ``loss`` -> ``L1Loss``, ``MSELoss`` or ``CharbonnierLoss``
(BasicSR's is ``sqrt(d^2 + eps)``, so ``eps = charbonnier_eps ** 2`` gives ``sqrt(d^2 + charbonnier_eps^2)``); ``ema``
-> ``ema_decay``; ``eval_every``/``save_every``/``log_every`` -> ``val_freq``/``save_checkpoint_freq``/``print_freq``;
``seed`` -> ``manual_seed``. Not available in BasicSR's SRModel, hence ignored (listed in ``sandbox.ignored`` of the
options and printed): ``amp`` (SRModel trains in fp32), ``compile``, ``budget_minutes``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .config import RunConfig, config_dict
from .engine import check_config, use_bf16
from .errors import OptionError, SandboxError
from .utils import plain, write_text_atomic

__all__ = [
    "ARCH_TYPES",
    "OPTIONS_FILE",
    "basicsr_command",
    "basicsr_options",
    "check_basicsr_config",
    "experiment_dir",
    "latest_state",
    "run_dir_of",
    "train_basicsr",
]

ARCH_TYPES = {"ir": "SandboxIR", "vheatir": "VHeatIR", "swinir": "SandboxSwinIR"}  # sandbox arch -> ARCH_REGISTRY
OPTIONS_FILE = "basicsr_options.yml"
ENTRY_POINT = "sandbox.compat.basicsr_train"
NEVER = 2**31 - 1  # a period that never comes (eval_every / save_every = 0)
PATCHES_PER_EPOCH = 100  # iterations per BasicSR epoch on one process (the dataset's length is this x batch_size)


# ------------------------------------------------------------------------------------------------------- paths
def _default_name(config: RunConfig) -> str:
    """``<arch>_<mixer>_<task>_<timestamp>`` (the mixer only for ``ir``), file-name safe."""
    parts = [config.arch]
    if config.arch == "ir":
        mixer = config.mixer
        if isinstance(mixer, dict):
            mixer = mixer.get("name", "mixer")
        elif isinstance(mixer, (list, tuple)):
            mixer = "mixed"
        parts.append(str(mixer).split(":")[0])
    parts += [str(config.task).split(":")[0], time.strftime("%Y%m%d-%H%M%S")]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(parts))


def run_dir_of(config: RunConfig) -> Path:
    """The absolute run directory ``<out>/<name>`` (a timestamped name when ``config.name`` is None)."""
    return Path(config.out).expanduser().resolve() / (config.name or _default_name(config))


def experiment_dir(run_dir: str | os.PathLike) -> Path:
    """Where BasicSR puts the experiment of a run directory: ``<run dir>/experiments/<run dir name>``."""
    run_dir = Path(run_dir).expanduser().resolve()
    return run_dir / "experiments" / run_dir.name


def latest_state(run_dir: str | os.PathLike) -> Path | None:
    """The newest ``<iter>.state`` of a run directory, or None."""
    states = experiment_dir(run_dir) / "training_states"
    found = sorted(states.glob("*.state"), key=lambda p: float(p.stem)) if states.is_dir() else []
    return found[-1] if found else None


def _locate_resume(resume: str | os.PathLike) -> tuple[Path, Path | None]:
    """(run dir, explicit .state file or None for the newest) of a ``resume`` path: a ``.state`` file, a run
    directory (holding ``basicsr_options.yml`` or ``experiments/``) or a BasicSR experiment folder."""
    path = Path(resume).expanduser().resolve()
    if path.is_file() and path.suffix == ".state":
        exp = path.parent.parent  # <run>/experiments/<name>/training_states/<iter>.state
        if path.parent.name != "training_states" or exp.parent.name != "experiments":
            raise SandboxError(f"{str(path)!r} is not in <run dir>/experiments/<name>/training_states/")
        return exp.parent.parent, path
    if path.is_dir():
        if (path / OPTIONS_FILE).is_file() or (path / "experiments").is_dir():
            return path, None
        if (path / "training_states").is_dir() and path.parent.name == "experiments":
            return path.parent.parent, None
    raise SandboxError(
        f"cannot resume from {str(resume)!r}: give a run directory (with {OPTIONS_FILE}), its "
        "experiments/<name> folder, a .state file, or 'auto'"
    )


# ------------------------------------------------------------------------------------------------------ options
def _task(config: RunConfig):
    from .engine import build_task_from

    return build_task_from(config)


def _network_options(config: RunConfig, task) -> dict[str, Any]:
    from .networks import build_network_for
    from .tasks import check_network_channels

    if config.arch not in ARCH_TYPES:
        raise OptionError(
            f"arch={config.arch!r} cannot train with --engine basicsr; the BasicSR engine trains the restoration "
            f"networks {', '.join(map(repr, ARCH_TYPES))}"
        )
    # built here for its one-line errors (not in BasicSR's process) and the options it was built with
    net = build_network_for(
        config.arch, task, defaults={"mixer": config.mixer, "preset": config.preset}, overrides=config.arch_options
    )
    check_network_channels(task, getattr(net, "in_chans", task.channels))
    spec = plain(net.arch_spec)  # {"name": ..., **options}, YAML-safe
    return {"type": ARCH_TYPES[spec.pop("name")], **spec}


def _ignored(config: RunConfig, cuda: bool) -> list[str]:
    out = []
    if use_bf16(config.amp, torch.device("cuda" if cuda else "cpu")):
        out.append(f"amp={config.amp!r}: BasicSR's SRModel trains in fp32")
    if config.compile:
        out.append("compile=True: BasicSR's SRModel does not torch.compile")
    if config.budget_minutes is not None:
        out.append(f"budget_minutes={config.budget_minutes}: BasicSR stops at total_iter only")
    return out


def check_basicsr_config(config: RunConfig) -> None:
    """The built-in engine's checks (:func:`sandbox.engine.check_config`: betas, ema, sizes, loss, ...), then the
    limits of BasicSR's pipeline; a one-line :class:`OptionError` for the first bad value. ``val_images=0`` is
    allowed here: it turns BasicSR's validation off."""
    import dataclasses

    check_config(dataclasses.replace(config, val_images=1) if config.val_images == 0 else config)
    if config.schedule == "constant":
        raise OptionError(
            "schedule='constant' is not available with the BasicSR engine; expected 'cosine' or 'multistep'"
        )


def basicsr_options(
    config: RunConfig, run_dir: str | os.PathLike, *, resume_state: str | os.PathLike | None = None
) -> dict[str, Any]:
    """BasicSR's options dict for ``config``, also written to ``<run_dir>/basicsr_options.yml``.

    Every path is absolute (``root_path`` is the run directory; BasicSR derives ``path.experiments_root`` and the
    rest from it as ``<run_dir>/experiments/<name>``, ``name`` being the run directory's name), so the file runs
    from any working directory with ``python -m sandbox.compat.basicsr_train -opt FILE``. ``resume_state`` sets
    ``path.resume_state`` (a ``.state`` file of this run).
    """
    import yaml

    from .data import data_root
    from .plugins import load_plugins
    from .utils import resolve_device

    if config.plugins:
        load_plugins(config.plugins)
    run_dir = Path(run_dir).expanduser().resolve()
    name = run_dir.name
    exp = experiment_dir(run_dir)
    task = _task(config)
    cuda = resolve_device(config.device).type == "cuda"
    root = data_root(config.data_root)
    root = str(root) if root is not None else None
    check_basicsr_config(config)

    if config.schedule == "cosine":
        scheduler = {"type": "CosineAnnealingRestartLR", "periods": [config.iters], "restart_weights": [1.0]}
        scheduler["eta_min"] = 0.0
    else:
        milestones = sorted(max(1, round(f * config.iters)) for f in config.milestones)  # repeats decay twice
        scheduler = {"type": "MultiStepLR", "milestones": milestones, "gamma": config.gamma}
    if config.loss == "l1":
        pixel = {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"}
    elif config.loss == "l2":
        pixel = {"type": "MSELoss", "loss_weight": 1.0, "reduction": "mean"}
    else:
        pixel = {"type": "CharbonnierLoss", "loss_weight": 1.0, "reduction": "mean", "eps": config.charbonnier_eps**2}
    optim = {"type": "Adam" if config.optimizer == "adam" else "AdamW", "lr": config.lr}
    optim["weight_decay"] = config.weight_decay
    optim["betas"] = list(config.betas)
    custom_model = config.optimizer == "adamw" or config.grad_clip is not None
    train = {
        "ema_decay": config.ema,
        "optim_g": optim,
        "scheduler": scheduler,
        "total_iter": config.iters,
        "warmup_iter": config.warmup_iters if config.warmup_iters > 0 else -1,
        "pixel_opt": pixel,
    }
    if config.grad_clip is not None:
        train["grad_clip"] = config.grad_clip

    task_spec = plain(task.spec)
    datasets: dict[str, Any] = {
        "train": {
            "name": "train",
            "type": "SandboxDegradationDataset",
            "task": task_spec,
            "data_root": root,
            "train_sets": plain(config.train_sets) if config.train_sets else None,
            "patch_size": config.patch_size,
            "augment": True,
            "seed": config.seed,
            "patches_per_epoch": PATCHES_PER_EPOCH * config.batch_size,
            "num_worker_per_gpu": config.workers,
            "batch_size_per_gpu": config.batch_size,
            "dataset_enlarge_ratio": 1,
            "prefetch_mode": None,
            "pin_memory": cuda,
        }
    }
    opt: dict[str, Any] = {
        "name": name,
        "model_type": "SandboxSRModel" if custom_model else "SRModel",
        "scale": 1,
        "num_gpu": "auto" if cuda else 0,
        "manual_seed": config.seed,
        "root_path": str(run_dir),
        "datasets": datasets,
        "network_g": _network_options(config, task),
        "path": {
            "pretrain_network_g": None,
            "strict_load_g": True,
            "resume_state": str(Path(resume_state).expanduser().resolve()) if resume_state else None,
            "experiments_root": str(exp),
            "models": str(exp / "models"),
            "training_states": str(exp / "training_states"),
            "log": str(exp),
            "visualization": str(exp / "visualization"),
        },
        "train": train,
    }
    if config.val_images > 0:
        eval_set = (config.eval_sets[0] if config.eval_sets else task.benchmarks[0]) if root else None
        datasets["val"] = {
            "name": eval_set or "embedded",
            "type": "SandboxEvalDataset",
            "task": task_spec,
            "data_root": root,
            "eval_set": eval_set,
            "val_images": config.val_images,
            "val_crop": config.val_crop,
        }
        metric = {"crop_border": task.crop_border, "test_y_channel": False}
        opt["val"] = {
            "val_freq": config.eval_every if config.eval_every > 0 else NEVER,
            "save_img": False,
            "pbar": False,
            "metrics": {
                "psnr": {"type": "calculate_psnr", **metric},
                "ssim": {"type": "calculate_ssim", **metric},
            },
        }
    opt["logger"] = {
        "print_freq": max(config.log_every, 1),
        "save_checkpoint_freq": config.save_every if config.save_every > 0 else NEVER,
        "use_tb_logger": False,
        "wandb": {"project": None, "resume_id": None},
    }
    opt["dist_params"] = {"backend": "nccl", "port": 29500}
    plugins = [str(Path(p).expanduser().resolve()) if p.endswith(".py") else p for p in config.plugins]
    opt["sandbox"] = {"plugins": plugins, "ignored": _ignored(config, cuda), "run_config": config_dict(config)}

    text = "# BasicSR options written by sandbox.engine_basicsr; run with\n"
    text += f"#   {basicsr_command(run_dir)}\n"
    text += yaml.safe_dump(opt, sort_keys=False, default_flow_style=None, width=120)
    write_text_atomic(run_dir / OPTIONS_FILE, text)
    return opt


def basicsr_command(run_dir: str | os.PathLike, nproc: int | str | None = None, auto_resume: bool = False) -> str:
    """The shell command that trains a run directory's options file: ``python -m sandbox.compat.basicsr_train ...``,
    or with ``nproc`` (a number, or ``"N"`` for a template) the ``torchrun --nproc_per_node=N ... --launcher pytorch``
    form (multi-GPU)."""
    opt_file = shlex.quote(str(Path(run_dir).expanduser().resolve() / OPTIONS_FILE))
    if nproc:
        cmd = f"torchrun --nproc_per_node={nproc} -m {ENTRY_POINT} -opt {opt_file} --launcher pytorch"
    else:
        cmd = f"python -m {ENTRY_POINT} -opt {opt_file}"
    return cmd + (" --auto_resume" if auto_resume else "")


# -------------------------------------------------------------------------------------------------------- train
def train_basicsr(config: RunConfig, resume: str | os.PathLike | None = None, launcher: str = "none") -> Path:
    """Train ``config`` with BasicSR's ``train_pipeline`` in a child process; returns the experiment directory
    ``<out>/<name>/experiments/<name>`` (``models/net_g_<iter>.pth`` with ``params`` and ``params_ema``,
    ``training_states/<iter>.state``, ``train_<name>_<time>.log``).

    Args:
        config: the run. ``out``/``name`` give the run directory (a timestamped name when ``name`` is None).
        resume: None starts a new run (an existing experiment is an error: nothing is overwritten); ``"auto"``
            continues ``config``'s run from its newest training state (BasicSR's ``--auto_resume``; a fresh start
            when it has none); a run directory, its ``experiments/<name>`` folder or a ``.state`` file continues that
            run (its directory and name replace ``config.out``/``config.name``). The rest of ``config`` applies, so
            raising ``iters`` trains further.
        launcher: BasicSR's ``--launcher``: ``none`` (one process), or ``pytorch`` when this process was started
            by ``torchrun`` (the child inherits RANK/WORLD_SIZE; NCCL, so CUDA only).
    """
    import dataclasses

    import yaml

    if launcher not in ("none", "pytorch", "slurm"):
        raise OptionError(f"launcher={launcher!r} is not one of 'none', 'pytorch', 'slurm'")
    check_basicsr_config(config)  # before any folder is made: a bad value leaves nothing behind
    state = None
    auto = False
    rank = int(os.environ.get("RANK", "0") or 0)  # under torchrun every rank calls this; rank 0 checks
    if resume is None:
        run_dir = run_dir_of(config)
        if rank == 0 and experiment_dir(run_dir).exists():
            raise SandboxError(
                f"run {str(run_dir)!r} already has a BasicSR experiment; resume it (resume='auto' / --resume) or "
                "choose another name"
            )
    elif str(resume) in ("auto", "latest"):
        run_dir, auto = run_dir_of(config), True
    else:
        run_dir, state = _locate_resume(resume)
        auto = state is None
        config = dataclasses.replace(config, out=str(run_dir.parent), name=run_dir.name)
    if auto and config.name is None:
        raise OptionError("resume='auto' needs config.name (the run to continue)")
    run_dir.mkdir(parents=True, exist_ok=True)
    opt = basicsr_options(config, run_dir, resume_state=state)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config_dict(config), sort_keys=False))
    for note in opt["sandbox"]["ignored"]:
        print(f"[basicsr engine] ignored: {note}", file=sys.stderr)
    print(f"[basicsr engine] options: {run_dir / OPTIONS_FILE}", file=sys.stderr)
    print(f"[basicsr engine] multi-GPU: {basicsr_command(run_dir, nproc='N', auto_resume=auto)}", file=sys.stderr)

    cmd = [sys.executable, "-m", ENTRY_POINT, "-opt", str(run_dir / OPTIONS_FILE), "--launcher", launcher]
    if auto:
        cmd.append("--auto_resume")
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])  # a plain checkout works without `pip install -e .`
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo, env.get("PYTHONPATH", "")) if p)
    sys.stdout.flush()
    sys.stderr.flush()
    result = subprocess.run(cmd, env=env)
    exp = experiment_dir(run_dir)
    if result.returncode != 0:
        logs = sorted(exp.glob("train_*.log"), key=lambda p: p.stat().st_mtime) if exp.is_dir() else []
        where = f"; log: {logs[-1]}" if logs else ""
        raise SandboxError(f"BasicSR training failed (exit status {result.returncode}){where}")
    return exp
