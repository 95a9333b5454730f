"""Bidirectional (non-causal, centred) Hyena of order 2 over the raster order (HyenaPixel's ``hb_former`` mixer)."""

from __future__ import annotations

from torch import Tensor, nn

from sandbox.errors import check_int
from sandbox.registry import register_mixer

from ._common import LayerNormCF, linear_cf
from .hyena import HyenaFilter


@register_mixer(
    "hyena_bi",
    paper="Spravil et al., HyenaPixel: Global Image Context with Convolutions (bidirectional Hyena), ECAI 2024",
    family="hyena",
    complexity="O(N log N)",
)
class HyenaBiMixer(nn.Module):
    """Bidirectional Hyena of order 2 over the raster order. Maps (B, C, H, W) -> (B, C, H, W), any size.

    The image is flattened row by row to L = H * W tokens (so the short and long filters wrap across rows)::

        x0, x1, v = split(short_filter(in_proj(u)))    # in_proj Linear(C, 3C); depthwise centred Conv1d, k taps
        v = x1 * v                                     # [qk_norm: LayerNorm without bias over C]
        y = x0 * (h * v + D * v)                       # h * : centred FFT convolution, D: skip
        y = out_proj(y)                                # [out_norm: LayerNorm without bias, before out_proj]

    The centred convolution is a true convolution (as HyenaPixel's ``fftconv`` + crop)::

        (h * v)[i] = sum_j h[i - j + K // 2] v[j],   i.e. tap K // 2 + d weights the token d steps *before* i,

    so the brief's ``h[j - i + K // 2]`` is this with the learned filter mirrored. h is :class:`HyenaFilter` with
    ``centred=True``: grid of K = 2L - 1 taps for ``filter_size="global"`` (every token sees every other), tent
    time 1 - |offset| / (K // 2) as first feature and window exp(-(1 - tent) |delta_c|) (1 at offset 0,
    exp(-|delta_c|) at the grid ends). Unlike the official module, whose filter is fixed at l_max and breaks at
    any other size, the filter is generated for the length at hand; with an integer (odd) K it is fixed and
    reaches +-K // 2 tokens (+-(K // 2 + short_filter_order // 2) through the short filter). The FFT (zero padded,
    no wrap-around), the filter generation and the exponentials run in float32 under autocast; size-derived
    tensors are cached, not stored. state_dict keys follow HyenaPixel: ``in_proj``, ``short_filter``,
    ``filter_fn.implicit_filter``, ``filter_fn.bias`` (D), ``qk_norm.0``, ``out_norm``, ``out_proj``.

    Args:
        dim: channels C.
        filter_size: ``"global"`` (2L - 1 taps) or an odd int K >= 1.
        emb_dim: positional feature size E, odd >= 3 (hb_former_s18 stage 1: 33).
        filter_order: width W of the filter MLP (hb_former_s18 stage 1: 64).
        num_inner_mlps: hidden Linear(W, W) -> Sin layers in the filter MLP (safari default 2).
        short_filter_order: odd taps of the centred depthwise short convolution (official 3).
        sin_freq: initial frequency w of the Sin activations (1, as the official filter).
        use_layernorm: LayerNorm without bias after the gate and before out_proj (hb_former_b36), else none.
    """

    def __init__(
        self,
        dim: int,
        filter_size: str | int = "global",
        emb_dim: int = 33,
        filter_order: int = 64,
        num_inner_mlps: int = 2,
        short_filter_order: int = 3,
        sin_freq: float = 1.0,
        use_layernorm: bool = False,
    ) -> None:
        super().__init__()
        check_int("short_filter_order", short_filter_order, 1, odd=True)
        self.dim = dim
        self.use_layernorm = bool(use_layernorm)
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.short_filter = nn.Conv1d(
            3 * dim, 3 * dim, short_filter_order, padding=short_filter_order // 2, groups=3 * dim
        )
        self.filter_fn = HyenaFilter(dim, filter_size, emb_dim, filter_order, num_inner_mlps, sin_freq, centred=True)
        if self.use_layernorm:
            self.qk_norm = nn.ModuleList([LayerNormCF(dim, bias=False)])  # one per order - 1 gate, as official
            self.out_norm = LayerNormCF(dim, bias=False)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        u = linear_cf(x, self.in_proj)  # (B, 3C, H, W)
        u = u.reshape(b, 3 * c, h * w)  # (B, 3C, L), raster order
        u = self.short_filter(u)  # (B, 3C, L), centred
        x0, x1, v = u.chunk(3, dim=1)  # (B, C, L) each
        v = x1 * v
        if self.use_layernorm:
            v = self.qk_norm[0](v.unsqueeze(-1)).squeeze(-1)  # (B, C, L, 1) -> norm over C -> (B, C, L)
        y = x0 * self.filter_fn(v).to(v.dtype)  # (B, C, L); long conv in float32
        y = y.reshape(b, c, h, w)  # (B, C, H, W)
        if self.use_layernorm:
            y = self.out_norm(y)
        return linear_cf(y, self.out_proj)
