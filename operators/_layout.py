"""Layout changes that PyTorch's generic copy does slowly on CPU."""

from __future__ import annotations

from torch import Tensor

__all__ = ["swap_last2"]

BLOCKED_MIN_ELEMENTS = 1 << 17  # per batch item; smaller transposes stay in cache and keep the generic copy


def swap_last2(x: Tensor) -> Tensor:
    """(B, M, N) -> (B, N, M), contiguous: ``x.transpose(1, 2).contiguous()``, fast on CPU.

    PyTorch copies a transposed 2-D matrix with a cache-blocked kernel, but a transposed 3-D tensor goes through the
    generic strided loop, which reads the source with a stride of N elements for every output element and sweeps it
    once per output row; this copies each batch item as one 2-D transpose. Items below
    :data:`BLOCKED_MIN_ELEMENTS` stay in cache and keep the generic copy, which was as fast or faster there (the
    measurements are in docs/performance.md). Not differentiable by itself: call it inside an autograd Function (its
    adjoint is itself).
    """
    b, m, n = x.shape
    if x.device.type != "cpu" or m * n < BLOCKED_MIN_ELEMENTS:
        return x.transpose(1, 2).contiguous()
    out = x.new_empty(b, n, m)
    for i in range(b):
        out[i].copy_(x[i].t())  # a 2-D transposed source: the blocked transpose kernel
    return out
