"""Evaluate a network or a classical baseline on the standard benchmarks with the literature's protocol.

    python experiments/evaluate.py --arch dncnn:variant=s,sigma=25 --weights official --task denoise --sigma 25
    python experiments/evaluate.py --weights runs/hco/checkpoints/best.pth --task denoise --eval-sets Set12,BSD68
    python experiments/evaluate.py --method bm3d --task denoise --sigma 25 --eval-sets Set12
    python experiments/evaluate.py --arch ffdnet:in_chans=3 --weights official --task denoise_color --sigma 50
    python experiments/evaluate.py --weights runs/hco --weights runs/conv --eval-sets Set12        # paired comparison
    python experiments/evaluate.py --weights "hco=runs/hco_s0,runs/hco_s1" --weights "conv=runs/conv_s0,runs/conv_s1"
    python experiments/evaluate.py --results outputs/compare/a/runs/01_hco --results outputs/sweeps/b/runs/x  # no eval

Several ``--weights`` (checkpoints or run directories, whose ``checkpoints/best.pth`` is used) are evaluated on the
identical degraded inputs and compared paired, image by image, with ``sandbox.stats``: per setting the mean with its
95% interval across seeds, the difference to ``--baseline`` (default: the first) with its interval, the Holm p-value
and the rank group, and under the table what the design can resolve. ``LABEL=PATH,PATH,...`` groups the seeds of one
setting (the checkpoint's own seed pairs it with the same seed of the other settings; else its position). Each
setting's per-image CSV goes to ``<out>/<label>/``. ``--results`` pairs per-image results that already exist (run
directories, evaluation folders or ``per_image.csv`` files) without evaluating anything; results of different
degradations or image sets are refused with one line.

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

from sandbox import enable_huge_pages  # noqa: E402
from sandbox.cli import add_plugin_arg, run_main  # noqa: E402
from sandbox.config import field_help, set_names  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    what = ap.add_argument_group("what to evaluate (a network, or --method)")
    what.add_argument("--arch", help="network name or spec, e.g. 'dncnn:variant=s,sigma=25' or 'swinir:task=jpeg'")
    what.add_argument(
        "--weights",
        action="append",
        default=[],
        help="checkpoint (sandbox, official, BasicSR), run directory, or 'official' (dncnn/ffdnet); repeat it to\n"
        "compare several paired; LABEL=PATH,PATH,... gives one setting several seeds",
    )
    what.add_argument(
        "--results",
        action="append",
        default=[],
        help="existing per-image results to pair (run dir, eval folder or per_image.csv; LABEL=PATH,... for seeds)",
    )
    what.add_argument("--method", choices=["noisy", "bm3d", "nlm"], help="a classical baseline instead of a network")
    ap.add_argument("--task", default="denoise", help="denoise, denoise_color, jpeg or jpeg_color (default denoise)")
    ap.add_argument("--sigma", type=float, default=None, help="noise level on the 0-255 scale (denoise tasks)")
    ap.add_argument("--quality", type=int, default=None, help="JPEG quality 1..100 (jpeg tasks)")
    ap.add_argument(  # RunConfig.eval_sets' flag and meaning; --sets is its older name here
        "--eval-sets",
        "--sets",
        dest="sets",
        type=set_names,
        default=None,
        metavar="EVAL_SETS",
        help=field_help("eval_sets") + " (default: all)",
    )
    ap.add_argument("--data-root", default=None, help="data folder (default $SANDBOX_DATA; none: embedded images)")
    ap.add_argument("--tile", type=int, default=None, help="tiled inference with this tile size (blended overlaps)")
    ap.add_argument("--tile-overlap", type=int, default=32)
    ap.add_argument(
        "--self-ensemble", action="store_true", help="mean over the 8 flips/rotations (x8 compute; label gets '+x8')"
    )
    ap.add_argument("--baseline", default=None, help="label the paired differences are taken to (default: the first)")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when available)")
    ap.add_argument("--out", default=None, help="output folder (default outputs/eval/<name>)")
    ap.add_argument("--save-images", action="store_true", help="write the restored images under <out>/images")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_plugin_arg(ap)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    enable_huge_pages()  # first: PyTorch reads the setting at its first CPU allocation (sandbox/_alloc.py)
    args = parse_args(argv)
    from sandbox.data import data_root
    from sandbox.errors import OptionError
    from sandbox.evaluate import classical_restorer, evaluate, load_network, network_restorer
    from sandbox.plugins import load_plugins
    from sandbox.registry import build_task
    from sandbox.tasks import check_network_channels
    from sandbox.utils import resolve_device, write_text_atomic

    load_plugins(args.plugin)
    options = {}
    if args.sigma is not None:
        options["sigma"] = args.sigma
    if args.quality is not None:
        options["quality"] = args.quality
    task = build_task(args.task, **options)
    root = data_root(args.data_root)
    sets = list(args.sets) if args.sets else None
    groups = _groups(args.weights, "--weights")
    if args.results:
        if args.weights or args.method or args.arch:
            raise OptionError("--results pairs existing per-image results; give it without --weights/--arch/--method")
        return _paired_results(_groups(args.results, "--results"), args)
    if args.method and (args.arch or args.weights):
        raise OptionError("give either --method or --arch/--weights, not both")
    if args.tile is not None and args.method:
        raise OptionError("--tile applies to networks, not to --method")
    if args.self_ensemble and args.method:
        raise OptionError("--self-ensemble applies to networks, not to --method")
    if len(groups) > 1 or any(len(paths) > 1 for paths in groups.values()):
        return _paired_networks(groups, args, task, root, sets)
    if args.baseline:
        raise OptionError("--baseline needs several --weights (or --results) to compare")
    weights = next(iter(groups.values()))[0] if groups else None

    if args.method:
        restore, label = classical_restorer(args.method, task), args.method
    else:
        device = resolve_device(args.device)
        net = load_network(args.arch, _checkpoint(weights), task, root)
        check_network_channels(task, getattr(net, "in_chans", task.channels))
        restore = network_restorer(net, device, args.tile, args.tile_overlap, ensemble=args.self_ensemble)
        label = (args.arch or next(iter(groups))) + ("+x8" if args.self_ensemble else "")
    name = re.sub(r"[^A-Za-z0-9_.=-]+", "_", f"{label}_{task.name}_{task.level}")
    out = Path(args.out) if args.out else Path("outputs") / "eval" / name

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


# ------------------------------------------------------------------------------------------------ paired comparisons
def _checkpoint(path: str | None) -> str | None:
    """A run directory stands for its ``checkpoints/best.pth``; anything else is passed on as given."""
    if path is None or path == "official":
        return path
    p = Path(path)
    return str(p / "checkpoints" / "best.pth") if p.is_dir() and (p / "checkpoints").is_dir() else path


def _label_of(path: str) -> str:
    """A short label for a checkpoint path: its run directory's name, else its file stem."""
    p = Path(path)
    if p.is_dir():
        return p.name
    return p.parent.parent.name if p.parent.name == "checkpoints" else p.stem


def _groups(items: list[str], flag: str) -> dict[str, list[str]]:
    """``[PATH | LABEL=PATH,PATH,...]`` -> {label: [paths]} in order; a label given twice is one error line."""
    from sandbox.errors import OptionError

    groups: dict[str, list[str]] = {}
    for item in items:
        label, eq, rest = item.partition("=")
        if eq and label and not Path(item).exists():
            paths = [p.strip() for p in rest.split(",") if p.strip()]
        else:
            label, paths = _label_of(item), [item]
        if not paths:
            raise OptionError(f"{flag} {item!r} names no path; expected PATH or LABEL=PATH,PATH,...")
        if label in groups:
            raise OptionError(f"{flag}: the label {label!r} is given twice; use LABEL=PATH,... to tell them apart")
        groups[label] = paths
    return groups


def _seed_of(ckpt, position: int) -> int:
    """The seed a checkpoint was trained with (its config), else its position in the group."""
    seed = (ckpt.get("config") or {}).get("seed") if isinstance(ckpt, dict) else None
    return int(seed) if isinstance(seed, int) else position


def _paired_networks(groups: dict[str, list[str]], args, task, root, sets) -> int:
    """Evaluate every checkpoint of every setting on the same degraded inputs, then the paired table per set."""
    from sandbox.checkpoint import torch_load
    from sandbox.errors import OptionError
    from sandbox.evaluate import evaluate, load_network, network_restorer
    from sandbox.tasks import check_network_channels
    from sandbox.utils import resolve_device

    if args.baseline is not None and args.baseline not in groups:
        raise OptionError(f"--baseline {args.baseline!r} is not one of the labels: {', '.join(map(repr, groups))}")
    if "official" in (p for paths in groups.values() for p in paths):
        raise OptionError("--weights official takes one network; compare official networks by their files")
    device = resolve_device(args.device)
    out = Path(args.out) if args.out else Path("outputs") / "eval" / f"paired_{task.name}_{task.level}"
    out = _fresh(out)
    checkpoints = {label: [_checkpoint(p) for p in paths] for label, paths in groups.items()}
    nets = {}  # every network is built (and its checkpoint read) before anything is evaluated
    for label, paths in checkpoints.items():
        for k, path in enumerate(paths):
            ckpt = torch_load(path)  # read once: for its seed and its weights
            net = load_network(args.arch, path, task, root, checkpoint=ckpt)
            check_network_channels(task, getattr(net, "in_chans", task.channels))
            seed = _seed_of(ckpt, k)
            if (label, seed) in nets:
                seed = k  # two checkpoints of one seed in a group: pair by position
            nets[(label, seed)] = net
    runs: dict[str, dict[int, Path]] = {}
    for (label, seed), net in nets.items():
        restore = network_restorer(net, device, args.tile, args.tile_overlap, ensemble=args.self_ensemble)
        result = evaluate(restore, task, sets, root, method=f"{label} seed {seed}", progress=not args.no_progress)
        runs.setdefault(label, {})[seed] = result.write_csv(out / label / f"seed{seed}_per_image.csv")
        print(f"{label} seed {seed}: " + ", ".join(f"{s} {v['psnr']:.3f} dB" for s, v in result.summary().items()))
    return _report_pairs(runs, args, out, task.describe())


def _paired_results(groups: dict[str, list[str]], args) -> int:
    """Pair per-image results that already exist (no evaluation)."""
    from sandbox.errors import OptionError

    if args.baseline is not None and args.baseline not in groups:
        raise OptionError(f"--baseline {args.baseline!r} is not one of the labels: {', '.join(map(repr, groups))}")
    if len(groups) < 2 and all(len(p) < 2 for p in groups.values()):
        raise OptionError("--results needs two or more results to pair")
    runs = {}
    for label, paths in groups.items():
        runs[label] = {}
        for k, path in enumerate(paths):
            seed = _results_seed(Path(path), k)
            runs[label][seed if seed not in runs[label] else k] = Path(path)
    out = Path(args.out) if args.out else Path("outputs") / "eval" / "paired_results"
    return _report_pairs(runs, args, _fresh(out), None)


def _results_seed(path: Path, position: int) -> int:
    """The seed of a run directory's results (its results.json config), else the position."""
    import json

    record = path / "results.json" if path.is_dir() else path.parent / "results.json"
    try:
        seed = json.loads(record.read_text())["config"]["seed"]
    except (OSError, ValueError, KeyError, TypeError):
        return position
    return int(seed) if isinstance(seed, int) else position


def _fresh(out: Path) -> Path:
    """``out``, or ``out-2``, ``out-3``, ... when it exists: an earlier comparison is never overwritten."""
    i, target = 1, out
    while target.exists():
        i += 1
        target = out.with_name(f"{out.name}-{i}")
    return target


def _report_pairs(runs: dict, args, out: Path, task_text: str | None) -> int:
    """The paired table of every evaluation set, printed and written to ``<out>/paired.md`` (+ forest plots)."""
    from sandbox.stats import compare, forest_plot, read_set_names, runs_table
    from sandbox.utils import write_text_atomic

    first = next(iter(next(iter(runs.values())).values()))
    sections = []
    for k, set_name in enumerate(read_set_names(first)):
        scores, _, degradation = runs_table(runs, set_name)
        comp = compare(scores, baseline=args.baseline)
        plot = "forest.png" if k == 0 else f"forest_{set_name}.png"
        if comp.differences:
            forest_plot(comp, out / plot, title=f"{degradation} on {set_name}")
        sections.append(f"## {set_name} ({degradation})\n\n{comp.markdown()}\n\n{comp.footer()}")
    head = f"# Paired comparison{': ' + task_text if task_text else ''}"
    text = head + "\n\n" + "\n\n".join(sections) + "\n"
    print("\n" + text)
    write_text_atomic(out / "paired.md", text)
    print(f"table: {out / 'paired.md'}; forest plot: {out / 'forest.png'}")
    return 0


if __name__ == "__main__":
    run_main(main)
