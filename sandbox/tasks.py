"""Restoration tasks: what degrades a clean image, on which benchmarks, measured how.

A :class:`Task` couples a degradation with the evaluation protocol of the SwinIR/KAIR test script
(``main_test_swinir.py``), so that numbers are comparable with the published tables:

| task | channels | degradation | benchmarks | metrics |
|---|---|---|---|---|
| ``denoise`` | 1 (gray) | AWGN, ``sigma=25`` | Set12, BSD68 | psnr, ssim |
| ``denoise_color`` | 3 (RGB) | AWGN, ``sigma=25`` | CBSD68, Kodak24, McMaster | psnr, ssim |
| ``jpeg`` | 1 (gray, Y of color sources) | JPEG, ``quality=10`` | Classic5, LIVE1 | psnr, ssim, psnrb |
| ``jpeg_color`` | 3 (RGB) | JPEG, ``quality=10`` | LIVE1 | psnr, ssim, psnrb |

    >>> from sandbox import build_task
    >>> task = build_task("denoise_color:sigma=50")
    >>> noisy = task.degrade_batch(clean)                  # training: (B, 3, H, W) in [0, 1] -> (B, 3, H, W)
    >>> gt, lq = task.prepare_eval(task.read(path))         # evaluation: one benchmark image, read as SwinIR does
    >>> blind = build_task("denoise", sigma_range=(0, 55))  # blind training; evaluation still at sigma=25

Conventions: tensors and arrays handed to networks are RGB (color) or single-channel (gray) in [0, 1]; images read by
cv2 are BGR and are flipped by :meth:`Task.prepare_eval`. Importing this module does not import cv2 (only degrading
and reading do).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .errors import OptionError, SandboxError, is_int
from .registry import build_task, register_task

__all__ = ["Task", "DenoiseTask", "JPEGTask", "check_network_channels", "rgb_to_y_uint8", "bgr_to_y_uint8"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _fmt(value: float) -> str:
    """25.0 -> '25', 12.5 -> '12.5'."""
    return f"{float(value):g}"


def _check_sigma(sigma: Any) -> float:
    if not (_is_number(sigma) and np.isfinite(sigma) and sigma >= 0):
        raise OptionError(f"sigma={sigma!r} is not valid; expected a number >= 0 (noise std on the 0-255 scale)")
    return float(sigma)


def _check_sigma_range(sigma_range: Any) -> tuple[float, float] | None:
    if sigma_range is None:
        return None
    ok = (
        isinstance(sigma_range, (tuple, list))
        and len(sigma_range) == 2
        and all(_is_number(s) and np.isfinite(s) for s in sigma_range)
        and 0 <= sigma_range[0] <= sigma_range[1]
    )
    if not ok:
        raise OptionError(
            f"sigma_range={sigma_range!r} is not valid; expected (low, high) with 0 <= low <= high "
            "(noise std on the 0-255 scale) or None"
        )
    return float(sigma_range[0]), float(sigma_range[1])


def _check_quality(quality: Any) -> int:
    if not ((is_int(quality) or isinstance(quality, np.integer)) and 1 <= quality <= 100):
        raise OptionError(
            f"quality={quality!r} is not valid; expected an integer in 1..100 (JPEG quality; lower compresses more)"
        )
    return int(quality)


def _check_quality_range(quality_range: Any) -> tuple[int, int] | None:
    if quality_range is None:
        return None
    ok = (
        isinstance(quality_range, (tuple, list))
        and len(quality_range) == 2
        and all((is_int(q) or isinstance(q, np.integer)) for q in quality_range)
        and 1 <= quality_range[0] <= quality_range[1] <= 100
    )
    if not ok:
        raise OptionError(
            f"quality_range={quality_range!r} is not valid; expected (low, high) integers with 1 <= low <= high <= 100"
        )
    return int(quality_range[0]), int(quality_range[1])


# ---------------------------------------------------------------------------------------------------- color space
_Y_WEIGHTS_BGR = (24.966, 128.553, 65.481)  # BT.601 "MATLAB" luma on [0, 1] inputs, output on the 16..235 scale


def bgr_to_y_uint8(img: np.ndarray) -> np.ndarray:
    """Y of a BGR uint8 image, BT.601 as MATLAB's ``rgb2ycbcr``: round(16 + 65.481 R + 128.553 G + 24.966 B).

    R, G, B are in [0, 1]. (H, W, 3) uint8 BGR -> (H, W) uint8. Computed like SwinIR's ``bgr2ycbcr(y_only=True)``
    (float32 division by 255, then a float64 dot product, rounded half to even) so that the result is bit-identical.
    """
    x = img.astype(np.float32) / 255.0  # (H, W, 3) float32, as SwinIR/basicsr `_convert_input_type_range`
    y = np.dot(x, _Y_WEIGHTS_BGR) + 16.0  # (H, W) float64
    return y.round().astype(np.uint8)


def rgb_to_y_uint8(img: np.ndarray) -> np.ndarray:
    """:func:`bgr_to_y_uint8` for an RGB (H, W, 3) uint8 image."""
    return bgr_to_y_uint8(img[..., ::-1])


# ----------------------------------------------------------------------------------------------------------- tasks
class Task:
    """A restoration task: a degradation for training, the SwinIR/KAIR protocol for evaluation.

    Attributes:
        name: registry key (``"denoise"``, ``"jpeg_color"``, ...).
        channels: 1 (gray) or 3 (RGB).
        color: ``channels == 3``.
        benchmarks: benchmark folder names evaluated by default (under ``<data root>/benchmarks``).
        metrics: metric names (keys of ``sandbox.metrics.METRICS``) reported by default.
        level: the evaluation degradation level as a short string ("sigma=25", "q=10").
        crop_border: pixels cropped at each edge before measuring (0 for denoising and JPEG, as SwinIR).
        counterpart: the same task with the other channel count ("denoise" <-> "denoise_color").
    """

    name: str = "task"
    channels: int = 1
    benchmarks: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ("psnr", "ssim")
    crop_border: int = 0
    counterpart: str | None = None

    @property
    def color(self) -> bool:
        return self.channels == 3

    @property
    def level(self) -> str:
        raise NotImplementedError

    @property
    def spec(self) -> dict[str, Any]:
        """``{"name": ..., **options}``: enough to rebuild the task with ``build_task`` (checkpoints store it)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.spec.items() if k != "name")
        return f"{type(self).__name__}({self.name!r}, {opts})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and self.spec == other.spec

    def __hash__(self) -> int:
        return hash(repr(self))

    # --------------------------------------------------------------------------------------------------- training
    def degrade_batch(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Training degradation of a clean batch, drawn fresh on every call.

        Args:
            clean: (B, C, H, W) float in [0, 1]; C = ``channels`` (RGB order for color).
            generator: random source; the same seeded generator state gives the same output. None uses torch's
                global generator.

        Returns:
            (B, C, H, W) degraded batch, same dtype and device as ``clean``.
        """
        raise NotImplementedError

    def _check_batch(self, clean: Tensor) -> None:
        if not isinstance(clean, Tensor) or clean.ndim != 4 or clean.shape[1] != self.channels:
            got = tuple(clean.shape) if isinstance(clean, Tensor) else type(clean).__name__
            raise SandboxError(f"task {self.name!r} degrades (B, {self.channels}, H, W) batches in [0, 1]; got {got}")

    # ------------------------------------------------------------------------------------------------- evaluation
    @property
    def imread_flag(self) -> int:
        """The ``cv2.imread`` flag the SwinIR test script reads this task's benchmark images with."""
        import cv2

        return cv2.IMREAD_COLOR if self.color else cv2.IMREAD_GRAYSCALE

    def read(self, path: Any) -> np.ndarray:
        """Read a benchmark image exactly as the SwinIR test script does, ready for :meth:`prepare_eval`."""
        from .data import imread

        return imread(path, self.imread_flag)  # one-line errors for missing, unreadable or corrupt files

    def prepare_eval(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ground truth, degraded input) for one benchmark image, exactly as the SwinIR/KAIR test protocol.

        Args:
            img: the image as read by cv2 (:meth:`read`): (H, W) uint8 for gray tasks, (H, W, 3) uint8 **BGR** for
                color tasks (``jpeg`` also takes a BGR image and uses its BT.601 Y).

        Returns:
            ``gt``: (H, W) or (H, W, 3) RGB uint8; ``degraded``: the same shape, float32 in about [0, 1] (noise is not
            clipped), RGB for color. Deterministic: the same image always gives the same pair.
        """
        raise NotImplementedError

    def _check_image(self, img: Any, allow_color_for_gray: bool = False) -> np.ndarray:
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
            what = f"a {img.dtype} array" if isinstance(img, np.ndarray) else type(img).__name__
            raise SandboxError(f"task {self.name!r} evaluates uint8 images as read by cv2.imread; got {what}")
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[..., 0]
        if self.color:
            ok, expected, flag = img.ndim == 3 and img.shape[2] == 3, "(H, W, 3) BGR", "IMREAD_COLOR"
        elif allow_color_for_gray:
            ok = img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)
            expected, flag = "(H, W) gray or (H, W, 3) BGR", "IMREAD_UNCHANGED"
        else:
            ok, expected, flag = img.ndim == 2, "(H, W) gray", "IMREAD_GRAYSCALE"
        if not ok:
            raise SandboxError(
                f"task {self.name!r} evaluates {expected} images; got shape {tuple(img.shape)} "
                f"(read with cv2.imread(path, cv2.{flag}) or Task.read)"
            )
        return img

    def describe(self) -> str:
        raise NotImplementedError


class DenoiseTask(Task):
    """Additive white Gaussian noise of std ``sigma`` on the 0-255 scale, not clipped (SwinIR/KAIR).

    Args:
        name: registry key.
        color: RGB (True) or gray (False).
        sigma: noise std on the 0-255 scale used for evaluation (and for training unless ``sigma_range``).
        sigma_range: blind training: each image of a batch draws its std uniformly from [low, high].
    """

    metrics = ("psnr", "ssim")

    def __init__(self, name: str, color: bool, sigma: float = 25, sigma_range: Sequence[float] | None = None) -> None:
        self.name = name
        self.channels = 3 if color else 1
        self.benchmarks = ("CBSD68", "Kodak24", "McMaster") if color else ("Set12", "BSD68")
        self.counterpart = "denoise" if color else "denoise_color"
        self.sigma = _check_sigma(sigma)
        self.sigma_range = _check_sigma_range(sigma_range)

    @property
    def level(self) -> str:
        return f"sigma={_fmt(self.sigma)}"

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma, "sigma_range": self.sigma_range}

    def degrade_batch(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        self._check_batch(clean)
        b = clean.shape[0]
        device = generator.device if generator is not None else clean.device
        if self.sigma_range is None:
            sigma = torch.full((b, 1, 1, 1), self.sigma, device=device)  # (B, 1, 1, 1)
        else:
            low, high = self.sigma_range
            sigma = low + (high - low) * torch.rand((b, 1, 1, 1), generator=generator, device=device)
        noise = torch.randn(clean.shape, generator=generator, device=device) * (sigma / 255.0)  # (B, C, H, W)
        return clean + noise.to(device=clean.device, dtype=clean.dtype)  # no clipping, as KAIR

    def prepare_eval(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        img = self._check_image(img)  # (H, W) gray or (H, W, 3) BGR uint8
        # main_test_swinir.py: img_gt = float32(img) / 255; np.random.seed(0); img_lq = img_gt + normal(0, s/255)
        # The legacy global generator is a RandomState: RandomState(0) draws the identical stream, without touching
        # numpy's global state.
        gt = img.astype(np.float32) / 255.0
        noise = np.random.RandomState(0).normal(0, self.sigma / 255.0, gt.shape)  # float64, drawn on BGR / (H, W)
        degraded = (gt + noise).astype(np.float32)  # no clipping
        if self.color:
            img, degraded = img[..., ::-1], degraded[..., ::-1]  # BGR -> RGB after drawing the noise
        return np.ascontiguousarray(img), np.ascontiguousarray(degraded)

    def describe(self) -> str:
        kind = "color (RGB)" if self.color else "gray"
        train = (
            f"; trained blind on sigma in [{_fmt(self.sigma_range[0])}, {_fmt(self.sigma_range[1])}]"
            if self.sigma_range
            else ""
        )
        return (
            f"{self.name}: {kind} AWGN denoising, {self.level} on the 0-255 scale (unclipped){train}; "
            f"benchmarks {', '.join(self.benchmarks)}; metrics {', '.join(self.metrics)}"
        )


class JPEGTask(Task):
    """JPEG compression artifact reduction with OpenCV's encoder (libjpeg defaults, 4:2:0 chroma for color).

    Args:
        name: registry key.
        color: RGB (True, encoded as BGR) or gray (False; color sources are turned into BT.601 Y first).
        quality: JPEG quality 1..100 used for evaluation (and for training unless ``quality_range``).
        quality_range: blind training: each image of a batch draws its quality uniformly from low..high (inclusive).
    """

    metrics = ("psnr", "ssim", "psnrb")

    def __init__(self, name: str, color: bool, quality: int = 10, quality_range: Sequence[int] | None = None) -> None:
        self.name = name
        self.channels = 3 if color else 1
        self.benchmarks = ("LIVE1",) if color else ("Classic5", "LIVE1")
        self.counterpart = "jpeg" if color else "jpeg_color"
        self.quality = _check_quality(quality)
        self.quality_range = _check_quality_range(quality_range)

    @property
    def level(self) -> str:
        return f"q={self.quality}"

    @property
    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "quality": self.quality, "quality_range": self.quality_range}

    @property
    def imread_flag(self) -> int:
        import cv2

        # gray JPEG reads IMREAD_UNCHANGED so that color sources (LIVE1) become BT.601 Y, not OpenCV's gray
        return cv2.IMREAD_COLOR if self.color else cv2.IMREAD_UNCHANGED

    def _codec(self, img: np.ndarray, quality: int) -> np.ndarray:
        """Encode and decode one uint8 image ((H, W) gray or (H, W, 3) BGR) at ``quality``."""
        import cv2

        ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
        if not ok:
            raise SandboxError(f"OpenCV failed to JPEG-encode an image of shape {tuple(img.shape)}")
        return cv2.imdecode(buf, cv2.IMREAD_COLOR if self.color else cv2.IMREAD_GRAYSCALE)

    def degrade_batch(self, clean: Tensor, generator: torch.Generator | None = None) -> Tensor:
        self._check_batch(clean)
        b = clean.shape[0]
        if self.quality_range is None:
            qualities = [self.quality] * b
        else:
            low, high = self.quality_range
            device = generator.device if generator is not None else "cpu"
            qualities = torch.randint(low, high + 1, (b,), generator=generator, device=device).tolist()
        # (B, C, H, W) [0, 1] -> (B, H, W, C) uint8, rounded
        imgs = (clean.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = np.empty_like(imgs)
        for i, q in enumerate(qualities):
            if self.color:
                out[i] = self._codec(np.ascontiguousarray(imgs[i, ..., ::-1]), q)[..., ::-1]  # RGB -> BGR -> RGB
            else:
                out[i, ..., 0] = self._codec(np.ascontiguousarray(imgs[i, ..., 0]), q)
        degraded = torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0  # (B, C, H, W) in [0, 1]
        return degraded.to(device=clean.device, dtype=clean.dtype)

    def prepare_eval(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        img = self._check_image(img, allow_color_for_gray=True)  # (H, W) gray or (H, W, 3) BGR uint8
        if not self.color and img.ndim == 3:
            img = bgr_to_y_uint8(img)  # LIVE1 for gray JPEG: BT.601 Y, rounded to uint8, before encoding
        degraded = self._codec(np.ascontiguousarray(img), self.quality).astype(np.float32) / 255.0
        if self.color:
            img, degraded = img[..., ::-1], degraded[..., ::-1]  # BGR -> RGB
        return np.ascontiguousarray(img), np.ascontiguousarray(degraded)

    def describe(self) -> str:
        kind = "color (RGB, encoded as BGR)" if self.color else "gray (BT.601 Y of color sources)"
        train = (
            f"; trained blind on q in {self.quality_range[0]}..{self.quality_range[1]}" if self.quality_range else ""
        )
        return (
            f"{self.name}: {kind} JPEG artifact reduction, {self.level} (OpenCV encoder){train}; "
            f"benchmarks {', '.join(self.benchmarks)}; metrics {', '.join(self.metrics)}"
        )


# ------------------------------------------------------------------------------------------------------- registry
@register_task("denoise", description="gray AWGN denoising (Set12, BSD68)", channels=1)
def denoise(sigma: float = 25, sigma_range: tuple[float, float] | None = None) -> DenoiseTask:
    """Gray Gaussian denoising at noise std ``sigma`` (0-255 scale); blind training with ``sigma_range``."""
    return DenoiseTask("denoise", color=False, sigma=sigma, sigma_range=sigma_range)


@register_task("denoise_color", description="color AWGN denoising (CBSD68, Kodak24, McMaster)", channels=3)
def denoise_color(sigma: float = 25, sigma_range: tuple[float, float] | None = None) -> DenoiseTask:
    """Color (RGB) Gaussian denoising at noise std ``sigma`` (0-255 scale); blind training with ``sigma_range``."""
    return DenoiseTask("denoise_color", color=True, sigma=sigma, sigma_range=sigma_range)


@register_task("jpeg", description="gray JPEG artifact reduction (Classic5, LIVE1 as Y)", channels=1)
def jpeg(quality: int = 10, quality_range: tuple[int, int] | None = None) -> JPEGTask:
    """Gray JPEG artifact reduction at ``quality``; blind training with ``quality_range``."""
    return JPEGTask("jpeg", color=False, quality=quality, quality_range=quality_range)


@register_task("jpeg_color", description="color JPEG artifact reduction (LIVE1)", channels=3)
def jpeg_color(quality: int = 10, quality_range: tuple[int, int] | None = None) -> JPEGTask:
    """Color (RGB) JPEG artifact reduction at ``quality``; blind training with ``quality_range``."""
    return JPEGTask("jpeg_color", color=True, quality=quality, quality_range=quality_range)


def check_network_channels(task: Task | str | dict, in_chans: int) -> None:
    """Raise a one-line :class:`SandboxError` unless a network with ``in_chans`` input channels fits ``task``.

    Example: ``network takes 1 channel(s) but task 'denoise_color' has 3; use a color network (in_chans=3) or the
    gray task 'denoise'``.
    """
    task = task if isinstance(task, Task) else build_task(task)
    if in_chans == task.channels:
        return
    fix = f"use a {'color' if task.color else 'gray'} network (in_chans={task.channels})"
    if task.counterpart and in_chans in (1, 3):
        fix += f" or the {'color' if in_chans == 3 else 'gray'} task {task.counterpart!r}"
    raise SandboxError(f"network takes {in_chans} channel(s) but task {task.name!r} has {task.channels}; {fix}")
