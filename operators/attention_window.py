"""Swin / SwinIR window multi-head self-attention (W-MSA and shifted SW-MSA), padded to run at any size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sandbox.errors import OptionError, check_int, is_int
from sandbox.registry import register_mixer

from ._common import SizeCache

__all__ = ["WindowAttention", "default_window_heads", "relative_position_index", "shift_region_mask", "pad_key_mask"]

SHIFT_MASK_VALUE = -100.0  # SwinIR's logit offset between tokens of different shift regions


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
    hp: int, wp: int, window_size: int, shift: int, device=None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """(nW, N, N) additive mask of SwinIR's ``calculate_mask`` on a (hp, wp) map: -100 between shift regions, else 0.

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
    return torch.zeros(differ.shape, device=device, dtype=dtype).masked_fill_(differ, SHIFT_MASK_VALUE)


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
    attention softmax(q k^T / sqrt(d) + B_rel + M_shift + M_pad) v via ``scaled_dot_product_attention``. B_rel comes
    from the learned table ``relative_position_bias_table`` ((2ws-1)^2, nH); M_shift is SwinIR's -100 region mask,
    computed on the padded size exactly as SwinIR's ``calculate_mask`` would on that size. The result is rolled back,
    cropped and projected. When H and W are multiples of ``window_size`` this equals SwinIR's ``WindowAttention``
    with its block's roll and mask on that size.

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
        return bias.permute(2, 0, 1)  # (nH, N, N)

    def _window_mask(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> Tensor | None:
        """(nW, N, N) shift-region + pad-key mask for an (h, w) input, or None when neither applies."""
        ws, s = self.window_size, self.shift
        if s == 0 and h % ws == 0 and w % ws == 0:
            return None

        def build() -> Tensor:
            hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
            mask = shift_region_mask(hp, wp, ws, s, device, dtype)  # (nW, N, N)
            return mask + pad_key_mask(h, w, ws, s, device, dtype)  # (nW, N, N)

        return self._cache.get(("window_mask", h, w, device, dtype), build)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        ws, s, nh, d = self.window_size, self.shift, self.num_heads, self.head_dim
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        nwh, nww = hp // ws, wp // ws
        n = ws * ws

        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        qkv = self.qkv(x)  # (B, H, W, 3C); per token, so it commutes with pad and roll
        qkv = F.pad(qkv, (0, 0, 0, wp - w, 0, hp - h))  # (B, Hp, Wp, 3C), content irrelevant (masked keys)
        if s:
            qkv = torch.roll(qkv, shifts=(-s, -s), dims=(1, 2))  # (B, Hp, Wp, 3C)
        qkv = qkv.view(b, nwh, ws, nww, ws, 3, nh, d)  # (B, nWh, ws, nWw, ws, 3, nH, d)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7)  # (3, B, nWh, nWw, nH, ws, ws, d)
        q, k, v = qkv.reshape(3, b, nwh * nww, nh, n, d).unbind(0)  # each (B, nW, nH, N, d), contiguous

        bias = self._relative_bias()  # (nH, N, N), table dtype
        win_mask = self._window_mask(h, w, bias.device, bias.dtype)  # (nW, N, N) or None
        # 4-D views let SDPA pick a fused kernel where one applies; both broadcast the mask over the batch
        if win_mask is None:  # no shift, no padding: the bias is shared by all windows
            q, k, v = (t.reshape(b * nwh * nww, nh, n, d) for t in (q, k, v))  # (B*nW, nH, N, d)
            mask = bias  # (nH, N, N)
        else:  # windows joined with heads, so the per-window mask broadcasts over B without a copy
            q, k, v = (t.reshape(b, nwh * nww * nh, n, d) for t in (q, k, v))  # (B, nW*nH, N, d)
            mask = (win_mask[:, None] + bias).reshape(nwh * nww * nh, n, n)  # (nW*nH, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))  # shape of q

        out = out.reshape(b, nwh, nww, nh, ws, ws, d)  # (B, nWh, nWw, nH, ws, ws, d)
        out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(b, hp, wp, c)  # (B, Hp, Wp, C), channels = (nH, d)
        if s:
            out = torch.roll(out, shifts=(s, s), dims=(1, 2))  # (B, Hp, Wp, C)
        out = self.proj(out[:, :h, :w])  # (B, H, W, C)
        return out.permute(0, 3, 1, 2)  # (B, C, H, W)
