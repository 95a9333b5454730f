"""Inference helpers for any image-to-image network: blended overlapping tiles and the x8 geometric self-ensemble.

They take a callable (B, C, H, W) -> (B, C', H, W), so they belong to no network family: ``sandbox.evaluate`` and
``archs.restoration`` (its eval-mode tiling) both use them from here.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .errors import OptionError, check_int

__all__ = ["blend_window", "self_ensemble", "tiled_forward"]


def blend_window(size: int, start: int, length: int, overlap: int, device=None) -> Tensor:
    """1-D blending weights (length,) of a tile at ``start`` on an axis of ``size``.

    On an edge that faces another tile the weight is 0 over the outer ``overlap // 4`` samples (pixels that saw too
    little context), then rises smoothly (raised cosine) to 1 by ``overlap - overlap // 4``; on image borders and
    inside the tile it is 1. Neighbouring tiles overlap by at least ``overlap``, so every pixel has some tile with a
    positive weight.
    """
    wgt = torch.ones(length, device=device)
    n = min(overlap, length)
    if n <= 0:
        return wgt
    margin = n // 4
    pos = (torch.arange(n, device=device, dtype=torch.float32) + 0.5 - margin) / max(n - 2 * margin, 1)
    ramp = 0.5 - 0.5 * torch.cos(math.pi * pos.clamp(0.0, 1.0))  # (n,): 0 in the margin, smooth rise to 1
    if start > 0:
        wgt[:n] = torch.minimum(wgt[:n], ramp)
    if start + length < size:
        wgt[-n:] = torch.minimum(wgt[-n:], ramp.flip(0))
    return wgt


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


@torch.no_grad()
def tiled_forward(fn, x: Tensor, tile: int, overlap: int = 32, blend: str = "cosine") -> Tensor:
    """Run an image-to-image ``fn`` on overlapping ``tile`` x ``tile`` crops of ``x`` and blend the results.

    Tiles are placed every ``tile - overlap`` pixels (the last one flush with the border, as SwinIR's test script).
    SwinIR averages overlapping outputs uniformly, which leaves visible seams: a tile's border pixels saw less
    context, and the average switches abruptly where a tile ends. Here each tile's output is weighted by the
    separable window of :func:`blend_window` (zero on the outer quarter of every shared overlap, then a
    raised-cosine rise), and the weighted sum is normalised: the weights are continuous, so there is no step at
    any tile border, and for a network whose receptive radius is at most ``overlap // 4`` pixels the result equals
    the whole-image output exactly.

    Args:
        fn: maps (B, C, h, w) -> (B, C', h, w), e.g. a restoration network.
        x: (B, C, H, W) input.
        tile: tile side in pixels (clipped to the image).
        overlap: overlap of neighbouring tiles in pixels, < tile.
        blend: ``"cosine"`` (default) or ``"uniform"`` (SwinIR's plain average, for comparison).
    """
    check_int("tile", tile)
    if blend not in ("cosine", "uniform"):
        raise OptionError(f"blend={blend!r} is not one of 'cosine', 'uniform'")
    check_int("tile_overlap", overlap, minimum=0)
    if overlap >= tile:
        raise OptionError(f"tile_overlap={overlap} must be smaller than tile={tile}")
    b, _, h, w = x.shape
    th, tw = min(tile, h), min(tile, w)
    out = weight = None
    for y0 in _tile_starts(h, th, overlap):
        wy = blend_window(h, y0, th, overlap if blend == "cosine" else 0, x.device)  # (th,)
        for x0 in _tile_starts(w, tw, overlap):
            wx = blend_window(w, x0, tw, overlap if blend == "cosine" else 0, x.device)  # (tw,)
            patch = fn(x[..., y0 : y0 + th, x0 : x0 + tw])  # (B, C', th, tw)
            if out is None:
                out = x.new_zeros((b, patch.shape[1], h, w), dtype=patch.dtype)
                weight = x.new_zeros((1, 1, h, w), dtype=patch.dtype)
            wt = (wy[:, None] * wx[None, :]).to(patch.dtype)  # (th, tw)
            out[..., y0 : y0 + th, x0 : x0 + tw] += patch * wt
            weight[..., y0 : y0 + th, x0 : x0 + tw] += wt
    return out / weight


def self_ensemble(fn, x: Tensor) -> Tensor:
    """The x8 geometric self-ensemble (EDSR's "+" models, KAIR's ``test_mode=3``): mean of ``fn`` over the 8 dihedral
    transforms of ``x`` (4 rotations, each with and without a flip), each output transformed back. 8x the compute.

    Args:
        fn: maps (B, C, H, W) -> (B, C', H, W); it sees (B, C, W, H) for odd rotations of non-square inputs.
        x: (B, C, H, W) input.
    """
    out = None
    for flip in (False, True):
        xf = x.flip(-1) if flip else x
        for k in range(4):
            y = torch.rot90(fn(torch.rot90(xf, k, (-2, -1))), -k, (-2, -1))  # (B, C', H, W)
            y = y.flip(-1) if flip else y
            out = y if out is None else out + y
    return out / 8
