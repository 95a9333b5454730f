"""ConvFormer's separable convolution mixer (MetaFormer baselines)."""

from __future__ import annotations

from torch import Tensor, nn

from sandbox.registry import register_mixer

from ._common import DepthwiseConv2d, StarReLU, linear_cf
from .conv import check_odd_kernel


@register_mixer(
    "sepconv",
    paper="Yu et al., MetaFormer Baselines for Vision (ConvFormer SepConv), TPAMI 2024",
    family="conv",
    complexity="O(N k^2)",
)
class SepConvMixer(nn.Module):
    """Inverted separable convolution of ConvFormer. Maps (B, C, H, W) -> (B, C, H, W), any size.

    pwconv1 Linear(C, rC, no bias) -> StarReLU -> depthwise k x k conv (no bias) -> pwconv2 Linear(rC, C, no bias),
    with r = ``expansion_ratio``. Parameter names match the official code (``pwconv1``, ``act``, ``dwconv``,
    ``pwconv2``); the linears run on channels-first tensors as 1 x 1 convolutions.

    Args:
        dim: channels C.
        expansion_ratio: hidden width ratio r (2 in ConvFormer).
        kernel_size: odd depthwise kernel size (7 in ConvFormer).
    """

    def __init__(self, dim: int, expansion_ratio: float = 2.0, kernel_size: int = 7) -> None:
        super().__init__()
        check_odd_kernel(kernel_size)
        hidden = int(expansion_ratio * dim)
        self.pwconv1 = nn.Linear(dim, hidden, bias=False)
        self.act = StarReLU()
        self.dwconv = DepthwiseConv2d(hidden, kernel_size, bias=False)
        self.pwconv2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(linear_cf(x, self.pwconv1))  # (B, rC, H, W)
        x = self.dwconv(x)  # (B, rC, H, W)
        return linear_cf(x, self.pwconv2)  # (B, C, H, W)
