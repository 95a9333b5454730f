"""Evaluation on the standard benchmarks with the SwinIR/KAIR test protocol.

For every image of every set: read it as the protocol does (cv2; gray, BGR, or unchanged for gray JPEG of color
sources), let the task make the (ground truth, degraded) pair (noise from ``np.random.seed(0)`` per image, no
clipping; OpenCV's JPEG encoder), restore, clamp to [0, 1], round to uint8 and measure PSNR/SSIM (PSNR-B for JPEG)
with border 0, in RGB for color images. The restorer is a network (any sandbox checkpoint, official DnCNN/FFDNet
weights, any registered arch) or a classical baseline (``noisy``, ``bm3d``, ``nlm``).

    >>> from sandbox.evaluate import evaluate, network_restorer
    >>> result = evaluate(network_restorer(net), build_task("denoise:sigma=25"), sets=["Set12"], root=data_root())
    >>> print(result.table())
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import OptionError, SandboxError
from .inference import self_ensemble, tiled_forward
from .utils import atomic_path, write_text_atomic  # write_text_atomic re-exported: the sweep and reproduce.py use it

__all__ = [
    "EvalResult",
    "METHODS",
    "evaluate",
    "network_restorer",
    "classical_restorer",
    "load_network",
    "to_uint8",
    "write_text_atomic",
    "read_per_image",
    "PER_IMAGE_FILE",
]

Restorer = Callable[[np.ndarray], np.ndarray]  # degraded float32 (H, W) or (H, W, 3) RGB -> restored, same shape
METHODS = ("noisy", "bm3d", "nlm")
PER_IMAGE_FILE = "per_image.csv"  # in every run directory and evaluation folder: one row per (set, image)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """The protocol's output quantisation: clamp to [0, 1], scale by 255, round."""
    return np.clip(np.round(np.clip(img, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------- restorers
def network_restorer(
    net: nn.Module,
    device: str | torch.device = "cpu",
    tile: int | None = None,
    tile_overlap: int = 32,
    ensemble: bool = False,
) -> Restorer:
    """Wrap an image-to-image network (inputs and outputs in [0, 1]) as a numpy restorer, optionally tiled and with
    the x8 geometric self-ensemble (:func:`sandbox.inference.self_ensemble`)."""
    net = net.to(device).eval()

    @torch.no_grad()
    def restore(img: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
        x = (x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]).to(device)  # (1, C, H, W)
        forward = (lambda t: tiled_forward(net, t, tile, tile_overlap)) if tile else net
        y = self_ensemble(forward, x) if ensemble else forward(x)  # (1, C, H, W)
        y = y[0].float().cpu()
        return (y[0] if img.ndim == 2 else y.permute(1, 2, 0)).numpy()

    return restore


def classical_restorer(method: str, task: Any) -> Restorer:
    """A classical baseline for ``task``: ``noisy`` (the degraded input itself), ``bm3d`` (the bm3d package, Gaussian
    denoising only, with the task's sigma) or ``nlm`` (OpenCV non-local means on the uint8 input, h = sigma)."""
    if method not in METHODS:
        raise OptionError(f"method={method!r} is not one of {', '.join(map(repr, METHODS))}")
    if method == "noisy":
        return lambda img: img
    sigma = getattr(task, "sigma", None)
    if sigma is None:
        raise OptionError(f"method={method!r} is a Gaussian denoiser; task {task.name!r} has no sigma (use noisy)")
    if method == "bm3d":
        try:
            import bm3d
        except ImportError:
            raise SandboxError("method 'bm3d' needs the bm3d package: pip install bm3d") from None

        def run_bm3d(img: np.ndarray) -> np.ndarray:
            if img.ndim == 2:
                return np.asarray(bm3d.bm3d(img.astype(np.float64), sigma_psd=sigma / 255.0), dtype=np.float32)
            return np.asarray(bm3d.bm3d_rgb(img.astype(np.float64), sigma / 255.0), dtype=np.float32)

        return run_bm3d

    import cv2

    h = float(sigma)  # OpenCV's filter strength, on the 0-255 scale: h = sigma (its docs: h ~ noise level)

    def run_nlm(img: np.ndarray) -> np.ndarray:
        u8 = to_uint8(img)
        if u8.ndim == 2:
            out = cv2.fastNlMeansDenoising(u8, None, h, 7, 21)
        else:
            out = cv2.fastNlMeansDenoisingColored(u8[..., ::-1].copy(), None, h, h, 7, 21)[..., ::-1]
        return out.astype(np.float32) / 255.0

    return run_nlm


def load_network(
    arch: str | dict | None,
    weights: str | None,
    task: Any,
    data_root: str | Path | None = None,
    checkpoint: dict | None = None,
):
    """Build the network to evaluate.

    ``weights`` may be a sandbox checkpoint (self-describing: it names its network, ``arch`` may then be omitted), an
    official or foreign state_dict for ``arch`` (``params``/``state_dict`` keys unwrapped by ``load_checkpoint``), or
    ``"official"`` for the reference networks (``dncnn``, ``ffdnet``), which find their files under the data root.
    FFDNet takes the task's sigma as its noise-level input unless the spec sets one; a network built without a
    checkpoint gets the task's channel count unless the spec sets ``in_chans``.
    """
    from .checkpoint import torch_load
    from .networks import build_network_for
    from .registry import ARCHS, parse_spec

    ckpt = None
    if weights not in (None, "official"):
        ckpt = checkpoint if checkpoint is not None else torch_load(weights)  # a caller may have read it already
        if arch is None:
            spec = ckpt.get("arch_spec") if isinstance(ckpt, dict) else None
            if spec is None:
                raise SandboxError(
                    f"checkpoint {weights!r} does not name its network (no 'arch_spec'); pass --arch NAME too"
                )
            arch = spec
    if arch is None:
        raise SandboxError("no network given: pass --arch NAME (and --weights PATH), or --method noisy|bm3d|nlm")
    name = parse_spec(arch, "network")[0]
    official = {}
    if weights == "official":
        if "weights" not in ARCHS.entry(name).options():
            raise OptionError(f"--weights official is only for the reference networks (dncnn, ffdnet), not {name!r}")
        official = {"weights": "official"}
    # the file is already read: no second torch.load; one-line error for weights of another network
    return build_network_for(
        arch, task, overrides=official, data_root=data_root, checkpoint=ckpt, source=f"checkpoint {str(weights)!r}"
    )


# ------------------------------------------------------------------------------------------------------ evaluate
@dataclass
class EvalResult:
    """Per-image rows and per-set means of one evaluation."""

    task: str
    method: str
    metrics: tuple[str, ...]
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    note: str = ""
    degradation: str = ""  # "<task name>:<level>" ("denoise:sigma=25"): two results pair only when these agree

    def sets(self) -> list[str]:
        return list(dict.fromkeys(r["set"] for r in self.rows))

    def summary(self) -> dict[str, dict[str, float]]:
        """{set: {"images": n, metric: mean, "input_psnr": mean}} in set order."""
        out = {}
        for s in self.sets():
            rows = [r for r in self.rows if r["set"] == s]
            out[s] = {"images": len(rows)}
            for m in (*self.metrics, "input_psnr"):
                out[s][m] = float(np.mean([r[m] for r in rows]))
        return out

    def table(self) -> str:
        from .cli import markdown_table

        names = {"psnr": "PSNR", "ssim": "SSIM", "psnrb": "PSNR-B", "lpips": "LPIPS"}
        header = ["set", "images", *(names.get(m, m) for m in self.metrics), "input PSNR"]
        rows = []
        for s, v in self.summary().items():
            cells = [f"{v[m]:.4f}" if m in ("ssim", "lpips") else f"{v[m]:.2f}" for m in self.metrics]
            rows.append([s, v["images"], *cells, f"{v['input_psnr']:.2f}"])
        return markdown_table(header, rows, align="lr" + "r" * (len(self.metrics) + 1))

    def write_csv(self, path: str | Path) -> Path:
        """Per-image CSV (``set, image, degradation, <metrics>, input_psnr, seconds``), written atomically.

        ``degradation`` and ``input_psnr`` let :func:`read_per_image` callers check that two results were measured
        on the same degraded inputs before pairing them image by image."""
        buf = io.StringIO()
        keys = ["set", "image", "degradation", *self.metrics, "input_psnr", "seconds"]
        w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            r = {"degradation": self.degradation, **r}
            w.writerow({k: (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k]) for k in keys})
        return write_text_atomic(Path(path), buf.getvalue())


def read_per_image(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a per-image CSV (a file, or a run / evaluation folder holding ``per_image.csv``), numbers as
    floats. A missing or malformed file is one :class:`SandboxError` line naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / PER_IMAGE_FILE
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as e:
        raise SandboxError(
            f"no per-image results at {str(path)!r} ({e.strerror or e}); evaluate the run first"
        ) from None
    if not rows or not {"set", "image", "psnr"} <= set(rows[0]):
        raise SandboxError(f"{str(path)!r} is not a per-image results file (expected columns set, image, psnr, ...)")
    out = []
    for i, row in enumerate(rows, 2):
        rec: dict[str, Any] = {}
        for k, v in row.items():
            if k in ("set", "image", "degradation"):
                rec[k] = v or ""
                continue
            try:
                rec[k] = float(v) if v not in (None, "") else math.nan
            except ValueError:
                raise SandboxError(f"{str(path)!r} line {i}: {k}={v!r} is not a number") from None
        out.append(rec)
    return out


def _images(task: Any, sets: Sequence[str] | None, root: Path | None) -> list[tuple[str, str, Callable]]:
    """(set, image name, loader) for every image to evaluate, in order (nothing is read yet)."""
    from . import data
    from .tasks import rgb_to_y_uint8

    if root is None:
        items = []
        for name, img in data.embedded_split()[1]:
            if task.color and img.ndim == 2:
                continue
            if task.color:
                bgr = img[..., ::-1].copy()  # RGB -> BGR, the order prepare_eval expects
            elif img.ndim == 3:  # gray task on a color photograph: its BT.601 Y
                bgr = rgb_to_y_uint8(img)
            else:
                bgr = img
            items.append(("embedded", name, lambda b=bgr: b))
        if not items:
            raise SandboxError(f"the embedded default has no evaluation image for task {task.name!r}")
        return items
    items = []
    for s in sets or task.benchmarks:
        for p in data.list_images(s, root):
            items.append((s, p.name, lambda p=p: task.read(p)))  # exactly as the SwinIR test script reads
    return items


def evaluate(
    restore: Restorer,
    task: Any,
    sets: Sequence[str] | None = None,
    root: str | Path | None = None,
    method: str = "network",
    save_images: str | Path | None = None,
    progress: bool = True,
) -> EvalResult:
    """Evaluate ``restore`` on ``task``'s benchmark ``sets`` under ``root`` (None: the embedded default).

    Args:
        restore: degraded float32 (H, W) / (H, W, 3) RGB in [0, 1] -> restored (unclipped is fine).
        task: a built task (``build_task("denoise:sigma=25")``).
        sets: benchmark set names (default: the task's standard ones).
        root: data root (``benchmarks/<Set>``); None evaluates on the embedded scikit-image photographs.
        method: a label for the result ("network", "bm3d", ...).
        save_images: folder for the restored images (``<set>/<image>.png``).
        progress: show a progress bar with images done and time left.
    """
    from . import data
    from .metrics import compute_metrics, psnr

    root = Path(root) if root is not None else None
    # every image is read before the first is restored: an unreadable file stops here, naming it, not after the
    # images before it were evaluated
    items = [(set_name, image, load()) for set_name, image, load in _images(task, sets, root)]
    result = EvalResult(
        task=task.describe(), method=method, metrics=tuple(task.metrics), degradation=f"{task.name}:{task.level}"
    )
    if root is None:
        result.note = data.EMBEDDED_NOTE
    bar = _progress(len(items), f"{task.name} {method}", progress)
    start = time.perf_counter()
    try:  # the bar is closed before an error propagates, so the error line is the last thing printed
        for set_name, image, img in items:
            t0 = time.perf_counter()
            gt, degraded = task.prepare_eval(img)  # gt uint8, degraded float32 in [0, 1] (RGB for color)
            out = to_uint8(restore(degraded))
            if out.shape != gt.shape:
                raise SandboxError(f"restorer returned {out.shape} for {set_name}/{image} of shape {gt.shape}")
            row = {"set": set_name, "image": image}
            row.update(compute_metrics(task.metrics, out, gt))
            row["input_psnr"] = psnr(to_uint8(degraded), gt)
            row["seconds"] = time.perf_counter() - t0
            result.rows.append(row)
            if save_images is not None:
                _save_png(Path(save_images) / set_name / (Path(image).stem + ".png"), out)
            if bar is not None:
                bar.set_postfix_str(f"{set_name} PSNR {np.mean([r['psnr'] for r in result.rows]):.2f}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    result.seconds = time.perf_counter() - start
    return result


def _save_png(path: Path, img: np.ndarray) -> None:
    import cv2

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), img if img.ndim == 2 else img[..., ::-1]):
            raise SandboxError(f"could not write {path}")


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="img", dynamic_ncols=True, leave=True)
