"""Small helpers shared by the core and the command-line tools."""

from __future__ import annotations

import os

import torch

from .errors import SandboxError


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
