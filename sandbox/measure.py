"""Measurements of a run: validation scores, the crops image, inference speed, and the results.md text."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import SandboxError
from .pipeline import crop_centre
from .utils import atomic_path, human

__all__ = ["MACS_SIZE", "validate", "crops_png", "infer_ms_per_mpx", "results_markdown"]

MACS_SIZE = 256  # MACs and inference time are measured on a 1 x C x 256 x 256 input


@torch.no_grad()
def _restore(net: nn.Module, degraded: np.ndarray, device: torch.device) -> np.ndarray:
    from .evaluate import network_restorer

    return network_restorer(net, device)(degraded)


def validate(net: nn.Module, items: list, device: torch.device) -> dict[str, float]:
    from .evaluate import to_uint8
    from .metrics import psnr, ssim

    was_training = net.training
    try:
        scores = []
        for _, gt, degraded in items:
            out = to_uint8(_restore(net, degraded, device))
            scores.append((psnr(out, gt), ssim(out, gt)))
    finally:
        net.train(was_training)
    return {"psnr": float(np.mean([s[0] for s in scores])), "ssim": float(np.mean([s[1] for s in scores]))}


def crops_png(path: Path, net: nn.Module, items: list, device: torch.device, size: int = 128) -> None:
    """Rows of [clean | degraded | restored], the same centre crop of each of the first 3 validation images."""
    import cv2

    from .evaluate import to_uint8

    rows = []
    for _, gt, degraded in items[:3]:
        out = to_uint8(_restore(net, degraded, device))
        tiles = [crop_centre(a, size) for a in (gt, to_uint8(degraded), out)]
        gap = np.full((tiles[0].shape[0], 4, *tiles[0].shape[2:]), 255, np.uint8)
        rows.append(np.concatenate([tiles[0], gap, tiles[1], gap, tiles[2]], axis=1))
    width = max(r.shape[1] for r in rows)
    padded = []
    for r in rows:
        pad = np.full((r.shape[0], width - r.shape[1], *r.shape[2:]), 255, np.uint8)
        padded += [np.concatenate([r, pad], axis=1), np.full((4, width, *r.shape[2:]), 255, np.uint8)]
    grid = np.concatenate(padded[:-1], axis=0)
    grid = grid if grid.ndim == 2 else np.ascontiguousarray(grid[..., ::-1])  # RGB -> BGR for cv2
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), grid):
            raise SandboxError(f"could not write {path}")


@torch.no_grad()
def infer_ms_per_mpx(net: nn.Module, channels: int, device: torch.device, repeats: int = 3) -> float:
    x = torch.rand((1, channels, MACS_SIZE, MACS_SIZE), generator=torch.Generator().manual_seed(0)).to(device)
    net.eval()
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        net(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:  # the first pass warms caches up
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0 / (MACS_SIZE * MACS_SIZE / 1e6)


def results_markdown(result: Any, table: str, task: str, note: str = "") -> str:
    """The results.md text: the per-set table, then the network's size and speed."""
    weights = "EMA" if result.config.ema > 0 else "final"
    lines = [
        f"# {result.run_dir.name}",
        "",
        f"{task}; {weights} weights after {result.step} iterations (stopped: {result.stopped}).",
        "",
        table,
        "",
        "| params | MACs / Mpx | train it/s | inference ms / Mpx | best val PSNR |",
        "|---:|---:|---:|---:|---:|",
        f"| {human(result.params)} | {human(result.macs_per_mpx)} | {result.train_iters_per_sec:.2f} | "
        f"{result.infer_ms_per_mpx:.0f} | {result.best_psnr:.2f} |",
    ]
    if note:
        lines += ["", note]
    return "\n".join(lines) + "\n"
