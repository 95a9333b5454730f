"""GFNet's global filter: a learned elementwise filter in the 2-D Fourier domain."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sandbox.errors import check_positive
from sandbox.registry import register_mixer

from ._common import fp32


def resample_complex_weight(weight: Tensor, h: int, w: int) -> Tensor:
    """Resample a GFNet filter (h0, w0, C, 2) to (h, w, C, 2), fp32 bilinear with align_corners=True.

    This is what GFNet's author recommends for other input sizes (issues #4, #16): real and imaginary parts are
    resized as channels, index-proportionally, so each weight stays at its normalised frequency. No-op if sizes match.
    """
    if weight.shape[:2] == (h, w):
        return weight
    h0, w0, c, _ = weight.shape
    x = weight.float().permute(2, 3, 0, 1).reshape(1, 2 * c, h0, w0)  # (1, 2C, h0, w0)
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=True)
    return x.reshape(c, 2, h, w).permute(2, 3, 0, 1).to(weight.dtype)  # (h, w, C, 2)


CHUNK_BYTES = 1 << 20  # spectra larger than 2 such chunks are inverted channel chunk by channel chunk


def _irfft2_consuming(holder: list[Tensor], w: int) -> Tensor:
    """``irfft2(spec, norm="ortho")`` over the last two dims for ``holder = [spec]``, (B, C, H, W//2+1) -> (B, C, H, W),
    emptying ``holder`` so that the spectrum is freed as soon as nothing else holds it.

    ``irfft2`` holds the spectrum, a transposed copy for the transform along H, that transform's output, a copy of it
    for the complex-to-real step and the result at once. A small spectrum goes through ifft (dim -2) then irfft
    (dim -1) with the spectrum freed between the two; a large one channel chunk by channel chunk (about
    :data:`CHUNK_BYTES` each) into the result, so the copies are chunk-sized.
    """
    spec = holder.pop()  # (B, C, H, W//2+1)
    b, c, h, wf = spec.shape
    per_channel = b * h * wf * spec.element_size()
    if c * per_channel <= 2 * CHUNK_BYTES:
        half = torch.fft.ifft(spec, dim=-2, norm="ortho")  # (B, C, H, W//2+1)
        del spec
        return torch.fft.irfft(half, n=w, dim=-1, norm="ortho")  # (B, C, H, W)
    step = max(1, CHUNK_BYTES // per_channel)
    out = spec.real.new_empty(b, c, h, w)
    for c0 in range(0, c, step):
        half = torch.fft.ifft(spec[:, c0 : c0 + step], dim=-2, norm="ortho")  # (B, c, H, W//2+1)
        out[:, c0 : c0 + step] = torch.fft.irfft(half, n=w, dim=-1, norm="ortho")  # (B, c, H, W)
    return out


class _GlobalFilterCPU(torch.autograd.Function):
    """y = irfft2(rfft2(x) * Wc) over the last two dims, orthonormal, with a hand-written backward (CPU, fp32).

    x is (B, C, H, W) and weight the (H, W // 2 + 1, C, 2) real view of the complex filter Wc. With X = rfft2(x),
    G = rfft2(g) of the output gradient and m the Hermitian weights of the half spectrum (2 for the columns that stand
    for two conjugate frequencies, 1 for the DC column and, W even, the Nyquist column)::

        dx = irfft2(G * conj(Wc))                 (the masks of rfft2's and irfft2's adjoints cancel)
        dWc = sum_batch(m * G * conj(X))          (irfft2's adjoint is rfft2 times m; PyTorch's convention for
                                                   complex gradients, equal to autograd through the composite)

    Autograd through the composite runs the backward of irfft2 and rfft2 through several extra full-size copies; here
    the weight gradient is made first and written channels-last once, then dx's product reuses G's buffer, and each
    inverse transform frees its input spectrum half way (:func:`_irfft2_consuming`). The weight stays a strided
    (channel stride 1) view in the products: copying it channels-first first was slower on CPU.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        wc = torch.view_as_complex(weight.contiguous()).permute(2, 0, 1)  # (C, H, W//2+1), a view, channel stride 1
        spec = torch.fft.rfft2(x, dim=(-2, -1), norm="ortho")  # (B, C, H, W//2+1)
        ctx.save_for_backward(spec, wc)
        ctx.size = (h, w)
        return _irfft2_consuming([spec * wc], w)  # (B, C, H, W)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        spec, wc = ctx.saved_tensors
        h, w = ctx.size
        g_f = torch.fft.rfft2(grad, dim=(-2, -1), norm="ortho")  # (B, C, H, W//2+1)
        dx = dweight = None
        if ctx.needs_input_grad[1]:
            d_wc = g_f * spec.conj()  # G * conj(X)
            d_wc = d_wc.sum(0) if d_wc.shape[0] > 1 else d_wc[0]  # (C, H, W//2+1): shared by the batch
            d_wc[..., 1 : (w + 1) // 2].mul_(2)  # m: the columns that stand for two conjugate frequencies
            dweight = torch.view_as_real(d_wc).permute(1, 2, 0, 3).contiguous()  # (H, W//2+1, C, 2)
            del d_wc
        if ctx.needs_input_grad[0]:
            holder = [g_f.mul_(wc.conj())]  # G * conj(Wc), in place
            del g_f
            dx = _irfft2_consuming(holder, w)  # (B, C, H, W)
        return dx, dweight


@register_mixer(
    "gfnet",
    paper="Rao et al., Global Filter Networks for Image Classification, NeurIPS 2021",
    family="spectral",
    complexity="O(N log N)",
)
class GlobalFilter(nn.Module):
    """GFNet global filter: ``irfft2(rfft2(x) * W)`` with orthonormal FFTs. Maps (B, C, H, W) -> (B, C, H, W), any size.

    The learned complex filter ``complex_weight`` (size, size // 2 + 1, C, 2) (GFNet's layout and name) is resampled
    bilinearly to (H, W // 2 + 1) for other input sizes. The convolution is circular (GFNet's boundary). FFTs run in
    fp32 under autocast (cuFFT has no half precision for sizes other than powers of two). On the CPU the filter runs
    through :class:`_GlobalFilterCPU` (same values, hand-written backward); other devices use autograd.

    Args:
        dim: channels C.
        size: side of the map the filter is defined for (GFNet-H stage 1: 56).
    """

    def __init__(self, dim: int, size: int = 64) -> None:
        super().__init__()
        check_positive("size", size)
        self.dim, self.size = dim, size
        self.complex_weight = nn.Parameter(torch.randn(size, size // 2 + 1, dim, 2) * 0.02)

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        with fp32(x):
            weight = resample_complex_weight(self.complex_weight, h, w // 2 + 1).float()  # (H, W//2+1, C, 2)
            if x.device.type == "cpu":
                if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
                    return _GlobalFilterCPU.apply(x.float(), weight).to(x.dtype)
                # no autograd: the spectrum is a temporary, filtered in place
                spec = [torch.fft.rfft2(x.float(), dim=(-2, -1), norm="ortho")]  # (B, C, H, W//2+1) complex
                spec[0].mul_(torch.view_as_complex(weight.contiguous()).permute(2, 0, 1))  # (C, H, W//2+1) view
                return _irfft2_consuming(spec, w).to(x.dtype)  # (B, C, H, W)
            spec = torch.fft.rfft2(x.float(), dim=(-2, -1), norm="ortho")  # (B, C, H, W//2+1) complex
            weight = torch.view_as_complex(weight.contiguous()).permute(2, 0, 1)  # (C, H, W//2+1)
            y = torch.fft.irfft2(spec * weight, s=(h, w), dim=(-2, -1), norm="ortho")  # (B, C, H, W)
        return y.to(x.dtype)
