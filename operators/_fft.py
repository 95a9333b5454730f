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

import torch
from torch import Tensor

from ._common import fp32

__all__ = ["fft_size", "fftconv1d", "fftconv2d"]


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


def _axis_slice(ndim: int, axis: int, n: int) -> tuple:
    """Index that keeps the first n entries of ``axis`` (negative) of an ndim-dim array."""
    idx = [slice(None)] * ndim
    idx[axis] = slice(0, n)
    return tuple(idx)


def _rfft_padded(x: Tensor, s: tuple[int, ...]) -> Tensor:
    """``rfftn(x, s)`` over the last ``len(s)`` dims (x zero-padded at the end to s), pruned: the real FFT of the last
    dim runs over the data rows only and the complex FFTs of the other dims pad their own input, so rows that are
    all zeros are never transformed (about 1/4 less work for an input half the grid's side). CPU: scipy.fft
    (pocketfft with torch's thread count, 2-3x faster than torch's own CPU FFT at these sizes)."""
    d = len(s)
    if not _on_scipy(x):
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


def _irfft_cropped(spec: Tensor, s: tuple[int, ...], size: tuple[int, ...]) -> Tensor:
    """``irfftn(spec, s)[:size]`` over the last ``len(s)`` dims, pruned: each complex inverse FFT is cropped to the
    kept rows before the next, so the final real inverse FFT runs over the kept rows only. A view (not contiguous
    when the last dim is cropped)."""
    d = len(s)
    if not _on_scipy(spec):
        for axis, m in zip(range(-d, -1), size[:-1]):
            spec = torch.fft.ifft(spec, dim=axis)[_axis_slice(spec.dim(), axis, m)]
        return torch.fft.irfft(spec, n=s[-1], dim=-1)[..., : size[-1]]
    import scipy.fft

    workers = torch.get_num_threads()
    a = spec.detach().numpy()
    for axis, m in zip(range(-d, -1), size[:-1]):
        a = scipy.fft.ifft(a, axis=axis, workers=workers)[_axis_slice(a.ndim, axis, m)]
    return torch.from_numpy(scipy.fft.irfft(a, n=s[-1], axis=-1, workers=workers))[..., : size[-1]]


def _wrapped_blocks(taps: tuple[int, ...], s: tuple[int, ...], start: tuple[int, ...]) -> list[tuple[tuple, tuple]]:
    """(kernel index, grid index) pairs of the 2^d blocks that place tap t at (t - start) mod s on the periodic grid:
    per dim, taps [start, K) go to [0, K - start) and taps [0, start) to [s - start, s)."""
    per_dim = [((slice(a, t), slice(0, t - a)), (slice(0, a), slice(n - a, n))) for a, t, n in zip(start, taps, s)]
    return [((..., *(b[0] for b in bl)), (..., *(b[1] for b in bl))) for bl in itertools.product(*per_dim)]


class _CroppedFFTConv(torch.autograd.Function):
    """y = (k * u)[start : start + size] over the last d dims, the linear convolution cropped, by FFTs of size s, fp32.

    u is (..., C, *size) and k (C, *taps). The kernel is placed on the length-s periodic grid with tap ``start`` at
    index 0 (tap t at (t - start) mod s), so the kept window of the circular convolution starts at index 0 and s is
    large enough that no wrapped term reaches it. With U, K and G the spectra of u, the placed kernel and the output
    gradient g (all at index 0), the backward uses real FFTs only::

        du = irfftn(G * conj(K), s)[:size]                              (circular cross-correlation with k)
        dk[t] = irfftn(sum_batch(G * conj(U)), s)[(t - start) mod s]    (summed over u's batch dims)

    Autograd's own backward of ``rfftn`` zero-fills a full complex spectrum and runs complex FFTs, which made the
    backward of the Hyena mixers several times slower than their forward on CPU. Every transform of u, g and the
    outputs is pruned to their rows (:func:`_rfft_padded`, :func:`_irfft_cropped`).
    """

    @staticmethod
    def forward(ctx, u: Tensor, k: Tensor, s: tuple[int, ...], start: tuple[int, ...]) -> Tensor:
        size, taps = tuple(u.shape[-len(s) :]), tuple(k.shape[-len(s) :])
        placed = k.new_zeros(*k.shape[: -len(s)], *s)  # (C, *s): tap t at (t - start) mod s
        for src, dst in _wrapped_blocks(taps, s, start):
            placed[dst] = k[src]
        u_f = _rfft_padded(u, s)  # (..., C, *s[:-1], s[-1] // 2 + 1)
        k_f = _rfft_padded(placed, s)  # (C, ...)
        ctx.save_for_backward(u_f, k_f)
        ctx.s, ctx.start, ctx.size, ctx.taps = s, start, size, taps
        return _irfft_cropped(u_f * k_f, s, size).contiguous()  # (..., C, *size)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        u_f, k_f = ctx.saved_tensors
        s = ctx.s
        g_f = _rfft_padded(grad.float(), s)  # (..., C, *spectrum)
        du = dk = None
        if ctx.needs_input_grad[0]:
            du = _irfft_cropped(g_f * k_f.conj(), s, ctx.size)
        if ctx.needs_input_grad[1]:
            prod = (g_f * u_f.conj()).reshape(-1, *k_f.shape).sum(0)  # (C, *spectrum): k is shared by the batch
            grid = _irfft_cropped(prod, s, s)  # (C, *s), tap t at (t - start) mod s
            blocks = _wrapped_blocks(ctx.taps, s, ctx.start)
            if not any(ctx.start):  # causal: the taps are the grid's first entries
                dk = grid[blocks[0][1]]
            else:
                dk = grid.new_empty(*grid.shape[: -len(s)], *ctx.taps)  # (C, *taps)
                for src, dst in blocks:
                    dk[src] = grid[dst]
        return du, dk, None, None


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
            n = fft_size(length + taps - 1)  # full linear convolution fits: no wrap-around at all
            start = 0
        else:
            centre = taps // 2
            if taps > 2 * length - 1:  # offsets beyond +-(L - 1) never reach an output
                k = k[:, centre - (length - 1) : centre + length]  # (C, 2L - 1)
                taps, centre = k.shape[-1], length - 1
            # the kept window [centre, centre + L) must fit, and the wrapped tail (full index >= n, at most
            # L + K - 2) must land before it
            n = fft_size(max(length + taps - 1 - centre, centre + length))
            start = centre
        return _CroppedFFTConv.apply(u, k, (n,), (start,))  # (..., C, L)


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
            kh, ch = 2 * h - 1, h - 1
        if kw > 2 * w - 1:
            k = k[:, :, cw - (w - 1) : cw + w]  # (C, Kh', 2W - 1)
            kw, cw = 2 * w - 1, w - 1
        # per dim: the kept window fits and the wrapped tail lands before it (see fftconv1d)
        s = (fft_size(max(h + kh - 1 - ch, ch + h)), fft_size(max(w + kw - 1 - cw, cw + w)))
        return _CroppedFFTConv.apply(u, k, s, (ch, cw))  # (..., C, H, W)
