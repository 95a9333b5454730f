"""Depthwise k x k convolution mixer (ConvNeXt-style spatial mixing)."""

from __future__ import annotations

from torch import Tensor, nn

from sandbox.errors import check_int
from sandbox.registry import register_mixer

from ._common import DepthwiseConv2d


def check_odd_kernel(kernel_size) -> None:
    check_int("kernel_size", kernel_size, 1, odd=True, hint=" (3, 5, 7, ...)")


@register_mixer(
    "conv",
    paper="Liu et al., A ConvNet for the 2020s (ConvNeXt depthwise conv), CVPR 2022",
    family="conv",
    complexity="O(N k^2)",
)
class DepthwiseConvMixer(nn.Module):
    """Depthwise k x k convolution with bias, zero padding ``k // 2``. Maps (B, C, H, W) -> (B, C, H, W), any size.

    Args:
        dim: channels C.
        kernel_size: odd spatial kernel size k.
    """

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__()
        check_odd_kernel(kernel_size)
        self.dwconv = DepthwiseConv2d(dim, kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.dwconv(x)
