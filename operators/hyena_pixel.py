"""HyenaPixel: 2D Hyena operator with an implicit long convolution over pixel offsets."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from sandbox.errors import OptionError, check_int, check_positive
from sandbox.registry import register_mixer

from ._common import DepthwiseConv2d, InferenceCache, LayerNormCF, SizeCache, fp32, linear_cf
from ._fft import _wrapped_blocks, centred_grid, fftconv_on_grid, new_grid, take_taps
from .hyena import check_filter_size, modulation_deltas, sin_mlp, sin_mlp_cf

__all__ = ["HyenaPixelMixer", "HyenaPixelFilter"]

_GLOBAL_DECAY_SCALE = 128.0  # pixels; ~2x the side of a 64 px training crop, as the official K ~ 2x the map side


def pointwise_cf(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """A 1 x 1 ``nn.Conv2d`` applied as one batched GEMM over the pixels (see :func:`operators._common.linear_cf`;
    PyTorch's CPU 1 x 1 convolution takes the slower im2col path, forward and backward); other devices and autocast
    keep ``conv`` itself, so the module, its parameters and state_dict keys are unchanged."""
    if x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
        return conv(x)
    b, c, h, w = x.shape
    weight = conv.weight.view(conv.out_channels, c).expand(b, -1, -1)  # (B, C_out, C_in)
    flat = x.reshape(b, c, h * w)  # (B, C_in, H W)
    y = torch.bmm(weight, flat) if conv.bias is None else torch.baddbmm(conv.bias[:, None], weight, flat)
    return y.view(b, -1, h, w)  # (B, C_out, H, W)


class _ModulatedKernelOnGrid(torch.autograd.Function):
    """k_grid = the decayed kernel ``h * (exp(-r rate_c) + shift_c)`` placed on the periodic FFT grid, in one pass.

    h is the MLP output (C, Ny, Nx), r the distance map (Ny, Nx), rate and shift (C,); the result is (C, *s) with
    tap (a, b) at ((a - start_y) mod s_y, (b - start_x) mod s_x) and zeros elsewhere (input of
    :func:`operators._fft.fftconv_on_grid`). Autograd through the composite (mul, exp, add, mul, placement) keeps
    several kernel-sized temporaries and makes about twice as many passes; the kernel is as large as 4 images for a
    global filter. With e = exp(-r rate) (saved) and dk the gradient taken back out of the grid, the backward is::

        dh = dk * (e + shift),   dshift_c = sum(dk * h)_c,   drate_c = -sum(dk * h * e * r)_c   (a GEMV over taps)

    Kernel-sized buffers are few (e saved, dk and dh in the backward; the rest is in place): on the development VM the
    first touch of a fresh kernel-sized buffer (page faults) costs more than a pass over it.
    """

    @staticmethod
    def forward(ctx, h: Tensor, dist: Tensor, rate: Tensor, shift: Tensor, s: tuple, start: tuple) -> Tensor:
        decay = torch.mul(dist, -rate[:, None, None]).exp_()  # e (C, Ny, Nx)
        shift_b = shift[:, None, None]  # (C, 1, 1)
        grid = new_grid(h, s, start)  # (C, *s), gaps zeroed
        for src, dst in _wrapped_blocks(tuple(h.shape[1:]), s, start):
            torch.add(decay[src], shift_b, out=grid[dst]).mul_(h[src])
        ctx.save_for_backward(h, dist, shift, decay)
        ctx.start = start
        return grid

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        h, dist, shift, decay = ctx.saved_tensors
        c = h.shape[0]
        dk = take_taps(grad, tuple(h.shape[1:]), ctx.start)  # (C, Ny, Nx), a new tensor (start > 0)
        dh = (dk * decay).addcmul_(dk, shift[:, None, None]) if ctx.needs_input_grad[0] else None
        dkh = dk.mul_(h)  # dk * h, in place
        dshift = dkh.sum((1, 2)) if ctx.needs_input_grad[3] else None
        drate = -torch.mv(dkh.mul_(decay).view(c, -1), dist.reshape(-1)) if ctx.needs_input_grad[2] else None
        return dh, None, drate, dshift, None, None


class HyenaPixelFilter(nn.Module):
    """HyenaPixel's implicit 2D long convolution ``Hyena2DConv``, as a function of pixel offset.

    ``forward(u)`` maps (B, C, H, W) to the float32 (B, C, H, W) ``k * u + D * u``, ``*`` the centred ("same")
    true convolution of :func:`operators._fft.fftconv2d`. The kernel value at offset (dy, dx) from its centre is::

        k_c(dy, dx) = MLP(pe(dy, dx))_c * (exp(-r |delta_c| / decay_scale) + shift_c),   r = sqrt(dy^2 + dx^2)

    - pe: 2D sinusoidal features, E channels: [0:E/2] encode dx, [E/2:E] encode dy, even channels sin and odd cos,
      frequencies exp(-2i ln(10000) / (E/2)), i = 0..E/4 - 1, evaluated at the signed *centred* offsets.
    - implicit_filter: Linear(E, W) -> Sin -> Linear(W, W) -> Sin -> Linear(W, C, no bias), per-layer trainable
      Sin frequencies (official: the same as 1 x 1 convolutions; weights reshape (W, E) <-> (W, E, 1, 1)).
    - ``deltas`` (1, C, 1, 1), trainable, init linspace(ln(0.01)/1.5, ln(0.01)/0.3, C); ``shift`` (1, C, 1, 1),
      trainable, init 0; ``bias`` = D (1, C, 1, 1), randn init. Official checkpoints store deltas already divided
      by their K: ours = official * decay_scale.

    Offsets reach +-(H - 1, W - 1) for ``filter_size="global"`` (every pixel sees every other) and
    +-min(K // 2, H - 1 or W - 1) for an odd K; only the offsets that can reach an output are evaluated, by the MLP
    in channels-first layout (:func:`operators.hyena.sin_mlp_cf`), and the decay is applied while the kernel is
    placed on the FFT grid (:class:`_ModulatedKernelOnGrid`). Because
    the features and the decay depend on the offset alone (not on the grid or the image size), one pixel offset
    gets the same filter value at every size, e.g. on 64 x 64 training crops and 481 x 321 test images.

    Positional features z, two ways:

    - derived (default): pe(dy, dx) is computed for the offsets at hand and cached (never in the state_dict).
    - ``learned_pos=True`` (integer K only): z is a trainable Parameter ``z`` of shape (1, E, K, K), as the official
      ``Hyena2DConv.z`` (state_dict key ``long_conv.z``), initialised to the same pe at the centred offsets
      -(K // 2) .. K // 2, so at initialisation the kernel equals the derived one. Inputs smaller than the kernel use
      its centre crop; the K x K field stays fixed in pixels at every size. The official module initialises z at
      the absolute indices 0..K-1 instead (same shape and count, different values; it also stores the K x K
      distance map as a frozen Parameter, which here is always derived).

    The distance map is always derived and cached. Deviation from the official module in the default mode: no
    Parameter tied to a K x K grid, so nothing needs offline interpolation between training and test sizes.

    Args:
        channels: channels C.
        filter_size: ``"global"`` ((2H - 1) x (2W - 1) taps) or an odd int K (K x K taps).
        emb_dim: E, divisible by 4 (official 32 at stage 1).
        filter_order: MLP width W (official 2E = 64).
        decay_scale: pixels dividing r |delta|; ``None`` is K for an integer filter_size (the official deltas / K)
            and 128 for ``"global"`` (the official K = 2 x map side - 1 for 64 x 64 maps).
        sin_freq: initial frequency w of the Sin activations (official 1).
        learned_pos: z is a trainable (1, E, K, K) Parameter (official) instead of derived features; needs an
            integer filter_size.
    """

    def __init__(
        self,
        channels: int,
        filter_size: str | int,
        emb_dim: int,
        filter_order: int,
        decay_scale: float | None,
        sin_freq: float,
        learned_pos: bool = False,
    ) -> None:
        super().__init__()
        check_filter_size(filter_size, centred=True)
        check_int("emb_dim", emb_dim, 4, multiple_of=4)
        check_int("filter_order", filter_order, 1)
        if decay_scale is not None:
            check_positive("decay_scale", decay_scale)
        check_positive("sin_freq", sin_freq)
        if not isinstance(learned_pos, bool):
            raise OptionError(f"learned_pos={learned_pos!r} is not valid; expected True or False")
        if learned_pos and filter_size == "global":
            raise OptionError(
                "learned_pos=True needs an integer filter_size K (z is a K x K Parameter); "
                "filter_size='global' has no fixed grid"
            )
        self.channels = channels
        self.filter_size = filter_size
        self.emb_dim = emb_dim
        self.learned_pos = learned_pos
        if decay_scale is None:
            decay_scale = _GLOBAL_DECAY_SCALE if filter_size == "global" else filter_size
        self.decay_scale = float(decay_scale)
        self.implicit_filter = sin_mlp(emb_dim, filter_order, channels, 1, sin_freq)  # official: one inner layer
        # official init: safari's rates with their (negative) sign, linspace(ln(0.01)/1.5, ln(0.01)/0.3, C)
        self.deltas = nn.Parameter(-modulation_deltas(channels, "cpu").view(1, channels, 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.bias = nn.Parameter(torch.randn(1, channels, 1, 1))  # the skip term D
        if learned_pos:
            r, k = filter_size // 2, filter_size
            pe = self._features(r, r, torch.device("cpu"))  # (K * K, E), raster order over (dy, dx)
            self.z = nn.Parameter(pe.t().reshape(1, emb_dim, k, k).contiguous())  # (1, E, K, K)
        self._cache = SizeCache()
        self._inference = InferenceCache()  # kernels per size in eval mode without gradients, see forward()

    def reach(self, height: int, width: int) -> tuple[int, int]:
        """Largest |dy|, |dx| of the kernel evaluated for an H x W input."""
        if self.filter_size == "global":
            return height - 1, width - 1
        return min(self.filter_size // 2, height - 1), min(self.filter_size // 2, width - 1)

    def _features(self, ry: int, rx: int, device: torch.device) -> Tensor:
        """2D sinusoidal features of offsets [-ry, ry] x [-rx, rx], ((2ry + 1) (2rx + 1), E) float32, raster order."""
        half = self.emb_dim // 2
        freqs = torch.exp(torch.arange(0, half, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / half))

        def encode(r: int) -> Tensor:  # (2r + 1, E/2): [sin f_0 d, cos f_0 d, sin f_1 d, ...]
            d = torch.arange(-r, r + 1, device=device, dtype=torch.float32)  # (2r + 1,)
            phase = d[:, None] * freqs[None, :]  # (2r + 1, E/4)
            return torch.stack([phase.sin(), phase.cos()], dim=-1).reshape(2 * r + 1, half)

        fx, fy = encode(rx), encode(ry)  # (Nx, E/2), (Ny, E/2)
        ny, nx = fy.shape[0], fx.shape[0]
        z = torch.cat([fx[None, :, :].expand(ny, nx, half), fy[:, None, :].expand(ny, nx, half)], dim=-1)  # (Ny, Nx, E)
        return z.reshape(ny * nx, self.emb_dim)  # (Ny * Nx, E)

    def _distance(self, ry: int, rx: int, device: torch.device) -> Tensor:
        """Distance from the kernel centre, (2ry + 1, 2rx + 1) float32."""
        dy = torch.arange(-ry, ry + 1, device=device, dtype=torch.float32)
        dx = torch.arange(-rx, rx + 1, device=device, dtype=torch.float32)
        return torch.sqrt(dy[:, None] ** 2 + dx[None, :] ** 2)  # (Ny, Nx)

    def _mlp_input(self, ry: int, rx: int, device: torch.device) -> Tensor:
        """Positional features of offsets [-ry, ry] x [-rx, rx], channels-first (E, Ny * Nx) float32."""
        if self.learned_pos:
            c = self.filter_size // 2
            z = self.z[0, :, c - ry : c + ry + 1, c - rx : c + rx + 1]  # (E, Ny, Nx), centre crop
            # a copy, not a view, for a crop: a view of a Parameter made under no_grad claims requires_grad without a
            # grad_fn, which breaks module hooks (FlopCounterMode's module tracker)
            return z.reshape(self.emb_dim, -1) if ry == rx == c else z.contiguous().view(self.emb_dim, -1)
        key = ("pe2d", ry, rx, device, torch.float32)
        return self._cache.get(key, lambda: self._features(ry, rx, device).t().contiguous())  # (E, Ny * Nx)

    def _rate_and_distance(self, ry: int, rx: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Decay rates |deltas| / decay_scale (C,) and the distance map (Ny, Nx), float32."""
        r = self._cache.get(("distance", ry, rx, device, torch.float32), lambda: self._distance(ry, rx, device))
        return self.deltas.float().abs().view(-1) / self.decay_scale, r

    def kernel(self, height: int, width: int, device: torch.device) -> Tensor:
        """The kernel (C, 2ry + 1, 2rx + 1) in float32 for an H x W input; its centre is offset (0, 0). The plain
        composite of :meth:`kernel_on_grid` (which the forward uses), kept as its reference."""
        ry, rx = self.reach(height, width)
        z = self._mlp_input(ry, rx, device)  # (E, Ny * Nx)
        with fp32(z):
            k = sin_mlp_cf(self.implicit_filter, z.float()).view(self.channels, 2 * ry + 1, 2 * rx + 1)  # (C, Ny, Nx)
            rate, r = self._rate_and_distance(ry, rx, device)
            decay = torch.exp(-r[None] * rate.view(-1, 1, 1))  # (C, Ny, Nx)
            return k * (decay + self.shift.float().view(-1, 1, 1))

    def kernel_on_grid(self, height: int, width: int, device: torch.device) -> Tensor:
        """:meth:`kernel` placed on the FFT grid for H x W, (C, *s) float32 (:class:`_ModulatedKernelOnGrid`)."""
        ry, rx = self.reach(height, width)
        z = self._mlp_input(ry, rx, device)  # (E, Ny * Nx)
        with fp32(z):
            k = sin_mlp_cf(self.implicit_filter, z.float()).view(self.channels, 2 * ry + 1, 2 * rx + 1)  # (C, Ny, Nx)
            rate, r = self._rate_and_distance(ry, rx, device)
            s, start = centred_grid((height, width), (2 * ry + 1, 2 * rx + 1))
            return _ModulatedKernelOnGrid.apply(k, r, rate, self.shift.float().view(-1), s, start)

    def forward(self, u: Tensor) -> Tensor:
        """The kernel depends on the parameters and the size only: in inference (eval mode, no gradients) it is made
        once per size and reused until a parameter changes (the MLP over every offset is then skipped)."""
        with fp32(u):
            u = u.float()  # (B, C, H, W)
            h, w, device = u.shape[-2], u.shape[-1], u.device
            k = self._inference.get(self, (h, w, str(device)), lambda: self.kernel_on_grid(h, w, device))  # (C, *s)
            return fftconv_on_grid(u, k, self.bias)  # (B, C, H, W): k * u + D u


@register_mixer(
    "hyena_pixel",
    paper="Spravil et al., HyenaPixel: Global Image Context with Convolutions, ECAI 2024",
    family="hyena",
    complexity="O(N log N)",
)
class HyenaPixelMixer(nn.Module):
    """HyenaPixel operator (``HyenaPixelOperator``). Maps (B, C, H, W) -> (B, C, H, W), any size.

    ::

        q, k, v = split(depthwise_conv(pointwise_conv(x)))   # 1 x 1 C -> 3C, then depthwise 5 x 5 on 3C
        qk = q * k                                           # [use_layernorm: qk_norm, LayerNorm w/o bias over C]
        y = v * long_conv(qk)                                # implicit 2D long convolution + skip D, float32
        y = out_proj(out_norm(y)) if use_layernorm else out_proj(y)   # Linear(C, C) / 1 x 1 Conv2d(C, C)

    ``long_conv`` is :class:`HyenaPixelFilter`: a kernel generated from 2D sinusoidal features of the centred pixel
    offset through a Sin MLP, with a trainable radial decay, applied by zero-padded FFT (no wrap-around). With
    ``filter_size="global"`` it spans (2H - 1) x (2W - 1), so every pixel sees every other at every size; with an
    odd K it spans K x K pixels. The filter value at a given offset is the same at every image size: by default the
    positional features are derived and cached, so no interpolation is needed between training and test sizes;
    ``learned_pos=True`` makes them a trainable (1, E, K, K) Parameter ``long_conv.z`` as in the official module
    (same kernel at initialisation; the parameter count then matches the official one, less the K^2 frozen
    distance-map elements per layer, which stay derived). The FFT, the filter generation, the exponentials and
    qk_norm run in float32 under autocast. state_dict keys follow the official module: ``pointwise_conv``,
    ``depthwise_conv``, ``long_conv.{implicit_filter, deltas, shift, bias}`` (+ ``long_conv.z`` with
    ``learned_pos``), ``qk_norm``, ``out_norm``, ``out_proj`` (never ``distance_map``).

    Args:
        dim: channels C.
        filter_size: ``"global"`` (default) or an odd int K >= 1 (official long_kernel_size: 111/55/27/13).
        emb_dim: positional feature size E, a multiple of 4 (official filter_emb_dim 32 at stage 1).
        filter_order: width of the filter MLP (official 2 * emb_dim).
        decay_scale: pixels dividing r |delta_c|; None: K for an integer filter_size, 128 for ``"global"``.
        short_kernel_size: odd size of the depthwise convolution (official 5).
        use_layernorm: qk_norm/out_norm LayerNorms without bias and a Linear out_proj (hpx_former), else a 1 x 1
            convolution out_proj and no norms (c_hpx_former).
        sin_freq: initial frequency w of the Sin activations (official 1).
        learned_pos: positional features z as a trainable (1, E, K, K) Parameter, initialised to the derived
            features (official ``Hyena2DConv.z``); needs an integer filter_size.
    """

    def __init__(
        self,
        dim: int,
        filter_size: str | int = "global",
        emb_dim: int = 32,
        filter_order: int = 64,
        decay_scale: float | None = None,
        short_kernel_size: int = 5,
        use_layernorm: bool = True,
        sin_freq: float = 1.0,
        learned_pos: bool = False,
    ) -> None:
        super().__init__()
        check_int("short_kernel_size", short_kernel_size, 1, odd=True)
        self.dim = dim
        self.use_layernorm = bool(use_layernorm)
        self.pointwise_conv = nn.Conv2d(dim, 3 * dim, 1)
        self.depthwise_conv = DepthwiseConv2d(3 * dim, short_kernel_size)
        self.long_conv = HyenaPixelFilter(dim, filter_size, emb_dim, filter_order, decay_scale, sin_freq, learned_pos)
        if self.use_layernorm:
            self.qk_norm = LayerNormCF(dim, bias=False)
            self.out_norm = LayerNormCF(dim, bias=False)
            self.out_proj = nn.Linear(dim, dim)
        else:
            self.out_proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        u = self.depthwise_conv(pointwise_cf(x, self.pointwise_conv))  # (B, 3C, H, W)
        q, k, v = u.chunk(3, dim=1)  # (B, C, H, W) each
        with fp32(x):
            qk = q.float() * k.float()  # (B, C, H, W)
            if self.use_layernorm:
                qk = self.qk_norm(qk)
            y = self.long_conv(qk)  # (B, C, H, W) float32
        y = v * y.to(v.dtype)
        if self.use_layernorm:
            return linear_cf(self.out_norm(y), self.out_proj)
        return pointwise_cf(y, self.out_proj)
