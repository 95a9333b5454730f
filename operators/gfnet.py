"""GFNet's global filter: a learned elementwise filter in the 2-D Fourier domain."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sandbox.errors import check_positive
from sandbox.registry import register_mixer

from ._common import fp32


def resample_complex_weight(weight: Tensor, h: int, w: int) -> Tensor:
    """Resample a GFNet filter (h0, w0, C, 2) to (h, w, C, 2), fp32 bilinear with align_corners=True.

    This is what GFNet's author recommends for other input sizes (issues #4, #16): real and imaginary parts are
    resized as channels, index-proportionally, so each weight stays at its normalised frequency. No-op if sizes match.
    """
    if weight.shape[:2] == (h, w):
        return weight
    h0, w0, c, _ = weight.shape
    x = weight.float().permute(2, 3, 0, 1).reshape(1, 2 * c, h0, w0)  # (1, 2C, h0, w0)
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)
    return x.reshape(c, 2, h, w).permute(2, 3, 0, 1).to(weight.dtype)  # (h, w, C, 2)


@register_mixer(
    "gfnet",
    paper="Rao et al., Global Filter Networks for Image Classification, NeurIPS 2021",
    family="spectral",
    complexity="O(N log N)",
)
class GlobalFilter(nn.Module):
    """GFNet global filter: ``irfft2(rfft2(x) * W)`` with orthonormal FFTs. Maps (B, C, H, W) -> (B, C, H, W), any size.

    The learned complex filter ``complex_weight`` (size, size // 2 + 1, C, 2) (GFNet's layout and name) is resampled
    bilinearly to (H, W // 2 + 1) for other input sizes. The convolution is circular (GFNet's boundary). FFTs run in
    fp32 under autocast (cuFFT has no half precision for sizes other than powers of two).

    Args:
        dim: channels C.
        size: side of the map the filter is defined for (GFNet-H stage 1: 56).
    """

    def __init__(self, dim: int, size: int = 64) -> None:
        super().__init__()
        check_positive("size", size)
        self.dim, self.size = dim, size
        self.complex_weight = nn.Parameter(torch.randn(size, size // 2 + 1, dim, 2) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        with fp32(x):
            spec = torch.fft.rfft2(x.float(), dim=(-2, -1), norm="ortho")  # (B, C, H, W//2+1) complex
            weight = resample_complex_weight(self.complex_weight, h, w // 2 + 1).float()
            weight = torch.view_as_complex(weight.contiguous()).permute(2, 0, 1)  # (C, H, W//2+1)
            y = torch.fft.irfft2(spec * weight, s=(h, w), dim=(-2, -1), norm="ortho")  # (B, C, H, W)
        return y.to(x.dtype)
