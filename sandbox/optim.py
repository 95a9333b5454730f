"""Optimisation: the optimiser, the learning-rate schedule (:func:`lr_factor`), the loss, the EMA of the weights,
and bf16 autocast (where it is the faster choice)."""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from .config import RunConfig

__all__ = [
    "BF16_CPU_NOTE",
    "cpu_has_bf16",
    "use_bf16",
    "autocast_for",
    "make_optimizer",
    "set_lr",
    "EMA",
    "lr_factor",
    "loss_fn",
]

BF16_CPU_NOTE = "this CPU has no bf16 instructions: amp=bf16 is emulated, likely slower than fp32; use amp=auto/off"
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # /proc/cpuinfo: x86 AVX512_BF16 and AMX-BF16; ARM BF16


def _cpu_flags() -> set[str] | None:
    """The CPU feature flags of /proc/cpuinfo (x86 ``flags``, ARM ``Features``), or None where it is not readable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return None


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX512_BF16 or AMX-BF16, ARM BF16).

    oneDNN also accepts bf16 on any AVX512 CPU (``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is True there) but
    emulates it, and there bf16 autocast makes training slower than fp32 (measured in docs/performance.md). Where
    /proc/cpuinfo is not readable, oneDNN's answer is used.
    """
    flags = _cpu_flags()
    if flags is not None:
        return bool(flags & NATIVE_BF16_FLAGS)
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without the query: assume yes rather than warn wrongly
        return True


def use_bf16(amp: str, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast: ``bf16`` always; ``auto`` on CUDA and on CPUs with bf16
    instructions (where it is the faster choice); ``off`` never."""
    return amp == "bf16" or (amp == "auto" and (device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16())))


class EMA:
    """Exponential moving average of a network's parameters (buffers copied); ``module`` has the same state_dict
    keys as the network. The decay warms up as ``min(decay, (1 + step) / (10 + step))``, so that short runs do not
    average in their first, untrained weights."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        mine, theirs = list(self.module.parameters()), [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(mine, theirs, 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)


def lr_factor(config: RunConfig, it: int, wall: float = 0.0) -> float:
    """Learning-rate factor of the iteration after ``it`` completed ones: linear warm-up, then cosine to 0, multistep
    (milestones are fractions of the run) or constant.

    The run's progress is ``it / iters``, or, with a budget, the larger of that and ``wall / budget``: a budget-bound
    run decays its learning rate to the end of its budget instead of stopping at a high rate half-way through a
    schedule laid out for ``iters``. ``wall`` is the training time in seconds so far.
    """
    w = config.warmup_iters
    if w and it < w:
        return (it + 1) / w
    t = min(1.0, (it - w) / max(1, config.iters - w))
    if config.budget_minutes:
        t = max(t, min(1.0, wall / (config.budget_minutes * 60.0)))
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if config.schedule == "multistep":
        return config.gamma ** sum(t >= m for m in config.milestones)
    return 1.0


def loss_fn(out: torch.Tensor, target: torch.Tensor, config: RunConfig) -> torch.Tensor:
    """The training loss of ``config.loss`` (l1, l2 or charbonnier), computed in float32."""
    diff = out.float() - target.float()
    if config.loss == "l1":
        return diff.abs().mean()
    if config.loss == "l2":
        return (diff * diff).mean()
    return torch.sqrt(diff * diff + config.charbonnier_eps**2).mean()


def autocast_for(use_amp: bool, device: torch.device) -> Callable[[], ContextManager[Any]]:
    """A factory of the context the forward pass runs in: bf16 autocast on ``device``, or nothing."""
    return (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_amp else nullcontext


def make_optimizer(config: RunConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam or AdamW over ``params`` with the configuration's lr, betas and weight decay."""
    opt_cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return opt_cls(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
