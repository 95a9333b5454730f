"""Reproduce published denoising numbers from the official weights, with the sandbox's evaluator.

    SANDBOX_DATA=../shared/data python experiments/reproduce.py            # every row (about 30 min on 2 CPU cores)
    python experiments/reproduce.py --only "DnCNN-S" --sets Set12          # a subset

Each row evaluates an official network (or BM3D) on one benchmark set with the SwinIR/KAIR protocol (noise from
np.random.seed(0) per image, unclipped; outputs rounded to uint8; PSNR with border 0, RGB for color) and prints our
mean PSNR beside the value published in the paper's table, with the difference. The published values are the
comparison targets, quoted with their sources; nothing else is fixed in advance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sandbox.cli import markdown_table, run_main  # noqa: E402

DNCNN = "Zhang et al., DnCNN, TIP 2017"
FFDNET = "Zhang et al., FFDNet, TIP 2018"
# (label, arch spec or method, task, sigma, set, published mean PSNR, source)
ROWS = [
    *[
        ("DnCNN-S", f"dncnn:variant=s,sigma={s}", "denoise", s, "Set12", p, f"{DNCNN}, Table III (average)")
        for s, p in ((15, 32.86), (25, 30.44), (50, 27.18))
    ],
    *[
        ("DnCNN-S", f"dncnn:variant=s,sigma={s}", "denoise", s, "BSD68", p, f"{DNCNN}, Table II")
        for s, p in ((15, 31.73), (25, 29.23), (50, 26.23))
    ],
    *[
        ("DnCNN-B", "dncnn:variant=b", "denoise", s, "BSD68", p, f"{DNCNN}, Table II")
        for s, p in ((15, 31.61), (25, 29.16), (50, 26.23))
    ],
    *[
        ("CDnCNN-B", "dncnn:variant=b,in_chans=3", "denoise_color", s, "CBSD68", p, f"{FFDNET}, Table V")
        for s, p in ((15, 33.89), (25, 31.23), (50, 27.92))
    ],
    *[
        ("FFDNet", "ffdnet:in_chans=3", "denoise_color", s, "CBSD68", p, f"{FFDNET}, Table V")
        for s, p in ((15, 33.87), (25, 31.21), (50, 27.96))
    ],
    ("BM3D", "method:bm3d", "denoise", 25, "Set12", 29.97, f"{DNCNN}, Table III (average)"),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated labels (DnCNN-S, DnCNN-B, CDnCNN-B, FFDNet, BM3D)")
    ap.add_argument("--sets", default=None, help="comma-separated sets to keep")
    ap.add_argument("--sigmas", default=None, help="comma-separated sigmas to keep")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--out", default=str(ROOT / "outputs" / "reproduce" / "results.md"))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    from sandbox.data import data_root
    from sandbox.evaluate import classical_restorer, evaluate, load_network, network_restorer, write_text_atomic
    from sandbox.registry import build_task

    root = data_root(args.data_root, required=True)
    keep = lambda value, allowed: allowed is None or str(value) in allowed.split(",")  # noqa: E731
    rows = [r for r in ROWS if keep(r[0], args.only) and keep(r[4], args.sets) and keep(r[3], args.sigmas)]
    table = []
    for label, spec, task_name, sigma, set_name, published, source in rows:
        task = build_task(task_name, sigma=float(sigma))
        if spec.startswith("method:"):
            restore = classical_restorer(spec.split(":", 1)[1], task)
        else:
            restore = network_restorer(load_network(spec, "official", task, root))
        result = evaluate(restore, task, [set_name], root, method=label, progress=not args.no_progress)
        ours = result.summary()[set_name]["psnr"]
        table.append([label, set_name, sigma, f"{ours:.2f}", f"{published:.2f}", f"{ours - published:+.2f}", source])
        print(f"{label} {set_name} sigma {sigma}: {ours:.3f} dB (published {published:.2f})", flush=True)
    text = markdown_table(["model", "set", "sigma", "ours", "published", "diff", "source"], table, "lllrrrl")
    print("\n" + text)
    write_text_atomic(Path(args.out), text + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
