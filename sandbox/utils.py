"""Small helpers shared by the core and the command-line tools: the device, atomic text writes, plain values for
JSON and YAML, human-readable counts and sizes, and file-name slugs. Each exists once; the callers import it."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from .errors import SandboxError

__all__ = ["atomic_path", "human", "plain", "resolve_device", "slug", "write_text_atomic"]


def resolve_device(name: str | None = None) -> torch.device:
    """The device to run on: ``name`` if given, else ``$SANDBOX_DEVICE``, else CUDA when available, else CPU."""
    name = name or os.environ.get("SANDBOX_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SandboxError(f"device {name!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SandboxError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
    return device


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer to fill; on a clean exit of the ``with`` block it replaces
    ``path`` (``os.replace``: a reader sees the old file or the new one, never a partial one), and it is removed if
    the block fails. The name is unique per call (``.<stem>.<pid>.<random>.tmp<suffix>``: concurrent writers of one
    file do not collide) and keeps the suffix, for writers that pick the format from it (cv2, matplotlib)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block: for what C libraries print there themselves (libpng's
    'libpng error' on a corrupt file, libkineto's profiler lines), which Python's ``sys.stderr`` cannot catch."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr descriptor (some embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "x", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def plain(value: Any, finite: bool = False) -> Any:
    """A JSON/YAML-friendly copy of ``value``: dataclasses and mappings to dicts with string keys, tuples and lists to
    lists, paths to strings, numpy scalars and 0-d tensors to Python numbers. With ``finite``, NaN and infinities
    become None (for ``json.dumps(..., allow_nan=False)``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name), finite) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): plain(v, finite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, finite) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.generic) or (getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None))):
        value = value.item()  # numpy scalar, 0-d array or tensor
    if finite and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def human(n: float | None, unit: str = "", digits: int = 2, sep: str = "") -> str:
    """A count with a power-of-1000 suffix: ``human(1234567)`` is '1.23M', ``human(1.5e6, "B", 1, " ")`` '1.5 MB'
    (``sep`` goes between the number and suffix plus unit); below 1000 no decimals ('512 B'); None is '-'."""
    if n is None:
        return "-"
    n = float(n)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.{digits}f}{sep}{suffix}{unit}"
    return f"{n:.0f}{sep}{unit}" if unit else f"{n:.0f}"


def slug(text: str, max_len: int = 80, empty: str = "item") -> str:
    """A file-name-safe form of ``text``: runs of characters other than letters, digits and ``_.=-`` become one
    ``_``, cut to ``max_len``; ``empty`` when nothing is left (``slug("hco:k_mode=fixed")`` is 'hco_k_mode=fixed')."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:max_len] or empty
