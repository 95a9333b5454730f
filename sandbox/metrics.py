"""Image quality metrics, computed as the SwinIR/KAIR test protocol computes them.

All metrics take two images of the same shape, ``img`` (the one judged: a network output or a degraded input) and
``ref`` (the ground truth), as **uint8-valued** numpy arrays (dtype uint8, or any dtype holding whole numbers in
0..255): (H, W) gray, (H, W, 1), or (H, W, 3) **RGB**. The protocol rounds network outputs to uint8 before measuring
(``(out.clip(0, 1) * 255).round().astype(np.uint8)``); float images in [0, 1] are refused rather than misread.

| metric | computed by | notes |
|---|---|---|
| ``psnr`` | basicsr ``calculate_psnr`` | 10 log10(255^2 / MSE), MSE over all pixels and channels, float64 |
| ``ssim`` | basicsr ``calculate_ssim`` | Wang et al.: 11x11 Gaussian (sigma 1.5), 5-px valid crop, per channel, mean |
| ``psnrb`` | :func:`psnrb` (here) | PSNR-B (Yim & Bovik 2011) exactly as SwinIR/KAIR ``calculate_psnrb`` |
| ``lpips`` | the ``lpips`` package | needs torchvision's ImageNet backbone weights in the torch hub cache |

``y_channel=True`` measures the BT.601 luma (basicsr's ``to_y_channel``: 16..235, float, unrounded) of color images;
basicsr converts BGR, so RGB inputs are flipped before the call. For gray images it changes nothing. SwinIR's tables
report RGB for color denoising and color JPEG, and the single channel for gray tasks (``y_channel=False``, border 0).

Importing this module imports neither basicsr nor lpips (the functions do, on first use).
"""

from __future__ import annotations

import difflib
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from .errors import OptionError, SandboxError, UnknownNameError, check_choice, is_int

__all__ = [
    "psnr",
    "ssim",
    "psnrb",
    "blocking_effect_factor",
    "lpips_distance",
    "LPIPS_BACKBONES",
    "METRICS",
    "compute_metrics",
]


# ------------------------------------------------------------------------------------------------------ validation
def _check_pair(what: str, img: Any, ref: Any, crop_border: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate two uint8-valued images; return them as (H, W, C) arrays (C = 1 or 3), uncropped."""
    for label, x in (("img", img), ("ref", ref)):
        if not isinstance(x, np.ndarray):
            raise SandboxError(f"{what}: {label} must be a numpy array (H, W) or (H, W, 3); got {type(x).__name__}")
    if img.shape != ref.shape:
        raise SandboxError(f"{what}: image shapes differ: img {tuple(img.shape)} vs ref {tuple(ref.shape)}")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        raise SandboxError(f"{what}: images must be (H, W), (H, W, 1) or (H, W, 3) RGB; got {tuple(img.shape)}")
    for label, x in (("img", img), ("ref", ref)):
        if x.dtype != np.uint8 and not _uint8_valued(x):
            lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
            raise SandboxError(
                f"{what}: {label} ({x.dtype}, values {lo:g}..{hi:g}) is not uint8-valued; metrics take 0..255 images "
                "rounded as the protocol does: (x.clip(0, 1) * 255).round().astype(np.uint8)"
            )
    if not (is_int(crop_border) and crop_border >= 0 and 2 * crop_border < min(img.shape[:2])):
        raise OptionError(
            f"crop_border={crop_border!r} is not valid; expected an integer >= 0 that leaves pixels of a "
            f"{img.shape[0]}x{img.shape[1]} image"
        )
    if img.ndim == 2:
        img, ref = img[..., None], ref[..., None]  # (H, W) -> (H, W, 1): basicsr expects HWC
    return img, ref


def _uint8_valued(x: np.ndarray) -> bool:
    """Whole numbers in 0..255 (an integer or float array holding uint8 values)."""
    if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        return False
    if x.size == 0:
        return True
    if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
        return False
    return bool(x.min() >= 0 and x.max() <= 255 and np.all(np.floor(x) == x))


def _to_basicsr(img: np.ndarray, y_channel: bool) -> np.ndarray:
    """(H, W, C) RGB -> what basicsr expects: BGR when it will convert to Y (its ``bgr2ycbcr``), else as is."""
    if y_channel and img.shape[2] == 3:
        return np.ascontiguousarray(img[..., ::-1])
    return img


def _basicsr_metrics():
    from .compat import install_torchvision_shim

    install_torchvision_shim()  # basicsr 1.4.2 imports a module torchvision >= 0.17 removed
    from basicsr.metrics import psnr_ssim

    return psnr_ssim


# ----------------------------------------------------------------------------------------------------- PSNR, SSIM
def psnr(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR in dB of ``img`` against ``ref`` (uint8-valued, (H, W) or (H, W, 3) RGB): 10 log10(255^2 / MSE).

    The MSE is pooled over all pixels and channels (basicsr ``calculate_psnr``); ``inf`` for identical images.
    ``crop_border`` pixels are dropped at each edge; ``y_channel`` measures the BT.601 Y of color images.
    """
    img, ref = _check_pair("psnr", img, ref, crop_border)
    fn = _basicsr_metrics().calculate_psnr
    out = fn(_to_basicsr(img, y_channel), _to_basicsr(ref, y_channel), crop_border, "HWC", test_y_channel=y_channel)
    return float(out)


def ssim(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """SSIM of ``img`` against ``ref`` (uint8-valued, (H, W) or (H, W, 3) RGB), basicsr ``calculate_ssim``.

    Wang et al. 2004 on the 0..255 scale: 11x11 Gaussian window (sigma 1.5, ``cv2.filter2D``), statistics kept only
    where the window fits (5 px are dropped at each edge), C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2; computed per
    channel and averaged. Needs at least 11x11 pixels after ``crop_border``.
    """
    img, ref = _check_pair("ssim", img, ref, crop_border)
    h, w = img.shape[0] - 2 * crop_border, img.shape[1] - 2 * crop_border
    if min(h, w) < 11:
        raise SandboxError(f"ssim needs images of at least 11x11 pixels after crop_border; got {h}x{w}")
    fn = _basicsr_metrics().calculate_ssim
    out = fn(_to_basicsr(img, y_channel), _to_basicsr(ref, y_channel), crop_border, "HWC", test_y_channel=y_channel)
    return float(out)


# ---------------------------------------------------------------------------------------------------------- PSNR-B
def blocking_effect_factor(channel: np.ndarray, block_size: int = 8) -> float:
    """Blocking effect factor (BEF) of one channel, as SwinIR/KAIR ``_blocking_effect_factor``.

    For a channel x (H, W) (floats, [0, 1] in PSNR-B), with B = ``block_size``:

    - boundary pairs: horizontally neighbouring pixels (x[:, j], x[:, j+1]) for j = B-1, 2B-1, ... < W-1, and
      vertically (x[i, :], x[i+1, :]) for i = B-1, 2B-1, ... < H-1; all other neighbouring pairs are non-boundary;
    - D_B = (sum of squared differences over boundary pairs) / N_B, D_Bc = (same over non-boundary pairs) / N_Bc, with
      N_B = H (W // B - 1) + W (H // B - 1) and N_Bc = H (W - 1) + W (H - 1) - N_B;
    - eta = log2(B) / log2(min(H, W)); BEF = eta (D_B - D_Bc) if D_B > D_Bc else 0.

    The normalisers are those of Yim & Bovik, who assume H and W are multiples of B. SwinIR/KAIR keep them for other
    sizes too while their sums also include the boundary of the last, partial block (one more boundary column or row
    when W or H is not a multiple of B), which enlarges D_B slightly. We replicate this exactly so that numbers
    match the published PSNR-B tables (LIVE1 has sizes like 610x488).
    """
    x = np.asarray(channel, dtype=np.float64)
    if x.ndim != 2 or min(x.shape) < 2 * block_size:
        raise SandboxError(
            f"psnrb needs (H, W) channels of at least {2 * block_size}x{2 * block_size} pixels (two blocks of "
            f"{block_size} per side); got {tuple(x.shape)}"
        )
    h, w = x.shape
    dh = (x[:, 1:] - x[:, :-1]) ** 2  # (H, W-1): pair (j, j+1) at column j
    dv = (x[1:, :] - x[:-1, :]) ** 2  # (H-1, W): pair (i, i+1) at row i
    bh = np.zeros(w - 1, dtype=bool)
    bh[block_size - 1 :: block_size] = True  # columns B-1, 2B-1, ... (< W-1)
    bv = np.zeros(h - 1, dtype=bool)
    bv[block_size - 1 :: block_size] = True
    boundary_sum = dh[:, bh].sum() + dv[bv, :].sum()
    nonboundary_sum = dh[:, ~bh].sum() + dv[~bv, :].sum()
    n_boundary = h * (w // block_size - 1) + w * (h // block_size - 1)
    n_nonboundary = h * (w - 1) + w * (h - 1) - n_boundary
    d_b = boundary_sum / n_boundary
    d_bc = nonboundary_sum / n_nonboundary
    if d_b <= d_bc:
        return 0.0
    eta = math.log2(block_size) / math.log2(min(h, w))
    return float(eta * (d_b - d_bc))


def psnrb(img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = False) -> float:
    """PSNR-B in dB (Yim & Bovik 2011), as SwinIR/KAIR ``calculate_psnrb``; for JPEG artifact reduction.

    Per channel c of ``img`` and ``ref`` scaled to [0, 1] (float64): PSNR-B_c = 10 log10(1 / (MSE_c + BEF(img_c)))
    where the blocking effect factor (:func:`blocking_effect_factor`, 8x8 blocks) is measured on the judged image
    only. Color images: the mean of the per-channel values in dB (as SwinIR's RGB PSNR-B, the value its color-JPEG
    table reports), or the value on the BT.601 Y channel with ``y_channel`` (SwinIR's PSNRB_Y). Gray: the single
    channel. ``inf`` when the images are identical and unblocked. Needs at least 16x16 pixels after ``crop_border``.
    """
    img, ref = _check_pair("psnrb", img, ref, crop_border)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
        ref = ref[crop_border:-crop_border, crop_border:-crop_border]
    x, r = img.astype(np.float64), ref.astype(np.float64)  # (H, W, C), 0..255
    if y_channel and img.shape[2] == 3:
        _basicsr_metrics()  # the torchvision shim, then basicsr
        from basicsr.metrics.metric_util import to_y_channel  # BGR in, float Y (16..235, unrounded) out

        x = to_y_channel(np.ascontiguousarray(img[..., ::-1])).astype(np.float64)  # (H, W, 1), float Y on 16..235
        r = to_y_channel(np.ascontiguousarray(ref[..., ::-1])).astype(np.float64)
    x, r = x / 255.0, r / 255.0
    total = 0.0
    for c in range(x.shape[2]):
        mse = float(np.mean((x[..., c] - r[..., c]) ** 2))
        denom = mse + blocking_effect_factor(x[..., c])
        total += math.inf if denom == 0 else 10.0 * math.log10(1.0 / denom)
    return total / x.shape[2]


# ----------------------------------------------------------------------------------------------------------- LPIPS
LPIPS_BACKBONES: dict[str, str] = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}
_LPIPS_CACHE: dict[tuple[str, str, str], torch.nn.Module] = {}


def _lpips_model(net: str, device: torch.device) -> torch.nn.Module:
    """The LPIPS model for ``net`` on ``device``, cached per (net, device, backbone file); never downloads."""
    check_choice("net", net, LPIPS_BACKBONES)
    fname = LPIPS_BACKBONES[net]
    folder = Path(torch.hub.get_dir()) / "checkpoints"  # where torchvision's load_state_dict_from_url looks
    path = folder / fname
    if not path.is_file():
        raise SandboxError(
            f"LPIPS(net={net!r}) needs torchvision's ImageNet weights {fname} in {folder} (normally downloaded from "
            f"https://download.pytorch.org/models/{fname}); copy the file there or set TORCH_HOME to a folder whose "
            "hub/checkpoints holds it"
        )
    key = (net, str(device), str(path.resolve()))
    if key not in _LPIPS_CACHE:
        import lpips

        try:
            with warnings.catch_warnings():  # torchvision's `pretrained=` deprecation, lpips' own notices
                warnings.simplefilter("ignore")
                model = lpips.LPIPS(net=net, pretrained=True, verbose=False)  # file present: torchvision loads it
        except Exception as e:  # a truncated file, an LFS pointer, a state_dict of another network
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SandboxError(f"LPIPS(net={net!r}) could not load {path}: {msg}") from None
        model = model.eval().to(device)
        for p in model.parameters():
            p.requires_grad_(False)
        _LPIPS_CACHE[key] = model
    return _LPIPS_CACHE[key]


def lpips_distance(
    img: np.ndarray, ref: np.ndarray, net: str = "alex", device: str | torch.device | None = None
) -> float:
    """LPIPS distance (Zhang et al. 2018, v0.1 linear layers) between uint8-valued RGB images; 0 = identical.

    Images are scaled to [-1, 1] (x / 127.5 - 1) as the ``lpips`` package expects; gray images are repeated to three
    channels. ``net`` is ``"alex"`` (the package's default for evaluation), ``"vgg"`` or ``"squeeze"``. The ImageNet
    backbone must already be in the torch hub cache (``torch.hub.get_dir()/checkpoints``, see ``LPIPS_BACKBONES``):
    a missing file raises :class:`SandboxError` naming it and nothing is downloaded. ``device``: ``None`` follows
    ``resolve_device`` (``$SANDBOX_DEVICE``, else CUDA when available, else CPU).
    """
    from .utils import resolve_device

    img, ref = _check_pair("lpips", img, ref, 0)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    model = _lpips_model(net, dev)

    def to_tensor(x: np.ndarray) -> torch.Tensor:  # (H, W, C) 0..255 -> (1, 3, H, W) in [-1, 1]
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).permute(2, 0, 1)[None]
        return (t.expand(1, 3, -1, -1) if t.shape[1] == 1 else t).to(dev) / 127.5 - 1.0

    with torch.no_grad():
        return float(model(to_tensor(img), to_tensor(ref)).item())


# ------------------------------------------------------------------------------------------------------- registry
METRICS: dict[str, Callable[..., float]] = {"psnr": psnr, "ssim": ssim, "psnrb": psnrb, "lpips": lpips_distance}


def compute_metrics(
    names: str | Iterable[str], img: np.ndarray, ref: np.ndarray, crop_border: int = 0, y_channel: bool = False
) -> dict[str, float]:
    """``{name: value}`` for each metric in ``names`` (keys of :data:`METRICS`, e.g. ``task.metrics``).

    ``crop_border`` and ``y_channel`` go to psnr, ssim and psnrb; LPIPS is measured on the RGB images, cropped by
    ``crop_border``, on the default device. An unknown name raises :class:`UnknownNameError` with close matches.
    """
    names = [names] if isinstance(names, str) else list(names)
    for name in names:
        if name not in METRICS:
            close = difflib.get_close_matches(str(name), list(METRICS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UnknownNameError(f"unknown metric {name!r}; {hint}metrics: {', '.join(METRICS)}")
    out: dict[str, float] = {}
    for name in names:
        if name == "lpips":
            _check_pair("lpips", img, ref, crop_border)
            c = crop_border
            a, b = (img[c:-c, c:-c], ref[c:-c, c:-c]) if c else (img, ref)
            out[name] = lpips_distance(a, b)
        else:
            out[name] = METRICS[name](img, ref, crop_border=crop_border, y_channel=y_channel)
    return out
