"""Hyena (safari, order 2), causal over the raster order, and the implicit 1D filter shared with ``hyena_bi``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sandbox.errors import OptionError, check_int, check_positive, is_int
from sandbox.registry import register_mixer

from ._common import InferenceCache, LayerNormCF, SizeCache, fp32, linear_cf
from ._fft import fft_size, fftconv_on_grid, place_on_grid

__all__ = [
    "Hyena1D",
    "HyenaMixer",
    "HyenaFilter",
    "Sin",
    "check_filter_size",
    "modulation_deltas",
    "sin_mlp",
    "sin_mlp_cf",
]

# safari ExponentialModulation constants: |delta_c| = linspace(ln(target)/slow, ln(target)/fast, C) in [3.07, 15.35]
_TARGET, _FAST_DECAY_PCT, _SLOW_DECAY_PCT = 1e-2, 0.3, 1.5


def sin_mlp(in_dim: int, width: int, out_dim: int, num_inner: int, sin_freq: float) -> nn.Sequential:
    """Implicit-filter MLP (safari, HyenaPixel): Linear -> Sin -> [Linear -> Sin] x num_inner -> Linear (no bias)."""
    layers: list[nn.Module] = [nn.Linear(in_dim, width), Sin(width, sin_freq)]
    for _ in range(num_inner):
        layers += [nn.Linear(width, width), Sin(width, sin_freq)]
    layers.append(nn.Linear(width, out_dim, bias=False))
    return nn.Sequential(*layers)


class _SinFn(torch.autograd.Function):
    """``sin(a)`` whose backward writes ``cos(a) * grad`` into one new buffer (autograd's ``grad * a.cos()`` makes
    two): the filter MLP's activations are as large as the kernel."""

    @staticmethod
    def forward(ctx, a: Tensor) -> Tensor:
        ctx.save_for_backward(a)
        return torch.sin(a)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        (a,) = ctx.saved_tensors
        return torch.cos(a).mul_(grad)


def sin_mlp_cf(mlp: nn.Sequential, z: Tensor) -> Tensor:
    """Apply a :func:`sin_mlp` to features stored channels-first: z (E, N) -> (out_dim, N), the same values as
    ``mlp(z.t()).t()`` up to float rounding.

    Each Linear is one GEMM ``W @ a`` (+ bias) on (width, N) activations, so neither the positional features nor the
    filter are ever transposed (the filter comes out in the (C, taps) layout the FFT convolution needs). The Sin
    frequency is folded into the Linear before it, ``sin(f * (W a + b)) = sin((f W) a + f b)``, so that each hidden
    layer makes two passes over its (W, N) activations (GEMM, sin) instead of three forward, and two instead of
    five backward (cos, product; the frequency's gradient comes through the small (W, in) scaled weights). The
    module's parameters and state_dict are unchanged.
    """
    layers = list(mlp)
    a = z
    i = 0
    while i < len(layers):
        layer = layers[i]
        w = layer.weight.to(a.dtype)  # (out, in)
        b = layer.bias.to(a.dtype) if layer.bias is not None else None  # (out,)
        sin = layers[i + 1] if i + 1 < len(layers) and isinstance(layers[i + 1], Sin) else None
        if sin is not None:
            freq = sin.freq.to(a.dtype).view(-1)  # (out,)
            w, b = w * freq[:, None], (b * freq if b is not None else None)
        a = torch.mm(w, a) if b is None else torch.addmm(b[:, None], w, a)  # (out, N)
        if sin is not None:
            a = _SinFn.apply(a)
        i += 2 if sin is not None else 1
    return a  # (out_dim, N)


def _short_conv_ranges(length: int, taps: int, padding: int):
    """(tap t, offset o = t - p, first output lo, end output hi) for the taps of a short convolution: output l reads
    input l + o, and [lo, hi) are the outputs whose input lies inside [0, L)."""
    for t in range(taps):
        o = t - padding
        lo, hi = max(0, -o), min(length, length - o)
        yield t, o, lo, max(lo, hi)


class _ShortConv1d(torch.autograd.Function):
    """Depthwise Conv1d (groups = channels, stride 1) cropped to the input length, computed tap by tap.

    y[..., c, l] = bias_c + sum_t w[c, t] x[..., c, l + t - p] for l in [0, L) (x zero outside [0, L)); p = k // 2 is
    the centred short filter, p = k - 1 the causal one (``nn.Conv1d(padding=k - 1)`` with the look-ahead outputs
    dropped). Each tap is one fused multiply-add of a shifted slice, forward and backward::

        dx[..., l + t - p] += w[c, t] g[..., l],   dw[c, t] = sum g[..., l] x[..., l + t - p],   dbias_c = sum g

    PyTorch's CPU depthwise Conv1d with 3 taps took several times as long as these k + 1 passes over memory, forward
    and (more so) backward.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.padding, ctx.has_bias = padding, bias is not None
        w = weight[:, 0]  # (C, k)
        y = bias[:, None].expand_as(x).clone() if bias is not None else torch.zeros_like(x)  # (B, C, L)
        for t, o, lo, hi in _short_conv_ranges(x.shape[-1], w.shape[-1], padding):
            y[..., lo:hi].addcmul_(x[..., lo + o : hi + o], w[:, t, None])
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight = ctx.saved_tensors  # (B, C, L), (C, 1, k)
        w = weight[:, 0]  # (C, k)
        dx = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        dw = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        for t, o, lo, hi in _short_conv_ranges(x.shape[-1], w.shape[-1], ctx.padding):
            g_t, x_t = grad[..., lo:hi], x[..., lo + o : hi + o]  # (B, C, n) each
            if dx is not None:
                dx[..., lo + o : hi + o].addcmul_(g_t, w[:, t, None])
            if dw is not None:
                dw[:, t] = torch.einsum("bcn,bcn->c", g_t, x_t)  # batched dot products
        dbias = grad.sum((0, 2)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw.view_as(weight) if dw is not None else None, dbias, None


def short_conv1d(x: Tensor, conv: nn.Conv1d) -> Tensor:
    """``conv(x)[..., :L]`` for a depthwise ``nn.Conv1d`` (the Hyena short filter) on (B, C, L): on CPU through
    :class:`_ShortConv1d` (same values, faster), elsewhere and under autocast the module itself."""
    if x.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
        return _ShortConv1d.apply(x, conv.weight, conv.bias, conv.padding[0])
    return conv(x)[..., : x.shape[-1]]


def check_filter_size(value, centred: bool) -> None:
    """``filter_size`` is ``"global"`` or a positive int, odd when the kernel is centred; else :class:`OptionError`."""
    if isinstance(value, str):
        ok = value == "global"
    else:
        ok = is_int(value) and value >= 1 and (value % 2 == 1 or not centred)
    if not ok:
        kind = "an odd integer >= 1 (the kernel is centred)" if centred else "an integer >= 1"
        raise OptionError(f"filter_size={value!r} is not valid; expected 'global' or {kind}")


def modulation_deltas(channels: int, device: torch.device) -> Tensor:
    """safari's fixed decay rates |delta_c|, (C,) float32, linear from 3.07 (slow) to 15.35 (fast) over channels."""
    lo, hi = math.log(_TARGET) / _SLOW_DECAY_PCT, math.log(_TARGET) / _FAST_DECAY_PCT
    return torch.linspace(lo, hi, channels, device=device).abs()


class Sin(nn.Module):
    """``sin(freq * x)`` with a trainable per-feature frequency ``freq`` (1, W), initialised to ``w``."""

    def __init__(self, dim: int, w: float) -> None:
        super().__init__()
        self.freq = nn.Parameter(torch.full((1, dim), float(w)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.freq * x)


class HyenaFilter(nn.Module):
    """safari's implicit long filter, generated for the length at hand, plus the skip term D.

    ``forward(u)`` maps (B, C, L) to the float32 (B, C, L) ``h * u + D * u``, with ``*`` the causal or centred FFT
    convolution of :func:`operators._fft.fftconv1d`. The filter is built on a grid of n points (n = L, causal
    ``"global"``; n = 2L - 1, centred ``"global"``; n = K for an integer ``filter_size``):

    - positional features z (n, E): [s, cos(f_b w), -sin(f_b w)], w = 2 pi m / n for grid index m,
      f_b = linspace(1e-4, B - 1, B), B = (E - 1) / 2 bands. s is t = m / (n - 1) (causal) or the tent
      1 - |m - n // 2| / (n // 2) (centred, peak 1 at offset 0).
    - implicit_filter: Linear(E, W) -> Sin -> [Linear(W, W) -> Sin] x num_inner_mlps -> Linear(W, C, no bias).
    - window: h <- h * exp(-d * |delta_c|), d = t (causal) or 1 - tent (centred), fixed safari deltas, shift 0.

    Only the taps that can reach an output are evaluated (the first min(n, L) causal, offsets up to
    min(n // 2, L - 1) centred), channels-first (:func:`sin_mlp_cf`), and the window is applied while the filter is
    placed on the FFT grid (:func:`operators._fft.place_on_grid`). z and the window depend only on the size, so they
    are cached per (grid, taps, device), never stored: the state_dict holds ``implicit_filter.*`` and ``bias`` (D,
    randn init).
    Deviations from safari: z is derived instead of a trainable Parameter at a fixed ``l_max`` (so any length works),
    and each Sin layer has its own ``freq`` (as HyenaPixel; standalone safari shares one).

    Args:
        channels: channels C (= d_model for order 2).
        filter_size: ``"global"`` or an int K (odd when ``centred``).
        emb_dim: E, odd >= 3.
        filter_order: MLP width W.
        num_inner_mlps: hidden Linear(W, W) -> Sin layers.
        sin_freq: initial Sin frequency w.
        centred: centred (bidirectional) instead of causal filter and convolution.
    """

    def __init__(
        self,
        channels: int,
        filter_size: str | int,
        emb_dim: int,
        filter_order: int,
        num_inner_mlps: int,
        sin_freq: float,
        centred: bool,
    ) -> None:
        super().__init__()
        check_filter_size(filter_size, centred)
        check_int("emb_dim", emb_dim, 3, odd=True)
        check_int("filter_order", filter_order, 1)
        check_int("num_inner_mlps", num_inner_mlps, 0)
        check_positive("sin_freq", sin_freq)
        self.channels = channels
        self.filter_size = filter_size
        self.emb_dim = emb_dim
        self.centred = centred
        self.implicit_filter = sin_mlp(emb_dim, filter_order, channels, num_inner_mlps, sin_freq)
        self.bias = nn.Parameter(torch.randn(channels))  # the skip term D
        self._cache = SizeCache()
        self._inference = InferenceCache()  # filters per length in eval mode without gradients, see forward()

    def grid(self, length: int) -> tuple[int, int, int]:
        """(n grid points, first kept grid index, kept taps) for a sequence of ``length``."""
        if self.centred:
            n = 2 * length - 1 if self.filter_size == "global" else self.filter_size
            reach = min(n // 2, length - 1)
            return n, n // 2 - reach, 2 * reach + 1
        n = length if self.filter_size == "global" else self.filter_size
        return n, 0, min(n, length)

    def _time(self, n: int, start: int, taps: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """Grid indices m, first feature s and window distance d, each (taps,) float32, for [start, start + taps)."""
        m = torch.arange(start, start + taps, device=device, dtype=torch.float32)  # (taps,)
        if self.centred:
            c = n // 2
            tent = 1 - (m - c).abs() / c if c > 0 else torch.ones_like(m)  # 1 at offset 0, 0 at the grid ends
            return m, tent, 1 - tent
        t = m / (n - 1) if n > 1 else torch.zeros_like(m)  # linspace(0, 1, n)[start:start + taps]
        return m, t, t

    def _features(self, n: int, start: int, taps: int, device: torch.device) -> Tensor:
        """Positional features z (E, taps) float32, channels-first: [s, cos(f_b w), -sin(f_b w)], w = 2 pi m / n."""
        m, first, _ = self._time(n, start, taps, device)
        bands = (self.emb_dim - 1) // 2
        f = torch.linspace(1e-4, bands - 1, bands, device=device)  # (bands,)
        phase = (2 * math.pi / n) * f[:, None] * m[None, :]  # (bands, taps)
        return torch.cat([first[None, :], phase.cos(), -phase.sin()], dim=0)  # (E, taps)

    def _window(self, n: int, start: int, taps: int, device: torch.device) -> Tensor:
        """Exponential window exp(-d |delta_c|), (C, taps) float32."""
        _, _, dist = self._time(n, start, taps, device)
        return torch.exp(-dist[None, :] * modulation_deltas(self.channels, device)[:, None])  # (C, taps)

    def kernel(self, length: int, device: torch.device) -> Tensor:
        """The filter (C, taps) in float32 for a sequence of ``length`` (tap 0 = lag 0 causal; centre = offset 0)."""
        n, start, taps = self.grid(length)
        key = (n, start, taps, device, torch.float32)
        z = self._cache.get(("z",) + key, lambda: self._features(n, start, taps, device))  # (E, taps)
        window = self._cache.get(("window",) + key, lambda: self._window(n, start, taps, device))  # (C, taps)
        with fp32(z):
            return sin_mlp_cf(self.implicit_filter, z) * window  # (C, taps)

    def fft_grid(self, length: int) -> tuple[int, int]:
        """(FFT size s, index of the offset-0 tap) of the convolution with the kernel for a sequence of ``length``:
        the full linear convolution fits (causal); the kept window fits and the wrapped tail lands before it
        (centred, as :func:`operators._fft.centred_grid`)."""
        _, _, taps = self.grid(length)
        if self.centred:
            return fft_size(max(length + taps - 1 - taps // 2, taps // 2 + length)), taps // 2
        return fft_size(length + taps - 1), 0

    def kernel_on_grid(self, length: int, device: torch.device) -> Tensor:
        """The filter placed on the FFT grid (C, s), float32, with the window applied while placing (one pass)."""
        n, start, taps = self.grid(length)
        key = (n, start, taps, device, torch.float32)
        z = self._cache.get(("z",) + key, lambda: self._features(n, start, taps, device))  # (E, taps)
        window = self._cache.get(("window",) + key, lambda: self._window(n, start, taps, device))  # (C, taps)
        s, offset = self.fft_grid(length)
        with fp32(z):
            return place_on_grid(sin_mlp_cf(self.implicit_filter, z), (s,), (offset,), scale=window)  # (C, s)

    def forward(self, u: Tensor) -> Tensor:
        """In inference (eval mode, no gradients) the placed filter is made once per length and reused until a
        parameter changes, as it depends on nothing else."""
        with fp32(u):
            u = u.float()  # (B, C, L)
            length, device = u.shape[-1], u.device
            k = self._inference.get(self, (length, str(device)), lambda: self.kernel_on_grid(length, device))  # (C, s)
            return fftconv_on_grid(u, k, self.bias)  # (B, C, L): h * u + D u


class Hyena1D(nn.Module):
    """Order-2 Hyena body over the raster order, shared by ``hyena`` (causal) and ``hyena_bi`` (centred).

    (B, C, H, W) -> L = H * W tokens -> in_proj Linear(C, 3C) -> depthwise short Conv1d (causal: k - 1 left padding
    and the look-ahead outputs dropped; centred: k // 2 padding) -> x0, x1, v -> v = x1 * v [qk_norm] ->
    y = x0 * (h * v + D v) [out_norm] -> out_proj. Subclasses call :meth:`_build` with their options.
    """

    def _build(
        self,
        dim: int,
        filter_size: str | int,
        emb_dim: int,
        filter_order: int,
        num_inner_mlps: int,
        short_filter_order: int,
        sin_freq: float,
        centred: bool,
        use_layernorm: bool = False,
    ) -> None:
        check_int("short_filter_order", short_filter_order, 1, odd=centred)
        self.dim = dim
        self.use_layernorm = bool(use_layernorm)
        self.in_proj = nn.Linear(dim, 3 * dim)
        padding = short_filter_order // 2 if centred else short_filter_order - 1
        self.short_filter = nn.Conv1d(3 * dim, 3 * dim, short_filter_order, padding=padding, groups=3 * dim)
        self.filter_fn = HyenaFilter(dim, filter_size, emb_dim, filter_order, num_inner_mlps, sin_freq, centred)
        if self.use_layernorm:
            self.qk_norm = nn.ModuleList([LayerNormCF(dim, bias=False)])  # one per order - 1 gate, as official
            self.out_norm = LayerNormCF(dim, bias=False)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        u = linear_cf(x, self.in_proj)  # (B, 3C, H, W)
        u = u.reshape(b, 3 * c, h * w)  # (B, 3C, L), raster order
        u = short_conv1d(u, self.short_filter)  # (B, 3C, L); causal: drops the k - 1 look-ahead outputs
        x0, x1, v = u.chunk(3, dim=1)  # (B, C, L) each
        v = x1 * v
        if self.use_layernorm:
            v = self.qk_norm[0](v.unsqueeze(-1)).squeeze(-1)  # (B, C, L, 1) -> norm over C -> (B, C, L)
        y = x0 * self.filter_fn(v).to(v.dtype)  # (B, C, L); long conv in float32
        y = y.reshape(b, c, h, w)  # (B, C, H, W)
        if self.use_layernorm:
            y = self.out_norm(y)
        return linear_cf(y, self.out_proj)  # (B, C, H, W)


@register_mixer(
    "hyena",
    paper="Poli et al., Hyena Hierarchy: Towards Larger Convolutional Language Models, ICML 2023",
    family="hyena",
    complexity="O(N log N)",
)
class HyenaMixer(Hyena1D):
    """Causal Hyena operator of order 2 (safari) over the raster order. Maps (B, C, H, W) -> (B, C, H, W), any size.

    The image is flattened row by row to L = H * W tokens; output token i only depends on tokens <= i::

        x0, x1, v = split(short_filter(in_proj(u)))      # in_proj Linear(C, 3C); depthwise causal Conv1d, k taps
        y = out_proj(x0 * (h * (x1 * v) + D * (x1 * v)))   # h * : causal FFT convolution, D: skip

    h is safari's implicit filter (:class:`HyenaFilter`): positional features [t, cos, -sin] -> Sin MLP ->
    exponential window exp(-t |delta_c|) with the fixed safari deltas. With ``filter_size="global"`` the filter has L
    taps (all of the past) and t = linspace(0, 1, L) is relative to the current length, as safari (so the filter
    stretches with the image); with an integer K it has K taps on a fixed grid t = linspace(0, 1, K), the same
    filter at every size (truncated to L taps when L < K). The FFT (zero padded, no wrap-around), the filter
    generation and the exponentials run in float32 under autocast. Size-derived tensors (z, window) are cached,
    not stored; state_dict keys follow safari/HyenaPixel: ``in_proj``, ``short_filter``, ``filter_fn.implicit_filter``,
    ``filter_fn.bias`` (D), ``out_proj``.

    Args:
        dim: channels C.
        filter_size: ``"global"`` (L taps) or an int K >= 1 (K taps, receptive field K + short_filter_order - 2).
        emb_dim: positional feature size E, odd >= 3 (safari operator default 3: t, cos, -sin).
        filter_order: width W of the filter MLP (safari operator default 64).
        num_inner_mlps: hidden Linear(W, W) -> Sin layers in the filter MLP (safari default 2).
        short_filter_order: taps of the causal depthwise short convolution (safari default 3).
        sin_freq: initial frequency w of the Sin activations (safari HyenaFilter default 1).
    """

    def __init__(
        self,
        dim: int,
        filter_size: str | int = "global",
        emb_dim: int = 3,
        filter_order: int = 64,
        num_inner_mlps: int = 2,
        short_filter_order: int = 3,
        sin_freq: float = 1.0,
    ) -> None:
        super().__init__()
        self._build(
            dim, filter_size, emb_dim, filter_order, num_inner_mlps, short_filter_order, sin_freq, centred=False
        )
