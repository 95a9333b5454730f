"""Loading and saving weights: one loader for every network, atomic writes.

:func:`load_checkpoint` reads with ``torch.load(weights_only=True)`` (nothing in a file runs code), unwraps the usual
containers (``params_ema``/``params`` of BasicSR and SwinIR, ``state_dict``/``model`` of timm and of our own
checkpoints), strips ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (``torch.compile``) prefixes, applies the
network's ``checkpoint_filter_fn`` (e.g. dropping SwinIR's size-specific buffers) and loads strictly, reporting
missing, unexpected and mis-shaped keys in one line.
"""

from __future__ import annotations

import glob
import os
import pickle
import pickletools
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from .errors import SandboxError

__all__ = [
    "load_checkpoint",
    "read_state_dict",
    "clean_state_dict",
    "save_atomic",
    "remove_orphan_temps",
    "torch_load",
]

CONTAINER_KEYS = ("params_ema", "params", "state_dict_ema", "model_ema", "state_dict", "model", "net")
PREFIXES = ("module.", "_orig_mod.")


def torch_load(path: str | os.PathLike) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with one-line errors: a missing file, a file that is
    not a PyTorch checkpoint at all (random bytes, an image, text), a pickle that would run code, an unreadable one."""
    path = Path(path)
    if not path.is_file():
        raise SandboxError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (torch.load raises many types on foreign bytes; each becomes one line)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        foreign = _not_torch_file(path)
        if foreign is not None:
            raise SandboxError(
                f"checkpoint {str(path)!r} is not a PyTorch checkpoint ({foreign}); expected a file written by "
                "torch.save (.pth/.pt)"
            ) from None
        if isinstance(e, pickle.UnpicklingError):
            raise SandboxError(
                f"checkpoint {str(path)!r} holds more than tensors and plain containers (a pickled module or class?), "
                f"so it is refused: loading it would run code from the file ({first}). Re-save its state_dict."
            ) from None
        raise SandboxError(f"checkpoint {str(path)!r} could not be read as a torch file: {first}") from None


def _not_torch_file(path: Path) -> str | None:
    """Why ``path`` cannot be a PyTorch checkpoint, or None when it has the form of one: a zip archive holding a
    ``data.pkl`` (torch.save's format) or a complete pickle stream (the legacy format, or a plain pickle).

    The pickle stream is walked with :func:`pickletools.genops`, which decodes opcodes without executing any, so
    random bytes are told apart from a pickle that ``weights_only`` refuses (that one keeps the unsafe-pickle message).
    """
    if path.stat().st_size == 0:
        return "the file is empty"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return "a damaged zip archive"
        has_data = any(n == "data.pkl" or n.endswith("/data.pkl") for n in names)
        return None if has_data else "a zip archive without the data.pkl of torch.save"
    try:
        with open(path, "rb") as f:
            for opcode, _, _ in pickletools.genops(f):
                if opcode.name == "STOP":
                    return None
    except Exception:  # noqa: BLE001  (genops raises ValueError, struct.error, ... on bytes that are no opcodes)
        pass
    return "neither a torch zip archive nor a pickle stream"


def clean_state_dict(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """Strip ``module.`` and ``_orig_mod.`` prefixes (repeatedly) from the keys."""
    out = {}
    for k, v in state.items():
        changed = True
        while changed:
            changed = False
            for p in PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p) :], True
        out[k] = v
    return out


def read_state_dict(obj: Any, param_key: str | None = None, source: str = "checkpoint") -> dict[str, Tensor]:
    """The state_dict inside a loaded checkpoint: ``obj[param_key]`` if given, else the first container key present."""
    if isinstance(obj, Mapping) and param_key is not None:
        if param_key not in obj:
            raise SandboxError(f"{source} has no key {param_key!r}; it has: {', '.join(map(str, obj))}")
        obj = obj[param_key]
    else:
        while isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
            key = next((k for k in CONTAINER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
            if key is None:
                raise SandboxError(
                    f"{source} holds no state_dict (looked for {', '.join(CONTAINER_KEYS)}); keys: "
                    f"{', '.join(map(str, list(obj)[:10]))}"
                )
            obj = obj[key]
    if not isinstance(obj, Mapping):
        raise SandboxError(f"{source} is a {type(obj).__name__}, not a state_dict")
    return clean_state_dict(obj)


def _summary(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_checkpoint(
    model: nn.Module,
    checkpoint: str | os.PathLike | Mapping[str, Any],
    filter_fn: Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]] | None = None,
    strict: bool = True,
    param_key: str | None = None,
    source: str | None = None,
) -> nn.Module:
    """Load weights into ``model`` and return it.

    Args:
        model: the network.
        checkpoint: a path (read with ``weights_only=True``) or an already loaded dict / state_dict.
        filter_fn: ``fn(state_dict, model) -> state_dict``; default: ``model.checkpoint_filter_fn`` if it has one.
        strict: missing or unexpected keys are an error (mis-shaped tensors always are).
        param_key: take the state_dict from this key (default: ``params_ema``, ``params``, ``state_dict``, ...).
        source: how messages name the checkpoint (default: its path, or "checkpoint" for an already loaded dict).
    """
    if source is None:
        source = f"checkpoint {str(checkpoint)!r}" if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint"
    obj = torch_load(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    state = read_state_dict(obj, param_key, source)
    filter_fn = filter_fn or getattr(model, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        state = filter_fn(state, model)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    name = type(model).__name__
    if mismatched:
        raise SandboxError(
            f"{source} does not fit {name}: {len(mismatched)} tensor(s) differ in shape (checkpoint vs network): "
            f"{_summary(mismatched, 3)}. Was it trained with another configuration?"
        )
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_summary(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_summary(unexpected)}")
        raise SandboxError(f"{source} does not match {name}: {'; '.join(parts)}. Is it the weights of another network?")
    model.load_state_dict(state, strict=strict)
    return model


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path`` (never half-written).

    The temporary file is ``.<name>.<random>.tmp`` beside ``path``; a process killed during the save leaves it
    behind, and :func:`remove_orphan_temps` removes such leftovers (the engine calls it on every save and on resume).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_orphan_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that interrupted :func:`save_atomic` calls for ``path`` left beside it; returns
    them. Only for a target that no other process is saving right now (a run's checkpoints: one process per run)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for tmp in path.parent.glob(glob.escape(_temp_prefix(path)) + "*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
