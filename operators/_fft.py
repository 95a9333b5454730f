"""FFT long convolutions (1D causal, 1D centred, 2D centred) in float32, shared by the Hyena family of mixers.

All three compute a *true* (linear, zero-boundary) convolution, i.e. the kernel is flipped relative to the
cross-correlation of ``nn.Conv1d``/``nn.Conv2d``, exactly as safari's and HyenaPixel's ``fftconv``. The FFT length
is padded so that circular wrap-around never reaches the kept outputs, then rounded up to the next 5-smooth size
(2^a 3^b 5^c) for speed; the result equals the direct convolution for every input and kernel length.

Inputs are cast to float32 and autocast is turned off inside, so a bf16 caller gets an fp32 result (cuFFT has no
bf16, and half precision only for powers of two; the CPU has neither). Cast the result back yourself.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
from torch import Tensor

from ._common import fp32

__all__ = ["centred_grid", "fft_size", "fftconv1d", "fftconv2d", "fftconv_on_grid", "place_on_grid", "take_taps"]


@functools.lru_cache(maxsize=256)
def fft_size(n: int) -> int:
    """The smallest 5-smooth integer (2^a 3^b 5^c) >= ``n``; fast FFT sizes for pocketfft and cuFFT."""
    if n <= 1:
        return 1
    best = 1 << (n - 1).bit_length()  # a power of two is always a candidate
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _on_scipy(x: Tensor) -> bool:
    """Whether the FFTs of ``x`` run in scipy.fft (CPU tensors) rather than torch.fft (CUDA and other devices)."""
    return x.device.type == "cpu"


# Smallest grid (points per channel) whose FFTs run in scipy.fft rather than torch.fft on the CPU. PyTorch's CPU FFT
# (MKL in the x86 wheels) was faster for the 1D grids of 64 to 256 px images (8192 to 131072) and for 2D grids up to
# 256 x 256, pocketfft for 512 x 512: fftconv_on_grid forward+backward on (1, 64, *size) inputs, 1 thread, the two
# back ends alternated call by call, median of 8 (scratch script mb_path.py, not in the project), 2026-12-07.
_SCIPY_MIN_GRID_2D = 512 * 512


def _use_scipy(x: Tensor, s: tuple[int, ...]) -> bool:
    """Whether the FFTs of ``x`` over the grid ``s`` run in scipy.fft: CPU tensors with a large 2D grid."""
    return _on_scipy(x) and len(s) == 2 and s[0] * s[1] >= _SCIPY_MIN_GRID_2D


def _axis_slice(ndim: int, axis: int, n: int) -> tuple:
    """Index that keeps the first n entries of ``axis`` (negative) of an ndim-dim array."""
    idx = [slice(None)] * ndim
    idx[axis] = slice(0, n)
    return tuple(idx)


def _rfft_padded(x: Tensor, s: tuple[int, ...]) -> Tensor:
    """``rfftn(x, s)`` over the last ``len(s)`` dims (x zero-padded at the end to s), pruned: the real FFT of the last
    dim runs over the data rows only and the complex FFTs of the other dims pad their own input, so rows that are
    all zeros are never transformed (about 1/4 less work for an input half the grid's side). Large 2D grids on the
    CPU: scipy.fft (pocketfft with torch's thread count, see :func:`_use_scipy`); else torch.fft."""
    d = len(s)
    if not _use_scipy(x, s):
        out = torch.fft.rfft(x, n=s[-1], dim=-1)
        for axis, n in zip(range(-d, -1), s[:-1]):
            out = torch.fft.fft(out, n=n, dim=axis)
        return out
    import scipy.fft

    workers = torch.get_num_threads()
    a = scipy.fft.rfft(x.detach().numpy(), n=s[-1], axis=-1, workers=workers)
    for axis, n in zip(range(-d, -1), s[:-1]):
        a = scipy.fft.fft(a, n=n, axis=axis, overwrite_x=True, workers=workers)
    return torch.from_numpy(a)


def _irfft_cropped(spec: Tensor, s: tuple[int, ...], size: tuple[int, ...], overwrite: bool = False) -> Tensor:
    """``irfftn(spec, s)[:size]`` over the last ``len(s)`` dims, pruned: each complex inverse FFT is cropped to the
    kept rows before the next, so the final real inverse FFT runs over the kept rows only. A view (not contiguous
    when the last dim is cropped). ``overwrite``: ``spec`` is a temporary that the CPU path may overwrite."""
    d = len(s)
    if not _use_scipy(spec, s):
        for axis, m in zip(range(-d, -1), size[:-1]):
            spec = torch.fft.ifft(spec, dim=axis)[_axis_slice(spec.dim(), axis, m)]
        return torch.fft.irfft(spec, n=s[-1], dim=-1)[..., : size[-1]]
    import scipy.fft

    workers = torch.get_num_threads()
    a = spec.detach().numpy()
    for axis, m in zip(range(-d, -1), size[:-1]):
        a = scipy.fft.ifft(a, axis=axis, overwrite_x=overwrite, workers=workers)[_axis_slice(a.ndim, axis, m)]
        overwrite = True
    return torch.from_numpy(scipy.fft.irfft(a, n=s[-1], axis=-1, workers=workers))[..., : size[-1]]


def _spectral_mul(a: Tensor, b: Tensor, conj: bool = False, out: Tensor | None = None) -> Tensor:
    """a * b (or a * conj(b)) for spectra a (..., C, *spec) and b (C, *spec), shared by a's batch: one product per
    batch element, as PyTorch's CPU kernel for a broadcast batch dim was about 2.5x slower than for equal shapes
    (complex64, (1, 64, 256, 129) x (64, 256, 129)). ``out`` may be ``a`` (in place)."""
    b = b.conj() if conj else b
    if a.dim() == b.dim():
        return torch.mul(a, b, out=out) if out is not None else a * b
    out = torch.empty_like(a) if out is None else out
    for a_i, o_i in zip(a.reshape(-1, *b.shape), out.view(-1, *b.shape)):
        torch.mul(a_i, b, out=o_i)
    return out


def _wrapped_blocks(taps: tuple[int, ...], s: tuple[int, ...], start: tuple[int, ...]) -> list[tuple[tuple, tuple]]:
    """(kernel index, grid index) pairs of the 2^d blocks that place tap t at (t - start) mod s on the periodic grid:
    per dim, taps [start, K) go to [0, K - start) and taps [0, start) to [s - start, s)."""
    per_dim = [((slice(a, t), slice(0, t - a)), (slice(0, a), slice(n - a, n))) for a, t, n in zip(start, taps, s)]
    return [((..., *(b[0] for b in bl)), (..., *(b[1] for b in bl))) for bl in itertools.product(*per_dim)]


def _grid_gaps(taps: tuple[int, ...], s: tuple[int, ...], start: tuple[int, ...]) -> list[tuple]:
    """Indices of the grid slabs that no tap reaches (per dim, [K - start, s - start)): the zeros of a placed kernel."""
    gaps = []
    for axis, (a, t, n) in enumerate(zip(start, taps, s)):
        if t < n:
            idx = [slice(None)] * len(s)
            idx[axis] = slice(t - a, n - a)
            gaps.append((..., *idx))
    return gaps


def new_grid(k: Tensor, s: tuple[int, ...], start: tuple[int, ...]) -> Tensor:
    """An uninitialised (..., *s) grid for kernel ``k`` (..., *taps), with the slabs no tap reaches already zeroed
    (cheaper than zero-filling the whole grid when the kernel covers most of it, as global Hyena filters do)."""
    taps = tuple(k.shape[-len(s) :])
    grid = k.new_empty(*k.shape[: -len(s)], *s)
    for gap in _grid_gaps(taps, s, start):
        grid[gap] = 0
    return grid


def take_taps(grid: Tensor, taps: tuple[int, ...], start: tuple[int, ...]) -> Tensor:
    """The inverse of the placement: the (..., *taps) kernel that sits at tap t = (index + start) mod s of ``grid``.
    A view when the taps are the grid's first entries (start 0), else a new tensor."""
    s = tuple(grid.shape[-len(taps) :])
    blocks = _wrapped_blocks(taps, s, start)
    if not any(start):
        return grid[blocks[0][1]]
    out = grid.new_empty(*grid.shape[: -len(s)], *taps)
    for src, dst in blocks:
        out[src] = grid[dst]
    return out


class _PlaceOnGrid(torch.autograd.Function):
    """grid = the kernel ``k`` (..., *taps), times an optional constant ``scale`` of the same shape, placed on the
    periodic FFT grid (..., *s) with tap t at (t - start) mod s and zeros elsewhere; one pass, no zero fill of the
    covered part. The backward takes the taps back out of the grid gradient (times ``scale``)."""

    @staticmethod
    def forward(ctx, k: Tensor, scale: Tensor | None, s: tuple[int, ...], start: tuple[int, ...]) -> Tensor:
        taps = tuple(k.shape[-len(s) :])
        grid = new_grid(k, s, start)  # (..., *s)
        for src, dst in _wrapped_blocks(taps, s, start):
            if scale is None:
                grid[dst] = k[src]
            else:
                torch.mul(k[src], scale[src], out=grid[dst])
        ctx.save_for_backward(scale)
        ctx.taps, ctx.start = taps, start
        return grid

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        (scale,) = ctx.saved_tensors
        dk = take_taps(grad, ctx.taps, ctx.start)  # (..., *taps)
        return (dk if scale is None else dk * scale), None, None, None


def place_on_grid(k: Tensor, s: tuple[int, ...], start: tuple[int, ...], scale: Tensor | None = None) -> Tensor:
    """Kernel ``k`` (C, *taps) [times the constant ``scale`` (C, *taps)] on the periodic grid (C, *s), tap t at
    (t - start) mod s, zeros elsewhere; differentiable in ``k``. Input of :func:`fftconv_on_grid`."""
    return _PlaceOnGrid.apply(k, scale, tuple(s), tuple(start))


def centred_grid(size: tuple[int, ...], taps: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(grid s, start) per dim for the centred convolution of a ``size`` input with a kernel of ``taps`` (each
    <= 2 size - 1; tap K // 2 is offset 0): the kept window [K // 2, K // 2 + L) of the full convolution must fit and
    its wrapped tail (full index >= n, at most L + K - 2) must land before it; rounded up to a 5-smooth size."""
    s = tuple(fft_size(max(n + t - 1 - t // 2, t // 2 + n)) for n, t in zip(size, taps))
    return s, tuple(t // 2 for t in taps)


class _CroppedFFTConv(torch.autograd.Function):
    """y = (u circularly convolved with the grid kernel k_grid, cropped to u's size) + skip_c u, FFTs of size s, fp32.

    u is (..., C, *size), k_grid (C, *s) a kernel already placed on the length-s periodic grid
    (:func:`place_on_grid`: tap t at (t - start) mod s), so the kept window of the circular convolution starts at
    index 0 and, s being large enough, no wrapped term reaches it; skip (C,) or None is the Hyena skip term D. With
    U, K and G the spectra of u, k_grid and the output gradient g (all at index 0), the backward uses real FFTs
    only::

        du = irfftn(G * conj(K), s)[:size] + skip * g  (circular cross-correlation with the kernel)
        dk_grid = irfftn(sum_batch(G * conj(U)), s)    (summed over u's batch dims; the caller takes its taps out)
        dskip_c = sum(g * u)_c

    Autograd's own backward of ``rfftn`` zero-fills a full complex spectrum and runs complex FFTs, which made the
    backward of the Hyena mixers several times slower than their forward on CPU. Every transform of u, g and the
    outputs is pruned to their rows (:func:`_rfft_padded`, :func:`_irfft_cropped`); the cropped output and du are
    written by the same pass that adds the skip term, and the kernel gradient's product reuses G's buffer.
    """

    @staticmethod
    def forward(ctx, u: Tensor, k_grid: Tensor, skip: Tensor | None) -> Tensor:
        s = tuple(k_grid.shape[1:])
        size = tuple(u.shape[-len(s) :])
        u_f = _rfft_padded(u, s)  # (..., C, *s[:-1], s[-1] // 2 + 1)
        k_f = _rfft_padded(k_grid, s)  # (C, ...)
        ctx.save_for_backward(u_f, k_f, u if skip is not None else None, skip)
        ctx.s, ctx.size = s, size
        y = _irfft_cropped(_spectral_mul(u_f, k_f), s, size, overwrite=True)  # (..., C, *size), a view
        if skip is None:
            return y.contiguous()
        return torch.addcmul(y, u, skip.view(-1, *([1] * len(s))))  # (..., C, *size)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        u_f, k_f, u, skip = ctx.saved_tensors
        s = ctx.s
        grad = grad.to(k_f.real.dtype)  # float32 (float64 in the gradchecks)
        g_f = _rfft_padded(grad, s)  # (..., C, *spectrum)
        du = dk = dskip = None
        if ctx.needs_input_grad[0]:
            du = _irfft_cropped(_spectral_mul(g_f, k_f, conj=True), s, ctx.size, overwrite=True)  # a view
            du = du.contiguous() if skip is None else torch.addcmul(du, grad, skip.view(-1, *([1] * len(s))))
        if ctx.needs_input_grad[1]:
            prod = g_f.mul_(u_f.conj())  # in place: g_f is not needed any more
            prod = prod.reshape(-1, *k_f.shape)  # (batch, C, *spectrum)
            prod = prod[0] if prod.shape[0] == 1 else prod.sum(0)  # k is shared by the batch
            dk = _irfft_cropped(prod, s, s, overwrite=True)  # (C, *s)
        if skip is not None and ctx.needs_input_grad[2]:
            shape = (-1, skip.shape[0], math.prod(ctx.size))  # (batch, C, pixels)
            dskip = torch.einsum("bcn,bcn->c", grad.reshape(shape), u.reshape(shape))  # batched dot products
        return du, dk, dskip


def fftconv_on_grid(u: Tensor, k_grid: Tensor, skip: Tensor | None = None) -> Tensor:
    """Depthwise convolution of ``u`` (..., C, *size) with a kernel placed on the FFT grid ``k_grid`` (C, *s) by
    :func:`place_on_grid`, plus ``skip`` (C,) times u if given (Hyena's D): the output window starts at grid index 0,
    so y = (k_grid circularly convolved with u) cropped to u's size [+ skip_c u]. Inputs cast to float32 with autocast
    off; returns float32 (..., C, *size)."""
    with fp32(u):
        skip = skip.float().reshape(-1) if skip is not None else None
        return _CroppedFFTConv.apply(u.float(), k_grid.float(), skip)


def fftconv1d(u: Tensor, k: Tensor, mode: str) -> Tensor:
    """Depthwise long convolution of ``u`` (..., C, L) with ``k`` (C, K) along the last dim, via FFT.

    With ``u`` zero outside [0, L) and output index i in [0, L):

    - ``mode="causal"``: ``y[..., c, i] = sum_{m=0}^{min(i, K-1)} k[c, m] * u[..., c, i - m]``; tap m is a lag of m
      steps, so y[i] only sees u[<= i] (safari's ``fftconv`` when K = L).
    - ``mode="centred"``: ``y[..., c, i] = sum_m k[c, m] * u[..., c, i - m + K // 2]``; tap ``K // 2`` is offset 0.
      This is the full linear convolution cropped to ``[K // 2 : K // 2 + L]`` (HyenaPixel's bidirectional
      ``fftconv``); for a symmetric kernel it equals ``F.conv1d`` with ``padding=K // 2``.

    Taps that can never meet the input (m >= L causal; |m - K // 2| >= L centred) are dropped before the FFT.

    Args:
        u: (..., C, L) input, any float dtype.
        k: (C, K) kernel, any float dtype; K may be shorter or longer than L.
        mode: ``"causal"`` or ``"centred"``.

    Returns:
        (..., C, L) float32.
    """
    if mode not in ("causal", "centred"):
        raise ValueError(f"mode={mode!r} is not one of 'causal', 'centred'")
    length, taps = u.shape[-1], k.shape[-1]
    with fp32(u):
        u, k = u.float(), k.float()
        if mode == "causal":
            k = k[:, :length]  # (C, K'), K' = min(K, L): lags >= L never reach an output
            taps = k.shape[-1]
            s, start = (fft_size(length + taps - 1),), (0,)  # full linear convolution fits: no wrap-around at all
        else:
            centre = taps // 2
            if taps > 2 * length - 1:  # offsets beyond +-(L - 1) never reach an output
                k = k[:, centre - (length - 1) : centre + length]  # (C, 2L - 1)
            s, start = centred_grid((length,), (k.shape[-1],))
        return _CroppedFFTConv.apply(u, place_on_grid(k, s, start), None)  # (..., C, L)


def fftconv2d(u: Tensor, k: Tensor) -> Tensor:
    """Depthwise centred ("same") 2D long convolution of ``u`` (..., C, H, W) with ``k`` (C, Kh, Kw), via FFT.

    With ``u`` zero outside the image and (i, j) in [0, H) x [0, W)::

        y[..., c, i, j] = sum_{a, b} k[c, a, b] * u[..., c, i - a + Kh // 2, j - b + Kw // 2]

    i.e. tap (Kh // 2, Kw // 2) is offset (0, 0) and tap (a, b) carries the value at offset (a - Kh // 2, b - Kw // 2)
    *towards* the output (a true convolution: ``F.conv2d`` with the kernel flipped in both dims and padding
    ``(Kh // 2, Kw // 2)`` for odd sizes). It is the full linear convolution cropped to
    ``[Kh // 2 : Kh // 2 + H, Kw // 2 : Kw // 2 + W]``, as HyenaPixel's ``fftconv2d``. Kernel rows/columns farther
    than H - 1 / W - 1 from the centre never reach an output and are dropped before the FFT.

    Args:
        u: (..., C, H, W) input, any float dtype.
        k: (C, Kh, Kw) kernel, any float dtype, any size.

    Returns:
        (..., C, H, W) float32.
    """
    h, w = u.shape[-2:]
    kh, kw = k.shape[-2:]
    with fp32(u):
        u, k = u.float(), k.float()
        ch, cw = kh // 2, kw // 2
        if kh > 2 * h - 1:
            k = k[:, ch - (h - 1) : ch + h, :]  # (C, 2H - 1, Kw)
            kh = 2 * h - 1
        if kw > 2 * w - 1:
            k = k[:, :, cw - (w - 1) : cw + w]  # (C, Kh', 2W - 1)
            kw = 2 * w - 1
        s, start = centred_grid((h, w), (kh, kw))
        return _CroppedFFTConv.apply(u, place_on_grid(k, s, start), None)  # (..., C, H, W)
