"""Train one network on one task and evaluate it: the sandbox's main job.

    python experiments/run.py                                   # the default run: tiny ir/hco on denoise, CPU-sized
    python experiments/run.py --mixer hyena_pixel --iters 2000 --preset small
    python experiments/run.py --task denoise_color --sigma 50 --mixer "conv:kernel_size=7" --batch-size 16
    python experiments/run.py --config my_run.yaml --set lr=1e-3 --set milestones=[0.5,0.8]
    python experiments/run.py --resume runs/<name>              # continue an interrupted run (same final result)

Settings come from the RunConfig defaults (``sandbox/config.py``, where each field's declaration is also its flag
here and in compare.py and sweep.py, with the help text), then ``--config FILE.yaml``, then the flags, then
``--set key=value`` (any RunConfig field; values are Python literals, else strings). Everything is checked and the
network is built before the run directory ``<out>/<name>`` is created (never overwritten: ``<name>-2``, ...); it
receives ``config.yaml``, ``checkpoints/{last,best}.pth``, ``metrics.jsonl``, ``results.{json,md}``,
``per_image.csv`` (PSNR/SSIM per image, for paired comparisons) and ``crops.png``. Data comes from ``--data-root``
or ``$SANDBOX_DATA``; without either, scikit-image's photographs are used (numbers not comparable to published
tables). With data, the final evaluation of this command defaults to the task's first benchmark (Set12 for denoise),
which keeps the default run short; ``--eval-sets all`` evaluates all of them (the ``RunConfig`` default
``eval_sets=None`` that ``sandbox.engine.train`` uses).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a plain checkout
    sys.path.insert(0, str(ROOT))

from sandbox import enable_huge_pages  # noqa: E402
from sandbox.cli import add_plugin_arg, run_main  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    """The flags: one per RunConfig field declared with ``flag=True`` (``sandbox/config.py``), and the command's own."""
    from sandbox.config import add_config_flags

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_config_flags(ap, defaults={"eval_sets": "the task's first benchmark (Set12 for denoise), to keep a run short"})
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
    how.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from checkpoints/last.pth")
    how.add_argument("--no-progress", action="store_true", help="no progress bars")
    how.add_argument(
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
    """RunConfig overrides in precedence order: --config, then the flags, then --set; --plugin adds plugins."""
    from sandbox.config import command_overrides

    plugins = {"plugins": tuple(args.plugin)} if args.plugin else {}
    return command_overrides(args, args.config, args.sets, extra=plugins)


def check_flags_apply(args: argparse.Namespace, config) -> None:
    """--mixer / --preset for a network that takes no such option would be silently ignored: refuse them."""
    from sandbox.errors import OptionError
    from sandbox.registry import ARCHS, parse_spec

    name, _ = parse_spec(config.arch, "network")
    accepted = ARCHS.entry(name).options()
    for flag, key in (("mixer", "--mixer"), ("preset", "--preset")):
        if getattr(args, flag, None) is not None and flag not in accepted:
            raise OptionError(f"network {name!r} takes no {flag}, so {key} would be ignored; use --arch ir for mixers")


def main(argv=None) -> int:
    enable_huge_pages()  # first: PyTorch reads the setting at its first CPU allocation (sandbox/_alloc.py)
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
