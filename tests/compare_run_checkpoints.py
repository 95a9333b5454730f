"""Compare two run directories tensor by tensor (torch.equal): last.pth and best.pth (model, EMA, optimiser, RNG),
their step/best_psnr/history, and the final scores of results.json. Exit status 1 on any difference.

    python tests/compare_run_checkpoints.py /tmp/before/r /tmp/after/r

Used to show that a refactor of the engine leaves a fixed-seed, fixed-thread-count run bit-identical.
"""

import json
import sys
from pathlib import Path

import torch


def tensors(obj, prefix=""):
    """(name, tensor) of every tensor in nested dicts/lists."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors(v, f"{prefix}[{i}]")


def main(a_dir: str, b_dir: str) -> int:
    bad = 0
    for name in ("last.pth", "best.pth"):
        a = torch.load(Path(a_dir) / "checkpoints" / name, map_location="cpu", weights_only=True)
        b = torch.load(Path(b_dir) / "checkpoints" / name, map_location="cpu", weights_only=True)
        for key in ("model", "ema", "model_ema", "optimizer", "rng"):
            ta, tb = dict(tensors(a.get(key))), dict(tensors(b.get(key)))
            diff = [k for k in ta if k not in tb or ta[k].shape != tb[k].shape or not torch.equal(ta[k], tb[k])]
            diff += [k for k in tb if k not in ta]
            bad += len(diff)
            print(f"{name} {key}: {len(ta)} tensors, {len(diff)} differ" + (f": {diff[:5]}" if diff else ""))
        for key in ("step", "best_psnr", "history"):
            same = (
                json.dumps(a[key]) == json.dumps(b[key])
                if key != "history"
                else [{k: h[k] for k in ("step", "psnr", "ssim")} for h in a[key]]
                == [{k: h[k] for k in ("step", "psnr", "ssim")} for h in b[key]]
            )
            bad += not same
            print(f"{name} {key}: {'equal' if same else 'DIFFERS'}")
    ra, rb = (json.loads((Path(d) / "results.json").read_text()) for d in (a_dir, b_dir))
    same = ra["final"] == rb["final"]
    bad += not same
    print(f"results.json final: {'equal' if same else 'DIFFERS'}")
    print("IDENTICAL" if bad == 0 else f"{bad} DIFFERENCES")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
