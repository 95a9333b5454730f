"""Pooling mixer of PoolFormer: average pooling minus the input."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sandbox.errors import check_int
from sandbox.registry import register_mixer


@register_mixer(
    "pool",
    paper="Yu et al., MetaFormer Is Actually What You Need for Vision (PoolFormer), CVPR 2022",
    family="pool",
    complexity="O(N)",
)
class PoolMixer(nn.Module):
    """PoolFormer token mixer ``avgpool(x) - x`` (the block adds x back). Maps (B, C, H, W) -> (B, C, H, W), any size.

    Average pooling with stride 1, padding ``pool_size // 2`` and ``count_include_pad=False`` (borders average over
    the pixels that exist). No parameters.

    Args:
        dim: channels C.
        pool_size: odd pooling window (3 in PoolFormer).
    """

    def __init__(self, dim: int, pool_size: int = 3) -> None:
        super().__init__()
        check_int("pool_size", pool_size, 1, odd=True)
        self.dim, self.pool_size = dim, pool_size

    def forward(self, x: Tensor) -> Tensor:
        p = self.pool_size
        return F.avg_pool2d(x, p, stride=1, padding=p // 2, count_include_pad=False) - x
