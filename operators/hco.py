"""Heat conduction operator (HCO) of vHeat, with fixed, learnable and predicted conductivity k.

Heat diffusion du/dt = k * Laplacian(u) with zero-flux (Neumann) boundaries is diagonal in the orthonormal DCT-II
basis: a cosine mode with frequencies (w_n, w_m) = (n pi / H, m pi / W) decays by exp(-k (w_n^2 + w_m^2) t). So

    u(t) = IDCT2( DCT2(u0) * exp(-k (w_n^2 + w_m^2) t) ).

vHeat writes the decay as E**k with E = exp(-(w_n^2 + w_m^2)) (t = 1 absorbed into k). The DCT is computed either as
dense matrix products with cached cosine bases (vHeat's choice, O(N^1.5)) or with FFTs (O(N log N)): scipy.fft's DCT
on CPU, Makhoul's length-n FFT algorithm in torch on other devices; ``dct_path="auto"`` picks the faster one for the
size (see :data:`FFT_MIN_SIZE`).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sandbox.errors import SandboxError, check_choice, check_positive
from sandbox.registry import register_mixer

from ._common import (
    DepthwiseConv2d,
    LayerNormCF,
    SizeCache,
    compiler_disable,
    fp32,
    linear_cf,
    ln_cf_backward,
    ln_cf_forward,
)
from ._fft import _on_scipy

K_MODES = ("fixed", "learnable", "predicted", "predicted_shared")
DCT_PATHS = ("auto", "matrix", "fft")

# "auto" uses the FFT path when max(H, W) >= this, per device type. On CPU the FFT path is scipy.fft's DCT
# (pocketfft). In HCO's fused node (_HeatNormGate: two in-place batched GEMMs per transform against scipy in place),
# measured on the 2-core development CPU (interleaved A/B of forward + backward, B = 1, C = 64, one thread,
# 2026-12-07), matrix time / FFT time was 0.69 at 64 px, 0.82 at 128, 1.02 at 160, 1.13 at 192 and 1.23 at 256.
# (The unfused ``heat_conduction`` is faster by FFT from 96 px: `python experiments/bench_dct.py`.) On GPUs dense
# matmuls win at every practical size (zh217/torch-dct #1), so CUDA always uses the matrix path.
FFT_MIN_SIZE = {"cpu": 160, "cuda": 1 << 30}

_BASES = SizeCache(maxsize=32)  # cosine bases and frequency grids, shared by all HCO layers (they depend on size only)


# --------------------------------------------------------------------------------------------------- DCT primitives
def cos_basis(n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """Orthonormal DCT-II matrix C (n, n): C[k, x] = sqrt(2/n) cos(pi k (x + 0.5) / n), row 0 scaled by 1/sqrt(2).

    ``C @ x`` is scipy's ``dct(x, type=2, norm="ortho")``; ``C.T`` is its inverse. Built in float64, cached per
    (n, device, dtype).
    """

    def make() -> Tensor:
        k = torch.arange(n, dtype=torch.float64)[:, None]
        x = torch.arange(n, dtype=torch.float64)[None, :]
        c = torch.cos(math.pi * k * (x + 0.5) / n) * math.sqrt(2.0 / n)
        c[0] /= math.sqrt(2.0)
        return c.to(device=device, dtype=dtype)

    key = ("cos", n, str(device)) if dtype == torch.float32 else ("cos", n, str(device), dtype)
    return _BASES.get(key, make)


def frequency_sq(h: int, w: int, device: torch.device | str = "cpu") -> Tensor:
    """w_n^2 + w_m^2 on the (h, w) DCT grid, w_n = n pi / h, w_m = m pi / w (vHeat's decay map exponent), fp32."""

    def make() -> Tensor:
        wn = torch.arange(h, dtype=torch.float64) * (math.pi / h)
        wm = torch.arange(w, dtype=torch.float64) * (math.pi / w)
        return (wn[:, None] ** 2 + wm[None, :] ** 2).to(device=device, dtype=torch.float32)

    return _BASES.get(("w2", h, w, str(device)), make)


def _dct_twiddle(n: int, device, inverse: bool) -> Tensor:
    """Makhoul's complex factors (n,), cached: forward f_k e^{-i pi k / 2n}, inverse e^{+i pi k / 2n} / f_k, with the
    orthonormal scale f_0 = sqrt(1/n), f_k = sqrt(2/n)."""

    def make() -> Tensor:
        k = torch.arange(n, dtype=torch.float64)
        f = torch.full((n,), math.sqrt(2.0 / n), dtype=torch.float64)
        f[0] = math.sqrt(1.0 / n)
        theta = math.pi * k / (2 * n)
        return torch.polar(1.0 / f if inverse else f, theta if inverse else -theta).to(device, torch.complex64)

    return _BASES.get(("dct_twiddle", n, inverse, str(device)), make)


def _dct_last(x: Tensor) -> Tensor:
    """Orthonormal DCT-II along the last dim with one FFT of length n (Makhoul 1980): v = [x_0, x_2, x_4, ..., x_5,
    x_3, x_1] (even samples, then the odd ones reversed), X_k = f_k Re(e^{-i pi k / 2n} FFT(v)_k). fp32 in and out."""
    n = x.shape[-1]
    v = torch.cat([x[..., 0::2], x[..., 1::2].flip(-1)], dim=-1)  # (..., n)
    return (torch.fft.fft(v, dim=-1) * _dct_twiddle(n, x.device, inverse=False)).real  # (..., n)


def _idct_last(y: Tensor) -> Tensor:
    """Inverse of :func:`_dct_last` (orthonormal DCT-III) with one inverse real FFT of length n.

    V_k = e^{i pi k / 2n} (X_k - i X_{n-k}) / f_k (X_n = 0; f_k = f_{n-k} for k >= 1) is the FFT of v, so
    v = irfft(V_0 .. V_{n/2}); then x_{2j} = v_j and x_{2j+1} = v_{n-1-j}.
    """
    n = y.shape[-1]
    m = n // 2 + 1
    mirror = torch.cat([torch.zeros_like(y[..., :1]), y.flip(-1)[..., : m - 1]], dim=-1)  # X_{n-k}, k < m
    spec = torch.complex(y[..., :m], -mirror) * _dct_twiddle(n, y.device, inverse=True)[:m]  # (..., m)
    v = torch.fft.irfft(spec, n=n, dim=-1)  # (..., n)
    half = (n + 1) // 2  # even samples (one more than the odd ones for odd n)
    even, odd = v[..., :half], v[..., half:].flip(-1)  # x_0, x_2, ... and x_1, x_3, ...
    if n % 2:
        odd = torch.cat([odd, torch.zeros_like(even[..., :1])], dim=-1)
    return torch.stack([even, odd], dim=-1).reshape(*v.shape[:-1], 2 * half)[..., :n]  # interleaved


def _scipy_dctn(x: Tensor, inverse: bool, overwrite: bool = False) -> Tensor:
    """scipy's orthonormal 2-D DCT-II (or its inverse) over the last two dims of a CPU tensor, with torch's threads.

    ``overwrite=True`` lets scipy reuse ``x``'s memory (its contents are lost): only for scratch tensors.
    """
    import scipy.fft

    f = scipy.fft.idctn if inverse else scipy.fft.dctn
    a = x.detach().contiguous().numpy()
    out = f(a, type=2, norm="ortho", axes=(-2, -1), workers=torch.get_num_threads(), overwrite_x=overwrite)
    return torch.from_numpy(out)


class _ScipyDCT2(torch.autograd.Function):
    """2-D DCT-II (``inverse=False``) or DCT-III of a CPU tensor by scipy.fft (pocketfft: O(N log N), vectorised).

    Both transforms are orthogonal (y = C x C^T), so the gradient of each is the other one.
    """

    @staticmethod
    def forward(ctx, x: Tensor, inverse: bool) -> Tensor:
        ctx.inverse = inverse
        return _scipy_dctn(x, inverse)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        return _scipy_dctn(grad, not ctx.inverse), None


class _ScipyHeat(torch.autograd.Function):
    """u = IDCT2(DCT2(x) * decay) of a CPU tensor by scipy.fft, fused into one autograd node.

    With S = DCT2(x) and G = DCT2(grad_u) (the operator is symmetric: C^T diag(d) C), grad_x = IDCT2(G * decay) and
    grad_decay = sum over broadcast dims of S * G. Compared with DCT, multiply and IDCT as three nodes, the spectra are
    scaled in place (no product tensor per direction) and S is kept only when decay needs a gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, decay: Tensor) -> Tensor:
        spec = _scipy_dctn(x, inverse=False)  # (B, C, H, W), a fresh tensor
        if ctx.needs_input_grad[1]:
            ctx.save_for_backward(spec, decay)
            spec = spec * decay  # S is kept for grad_decay
        else:
            ctx.save_for_backward(decay)
            spec.mul_(decay)
        return _scipy_dctn(spec, inverse=True, overwrite=True)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        *spec, decay = ctx.saved_tensors  # spec = [S] only when decay needs a gradient
        g = _scipy_dctn(grad, inverse=False)  # (B, C, H, W)
        grad_decay = (spec[0] * g).sum_to_size(decay.shape) if ctx.needs_input_grad[1] else None
        grad_x = _scipy_dctn(g.mul_(decay), inverse=True, overwrite=True) if ctx.needs_input_grad[0] else None
        return grad_x, grad_decay


def _transposed(x: Tensor) -> Tensor:
    return x.transpose(-1, -2).contiguous()


def _dct2_torch(x: Tensor) -> Tensor:
    """:func:`dct2` by torch FFTs (any device): 1-D transforms along contiguous rows, W, then H after a transpose."""
    return _dct_last(_transposed(_dct_last(x))).transpose(-1, -2)


def _idct2_torch(y: Tensor) -> Tensor:
    """:func:`idct2` by torch FFTs (any device)."""
    return _idct_last(_transposed(_idct_last(_transposed(y))))


def dct2(x: Tensor, path: str = "matrix") -> Tensor:
    """Orthonormal 2-D DCT-II over the last two dims (scipy ``dctn(x, type=2, norm="ortho", axes=(-2, -1))``)."""
    if path == "fft":
        return _ScipyDCT2.apply(x, False) if _on_scipy(x) else _dct2_torch(x)
    h, w = x.shape[-2:]
    return cos_basis(h, x.device) @ x @ cos_basis(w, x.device).T  # (..., H, W)


def idct2(y: Tensor, path: str = "matrix") -> Tensor:
    """Inverse of :func:`dct2` (orthonormal 2-D DCT-III)."""
    if path == "fft":
        return _ScipyDCT2.apply(y, True) if _on_scipy(y) else _idct2_torch(y)
    h, w = y.shape[-2:]
    return cos_basis(h, y.device).T @ y @ cos_basis(w, y.device)


def pick_path(h: int, w: int, device: torch.device) -> str:
    """The DCT path "auto" uses for an (h, w) map on ``device`` (see :data:`FFT_MIN_SIZE`)."""
    return "fft" if max(h, w) >= FFT_MIN_SIZE.get(device.type, 1 << 30) else "matrix"


def heat_conduction(x: Tensor, decay: Tensor, path: str = "auto") -> Tensor:
    """u = IDCT2(DCT2(x) * decay) for x (B, C, H, W) and decay broadcastable to (C, H, W); fp32 in and out."""
    if path == "auto":
        path = pick_path(x.shape[-2], x.shape[-1], x.device)
    if path == "fft" and _on_scipy(x):
        return _ScipyHeat.apply(x, decay)
    return idct2(dct2(x, path) * decay, path)


# ------------------------------------------------------------------------------------- fused heat, norm and gate
def _matrix_dct2(x: Tensor, inverse: bool, out: Tensor | None = None, work: Tensor | None = None) -> Tensor:
    """:func:`dct2` (or :func:`idct2`) by the matrix path as two batched GEMMs, without autograd.

    x (B, C, H, W) needs contiguous (C, H, W) blocks only (a channel slice of a (B, 2C, H, W) tensor qualifies). The
    W axis is one GEMM per image over its C H rows, (B, C H, W) @ (W, W); the H axis one per channel, (H, H) @ (H, W).
    The forward reads x in the W-axis GEMM and the inverse writes ``out`` in it, as the (B, C H, W) view exists for
    such slices; otherwise x and ``out`` must be contiguous. The intermediate goes to ``work`` when that is a
    contiguous (B, C, H, W) buffer (else to a fresh one); ``out`` may be ``x`` itself (in place). Returns (B, C, H, W).
    """
    b, c, h, w = x.shape
    ch, cw = cos_basis(h, x.device, x.dtype), cos_basis(w, x.device, x.dtype)
    work = work if work is not None and work.is_contiguous() else None  # a batch-strided slice cannot serve
    if not inverse:  # C_h @ x @ C_w^T, W axis first
        tmp = None if work is None else work.view(b, c * h, w)
        rows = torch.bmm(x.reshape(b, c * h, w), cw.T.expand(b, w, w), out=tmp)  # (B, C H, W)
        dst = None if out is None else out.view(b * c, h, w)
        return torch.bmm(ch.expand(b * c, h, h), rows.view(b * c, h, w), out=dst).view(b, c, h, w)
    tmp = None if work is None else work.view(b * c, h, w)  # C_h^T @ x @ C_w, H axis first
    cols = torch.bmm(ch.T.expand(b * c, h, h), x.reshape(b * c, h, w), out=tmp)  # (B C, H, W)
    dst = None if out is None else out.view(b, c * h, w)
    return torch.bmm(cols.view(b, c * h, w), cw.expand(b, w, w), out=dst).view(b, c, h, w)


def _dct2_raw(x: Tensor, inverse: bool, path: str, out: Tensor | None = None, work: Tensor | None = None) -> Tensor:
    """The DCT-II (or its inverse) of fp32 (B, C, H, W) by ``path`` ("matrix" or "fft") without autograd: matrix
    GEMMs (:func:`_matrix_dct2`), scipy.fft on CPU, torch FFTs on other devices.

    Returns a fresh tensor, or ``out`` filled. ``out`` may be ``x`` (an in-place transform: scipy then reuses the
    memory); ``work`` is a scratch buffer for the matrix path.
    """
    if path == "matrix":
        return _matrix_dct2(x, inverse, out, work)
    if _on_scipy(x):
        if out is None:  # scipy in place on a torch buffer: a fresh numpy result costs page faults on every call
            out = torch.empty(x.shape, dtype=x.dtype).copy_(x)
            x = out
        res = _scipy_dctn(x, inverse, overwrite=out is x)
    else:
        res = _idct2_torch(x) if inverse else _dct2_torch(x)
    if out is None or res.data_ptr() == out.data_ptr():
        return res if out is None else out
    return out.copy_(res)


class _HeatNormGate(torch.autograd.Function):
    """v = LayerNorm_C(IDCT2(DCT2(x) * decay)) * SiLU(z) for xz = [x, z] (B, 2C, H, W): HCO's middle as one node.

    Forward and backward are written out so that the spectra, the norm and the gate share buffers and passes:

    - forward: S = DCT2(x), u = IDCT2(S * decay), v = LN(u) * SiLU(z) (:func:`ln_cf_forward`, u normalised in place);
    - backward, g = dL/dv: dL/dz = SiLU'(z) * g * y (y = LN(u), recomputed), written into the z half of one
      (B, 2C, H, W) gradient (no ``cat``); dL/dy = g * SiLU(z) -> dL/du (:func:`ln_cf_backward`); G = DCT2(dL/du)
      (the operator C^T diag(d) C is symmetric), dL/ddecay = sum over the batch of S * G, dL/dx = IDCT2(G * decay)
      into the x half.

    On CPU a fresh tensor costs page faults (as much as an elementwise pass at 64 to 256 px), so the transforms
    run in place, and the temporaries live in buffers that are needed anyway (v, the x half of the gradient). Saved:
    z (a view of xz), decay, xhat, rstd, SiLU(z), and S only when decay needs a gradient. bf16/fp16 ``xz`` (autocast)
    is computed in fp32, other dtypes in their own (float64 for gradcheck); v and the gradient keep xz's dtype.
    ``path`` is "matrix" or "fft" (see :func:`_dct2_raw`).
    """

    @staticmethod
    def forward(ctx, xz: Tensor, decay: Tensor, weight: Tensor, bias: Tensor, eps: float, path: str) -> Tensor:
        with fp32(xz):
            b, c2, h, w = xz.shape
            c = c2 // 2
            dtype = torch.float32 if xz.dtype in (torch.float16, torch.bfloat16) else xz.dtype
            x, z = xz[:, :c].to(dtype), xz[:, c:].to(dtype)  # (B, C, H, W), views unless converted
            buf = x.new_empty((b, c, h, w))  # scratch, then v (a fresh CPU tensor costs page faults: few of them)
            spec = _dct2_raw(x, False, path, work=buf)  # S, (B, C, H, W), fresh
            keep_spec = ctx.needs_input_grad[1]
            u = spec * decay if keep_spec else spec.mul_(decay)  # S * decay
            u = _dct2_raw(u, True, path, out=u, work=buf)  # IDCT2 in place
            _, xhat, rstd = ln_cf_forward(u.view(b, c, h * w), weight, bias, eps, inplace=True, out=buf.view(b, c, -1))
            s = F.silu(z)  # (B, C, H, W)
            v = buf.mul_(s)  # y * SiLU(z); buf held y
            ctx.save_for_backward(z, decay, weight, bias, xhat, rstd, s, *([spec] if keep_spec else []))
            ctx.path = path
            return v.to(xz.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        with fp32(grad):
            z, decay, weight, bias, xhat, rstd, s, *spec = ctx.saved_tensors
            b, c, h, w = z.shape
            g = grad.to(z.dtype)  # dL/dv, (B, C, H, W)
            grad_xz = g.new_empty((b, 2 * c, h, w))
            gx, gz = grad_xz[:, :c], grad_xz[:, c:]  # gx serves as scratch until dL/dx is written there
            y = torch.addcmul(bias[:, None], xhat, weight[:, None], out=gx.view(b, c, h * w))  # LN(u), recomputed
            torch.ops.aten.silu_backward.grad_input(y.view(b, c, h, w).mul_(g), z, grad_input=gz)  # dL/dz
            g_y = torch.mul(g, s, out=gx).view(b, c, h * w)  # dL/dy = g SiLU(z)
            need_w, need_b = ctx.needs_input_grad[2:4]
            grad_u, grad_w, grad_b = ln_cf_backward(g_y, xhat, rstd, weight, need_w, need_b)  # (B, C, HW), fresh
            spec_g = _dct2_raw(grad_u.view(b, c, h, w), False, ctx.path, out=grad_u.view(b, c, h, w), work=gx)
            grad_decay = None
            if ctx.needs_input_grad[1]:  # S * G summed over the dims decay is broadcast along
                prod = spec[0] * spec_g  # (B, C, H, W)
                same = prod.numel() == decay.numel()  # a view: sum_to_size over a size-1 dim is a slow copy
                grad_decay = prod.view(decay.shape) if same else prod.sum_to_size(decay.shape)
            _dct2_raw(spec_g.mul_(decay), True, ctx.path, out=spec_g, work=gx)  # IDCT2(G decay) in place
            gx.copy_(spec_g)  # dL/dx
            return grad_xz.to(grad.dtype), grad_decay, grad_w, grad_b, None, None


class _PredictedDecay(torch.autograd.Function):
    """vHeat's predicted decay, exp(-t (w_n^2 + w_m^2) ReLU(k)) with k = resample(FVE @ W^T + b) + k_bias, as one node.

    Inputs: the FVE (h0, w0, C), the ``to_k`` Linear's weight (C, C) and bias (C,), a = -t (w_n^2 + w_m^2) (h, w).
    k is one GEMM, W @ FVE^T, straight into the channels-first (C, h0 w0) layout of the spectra, then resampled
    bicubically (two small GEMMs, :func:`bicubic_matrix`) when (h0, w0) != (h, w). The node keeps k and decay.
    Backward: with g_k = dL/ddecay * decay * a where k > 0, else 0 (ReLU's ``threshold_backward`` kernel: a boolean
    mask with ``masked_fill_`` took 8x as long), resampled back by the transposed matrices, dL/dW = g_k @ FVE,
    dL/db = sum g_k, dL/dFVE = g_k^T @ W. Runs in the inputs' dtype (fp32 in the layer).
    """

    @staticmethod
    def forward(ctx, embed: Tensor, weight: Tensor, bias: Tensor, a: Tensor, k_bias: float) -> Tensor:
        h0, w0, c = embed.shape
        h, w = a.shape
        k = torch.addmm(bias[:, None], weight, embed.reshape(h0 * w0, c).T)  # (C, h0 w0)
        if k_bias:
            k.add_(k_bias)
        k = k.view(c, h0, w0)
        if h0 != h:
            k = bicubic_matrix(h0, h, k.device).to(k.dtype) @ k  # (C, h, w0)
        if w0 != w:
            k = k @ bicubic_matrix(w0, w, k.device).to(k.dtype).T  # (C, h, w)
        decay = torch.clamp_min(k, 0.0).mul_(a).exp_()  # (C, h, w)
        ctx.save_for_backward(embed, weight, a, decay, k)
        return decay

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        embed, weight, a, decay, k = ctx.saved_tensors
        h0, w0, c = embed.shape
        h, w = a.shape
        g = (grad * decay).mul_(a)  # (C, h, w)
        g = torch.ops.aten.threshold_backward.grad_input(g, k, 0.0, grad_input=g)  # dL/dk: 0 where k <= 0
        if h0 != h:
            g = bicubic_matrix(h0, h, g.device).to(g.dtype).T @ g  # (C, h0, w)
        if w0 != w:
            g = g @ bicubic_matrix(w0, w, g.device).to(g.dtype)  # (C, h0, w0)
        g = g.reshape(c, h0 * w0)  # (C, h0 w0)
        grad_embed = torch.mm(g.T, weight).view(h0, w0, c) if ctx.needs_input_grad[0] else None  # (h0, w0, C)
        grad_w = torch.mm(g, embed.reshape(h0 * w0, c)) if ctx.needs_input_grad[1] else None  # (C, C)
        grad_b = g.sum(1) if ctx.needs_input_grad[2] else None
        return grad_embed, grad_w, grad_b, None, None


def bicubic_matrix(n_in: int, n_out: int, device: torch.device | str = "cpu") -> Tensor:
    """(n_out, n_in) fp32 matrix A with ``A @ v`` = ``F.interpolate`` bicubic (align_corners=False) of v along one axis.

    Bicubic resizing is separable, so ``A_h @ X @ A_w.T`` equals ``F.interpolate(X, (h, w), mode="bicubic",
    align_corners=False)`` up to rounding (same clamped borders; each row of A sums to 1). Cached per (n_in, n_out,
    device): two small matmuls replace the interpolation kernel, whose backward is slow on CPU.
    """

    def make() -> Tensor:
        eye = torch.eye(n_in, dtype=torch.float64)[:, None, None, :]  # n_in unit impulses, each a 1 x n_in image
        rows = F.interpolate(eye, size=(1, n_out), mode="bicubic", align_corners=False)  # (n_in, 1, 1, n_out)
        return rows[:, 0, 0, :].t().contiguous().to(device=device, dtype=torch.float32)  # (n_out, n_in)

    return _BASES.get(("bicubic", n_in, n_out, str(device)), make)


def resample_bicubic(x: Tensor, h: int, w: int) -> Tensor:
    """Bicubic resize of the last two dims, (..., h0, w0) -> (..., h, w), in fp32 as matrix products (see
    :func:`bicubic_matrix`); an axis whose size already matches is left alone."""
    h0, w0 = x.shape[-2:]
    x = x.float()
    if h0 != h:
        x = bicubic_matrix(h0, h, x.device) @ x  # (..., h, w0)
    if w0 != w:
        x = x @ bicubic_matrix(w0, w, x.device).T  # (..., h, w)
    return x


def resample_freq_embed(embed: Tensor, h: int, w: int) -> Tensor:
    """Resample a frequency value embedding (h0, w0, C) to (h, w, C): fp32 bicubic, index-proportional, dtype kept.

    Index-proportional resizing keeps each embedding at the same normalised frequency n / N. No-op when sizes match.
    """
    if embed.shape[:2] == (h, w):
        return embed
    e = resample_bicubic(embed.permute(2, 0, 1), h, w)  # (C, h, w)
    return e.permute(1, 2, 0).to(embed.dtype)  # (h, w, C)


class FrequencyEmbedding(nn.Module):
    """Frequency value embeddings (FVE) of vHeat: a learned (size, size, C) map, resampled to the map at hand.

    In vHeat one FVE is owned by each stage and shared by its blocks; :func:`share_frequency_embedding` does that for
    any module holding ``hco`` mixers with ``k_mode="predicted_shared"``.
    """

    def __init__(self, dim: int, size: int = 64) -> None:
        super().__init__()
        check_positive("embed_size", size)
        self.weight = nn.Parameter(torch.empty(size, size, dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, h: int, w: int) -> Tensor:
        return resample_freq_embed(self.weight, h, w)  # (h, w, C)


# ------------------------------------------------------------------------------------------------------------ mixer
@register_mixer(
    "hco",
    paper="Wang et al., vHeat: Building Vision Models upon Heat Conduction, CVPR 2025",
    family="heat",
    complexity="O(N^1.5) (matrix DCT) / O(N log N) (FFT DCT)",
)
class HeatConduction(nn.Module):
    """vHeat's heat conduction layer (``Heat2D``). Maps (B, C, H, W) -> (B, C, H, W), any H, W >= 1.

    dwconv 3x3 -> Linear(C, 2C) into x and gate z -> u = IDCT2(DCT2(x) * exp(-k (w_n^2 + w_m^2) t)) -> LayerNorm ->
    u * SiLU(z) -> Linear(C, C). The DCT, the decay and exp run in fp32 under autocast. Parameter names follow vHeat
    (``dwconv``, ``linear``, ``out_norm``, ``out_linear``, ``to_k.0``); the linears are applied channels-first.
    Everything from the (B, 2C, H, W) linear output to the gated v is one autograd node with a hand-written backward
    (:class:`_HeatNormGate`), and so is the predicted decay (:class:`_PredictedDecay`): fewer passes over memory and
    fewer fresh tensors than autograd through the composite.

    Where k comes from (``k_mode``):

    - ``fixed``: the constant ``k`` (no parameter): plain heat diffusion, a Gaussian blur of variance 2 k t px^2
      with mirror boundaries.
    - ``learnable``: one positive scalar per layer, k = softplus(k_raw), initialised to ``k``.
    - ``predicted`` (vHeat): k = ReLU(Linear(FVE)) per frequency and channel, from this layer's own frequency value
      embedding (``embed_size`` square, resampled bicubically to H x W).
    - ``predicted_shared``: as ``predicted`` with the FVE owned by the enclosing stage and shared by its layers, as in
      vHeat; networks create and bind it through the :meth:`share_across_stage` hook.

    Args:
        dim: channels C.
        k_mode: one of ``fixed``, ``learnable``, ``predicted``, ``predicted_shared``.
        k: conductivity for ``fixed``, initial value for ``learnable``.
        t: diffusion time (vHeat: 1, absorbed into k).
        embed_size: side of the frequency value embedding for the predicted modes.
        dct_path: ``auto`` (fastest for the size and device), ``matrix`` or ``fft``.
        k_bias: constant added before the ReLU in the predicted modes, k = ReLU(Linear(FVE) + k_bias), so k starts
            near this value. vHeat's 0 starts HCO as a near-identity filter (|k| ~ 4e-3) with about half of the
            ReLU units at k = 0, and a unit that reaches k = 0 gets no gradient any more; a positive value starts
            every frequency as a live diffusion (0.5: a Gaussian blur of variance 1 px^2). A constant rather than
            an initial bias, so a network's own weight init cannot undo it; the state_dict keeps vHeat's keys.
    """

    def __init__(
        self,
        dim: int,
        k_mode: str = "predicted",
        k: float = 1.0,
        t: float = 1.0,
        embed_size: int = 64,
        dct_path: str = "auto",
        k_bias: float = 0.0,
    ) -> None:
        super().__init__()
        check_choice("k_mode", k_mode, K_MODES)
        check_choice("dct_path", dct_path, DCT_PATHS)
        check_positive("k", k, allow_zero=True)
        check_positive("t", t, allow_zero=True)
        check_positive("embed_size", embed_size)
        check_positive("k_bias", k_bias, allow_zero=True)
        self.dim, self.k_mode, self.t, self.dct_path = dim, k_mode, float(t), dct_path
        self.k = float(k)
        self.dwconv = DepthwiseConv2d(dim, 3)
        self.linear = nn.Linear(dim, 2 * dim)
        self.out_norm = LayerNormCF(dim)
        self.out_linear = nn.Linear(dim, dim)
        if k_mode == "learnable":
            # softplus^-1(k); k = 0 maps to a large negative raw value (softplus ~ 0)
            self.k_raw = nn.Parameter(torch.tensor(math.log(math.expm1(k)) if k > 0 else -20.0))
        if k_mode in ("predicted", "predicted_shared"):
            self.to_k = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        if k_mode == "predicted":
            self.freq_embed = FrequencyEmbedding(dim, embed_size)
        self._cache = SizeCache()
        self._eval_cache = SizeCache(maxsize=4)  # inference decays per size, see decay()
        self._eval_state: tuple = ()
        self.k_bias = float(k_bias)
        self._init_weights()

    def _init_weights(self) -> None:  # vHeat: Linear trunc_normal(0.02) and zero bias; convs keep PyTorch's default
        for m in (self.linear, self.out_linear, *([self.to_k[0]] if hasattr(self, "to_k") else [])):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------------------------------------ shared FVE
    @classmethod
    def share_across_stage(cls, layers: Sequence[HeatConduction], size: int) -> dict[str, nn.Module]:
        """Stage hook of the mixer contract (``sandbox.registry.register_mixer``): one FVE of side ``size`` for the
        stage's ``predicted_shared`` layers among ``layers``, which the network registers as the stage's
        ``freq_embed`` (vHeat's sharing per stage); nothing when the stage has none."""
        embed = _bind_shared_embedding(layers, size)
        return {} if embed is None else {"freq_embed": embed}

    def bind_frequency_embedding(self, embed: FrequencyEmbedding) -> None:
        """Use ``embed`` (owned and registered by the enclosing stage) as this layer's FVE (``predicted_shared``)."""
        if self.k_mode != "predicted_shared":
            raise SandboxError(f"hco with k_mode={self.k_mode!r} does not take a shared frequency embedding")
        if embed.weight.shape[-1] != self.dim:
            raise SandboxError(
                f"shared frequency embedding has {embed.weight.shape[-1]} channels, layer has {self.dim}"
            )
        # plain attribute, not a submodule: the stage owns the parameter, so it appears once in the state_dict
        self.__dict__["_shared_embed"] = embed

    def _embedding(self) -> FrequencyEmbedding:
        if self.k_mode == "predicted":
            return self.freq_embed
        embed = self.__dict__.get("_shared_embed")
        if embed is None:
            raise SandboxError(
                "hco(k_mode='predicted_shared') has no frequency embedding bound; the enclosing network must call "
                "operators.hco.share_frequency_embedding(stage), or use k_mode='predicted' for a standalone layer"
            )
        return embed

    # ------------------------------------------------------------------------------------------------- forward
    def conductivity(self, h: int, w: int) -> Tensor:
        """k on the (h, w) frequency grid: a scalar tensor (fixed, learnable) or (C, h, w) (predicted), fp32.

        Predicted: k = ReLU(Linear(resample(FVE)) + k_bias), computed as ReLU(resample(Linear(FVE) + k_bias)) (see
        :meth:`_predicted_k`).
        """
        if self.k_mode == "fixed":
            return torch.tensor(self.k)
        if self.k_mode == "learnable":
            return F.softplus(self.k_raw.float())
        return F.relu(self._predicted_k(h, w))

    def _predicted_k(self, h: int, w: int) -> Tensor:
        """Linear(resample(FVE)) + k_bias before the ReLU, (C, h, w) fp32 (predicted modes).

        Computed as resample(Linear(FVE) + k_bias): the two are equal up to rounding (the Linear mixes channels, the
        bicubic resampling mixes positions with weights summing to 1), and this order runs the Linear on the
        embedding's own grid (embed_size^2 points, not h * w). The training path fuses this with the decay
        (:class:`_PredictedDecay`).
        """
        linear = self.to_k[0]
        embed = self._embedding().weight.float()  # (h0, w0, C)
        h0, w0, c = embed.shape
        k = torch.addmm(linear.bias.float()[:, None], linear.weight.float(), embed.view(h0 * w0, c).T)  # (C, h0 w0)
        k = k + self.k_bias if self.k_bias else k
        return resample_bicubic(k.view(c, h0, w0), h, w)  # (C, h, w)

    def decay(self, h: int, w: int, device: torch.device) -> Tensor:
        """exp(-k (w_n^2 + w_m^2) t), shape (h, w) or (C, h, w), fp32.

        k depends on the parameters only, never on the input. In inference (eval mode, gradients off) the decay is
        therefore computed once per size and reused until a parameter changes (vHeat's ``infer_mode`` fuses it the
        same way, at its training size only): later forwards skip the FVE -> k linear and the exp.
        """
        w2 = frequency_sq(h, w, device)  # (h, w)
        if self.k_mode == "fixed":
            return self._cache.get(("decay", h, w, str(device)), lambda: torch.exp(-self.k * self.t * w2))
        if self.training or torch.is_grad_enabled():
            return self._decay(h, w, device, w2)
        state = self._parameter_state()
        if state != self._eval_state:  # a parameter was updated, loaded or moved: every cached decay is stale
            self._eval_cache.clear()
            self._eval_state = state
        return self._eval_cache.get((h, w, str(device)), lambda: self._decay(h, w, device, w2))

    def _decay(self, h: int, w: int, device: torch.device, w2: Tensor) -> Tensor:
        a = -self.t * w2  # (h, w): the sign and t on the small map, not on (C, h, w)
        if self.k_mode == "learnable":
            return torch.exp(self.conductivity(h, w).to(device) * a)
        if not torch.is_grad_enabled():  # ReLU, scale and exp in place on the fresh k
            return self._predicted_k(h, w).to(device).clamp_min_(0.0).mul_(a).exp_()  # (C, h, w)
        linear = self.to_k[0]
        args = (self._embedding().weight, linear.weight, linear.bias)
        return _PredictedDecay.apply(*(p.float().to(device) for p in args), a, self.k_bias)  # (C, h, w)

    def _parameter_state(self) -> tuple:
        """(storage, in-place version) of every tensor k depends on; changes whenever one of them does."""
        if self.k_mode == "learnable":
            tensors = [self.k_raw]
        else:
            embed = self.freq_embed if self.k_mode == "predicted" else self.__dict__.get("_shared_embed")
            tensors = [self.to_k[0].weight, self.to_k[0].bias] + ([embed.weight] if embed is not None else [])
        return tuple((t.data_ptr(), t._version) for t in tensors)

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        x = self.dwconv(x)  # (B, C, H, W)
        xz = linear_cf(x, self.linear)  # (B, 2C, H, W): x and the gate z
        path = pick_path(h, w, x.device) if self.dct_path == "auto" else self.dct_path
        with fp32(xz):
            decay = self.decay(h, w, x.device)  # (h, w) or (C, h, w), fp32
        norm = self.out_norm
        v = _heat_norm_gate(xz, decay, norm.weight, norm.bias, norm.eps, path)  # LN(heat(x)) * SiLU(z)
        return linear_cf(v, self.out_linear)  # (B, C, H, W)


@compiler_disable
def _heat_norm_gate(xz: Tensor, decay: Tensor, weight, bias, eps: float, path: str) -> Tensor:
    """:class:`_HeatNormGate` outside ``torch.compile``'s graphs: dynamo cannot trace its in-place buffer reuse (it
    stops with an aliasing error), so a compiled network breaks its graph here and runs the node eagerly."""
    return _HeatNormGate.apply(xz, decay, weight, bias, eps, path)


def share_frequency_embedding(stage: nn.Module, size: int = 64) -> FrequencyEmbedding | None:
    """Create one FVE for all ``hco(k_mode="predicted_shared")`` layers inside ``stage`` and bind it to them.

    The caller registers the returned module on the stage (``stage.freq_embed = share_frequency_embedding(stage)``) so
    it is trained, moved and saved once. Returns None when the stage has no such layer.
    """
    return _bind_shared_embedding([m for m in stage.modules() if isinstance(m, HeatConduction)], size)


def _bind_shared_embedding(candidates: Sequence[HeatConduction], size: int) -> FrequencyEmbedding | None:
    """One FVE of side ``size`` bound to the ``k_mode="predicted_shared"`` layers among ``candidates``; None if none."""
    layers = [m for m in candidates if m.k_mode == "predicted_shared"]
    if not layers:
        return None
    dims = {m.dim for m in layers}
    if len(dims) != 1:
        raise SandboxError(f"layers sharing a frequency embedding must have one width, got {sorted(dims)}")
    embed = FrequencyEmbedding(dims.pop(), size)
    for m in layers:
        m.bind_frequency_embedding(embed)
    return embed


__all__ = [
    "FFT_MIN_SIZE",
    "FrequencyEmbedding",
    "HeatConduction",
    "bicubic_matrix",
    "cos_basis",
    "dct2",
    "heat_conduction",
    "idct2",
    "pick_path",
    "resample_bicubic",
    "resample_freq_embed",
    "share_frequency_embedding",
]
