"""Bidirectional (non-causal, centred) Hyena of order 2 over the raster order (HyenaPixel's ``hb_former`` mixer)."""

from __future__ import annotations

from sandbox.registry import register_mixer

from .hyena import Hyena1D


@register_mixer(
    "hyena_bi",
    paper="Spravil et al., HyenaPixel: Global Image Context with Convolutions (bidirectional Hyena), ECAI 2024",
    family="hyena",
    complexity="O(N log N)",
)
class HyenaBiMixer(Hyena1D):
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
        self._build(
            dim,
            filter_size,
            emb_dim,
            filter_order,
            num_inner_mlps,
            short_filter_order,
            sin_freq,
            centred=True,
            use_layernorm=use_layernorm,
        )
