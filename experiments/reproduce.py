"""Reproduce published denoising and JPEG-deblocking numbers from the official weights, with the sandbox's evaluator.

    SANDBOX_DATA=../shared/data python experiments/reproduce.py            # all 27 rows (about 55 min on 2 CPU cores)
    python experiments/reproduce.py --only "DnCNN-S" --sets Set12          # a subset
    python experiments/reproduce.py --only DnCNN-3 --qualities 10          # DnCNN-3, JPEG q10 (Classic5, LIVE1)

Each row evaluates an official network (or BM3D) on one benchmark set at one degradation level with the SwinIR/KAIR
protocol (noise from np.random.seed(0) per image, unclipped; OpenCV's JPEG encoder on the BT.601 Y channel; outputs
rounded to uint8; PSNR/SSIM with border 0, RGB for color) and prints our mean PSNR and SSIM beside the values published
in the paper's table (SSIM where one is published), with the PSNR difference. The published values are the comparison
targets, quoted with their sources; nothing else is fixed in advance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandbox import enable_huge_pages  # noqa: E402
from sandbox.cli import markdown_table, run_main  # noqa: E402

DNCNN = "Zhang et al., DnCNN, TIP 2017"
DNCNN_SET12 = f"{DNCNN}, Table III (average)"
DNCNN3 = f"{DNCNN} (DnCNN repository README, DnCNN-3)"
FFDNET = "Zhang et al., FFDNet, TIP 2018"
# (label, arch spec or method, task spec, set, published mean PSNR, published mean SSIM or None, source)
ROWS = [
    *[
        ("DnCNN-S", f"dncnn:variant=s,sigma={s}", f"denoise:sigma={s}", "Set12", p, None, DNCNN_SET12)
        for s, p in ((15, 32.86), (25, 30.44), (50, 27.18))
    ],
    *[
        ("DnCNN-S", f"dncnn:variant=s,sigma={s}", f"denoise:sigma={s}", "BSD68", p, None, f"{DNCNN}, Table II")
        for s, p in ((15, 31.73), (25, 29.23), (50, 26.23))
    ],
    *[
        ("DnCNN-B", "dncnn:variant=b", f"denoise:sigma={s}", "BSD68", p, None, f"{DNCNN}, Table II")
        for s, p in ((15, 31.61), (25, 29.16), (50, 26.23))
    ],
    *[
        ("CDnCNN-B", "dncnn:variant=b,in_chans=3", f"denoise_color:sigma={s}", "CBSD68", p, None, f"{FFDNET}, Table V")
        for s, p in ((15, 33.89), (25, 31.23), (50, 27.92))
    ],
    *[
        ("FFDNet", "ffdnet:in_chans=3", f"denoise_color:sigma={s}", "CBSD68", p, None, f"{FFDNET}, Table V")
        for s, p in ((15, 33.87), (25, 31.21), (50, 27.96))
    ],
    ("BM3D", "method:bm3d", "denoise:sigma=25", "Set12", 29.97, None, DNCNN_SET12),
    *[  # one blind network for Gaussian denoising, super-resolution and JPEG deblocking
        ("DnCNN-3", "dncnn:variant=3", f"jpeg:quality={q}", set_name, p, ssim, DNCNN3)
        for set_name, q, p, ssim in (
            ("Classic5", 10, 29.40, 0.8026),
            ("Classic5", 20, 31.63, 0.8610),
            ("Classic5", 30, 32.91, 0.8861),
            ("Classic5", 40, 33.77, 0.9003),
            ("LIVE1", 10, 29.19, 0.8123),
            ("LIVE1", 20, 31.59, 0.8802),
            ("LIVE1", 30, 32.98, 0.9090),
            ("LIVE1", 40, 33.96, 0.9247),
        )
    ],
    *[
        ("DnCNN-3", "dncnn:variant=3", f"denoise:sigma={s}", "BSD68", p, None, DNCNN3)
        for s, p in ((15, 31.46), (25, 29.02), (50, 26.10))
    ],
]


def main(argv=None) -> int:
    enable_huge_pages()  # first: PyTorch reads the setting at its first CPU allocation (sandbox/_alloc.py)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--only", default=None, help="comma-separated labels (DnCNN-S, DnCNN-B, CDnCNN-B, FFDNet, BM3D, DnCNN-3)"
    )
    ap.add_argument("--sets", default=None, help="comma-separated sets to keep")
    ap.add_argument("--sigmas", default=None, help="comma-separated noise levels to keep (with --qualities: either)")
    ap.add_argument("--qualities", default=None, help="comma-separated JPEG qualities to keep (with --sigmas: either)")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default=str(Path("outputs") / "reproduce" / "results.md"))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from sandbox.data import data_root
    from sandbox.evaluate import classical_restorer, evaluate, load_network, network_restorer, write_text_atomic
    from sandbox.registry import build_task

    root = data_root(args.data_root, required=True)
    keep = lambda value, allowed: allowed is None or str(value) in allowed.split(",")  # noqa: E731

    def keep_level(task) -> bool:  # a level filter keeps the rows at its levels; with none, every level
        if args.sigmas is None and args.qualities is None:
            return True
        if getattr(task, "sigma", None) is not None:
            return args.sigmas is not None and keep(f"{task.sigma:g}", args.sigmas)
        return args.qualities is not None and keep(task.quality, args.qualities)

    rows = [(r, build_task(r[2])) for r in ROWS if keep(r[0], args.only) and keep(r[3], args.sets)]
    rows = [(r, task) for r, task in rows if keep_level(task)]
    table = []
    for (label, spec, _, set_name, published, published_ssim, source), task in rows:
        if spec.startswith("method:"):
            restore = classical_restorer(spec.split(":", 1)[1], task)
        else:
            restore = network_restorer(load_network(spec, "official", task, root))
        result = evaluate(restore, task, [set_name], root, method=label, progress=not args.no_progress)
        ours = result.summary()[set_name]
        psnr, ssim = ours["psnr"], ours["ssim"]
        ssim_published = "-" if published_ssim is None else f"{published_ssim:.4f}"
        table.append(
            [label, set_name, task.level, f"{psnr:.2f}", f"{published:.2f}", f"{psnr - published:+.2f}"]
            + [f"{ssim:.4f}", ssim_published, source]
        )
        print(
            f"{label} {set_name} {task.level}: PSNR {psnr:.3f} dB (published {published:.2f}), "
            f"SSIM {ssim:.4f} (published {ssim_published})",
            flush=True,
        )
    header = ["model", "set", "level", "PSNR ours", "PSNR published", "PSNR diff", "SSIM ours", "SSIM published"]
    text = markdown_table([*header, "source"], table, "lllrrrrrl")
    print("\n" + text)
    write_text_atomic(Path(args.out), text + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
