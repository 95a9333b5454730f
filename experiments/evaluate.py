"""Evaluate a network or a classical baseline on the standard benchmarks with the literature's protocol.

    python experiments/evaluate.py --arch dncnn:variant=s,sigma=25 --weights official --task denoise --sigma 25
    python experiments/evaluate.py --weights runs/hco/checkpoints/best.pth --task denoise --sets Set12,BSD68
    python experiments/evaluate.py --method bm3d --task denoise --sigma 25 --sets Set12
    python experiments/evaluate.py --arch ffdnet:in_chans=3 --weights official --task denoise_color --sigma 50

Prints a Markdown table (per set: mean PSNR, SSIM, PSNR-B for JPEG, and the degraded input's PSNR), writes the
per-image CSV and the table under ``--out`` (default ``outputs/eval/<name>``), and the restored images with
``--save-images``. Data comes from ``--data-root`` or ``$SANDBOX_DATA``; without either, the bundled scikit-image
photographs are used and the numbers are not comparable to published tables.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a plain checkout
    sys.path.insert(0, str(ROOT))

from sandbox.cli import add_plugin_arg, run_main  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    what = ap.add_argument_group("what to evaluate (a network, or --method)")
    what.add_argument("--arch", help="network name or spec, e.g. 'dncnn:variant=s,sigma=25' or 'swinir:task=jpeg'")
    what.add_argument("--weights", help="checkpoint (sandbox, official, BasicSR) or 'official' (dncnn/ffdnet)")
    what.add_argument("--method", choices=["noisy", "bm3d", "nlm"], help="a classical baseline instead of a network")
    ap.add_argument("--task", default="denoise", help="denoise, denoise_color, jpeg or jpeg_color (default denoise)")
    ap.add_argument("--sigma", type=float, default=None, help="noise level on the 0-255 scale (denoise tasks)")
    ap.add_argument("--quality", type=int, default=None, help="JPEG quality 1..100 (jpeg tasks)")
    ap.add_argument("--sets", default=None, help="comma-separated benchmark sets (default: the task's standard sets)")
    ap.add_argument("--data-root", default=None, help="data folder (default $SANDBOX_DATA; none: embedded images)")
    ap.add_argument("--tile", type=int, default=None, help="tiled inference with this tile size (blended overlaps)")
    ap.add_argument("--tile-overlap", type=int, default=32)
    ap.add_argument(
        "--self-ensemble", action="store_true", help="mean over the 8 flips/rotations (x8 compute; label gets '+x8')"
    )
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when available)")
    ap.add_argument("--out", default=None, help="output folder (default outputs/eval/<name>)")
    ap.add_argument("--save-images", action="store_true", help="write the restored images under <out>/images")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_plugin_arg(ap)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from sandbox.data import data_root
    from sandbox.errors import OptionError
    from sandbox.evaluate import classical_restorer, evaluate, load_network, network_restorer, write_text_atomic
    from sandbox.plugins import load_plugins
    from sandbox.registry import build_task
    from sandbox.tasks import check_network_channels
    from sandbox.utils import resolve_device

    load_plugins(args.plugin)
    options = {}
    if args.sigma is not None:
        options["sigma"] = args.sigma
    if args.quality is not None:
        options["quality"] = args.quality
    task = build_task(args.task, **options)
    root = data_root(args.data_root)
    sets = [s.strip() for s in args.sets.split(",") if s.strip()] if args.sets else None
    if args.method and (args.arch or args.weights):
        raise OptionError("give either --method or --arch/--weights, not both")
    if args.tile is not None and args.method:
        raise OptionError("--tile applies to networks, not to --method")
    if args.self_ensemble and args.method:
        raise OptionError("--self-ensemble applies to networks, not to --method")

    if args.method:
        restore, label = classical_restorer(args.method, task), args.method
    else:
        device = resolve_device(args.device)
        net = load_network(args.arch, args.weights, task, root)
        check_network_channels(task, getattr(net, "in_chans", task.channels))
        restore = network_restorer(net, device, args.tile, args.tile_overlap, ensemble=args.self_ensemble)
        label = (args.arch or Path(args.weights).stem) + ("+x8" if args.self_ensemble else "")
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{label}_{task.name}_{task.level}")
    out = Path(args.out) if args.out else ROOT / "outputs" / "eval" / name

    result = evaluate(
        restore,
        task,
        sets,
        root,
        method=label,
        save_images=out / "images" if args.save_images else None,
        progress=not args.no_progress,
    )
    table = result.table()
    header = f"{label} on {task.describe()}" + (f"\n\n{result.note}" if result.note else "")
    print(f"\n{header}\n\n{table}\n")
    out.mkdir(parents=True, exist_ok=True)
    csv_path = result.write_csv(out / "per_image.csv")
    write_text_atomic(out / "results.md", f"{header}\n\n{table}\n")
    print(f"per-image CSV: {csv_path}\ntable: {out / 'results.md'} ({result.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    run_main(main)
