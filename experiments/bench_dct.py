"""Time the two DCT paths of the ``hco`` mixer and show which one ``dct_path="auto"`` picks.

    python experiments/bench_dct.py [--sizes 32,64,128,256] [--dim 64] [--device cpu] [--repeats 5]

Prints a Markdown table per size: median time of the DCT core alone (DCT-II + decay + inverse, forward) and of one
whole ``hco`` layer (forward + backward) for each path, the FFT/matrix ratios, and the path "auto" uses.
Absolute times are noisy on a shared machine; compare the columns of one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from sandbox import build_mixer, enable_huge_pages, resolve_device  # noqa: E402
from sandbox.cli import run_main  # noqa: E402


def _time(fn, device: torch.device, repeats: int) -> float:
    fn()  # warm-up: builds the size caches
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    enable_huge_pages()  # first: PyTorch reads the setting at its first CPU allocation (sandbox/_alloc.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32,64,128,256", help="square sizes in pixels, comma-separated")
    ap.add_argument("--dim", type=int, default=64, help="channels")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default=None, help="cpu, cuda (default: cuda when available)")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    from operators.hco import heat_conduction, pick_path

    print(f"hco, dim {args.dim}, batch {args.batch}, device {device}, median of {args.repeats} after a warm-up\n")
    print(
        "| size | core matrix (ms) | core fft (ms) | core fft/matrix "
        "| layer fwd+bwd matrix (ms) | layer fwd+bwd fft (ms) | layer fft/matrix | auto picks |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in sizes:
        core, layer = {}, {}
        for path in ("matrix", "fft"):
            torch.manual_seed(0)
            m = build_mixer({"name": "hco", "dct_path": path}, args.dim).to(device)
            x = torch.randn(args.batch, args.dim, s, s, device=device, requires_grad=True)
            decay = m.decay(s, s, device).detach()

            def core_step(x=x, decay=decay, path=path):
                with torch.no_grad():
                    heat_conduction(x, decay, path)

            def layer_step(m=m, x=x):
                m(x).square().mean().backward()

            core[path] = _time(core_step, device, args.repeats) * 1e3
            layer[path] = _time(layer_step, device, args.repeats) * 1e3
        print(
            f"| {s} | {core['matrix']:.2f} | {core['fft']:.2f} | {core['fft'] / core['matrix']:.2f} "
            f"| {layer['matrix']:.2f} | {layer['fft']:.2f} | {layer['fft'] / layer['matrix']:.2f} "
            f"| {pick_path(s, s, device)} |"
        )


if __name__ == "__main__":
    run_main(main)
