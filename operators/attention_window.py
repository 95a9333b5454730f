"""Swin / SwinIR window multi-head self-attention (W-MSA and shifted SW-MSA), padded to run at any size."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sandbox.errors import OptionError, check_int, is_int
from sandbox.registry import register_mixer

from ._common import InferenceCache, SizeCache
from ._layout import swap_last2

__all__ = ["WindowAttention", "default_window_heads", "relative_position_index", "shift_region_mask", "pad_key_mask"]

SHIFT_MASK_VALUE = -100.0  # SwinIR's logit offset between tokens of different shift regions
# What this layer adds instead. The softmax is SwinIR's to fp32 rounding (SwinIR's masked weights are e^-100 ~ 4e-44
# times the largest, far below the resolution of a sum of order 1), but here exp underflows to exact zeros, where
# SwinIR's are subnormal floats, which some x86 CPUs multiply many times slower (measured in docs/performance.md).
# Finite, not -inf: a padded query whose real keys are all in other regions still gets a finite row (it is cropped
# away).
REGION_MASK_VALUE = -1e4


def default_window_heads(dim: int) -> int:
    """Heads for ``num_heads=None``: the largest divisor of ``dim`` that is <= max(1, dim // 30).

    Aims at SwinIR's head width of about 30 channels: dim 180 -> 6 heads (head_dim 30, as SwinIR-M), 96 -> 3,
    64 -> 2, 16 -> 1. Taking a divisor keeps every head the same width.
    """
    target = max(1, dim // 30)
    return max(h for h in range(1, target + 1) if dim % h == 0)


def relative_position_index(window_size: int, device: torch.device | str | None = None) -> Tensor:
    """(ws^2, ws^2) long index into the ((2ws-1)^2, nH) bias table, as SwinIR's ``relative_position_index``.

    Tokens of a window are numbered row-major, t = y * ws + x; the pair (i, j) maps to
    (y_i - y_j + ws - 1) * (2ws - 1) + (x_i - x_j + ws - 1).
    """
    ws = window_size
    ys, xs = torch.meshgrid(torch.arange(ws, device=device), torch.arange(ws, device=device), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)  # (N,), N = ws^2
    dy = ys[:, None] - ys[None, :] + (ws - 1)  # (N, N) in [0, 2ws-2]
    dx = xs[:, None] - xs[None, :] + (ws - 1)  # (N, N)
    return dy * (2 * ws - 1) + dx  # (N, N)


def _partition_map(m: Tensor, window_size: int) -> Tensor:
    """(Hp, Wp) map -> (nW, ws^2) per-window token values, windows and tokens row-major (SwinIR window_partition)."""
    hp, wp = m.shape
    ws = window_size
    m = m.view(hp // ws, ws, wp // ws, ws)  # (nWh, ws, nWw, ws)
    return m.permute(0, 2, 1, 3).reshape(-1, ws * ws)  # (nW, N)


def shift_region_mask(
    hp: int,
    wp: int,
    window_size: int,
    shift: int,
    device=None,
    dtype: torch.dtype = torch.float32,
    value: float = SHIFT_MASK_VALUE,
) -> Tensor:
    """(nW, N, N) additive mask of SwinIR's ``calculate_mask`` on a (hp, wp) map: ``value`` (SwinIR: -100) between
    shift regions, else 0.

    The rolled map is cut into regions by the row bands [0, hp-ws), [hp-ws, hp-shift), [hp-shift, hp) and the same
    column bands; tokens of one window attend freely only within their region. ``hp`` and ``wp`` must be multiples
    of ``window_size``. With ``shift == 0`` the mask is all zeros.
    """
    ws = window_size

    def bands(n: int) -> Tensor:
        r = torch.arange(n, device=device)
        return (r >= n - ws).long() + (r >= n - shift).long() if shift > 0 else torch.zeros_like(r)  # (n,)

    region = bands(hp)[:, None] * 3 + bands(wp)[None, :]  # (hp, wp) labels 0..8
    win = _partition_map(region, ws)  # (nW, N)
    differ = win[:, :, None] != win[:, None, :]  # (nW, N, N)
    return torch.zeros(differ.shape, device=device, dtype=dtype).masked_fill_(differ, value)


def pad_key_mask(
    h: int, w: int, window_size: int, shift: int, device=None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """(nW, 1, N) additive mask, -inf on keys that are padding, 0 on real keys, in the padded and rolled frame.

    The map is padded bottom/right from (h, w) to window multiples, then rolled by (-shift, -shift). Every window
    keeps at least one real key (padding is narrower than a window), and a real query always sees itself, so no
    softmax row is all -inf.
    """
    ws = window_size
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    real = torch.zeros(hp, wp, dtype=torch.bool, device=device)
    real[:h, :w] = True
    real = torch.roll(real, shifts=(-shift, -shift), dims=(0, 1))  # (hp, wp), same roll as the features
    win = _partition_map(real, ws)  # (nW, N)
    mask = torch.zeros(win.shape, device=device, dtype=dtype).masked_fill_(~win, float("-inf"))  # (nW, N)
    return mask[:, None, :]  # (nW, 1, N): broadcast over queries


def window_order(hp: int, wp: int, window_size: int, shift: int, device=None) -> Tensor:
    """(Hp * Wp,) long: the pixel (row-major index into the (Hp, Wp) map) of each token in window order.

    Window order: the map rolled by (-shift, -shift), cut into ws x ws windows (row-major), tokens row-major inside a
    window, as SwinIR's ``torch.roll`` followed by ``window_partition``. torch.roll(-s) puts pixel p + s at p.
    """
    ws = window_size
    rows = (torch.arange(hp, device=device) + shift) % hp  # (Hp,) source row of each rolled row
    cols = (torch.arange(wp, device=device) + shift) % wp  # (Wp,)
    pix = rows[:, None] * wp + cols[None, :]  # (Hp, Wp) source pixel of each rolled position
    return _partition_map(pix, ws).reshape(-1)  # (nW * N,)


_ORDERS = SizeCache(maxsize=32)  # window orders and their inverses, shared by all layers (they depend on size only)


def _orders(hp: int, wp: int, ws: int, shift: int, device: torch.device) -> tuple[Tensor, Tensor]:
    def build() -> Tensor:
        order = window_order(hp, wp, ws, shift, device)  # (L,)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=device)
        return torch.stack([order, inverse])  # (2, L)

    return tuple(_ORDERS.get(("window_order", hp, wp, ws, shift, str(device)), build).unbind(0))


def _gather_windows(x: Tensor, ws: int, shift: int) -> Tensor:
    """(B, C, Hp, Wp) -> (B, Hp * Wp, C) in window order, one copy."""
    b, c, hp, wp = x.shape
    if shift == 0:  # a plain partition is a strided view: one permuted copy
        return x.view(b, c, hp // ws, ws, wp // ws, ws).permute(0, 2, 4, 3, 5, 1).reshape(b, hp * wp, c)
    order, _ = _orders(hp, wp, ws, shift, x.device)
    return x.flatten(2).transpose(1, 2).index_select(1, order)  # gathers whole pixels (C values, stride Hp Wp)


def _scatter_windows(t: Tensor, ws: int, shift: int, hp: int, wp: int) -> Tensor:
    """Inverse of :func:`_gather_windows`: (B, Hp * Wp, C) in window order -> (B, C, Hp, Wp), contiguous.

    Two copies: whole pixels (C values, contiguous) into pixel order, then a blocked transpose to channels first.
    One strided copy straight to channels first (``permute(...).reshape``) sweeps the source once per channel and
    took about 6x as long on the development CPU (see :func:`operators._layout.swap_last2`).
    """
    b, _, c = t.shape
    if shift == 0:
        pixels = t.view(b, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp * wp, c)
    else:
        _, inverse = _orders(hp, wp, ws, shift, t.device)
        pixels = t.index_select(1, inverse)  # (B, Hp Wp, C), pixel order
    return swap_last2(pixels).view(b, c, hp, wp)


class _WindowOrder(torch.autograd.Function):
    """Window order as one autograd node whose backward is the inverse permutation (a gather, like the forward);
    autograd's own backward of ``index_select`` would scatter-add into zeros."""

    @staticmethod
    def forward(ctx, x: Tensor, ws: int, shift: int, hp: int, wp: int, to_tokens: bool) -> Tensor:
        ctx.args = (ws, shift, hp, wp, to_tokens)
        return _gather_windows(x, ws, shift) if to_tokens else _scatter_windows(x, ws, shift, hp, wp)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        ws, shift, hp, wp, to_tokens = ctx.args
        grad = (
            _scatter_windows(grad.contiguous(), ws, shift, hp, wp)
            if to_tokens
            else _gather_windows(grad.contiguous(), ws, shift)
        )
        return grad, None, None, None, None, None


def to_windows(x: Tensor, window_size: int, shift: int) -> Tensor:
    """(B, C, Hp, Wp) -> (B, Hp * Wp, C) tokens in window order (:func:`window_order`); Hp, Wp multiples of ws."""
    return _WindowOrder.apply(x, window_size, shift, x.shape[-2], x.shape[-1], True)


def from_windows(t: Tensor, window_size: int, shift: int, hp: int, wp: int) -> Tensor:
    """Inverse of :func:`to_windows`: (B, Hp * Wp, C) in window order -> (B, C, Hp, Wp), contiguous."""
    return _WindowOrder.apply(t, window_size, shift, hp, wp, False)


# ------------------------------------------------------------------------------------------- attention core
def window_attention(qkv: Tensor, bias: Tensor, mask: Tensor | None, num_heads: int) -> Tensor:
    """softmax(q k^T + bias + mask) v in every window and head. (W, N, 3C) q (scaled), k and v, channels (nH, d) in
    each, bias
    (nH, N, N) shared by the windows (the relative-position bias, differentiable), mask (nW, N, N) per window and
    shared by the heads (constant: shift regions, padded keys) or None (W = B nW, windows outermost per batch item)
    -> (W, N, C), channels (nH, d).

    The bias and the mask stay apart: their sum (nH, nW, N, N) is as large as all heads' attention matrices, and its
    gradient would be too; the bias's gradient is (nH, N, N).

    CPU: :class:`_WindowAttentionCPU`. Other devices: ``scaled_dot_product_attention`` (fused kernels where they
    apply) on head-split views.
    """
    if qkv.device.type == "cpu":
        return _WindowAttentionCPU.apply(qkv, bias, mask, num_heads)
    return window_attention_sdpa(qkv, bias, mask, num_heads)


def window_attention_sdpa(qkv: Tensor, bias: Tensor, mask: Tensor | None, num_heads: int) -> Tensor:
    """:func:`window_attention` by ``F.scaled_dot_product_attention`` (any device; the path off the CPU)."""
    wn, n, c3 = qkv.shape
    c = c3 // 3
    nh, d = num_heads, c // num_heads
    qh, k, v = qkv.view(wn, n, 3, nh, d).permute(2, 0, 3, 1, 4).unbind(0)  # each (W, nH, N, d)
    if mask is None:
        attn_mask = bias  # (nH, N, N), broadcast over the windows
    else:  # (nW, 1, N, N) + (nH, N, N) -> (nW, nH, N, N), repeated over the batch: (W, nH, N, N)
        attn_mask = (mask[:, None] + bias).repeat(wn // mask.shape[0], 1, 1, 1)
    out = F.scaled_dot_product_attention(qh, k, v, attn_mask=attn_mask.to(qkv.dtype), scale=1.0)  # (W, nH, N, d)
    return out.transpose(1, 2).reshape(wn, n, c)


BACKWARD_CHUNKS = 4  # the CPU backward runs each head in this many window chunks: N x N temporaries of 1/4 head


def _bmm_into(dst: Tensor, a: Tensor, b: Tensor) -> None:
    """dst = a @ b (batched); written in place when dst is contiguous (one head: whole rows), else copied in."""
    if dst.is_contiguous():
        torch.bmm(a, b, out=dst)
    else:
        dst.copy_(torch.bmm(a, b))


class _WindowAttentionCPU(torch.autograd.Function):
    """:func:`window_attention` as one autograd node, head by head, reading q, k and v in place.

    Each head's q, k and v are column blocks of the projection, (W, N, d) with a row stride of 3C, which the
    batched GEMMs read directly: no copy splits heads, and the backward writes dq, dk, dv straight into one gradient
    buffer shaped like qkv. PyTorch's ``scaled_dot_product_attention`` on the CPU takes its math
    path whenever the mask needs a gradient (here the relative-position bias always does), which adds a
    ``-inf``-row guard (``all``/``where``/``isneginf`` passes over the logits) and needs head-split copies of q, k
    and v. Backward, per head with P = softmax(S) saved: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dP * P))
    (in dP's buffer), dQ = dS K, dK = dS^T Q, d bias = dS summed over the windows. rowsum(dP * P)_i =
    sum_j P_ij (dO_i . V_j) = dO_i . O_i comes from the output (d values per row), not from N x N matrices. Each
    head's backward runs in :data:`BACKWARD_CHUNKS` chunks of windows, so its N x N temporaries are a quarter of
    that head's attention matrices.
    """

    @staticmethod
    def forward(ctx, qkv: Tensor, bias: Tensor, mask: Tensor | None, num_heads: int) -> Tensor:
        wn, n, c3 = qkv.shape
        c = c3 // 3
        d = c // num_heads
        out = qkv.new_empty(wn, n, c)
        probs = []
        for h in range(num_heads):
            qh, kh, vh = (qkv[..., o + h * d : o + (h + 1) * d] for o in (0, c, 2 * c))  # (W, N, d) each
            logits = torch.baddbmm(bias[h], qh, kh.transpose(1, 2))  # (W, N, N): q k^T + bias, one GEMM
            if mask is not None:
                logits.view(-1, *mask.shape).add_(mask)  # (B, nW, N, N) += (nW, N, N)
            p = torch.softmax(logits, dim=-1)  # (W, N, N)
            del logits
            if num_heads == 1:
                out = torch.bmm(p, vh)  # (W, N, C)
            else:
                out[..., h * d : (h + 1) * d] = torch.bmm(p, vh)  # (W, N, d)
            probs.append(p)
        ctx.num_heads = num_heads
        ctx.save_for_backward(qkv, out, *probs)  # out: the next linear holds it anyway
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        qkv, out, *probs = ctx.saved_tensors
        wn, n, c3 = qkv.shape
        c = c3 // 3
        nh = ctx.num_heads
        d = c // nh
        grad = grad.contiguous()
        rowsum = (grad * out).view(wn, n, nh, d).sum(-1)  # (W, N, nH): rowsum(dP * P) of every head
        dqkv = torch.empty_like(qkv)
        d_bias = qkv.new_zeros(nh, n, n) if ctx.needs_input_grad[1] else None
        step = -(-wn // BACKWARD_CHUNKS)
        for h, p in enumerate(probs):
            cq, ck, cv = (slice(o + h * d, o + (h + 1) * d) for o in (0, c, 2 * c))
            for w0 in range(0, wn, step):
                rows = slice(w0, w0 + step)
                ph, g = p[rows], grad[rows, :, cq]  # (w, N, N), (w, N, d)
                _bmm_into(dqkv[rows, :, cv], ph.transpose(1, 2), g)  # dV
                ds = torch.bmm(g, qkv[rows, :, cv].transpose(1, 2))  # (w, N, N): dP
                ds.sub_(rowsum[rows, :, h, None]).mul_(ph)  # dS = P * (dP - rowsum), in dP's buffer
                _bmm_into(dqkv[rows, :, cq], ds, qkv[rows, :, ck])  # dQ
                _bmm_into(dqkv[rows, :, ck], ds.transpose(1, 2), qkv[rows, :, cq])  # dK
                if d_bias is not None:
                    d_bias[h] += ds.sum(0)  # (N, N)
        return dqkv, d_bias, None, None


@register_mixer(
    "attention_window",
    paper="Liang et al., SwinIR: Image Restoration Using Swin Transformer, ICCVW 2021",
    family="attention",
    complexity="O(N w^2)",
)
class WindowAttention(nn.Module):
    """Swin/SwinIR window self-attention with relative position bias. Maps (B, C, H, W) -> (B, C, H, W), any H, W >= 1.

    The map is padded bottom/right to multiples of ``window_size`` (pad content never reaches a real pixel: padded
    keys are masked with -inf), rolled by (-shift, -shift), cut into ws x ws windows, and each window runs multi-head
    attention softmax(q k^T / sqrt(d) + B_rel + M_shift + M_pad) v (:func:`window_attention`: one autograd node with a
    hand-written backward on CPU, ``scaled_dot_product_attention`` elsewhere). B_rel comes from the learned table
    ``relative_position_bias_table`` ((2ws-1)^2, nH); M_shift is SwinIR's region mask, computed on the padded size as
    SwinIR's ``calculate_mask`` would on that size, with :data:`REGION_MASK_VALUE` where SwinIR has -100 (the same
    softmax to fp32 rounding). The result is projected, rolled back and cropped. Roll and window partition are one
    gather (:func:`to_windows`), and q's scale is folded into the projection (see :meth:`_projections`). When H
    and W are multiples of ``window_size`` this equals SwinIR's ``WindowAttention`` with its block's roll and mask on
    that size, values and gradients.

    Differences from SwinIR: the window is never shrunk and the shift never dropped for small inputs (SwinIR does so
    only when its construction ``img_size`` is <= window_size; here a small input is padded instead); qkv and proj
    keep PyTorch's default Linear init (SwinIR re-initialises them at network level, trunc_normal std 0.02).

    Parameters have SwinIR's names and shapes, so an official block's ``attn.*`` weights load 1:1: ``qkv``
    Linear(C, 3C), ``proj`` Linear(C, C), ``relative_position_bias_table``. SwinIR's buffers
    ``relative_position_index`` and ``attn_mask`` are not state here (they are rebuilt per size in a
    :class:`SizeCache`), so a loader must drop those keys.

    Args:
        dim: channels C.
        window_size: window side ws (8 in SwinIR denoising, 7 in JPEG artifact removal).
        shift: cyclic shift s, 0 <= s < ws; networks alternate 0 and ws // 2 between blocks.
        num_heads: heads nH, must divide ``dim``; None picks :func:`default_window_heads` (head width about 30).
        qkv_bias: whether ``qkv`` has a bias (True in SwinIR).
    """

    def __init__(
        self,
        dim: int,
        window_size: int = 8,
        shift: int = 0,
        num_heads: int | None = None,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        check_int("dim", dim)
        check_int("window_size", window_size, hint=" (8 in SwinIR)")
        if not is_int(shift) or not 0 <= shift < window_size:
            raise OptionError(
                f"shift={shift!r} is not valid; expected an integer with 0 <= shift < window_size={window_size} "
                f"(0 or {window_size // 2} in SwinIR)"
            )
        if num_heads is None:
            num_heads = default_window_heads(dim)
        elif not is_int(num_heads) or num_heads < 1 or dim % num_heads:
            raise OptionError(f"num_heads={num_heads!r} is not valid; expected None or a divisor of dim={dim}")
        if not isinstance(qkv_bias, bool):
            raise OptionError(f"qkv_bias={qkv_bias!r} is not valid; expected True or False")
        self.dim = dim
        self.window_size = window_size
        self.shift = shift
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self._cache = SizeCache()
        self._inference = InferenceCache()  # the relative bias in inference, see _logit_bias

    @staticmethod
    def block_defaults(index: int, network_config: Any, options: Mapping[str, Any]) -> dict[str, Any]:
        """Per-block hook of the mixer contract (``sandbox.registry.register_mixer``): the network's ``window_size``
        and ``num_heads`` (when it sets them), and with its ``shift_windows`` a shift of 0 on even blocks and
        ``window_size // 2`` on odd ones (SwinIR); the block's own ``options`` take precedence."""
        defaults: dict[str, Any] = {}
        if getattr(network_config, "window_size", None) is not None:
            defaults["window_size"] = network_config.window_size
        ws = options.get("window_size", defaults.get("window_size"))
        if getattr(network_config, "shift_windows", False) and is_int(ws):
            defaults["shift"] = 0 if index % 2 == 0 else ws // 2
        if getattr(network_config, "num_heads", None) is not None:
            defaults["num_heads"] = network_config.num_heads
        return defaults

    @property
    def pad_multiple(self) -> int:
        """Networks reflect-pad their input to this multiple (SwinIR's ``check_image_size``), so windows see image
        content rather than masked padding; the mixer itself accepts any size."""
        return self.window_size

    def extra_repr(self) -> str:
        return f"dim={self.dim}, window_size={self.window_size}, shift={self.shift}, num_heads={self.num_heads}"

    def _relative_bias(self) -> Tensor:
        """(nH, N, N) bias gathered from the table; differentiable w.r.t. the table."""
        table = self.relative_position_bias_table  # ((2ws-1)^2, nH)
        n = self.window_size**2
        index = self._cache.get(
            ("relative_position_index", self.window_size, self.window_size, table.device, torch.long),
            lambda: relative_position_index(self.window_size, table.device),
        )  # (N, N)
        bias = table[index.reshape(-1)].view(n, n, self.num_heads)  # (N, N, nH)
        return bias.permute(2, 0, 1).contiguous()  # (nH, N, N); contiguous: adding a strided view is 5x slower

    def _window_mask(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor | None:
        """(nW, N, N) shift-region + pad-key mask for an (h, w) input, or None when neither applies."""
        ws, s = self.window_size, self.shift
        if s == 0 and h % ws == 0 and w % ws == 0:
            return None

        def build() -> Tensor:
            hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
            mask = shift_region_mask(hp, wp, ws, s, device, dtype, value=REGION_MASK_VALUE)  # (nW, N, N)
            return mask + pad_key_mask(h, w, ws, s, device, dtype)  # (nW, N, N)

        return self._cache.get(("window_mask", h, w, device, dtype), build)

    def _logit_bias(self, dtype: torch.dtype) -> Tensor:
        """(nH, N, N) relative bias added to the logits. Depends on the table only, so inference reuses it."""
        device = self.relative_position_bias_table.device
        return self._inference.get(self, (str(device), dtype), lambda: self._relative_bias().to(dtype))

    def _projections(self) -> tuple[Tensor, Tensor | None]:
        """qkv's weight (3C, C) and bias (3C,) with the q rows scaled by 1 / sqrt(head_dim), so that one product
        gives the scaled logits' q beside k and v (SwinIR scales q after the product; the same to fp32 rounding)."""
        c = self.dim
        weight, bias = self.qkv.weight, self.qkv.bias  # (3C, C), (3C,)
        scale = weight.new_ones(3 * c)
        scale[:c] = self.head_dim**-0.5
        return weight * scale[:, None], None if bias is None else bias * scale

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        ws, s, nh = self.window_size, self.shift, self.num_heads
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        nw, n = (hp // ws) * (wp // ws), ws * ws

        if (hp, wp) != (h, w):
            x = F.pad(x, (0, wp - w, 0, hp - h))  # (B, C, Hp, Wp); content irrelevant (masked keys, cropped queries)
        tokens = to_windows(x, ws, s)  # (B, nW N, C): rolled by -s, window by window, row-major inside
        w_qkv, b_qkv = self._projections()
        qkv = F.linear(tokens, w_qkv, b_qkv).view(b * nw, n, 3 * c)  # (B nW, N, 3C): q (scaled), k, v
        bias = self._logit_bias(qkv.dtype)  # (nH, N, N)
        mask = self._window_mask(h, w, qkv.device, qkv.dtype)  # (nW, N, N) or None
        out = window_attention(qkv, bias, mask, nh)  # (B nW, N, C), channels (nH, d)
        out = self.proj(out.view(b, nw * n, c))  # per token
        y = from_windows(out, ws, s, hp, wp)  # (B, C, Hp, Wp), rolled back
        return y if (hp, wp) == (h, w) else y[:, :, :h, :w]
