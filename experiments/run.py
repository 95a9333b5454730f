"""Train one network on one task and evaluate it: the sandbox's main job.

    python experiments/run.py                                   # the default CPU run (3 to 4 minutes on 2 cores)
    python experiments/run.py --mixer hyena_pixel --iters 2000 --preset small
    python experiments/run.py --task denoise_color --sigma 50 --mixer "conv:kernel_size=7" --batch-size 16
    python experiments/run.py --config my_run.yaml --set lr=1e-3 --set milestones=[0.5,0.8]
    python experiments/run.py --resume runs/<name>              # continue an interrupted run (same final result)

Settings come from the RunConfig defaults (``sandbox/config.py``), then ``--config FILE.yaml``, then the flags, then
``--set key=value`` (any RunConfig field; values are Python literals, else strings). Everything is checked and the
network is built before the run directory ``<out>/<name>`` is created (never overwritten: ``<name>-2``, ...); it
receives ``config.yaml``, ``checkpoints/{last,best}.pth``, ``metrics.jsonl``, ``results.{json,md}``,
``per_image.csv`` (PSNR/SSIM per image, for paired comparisons) and ``crops.png``.
Data comes from ``--data-root`` or ``$SANDBOX_DATA``; without either, scikit-image's photographs are used (numbers
not comparable to published tables). With data, the final evaluation of this command defaults to the task's first
benchmark (Set12 for denoise), which keeps the default run short; ``--eval-sets all`` evaluates all of them (the
``RunConfig`` default ``eval_sets=None`` that ``sandbox.engine.train`` uses).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a plain checkout
    sys.path.insert(0, str(ROOT))

from sandbox.cli import add_plugin_arg, run_main  # noqa: E402

# flag -> RunConfig field, for the flags that set one field as they are
FLAG_FIELDS = {
    "task": "task",
    "sigma": "sigma",
    "quality": "quality",
    "arch": "arch",
    "mixer": "mixer",
    "preset": "preset",
    "iters": "iters",
    "budget_minutes": "budget_minutes",
    "batch_size": "batch_size",
    "patch_size": "patch_size",
    "lr": "lr",
    "device": "device",
    "seed": "seed",
    "out": "out",
    "name": "name",
    "data_root": "data_root",
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    what = ap.add_argument_group("what to train")
    what.add_argument("--task", help="task name or spec: denoise (default), denoise_color, jpeg, jpeg_color")
    what.add_argument("--sigma", type=float, help="noise level on the 0-255 scale (denoise tasks; default 25)")
    what.add_argument("--quality", type=int, help="JPEG quality 1..100 (jpeg tasks; default 10)")
    what.add_argument("--arch", help="network (default ir; python -m sandbox archs --family restoration)")
    what.add_argument("--mixer", help="mixer name or 'name:key=value,...' (python -m sandbox mixers --options)")
    what.add_argument("--preset", help="network preset: tiny, small, paper")
    how = ap.add_argument_group("how")
    how.add_argument("--config", metavar="FILE.yaml", help="YAML mapping of RunConfig fields")
    how.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any RunConfig field, e.g. --set lr=1e-3 --set arch_options={'embed_dim':32}; repeatable; wins over all",
    )
    how.add_argument("--iters", type=int, help="training iterations")
    how.add_argument("--budget-minutes", type=float, help="stop training after this many minutes (evaluation excluded)")
    how.add_argument("--batch-size", type=int)
    how.add_argument("--patch-size", type=int)
    how.add_argument("--lr", type=float)
    how.add_argument("--seed", type=int)
    how.add_argument("--device", help="cpu, cuda, cuda:N (default: CUDA when available; $SANDBOX_DEVICE)")
    how.add_argument(
        "--eval-sets",
        help="benchmark sets of the final evaluation, comma-separated (e.g. Set12,BSD68), or 'all' for the task's\n"
        "benchmarks; default: the task's first benchmark (Set12 for denoise) to keep the default run short",
    )
    how.add_argument("--data-root", help="data folder (default $SANDBOX_DATA; none: the embedded photographs)")
    out = ap.add_argument_group("output")
    out.add_argument("--out", help="parent folder of run directories (default runs)")
    out.add_argument("--name", help="run directory name (default <arch>_<mixer>_<task>_<level>_<time>)")
    out.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last.pth")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    out.add_argument(
        "--engine",
        choices=["sandbox", "basicsr"],
        default="sandbox",
        help="training loop: ours (default) or BasicSR's train_pipeline (its options, logging, EMA and torchrun\n"
        "launcher; writes <out>/<name>/basicsr_options.yml and prints the multi-GPU command). --resume takes the\n"
        "run dir, or 'auto' with --name",
    )
    add_plugin_arg(ap)
    return ap.parse_args(argv)


def overrides_from(args: argparse.Namespace) -> dict:
    """RunConfig overrides in precedence order: --config, then the flags, then --set."""
    from sandbox.config import parse_set
    from sandbox.engine import load_config_file

    overrides = dict(load_config_file(args.config)) if args.config else {}
    for flag, key in FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    if args.eval_sets is not None:
        sets = tuple(s.strip() for s in args.eval_sets.split(",") if s.strip())
        overrides["eval_sets"] = None if sets in ((), ("all",)) else sets
    if args.plugin:
        overrides["plugins"] = tuple(args.plugin)
    sets = parse_set(args.sets)
    if isinstance(overrides.get("arch_options"), dict) and "arch_options" in sets:
        sets["arch_options"] = {**overrides["arch_options"], **sets["arch_options"]}
    overrides.update(sets)
    return overrides


def check_flags_apply(args: argparse.Namespace, config) -> None:
    """--mixer / --preset for a network that takes no such option would be silently ignored: refuse them."""
    from sandbox.errors import OptionError
    from sandbox.registry import ARCHS, parse_spec

    name, _ = parse_spec(config.arch, "network")
    accepted = ARCHS.entry(name).options()
    for flag, key in (("mixer", "--mixer"), ("preset", "--preset")):
        if getattr(args, flag) is not None and flag not in accepted:
            raise OptionError(f"network {name!r} takes no {flag}, so {key} would be ignored; use --arch ir for mixers")


def main(argv=None) -> int:
    args = parse_args(argv)
    import dataclasses

    from sandbox.config import RunConfig, apply_overrides
    from sandbox.engine import read_run_config, train
    from sandbox.plugins import load_plugins

    load_plugins(args.plugin)
    overrides = overrides_from(args)
    if args.engine == "basicsr":
        from sandbox.engine_basicsr import train_basicsr

        config = apply_overrides(RunConfig(), overrides, "run config")
        check_flags_apply(args, config)
        exp_dir = train_basicsr(config, resume=args.resume)
        print(f"BasicSR experiment: {exp_dir}")
        return 0
    if args.resume:
        saved = read_run_config(args.resume)
        config = apply_overrides(saved, overrides, "run config")
        if "plugins" in overrides:  # plugins add up
            config = dataclasses.replace(config, plugins=tuple(dict.fromkeys([*saved.plugins, *args.plugin])))
    else:
        config = apply_overrides(RunConfig(), overrides, "run config")
        if "eval_sets" not in overrides:
            from sandbox.engine import quick_eval_sets

            config = quick_eval_sets(config)
    check_flags_apply(args, config)
    result = train(config, resume=args.resume, progress=not args.no_progress, echo=print)
    if result.stopped == "interrupted":
        return 130
    print(f"\n{(result.run_dir / 'results.md').read_text()}")
    print(f"run directory: {result.run_dir} (per-image results: per_image.csv)")
    return 0


if __name__ == "__main__":
    run_main(main)
