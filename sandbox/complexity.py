"""Parameter and FLOP counts.

FLOPs are counted the way fvcore counts and the papers report them: one multiply-add is one FLOP ("MACs"). The count
comes from ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions, attention), halved because that
counter counts a multiply-add as two; attention (``scaled_dot_product_attention``) counts its two matmuls on every
device, the CPU kernel included. FFTs, elementwise ops and normalisations are not counted (fvcore does not count FFTs
either; its norm/elementwise terms are a fraction of a percent for these networks).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .utils import human  # re-exported: count_* callers format with it

__all__ = ["count_params", "count_macs", "human"]


def _cpu_sdpa_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of the CPU attention kernel: the two attention matmuls, as for the CUDA kernels."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def _extra_formulas() -> dict:
    """FlopCounterMode has formulas for the CUDA attention kernels only; on CPU, scaled_dot_product_attention
    dispatches to this op and would count 0 (CAFormer-S18 then reads 3.88G instead of 4.1G)."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _cpu_sdpa_flop} if op is not None else {}


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@torch.no_grad()
def count_macs(
    model: nn.Module, input_shape: Sequence[int], device: str | torch.device = "cpu", warm: bool = True
) -> int:
    """Multiply-adds of one inference forward pass on a zero input of ``input_shape`` (e.g. ``(1, 3, 224, 224)``).

    With ``warm`` (default) one uncounted forward runs first, so work that depends on the parameters only and is
    cached in inference (HCO's k = ReLU(Linear(FVE)) and its decay, which vHeat's ``infer_mode`` precomputes the same
    way, and the Hyena/HyenaPixel implicit kernels) is not counted; ``warm=False`` counts a cold first pass, as the
    published HyenaPixel counts do (its official code generates the filter in every forward).
    """
    from torch.utils.flop_counter import FlopCounterMode  # imported here: ``import sandbox`` stays light

    was_training = model.training
    model.eval()
    x = torch.zeros(*input_shape, device=device)
    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    try:
        if warm:
            model(x)
        with counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
