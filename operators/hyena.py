"""Hyena (safari, order 2), causal over the raster order, and the implicit 1D filter shared with ``hyena_bi``."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sandbox.errors import OptionError, check_int, check_positive, is_int
from sandbox.registry import register_mixer

from ._common import InferenceCache, LayerNormCF, SizeCache, fp32, linear_cf
from ._fft import fftconv1d

__all__ = ["Hyena1D", "HyenaMixer", "HyenaFilter", "Sin", "check_filter_size", "modulation_deltas", "sin_mlp"]

# safari ExponentialModulation constants: |delta_c| = linspace(ln(target)/slow, ln(target)/fast, C) in [3.07, 15.35]
_TARGET, _FAST_DECAY_PCT, _SLOW_DECAY_PCT = 1e-2, 0.3, 1.5


def sin_mlp(in_dim: int, width: int, out_dim: int, num_inner: int, sin_freq: float) -> nn.Sequential:
    """Implicit-filter MLP (safari, HyenaPixel): Linear -> Sin -> [Linear -> Sin] x num_inner -> Linear (no bias)."""
    layers: list[nn.Module] = [nn.Linear(in_dim, width), Sin(width, sin_freq)]
    for _ in range(num_inner):
        layers += [nn.Linear(width, width), Sin(width, sin_freq)]
    layers.append(nn.Linear(width, out_dim, bias=False))
    return nn.Sequential(*layers)


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
    min(n // 2, L - 1) centred). z and the window depend only on the size, so they are cached per
    (grid, taps, device), never stored: the state_dict holds ``implicit_filter.*`` and ``bias`` (D, randn init).
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
        """Positional features z (taps, E) float32: [s, cos(f_b w), -sin(f_b w)], w = 2 pi m / n."""
        m, first, _ = self._time(n, start, taps, device)
        bands = (self.emb_dim - 1) // 2
        f = torch.linspace(1e-4, bands - 1, bands, device=device)  # (bands,)
        phase = (2 * math.pi / n) * m[:, None] * f[None, :]  # (taps, bands)
        return torch.cat([first[:, None], phase.cos(), -phase.sin()], dim=1)  # (taps, E)

    def _window(self, n: int, start: int, taps: int, device: torch.device) -> Tensor:
        """Exponential window exp(-d |delta_c|), (C, taps) float32."""
        _, _, dist = self._time(n, start, taps, device)
        return torch.exp(-dist[None, :] * modulation_deltas(self.channels, device)[:, None])  # (C, taps)

    def kernel(self, length: int, device: torch.device) -> Tensor:
        """The filter (C, taps) in float32 for a sequence of ``length`` (tap 0 = lag 0 causal; centre = offset 0)."""
        n, start, taps = self.grid(length)
        key = (n, start, taps, device, torch.float32)
        z = self._cache.get(("z",) + key, lambda: self._features(n, start, taps, device))  # (taps, E)
        window = self._cache.get(("window",) + key, lambda: self._window(n, start, taps, device))  # (C, taps)
        with fp32(z):
            h = self.implicit_filter(z)  # (taps, C)
            return h.t() * window  # (C, taps)

    def forward(self, u: Tensor) -> Tensor:
        """In inference (eval mode, no gradients) the filter is made once per length and reused until a parameter
        changes, as it depends on nothing else."""
        with fp32(u):
            u = u.float()  # (B, C, L)
            length, device = u.shape[-1], u.device
            h = self._inference.get(self, (length, str(device)), lambda: self.kernel(length, device))  # (C, taps)
            mode = "centred" if self.centred else "causal"
            return fftconv1d(u, h, mode) + u * self.bias.float()[:, None]  # (B, C, L)


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
        u = self.short_filter(u)[..., : h * w]  # (B, 3C, L); causal: drops the k - 1 look-ahead outputs
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
