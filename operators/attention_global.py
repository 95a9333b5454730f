"""Global multi-head self-attention over all pixels (CAFormer's Attention mixer, MetaFormer baselines)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sandbox.errors import OptionError, check_int
from sandbox.registry import register_mixer

__all__ = ["GlobalAttention"]


@register_mixer(
    "attention_global",
    paper="Yu et al., MetaFormer Baselines for Vision (CAFormer Attention), TPAMI 2024",
    family="attention",
    complexity="O(N^2)",
)
class GlobalAttention(nn.Module):
    """Multi-head self-attention over all H*W pixels. Maps (B, C, H, W) -> (B, C, H, W), any H, W >= 1.

    As CAFormer's ``Attention``: qkv Linear(C, 3 * nH * d, no bias) -> softmax(q k^T / sqrt(d)) v per head ->
    proj Linear(nH * d, C, no bias), with d = ``head_dim`` and nH = max(1, C // d) unless ``num_heads`` is given,
    so the attention width nH * d may differ from C (e.g. C = 16 gives one 32-wide head). No position encoding, so
    the mixer is permutation-equivariant over pixels and runs at any size; it uses
    ``scaled_dot_product_attention``, whose memory is O(N^2) per head on backends without flash or
    memory-efficient kernels (CPU included), N = H * W. Parameter names (``qkv``, ``proj``) match the official code.

    Args:
        dim: channels C.
        head_dim: width d of each head (32 in CAFormer).
        num_heads: heads nH; None gives max(1, dim // head_dim).
        qkv_bias: whether ``qkv`` has a bias (False in CAFormer).
        proj_bias: whether ``proj`` has a bias (False in CAFormer).
    """

    def __init__(
        self,
        dim: int,
        head_dim: int = 32,
        num_heads: int | None = None,
        qkv_bias: bool = False,
        proj_bias: bool = False,
    ) -> None:
        super().__init__()
        check_int("dim", dim)
        check_int("head_dim", head_dim, hint=" (32 in CAFormer)")
        if num_heads is None:
            num_heads = max(1, dim // head_dim)
        check_int("num_heads", num_heads, hint=" or None")
        for what, flag in (("qkv_bias", qkv_bias), ("proj_bias", proj_bias)):
            if not isinstance(flag, bool):
                raise OptionError(f"{what}={flag!r} is not valid; expected True or False")
        self.dim = dim
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.attention_dim = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * self.attention_dim, bias=qkv_bias)
        self.proj = nn.Linear(self.attention_dim, dim, bias=proj_bias)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, head_dim={self.head_dim}, num_heads={self.num_heads}"

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        nh, d = self.num_heads, self.head_dim
        x = x.flatten(2).transpose(1, 2)  # (B, N, C), N = H * W
        qkv = self.qkv(x).view(b, h * w, 3, nh, d)  # (B, N, 3, nH, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nH, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, nH, N, d)
        out = out.transpose(1, 2).reshape(b, h * w, nh * d)  # (B, N, nH * d)
        out = self.proj(out)  # (B, N, C)
        return out.transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)
