"""The patch data pipeline: training images in memory, the batch of every iteration as a pure function of
``(seed, step)`` (:class:`PatchBatches`), and the centre-cropped validation items."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RunConfig
from .errors import SandboxError
from .train_config import default_train_sets

__all__ = ["step_seed", "train_images", "PatchBatches", "batches", "crop_centre", "val_items"]


def step_seed(seed: int, step: int) -> int:
    """The seed of iteration ``step``'s generator: a function of (seed, step) only."""
    return (int(seed) * 1_000_003 + int(step)) % (1 << 63)


def _read_train_image(path: Path, color: bool) -> np.ndarray:
    """(H, W, C) uint8: RGB for color tasks, gray (BT.601 Y of color sources) for gray ones."""
    import cv2

    from .data import imread
    from .tasks import bgr_to_y_uint8

    if color:
        return np.ascontiguousarray(imread(path, cv2.IMREAD_COLOR)[..., ::-1])
    img = imread(path, cv2.IMREAD_UNCHANGED)
    if img.ndim == 2 and img.dtype == np.uint8:
        return img[..., None]
    return bgr_to_y_uint8(imread(path, cv2.IMREAD_COLOR))[..., None]


def train_images(task: Any, config: RunConfig, root: Path | None) -> tuple[list[np.ndarray], str]:
    """The training images, (H, W, C) uint8 each, in memory, and a one-line description."""
    from .data import ALL_SETS, embedded_split, list_images
    from .tasks import rgb_to_y_uint8

    images: list[tuple[str, np.ndarray]] = []
    if root is None:
        for name, img in embedded_split()[0]:
            if task.color:
                if img.ndim == 2:
                    continue  # gray-only source: not replicated into color training data
                images.append((name, img))
            else:
                images.append((name, (rgb_to_y_uint8(img) if img.ndim == 3 else img)[..., None]))
        where = "embedded train split"
    else:
        sets = list(config.train_sets or default_train_sets(task))
        for s in sets:
            info = ALL_SETS.get(s)
            if task.color and info is not None and not info.color:
                raise SandboxError(
                    f"train set {s} is gray; task {task.name!r} trains on color images (e.g. train_sets=CBSD432)"
                )
            images += [(p.name, _read_train_image(p, task.color)) for p in list_images(s, root)]
        where = ", ".join(sets)
    p = config.patch_size
    kept = [(n, im) for n, im in images if min(im.shape[:2]) >= p]
    if not kept:
        sides = min((min(im.shape[:2]) for _, im in images), default=0)
        raise SandboxError(
            f"patch_size={p} is larger than every training image ({where}: smallest side {sides}); "
            f"use a smaller --patch-size"
        )
    skipped = len(images) - len(kept)
    note = f" ({skipped} smaller than the patch skipped)" if skipped else ""
    return [im for _, im in kept], f"{where}: {len(kept)} images{note}"


class PatchBatches(torch.utils.data.Dataset):
    """Item ``step`` is iteration ``step``'s batch ``(clean, degraded)``, each (B, C, P, P) float in [0, 1] (degraded
    not clipped). Patches are drawn uniformly (image, position, one of the 8 flips/rotations), then degraded with
    ``task.degrade_batch``, all from one generator seeded by :func:`step_seed` ``(seed, step)``: the batch of a step
    never depends on what was drawn before it, on resuming, or on the DataLoader's worker count."""

    def __init__(self, images: list[np.ndarray], task: Any, patch_size: int, batch_size: int, seed: int) -> None:
        self.images, self.task, self.patch, self.batch, self.seed = images, task, patch_size, batch_size, seed

    def __len__(self) -> int:  # steps are 1-based; any step is valid
        return 1 << 62

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(step_seed(self.seed, step))
        b, p = self.batch, self.patch
        index = torch.randint(len(self.images), (b,), generator=g).tolist()
        where = torch.rand((b, 2), generator=g, dtype=torch.float64).tolist()
        modes = torch.randint(8, (b,), generator=g).tolist()
        patches = []
        for i, (u, v), mode in zip(index, where, modes):
            img = self.images[i]  # (H, W, C) uint8
            h, w = img.shape[:2]
            y, x = min(int(u * (h - p + 1)), h - p), min(int(v * (w - p + 1)), w - p)
            patch = np.rot90(img[y : y + p, x : x + p], mode % 4, axes=(0, 1))
            patches.append(patch[:, ::-1] if mode >= 4 else patch)
        arr = np.ascontiguousarray(np.stack(patches))  # (B, P, P, C) uint8
        clean = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0).contiguous()  # (B, C, P, P)
        degraded = self.task.degrade_batch(clean, g)
        return clean, degraded


def _worker_init(_: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle


def batches(dataset: PatchBatches, start: int, stop: int, workers: int):
    """Batches of steps start..stop (inclusive), from a DataLoader when ``workers > 0``."""
    if workers == 0:
        return (dataset[s] for s in range(start, stop + 1))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        sampler=range(start, stop + 1),
        num_workers=workers,
        worker_init_fn=_worker_init,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(0),  # its base seed must not come from (and advance) the global RNG
    )
    return iter(loader)


def crop_centre(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    y, x = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[y : y + ch, x : x + cw])


def val_items(task: Any, root: Path | None, eval_sets: list[str] | None, count: int, crop: int):
    """(name, gt uint8, degraded float32) of the first ``count`` images of the first eval set, centre-cropped."""
    from .evaluate import _images

    items = _images(task, eval_sets[:1] if eval_sets else None, root)[:count]
    out = []
    for _, name, load in items:
        img = load()
        gt, degraded = task.prepare_eval(crop_centre(img, crop) if crop else img)
        out.append((name, gt, degraded))
    return out
