"""Run state: the global RNG states, the self-describing checkpoints (and what a resumed run reads back from them),
the run directory and its events log (``metrics.jsonl``).

A resumed run is bit-identical to an uninterrupted one when it runs with the same number of intra-op threads
(reductions are split by thread; 1 and 2 threads differ in the last bits of float32). The checkpoints record
``torch.get_num_threads()``, and a resume with another count prints a one-line warning.
"""

from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from .config import RunConfig
from .errors import SandboxError
from .train_config import same_json
from .utils import plain as to_plain
from .utils import write_text_atomic

__all__ = [
    "CHECKPOINT_VERSION",
    "seed_everything",
    "rng_state",
    "set_rng_state",
    "checkpoint_state",
    "load_network_state",
    "check_threads",
    "warn",
    "remove_run_temps",
    "finite_weights",
    "relative",
    "plain",
    "Events",
    "new_run_dir",
    "default_name",
]

CHECKPOINT_VERSION = 1


def seed_everything(seed: int) -> None:
    """Seed the global torch, numpy and Python RNGs (a fresh run; a resumed one then restores their saved states)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (1 << 32))
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain lists (``torch.load(weights_only=True)`` reads them)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, pstate, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(cuda),
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": [version, list(pstate), gauss_next],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, pstate, gauss_next = state["python"]
    random.setstate((version, tuple(pstate), gauss_next))


def finite_weights(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())


def relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def plain(obj: Any) -> Any:
    """JSON-safe for ``allow_nan=False``: :func:`sandbox.utils.plain` with non-finite floats as None."""
    return to_plain(obj, finite=True)


class Events:
    """metrics.jsonl: one JSON object per line, flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rewind(self, step: int) -> int:
        """Drop the events logged after iteration ``step`` (a resumed run continues from its checkpoint at ``step``:
        what a killed process logged past it belongs to a timeline that no longer exists); returns how many."""
        if not self.path.is_file():
            return 0
        lines = self.path.read_text(encoding="utf-8").splitlines()
        keep = []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut by the kill
                continue
            if record.get("event") in ("train", "val", "stop") and record.get("step", 0) > step:
                continue
            keep.append(line)
        dropped = len(lines) - len(keep)
        if dropped:
            write_text_atomic(self.path, "".join(k + "\n" for k in keep))
        return dropped

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"event": event, "time": round(time.time(), 3), **fields}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(plain(record), allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())


def new_run_dir(config: RunConfig, default_name: str) -> Path:
    """Create ``<out>/<name>`` (or ``<name>-2``, ``-3``, ... if taken) atomically and return it."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    base = config.name or default_name
    i = 1
    while True:
        candidate = out / (base if i == 1 else f"{base}-{i}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            i += 1


def default_name(config: RunConfig, task: Any) -> str:
    from .registry import parse_spec

    arch, arch_options = parse_spec(config.arch, "network")
    parts = [arch]
    mixer = arch_options.get("mixer", config.mixer)
    if isinstance(mixer, (str, Mapping)):
        try:
            parts.append(parse_spec(mixer, "mixer")[0])
        except SandboxError:
            pass
    elif isinstance(mixer, (list, tuple)):
        parts.append("mixed")
    parts += [task.name, task.level.replace("sigma=", "s").replace("q=", "q"), time.strftime("%Y%m%d-%H%M%S")]
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(parts))


# -------------------------------------------------------------------------------------------------- checkpoints
def checkpoint_state(
    config: dict[str, Any],
    task_spec: Any,
    arch_spec: dict[str, Any],
    net: nn.Module,
    ema_module: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    progress: Mapping[str, Any],
) -> dict[str, Any]:
    """The self-describing checkpoint dict of a run at ``progress`` (``step``, ``best_psnr``, ``history``,
    ``wall``), with the global RNG states and the intra-op thread count."""
    ema_state = ema_module.state_dict() if ema_module is not None else None
    step = progress["step"]
    state = {
        "version": CHECKPOINT_VERSION,
        "arch_spec": arch_spec,
        "config": config,
        "task": task_spec,
        "model": net.state_dict(),
        "ema": ema_state,
        "optimizer": optimizer.state_dict(),
        "scheduler": {"name": config["schedule"], "lr": optimizer.param_groups[0]["lr"], "step": step},
        "step": step,
        "best_psnr": progress["best_psnr"],
        "rng": rng_state(),
        "history": progress["history"],
        "wall": progress["wall"],
        "threads": torch.get_num_threads(),  # resume is bit-identical at this count only
    }
    if ema_state is not None:
        state["model_ema"] = ema_state  # load_checkpoint reads model_ema before model: evaluation uses the EMA
    return state


def load_network_state(net: nn.Module, ckpt: Mapping[str, Any], path: Path) -> None:
    """Load a resumed run's training weights into ``net``, refusing a checkpoint of another network."""
    from .checkpoint import load_checkpoint

    spec = ckpt.get("arch_spec")
    if spec is not None and not same_json(spec, getattr(net, "arch_spec", spec)):
        raise SandboxError(
            f"checkpoint {str(path)!r} is of another network ({spec}) than the run's config builds "
            f"({net.arch_spec}); was config.yaml edited?"
        )
    load_checkpoint(net, ckpt, param_key="model", strict=True)


def check_threads(ckpt: Mapping[str, Any]) -> str | None:
    """A one-line warning when this process runs with another intra-op thread count than the one that wrote
    ``ckpt`` (its continuation then differs from an uninterrupted run in the last bits), else None."""
    saved, now = ckpt.get("threads"), torch.get_num_threads()
    if saved is None or int(saved) == now:
        return None
    return (
        f"warning: resuming with {now} intra-op thread(s), the checkpoint was written with {saved}: the run will "
        f"not be bit-identical to an uninterrupted one (set OMP_NUM_THREADS={saved} for that)"
    )


def warn(line: str) -> None:
    """One warning line on stderr, whether or not the run prints its summary."""
    print(line, file=sys.stderr, flush=True)


def remove_run_temps(ckpt_dir: Path) -> list[Path]:
    """Remove what saves interrupted by a kill left in ``ckpt_dir`` (``.last.pth.*.tmp``, ``.best.pth.*.tmp``)."""
    from .checkpoint import remove_orphan_temps

    return [p for name in ("last.pth", "best.pth") for p in remove_orphan_temps(ckpt_dir / name)]
