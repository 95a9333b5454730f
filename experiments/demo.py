"""Build every registered mixer and run it on a real image: a smoke test you can look at.

    python experiments/demo.py [--size 96] [--dim 16] [--mixers 'hco,hyena*'] [--device cpu] [--plugin MODULE]
                               [--out outputs/demo]

The image is scikit-image's bundled ``camera`` photograph (no download), centre-cropped to ``--size``. Each mixer is
built with its defaults (random init, seed 0) and fed the image lifted to ``--dim`` channels. Prints a Markdown table
(parameters, forward time, output statistics) and writes a PNG grid of each mixer's channel-0 response.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sandbox import build_mixer, enable_huge_pages, list_mixers, load_plugins, resolve_device  # noqa: E402
from sandbox.cli import add_plugin_arg, markdown_table, run_main  # noqa: E402
from sandbox.errors import SandboxError  # noqa: E402


def load_image(size: int) -> torch.Tensor:
    """scikit-image's ``camera`` (512 x 512 gray), centre crop of ``size``, as (1, 1, size, size) in [0, 1]."""
    from skimage import data

    img = data.camera().astype(np.float32) / 255.0
    if not 1 <= size <= min(img.shape):
        raise SandboxError(f"--size {size} is not valid; expected 1..{min(img.shape)}")
    top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return torch.from_numpy(img[top : top + size, left : left + size].copy())[None, None]


def save_grid(tiles: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Tiles side by side, each normalised to [0, 255]; a text-free grid (labels go to the printed table)."""
    from skimage import io

    cols = min(5, len(tiles))
    rows = -(-len(tiles) // cols)
    h, w = tiles[0][1].shape
    pad = 4
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), 255, np.uint8)
    for i, (_, t) in enumerate(tiles):
        lo, hi = np.percentile(t, 1), np.percentile(t, 99)
        t = np.clip((t - lo) / max(hi - lo, 1e-8), 0, 1)
        r, c = divmod(i, cols)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = (
            t * 255
        ).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    io.imsave(path, canvas, check_contrast=False)


def main(argv: list[str] | None = None) -> int:
    enable_huge_pages()  # first: PyTorch reads the setting at its first CPU allocation (sandbox/_alloc.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=96, help="side of the centre crop (pixels)")
    ap.add_argument("--dim", type=int, default=16, help="channels the image is lifted to")
    ap.add_argument("--mixers", default="*", help="comma-separated names or fnmatch patterns (default: all)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--out", default="outputs/demo", help="folder for the PNG grid")
    add_plugin_arg(ap)
    args = ap.parse_args(argv)
    load_plugins(args.plugin)
    device = resolve_device(args.device)
    names = list_mixers(args.mixers.split(","))
    if not names:
        raise SandboxError(f"--mixers {args.mixers!r} matches no mixer; see `python -m sandbox mixers`")
    img = load_image(args.size).to(device)
    gains = torch.linspace(0.5, 1.5, args.dim, device=device)[None, :, None, None]
    x = img * gains - 0.5  # (1, dim, S, S): the photo in every channel, different contrast per channel
    rows, tiles = [], [("input", img[0, 0].cpu().numpy())]
    print(f"camera crop {args.size}x{args.size}, dim {args.dim}, device {device}: {len(names)} mixer(s)")
    for i, name in enumerate(names, 1):
        torch.manual_seed(0)
        mixer = build_mixer(name, args.dim).to(device).eval()
        with torch.no_grad():
            mixer(x)  # warm-up (size caches)
            t0 = time.perf_counter()
            y = mixer(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) * 1e3
        ok = bool(torch.isfinite(y).all()) and y.shape == x.shape
        params = sum(p.numel() for p in mixer.parameters())
        rows.append(
            [
                name,
                f"{params:,}",
                f"{ms:.1f}",
                tuple(y.shape),
                f"{y.mean():+.3f}",
                f"{y.std():.3f}",
                "ok" if ok else "FAIL",
            ]
        )
        tiles.append((name, y[0, 0].float().cpu().numpy()))
        print(f"  [{i}/{len(names)}] {name}: {ms:.1f} ms", file=sys.stderr)
    print(
        markdown_table(
            ["mixer", "params", "forward (ms)", "output shape", "mean", "std", "finite, same shape"], rows, "lrrlrrl"
        )
    )
    out = Path(args.out) / "mixers_on_camera.png"
    save_grid(tiles, out)
    print(f"\nchannel-0 responses (input first, then the mixers in table order): {out}")
    return 0 if all(r[-1] == "ok" for r in rows) else 1


if __name__ == "__main__":
    run_main(main)
