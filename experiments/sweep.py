"""Optuna ablation sweeps over any registered mixer: the seed papers' ablations as ready studies.

    python experiments/sweep.py --study hco_k --trials 7 --iters 300          # vHeat Table 6 on denoising
    python experiments/sweep.py --study mpfb_fusion --trials 10 --budget-minutes 3 --seeds 2
    python experiments/sweep.py --study mixer --trials 20 --sampler tpe --plugin my_mixers.py
    python experiments/sweep.py --study hco_k --trials 7 --workers 2                      # 2 processes, 1 storage
    python experiments/sweep.py --study hco_k --trials 7 --storage postgresql://me@db/optuna   # many machines
    python experiments/sweep.py --study hco_k --report                        # tables and plots of a stored study
    python experiments/sweep.py --study hco_k --report --baseline "learnable k"   # differences to another setting

Studies are YAML files in experiments/sweeps/ (``--study NAME``) or anywhere (``--study path/to/study.yaml``); see
``sandbox/sweep.py`` for the format. Each trial trains ``--seeds`` runs of one setting (3 by default) with
``sandbox.engine.train`` (the same as run.py) and scores their mean PSNR on the task's first benchmark (the embedded
split without data). Seed k gives every setting the same patches, noise draws and initialisation, so the report
compares settings paired on seeds and images.

The run settings every trial shares are RunConfig's flags (``--task``, ``--iters``, ``--lr``, ``--eval-sets``, ...,
declared once in ``sandbox/config.py`` and the same as run.py's and compare.py's), then ``--set key=value``; one that
a study parameter varies is refused. ``--seed`` is the first seed and the sampler's. ``--eval-sets A,B`` evaluates
those sets and scores the first; ``--eval-sets all`` every benchmark of the task (scored on the first).

Pruning: ``--pruner patient`` (default) prunes no trial before ``--prune-warmup`` of its iterations (0.5), and then
only one more than ``--prune-margin`` dB (0.1; at least the resolvable difference: the validation PSNR is on 4 centre
crops) below the median of at least 2 completed trials at the same validation step. ``--pruner median`` is Optuna's
MedianPruner (decides at the first validation, on any difference), ``hyperband`` and ``none`` as in Optuna.

The study lives in a storage: by default ``<out>/study.db`` (SQLite); ``--storage postgresql://...`` or
``mysql://...`` for workers on several machines; ``--storage journal:FILE`` for Optuna's journal file on a shared file
system. Run the same command again to resume: finished trials are kept, and a trial whose worker died (no heartbeat
for ``2 x --heartbeat`` seconds) is failed and retried, its runs resumed from their last checkpoints (RDB storages;
the journal storage has no heartbeats). ``--trials N`` is the number of finished trials the study ends with; a stored
study refuses to resume with another study file, ``--seeds``, ``--seed`` or training options (``--report`` reads it
whatever ``--seeds`` says).

Outputs in ``--out`` (default outputs/sweeps/<study> in the working directory): ablation.md, one row per setting:
``PSNR mean ± 95% CI`` (across the seeds), ``Δ vs <baseline> [95% CI]`` (paired on seeds and images, ``*``:
resolved; ``--baseline``, default the first setting of the study file), ``p (Holm)``, ``rank`` (settings that share
a rank are not resolved from each other), SSIM, params, iterations, training minutes, pruned/failed trials, and
under it the design's resolution (seed and image spread, the smallest resolvable difference, the seeds needed for
0.05 and 0.1 dB); ablation.csv (the same, machine-readable); forest.png (each difference with its interval);
trials.csv; history.png/.html; importance.png/.html; and runs/ (one run directory per seed, each with its
per_image.csv). Runs without per_image.csv (older studies) give mean ± std over the seeds instead, with a note.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a plain checkout
    sys.path.insert(0, str(ROOT))

from sandbox import enable_huge_pages  # noqa: E402
from sandbox.cli import add_plugin_arg, add_set_flag, run_main  # noqa: E402

STUDY_DIR = ROOT / "experiments" / "sweeps"
# RunConfig fields the sweep sets per trial run (the reason is the error for --set / a study file naming one); their
# flags are the sweep's own (--seed: the first seed, and the sampler's) or absent
RESERVED = {"seed": "use --seed", "name": "trial runs are named by the sweep"}
NO_FLAG = ("name", "out")  # --out is the sweep's output folder


def parse_args(argv=None) -> argparse.Namespace:
    from sandbox.config import add_config_flags

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--study", required=True, help="study name (experiments/sweeps/NAME.yaml) or a .yaml path")
    ap.add_argument("--trials", type=int, default=None, help="finished trials the study ends with (default 8)")
    ap.add_argument(
        "--seeds",
        type=int,
        default=3,
        help="runs per trial, seeds SEED, SEED+1, ... (default 3: a 95%% interval across seeds for every setting)",
    )
    # the run settings of every trial; --seed is the first seed and the sampler's
    add_config_flags(ap, exclude=NO_FLAG, defaults={"eval_sets": "the task's first benchmark"})
    ap.add_argument("--sampler", default=None, help="tpe, grid or random (default: grid for finite spaces, else tpe)")
    ap.add_argument(
        "--pruner",
        default="patient",
        help="patient (default: a median rule with a warm-up and a margin), median (Optuna's MedianPruner: any\n"
        "difference at any validation), hyperband or none",
    )
    ap.add_argument(
        "--prune-warmup",
        type=float,
        default=0.5,
        help="patient: no pruning before this share of a run's iterations (default 0.5)",
    )
    ap.add_argument(
        "--prune-margin",
        type=float,
        default=0.1,
        help="patient: prune only a trial this many dB below the median of the completed trials at the same\n"
        "validation step; at least the resolvable difference (the validation PSNR is on 4 centre crops) (default 0.1)",
    )
    ap.add_argument(
        "--baseline",
        default=None,
        metavar="SETTING",
        help="the setting ablation.md's differences are taken to (default: the first in the study file)",
    )
    ap.add_argument(
        "--storage",
        default=None,
        help="sqlite:///FILE (default <out>/study.db), postgresql://..., mysql://..., journal:FILE",
    )
    ap.add_argument("--study-name", default=None, help="name of the study in the storage (default: the study's)")
    ap.add_argument("--workers", type=int, default=1, help="worker processes on this machine, one storage (default 1)")
    ap.add_argument(
        "--heartbeat",
        type=int,
        default=60,
        help="seconds between heartbeats of a running trial; a trial silent for twice this is retried (default 60)",
    )
    ap.add_argument("--max-retry", type=int, default=2, help="retries of a trial whose worker died (default 2)")
    add_set_flag(ap, "trial")
    add_plugin_arg(ap)
    ap.add_argument("--out", default=None, help="output folder (default outputs/sweeps/<study name>)")
    ap.add_argument("--report", action="store_true", help="only write the tables and plots of the stored study")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument("--worker-tag", default="", help=argparse.SUPPRESS)  # set for the processes of --workers
    return ap.parse_args(argv)


def options_from(args: argparse.Namespace):
    """(StudySpec, SweepOptions) of the command line; everything is checked before anything is written."""
    from sandbox.plugins import load_plugins, plugin_path
    from sandbox.registry import list_mixers
    from sandbox.sweep import (
        SweepOptions,
        _pruner,
        _sampler,
        check_baseline,
        check_overrides,
        load_study_spec,
        storage_url,
    )

    check_counts(args)
    plugins = [plugin_path(p) for p in args.plugin]
    load_plugins(plugins)
    spec = load_study_spec(args.study, STUDY_DIR, mixer_names=list_mixers())
    overrides = trial_overrides(args, plugins)
    check_overrides(overrides, "command line")
    preflight(spec, overrides)
    seed = getattr(args, "seed", 0)
    _sampler(args.sampler, spec, seed)  # names checked before anything is written
    _pruner(args.pruner, args.prune_warmup, args.prune_margin)
    check_baseline(spec, args.baseline)  # finite studies: the grid's labels; others are checked by the report
    out = Path(args.out or Path("outputs") / "sweeps" / (args.study_name or spec.name)).resolve()  # under the cwd
    storage_url(args.storage, out)
    opts = SweepOptions(
        study=args.study,
        trials=args.trials or 8,
        out=out,
        storage=args.storage,
        study_name=args.study_name,
        seeds=args.seeds,
        seed=seed,
        sampler=args.sampler,
        pruner=args.pruner,
        prune_warmup=args.prune_warmup,
        prune_margin=args.prune_margin,
        baseline=args.baseline,
        heartbeat=args.heartbeat,
        max_retry=args.max_retry,
        overrides=overrides,
        progress=not args.no_progress and args.workers == 1,
        worker=args.worker_tag,
    )
    return spec, opts


def check_counts(args: argparse.Namespace) -> None:
    """One-line errors for counts below their minimum and for a training length given twice."""
    from sandbox.errors import OptionError

    for flag, value, low in (
        ("--trials", args.trials, 1),
        ("--seeds", args.seeds, 1),
        ("--workers", args.workers, 1),
        ("--heartbeat", args.heartbeat, 1),
        ("--max-retry", args.max_retry, 0),
    ):
        if value is not None and value < low:
            raise OptionError(f"{flag} {value} is not valid; expected an integer >= {low}")
    if hasattr(args, "iters") and hasattr(args, "budget_minutes"):
        raise OptionError("--iters and --budget-minutes exclude each other in a sweep; give one")
    budget = getattr(args, "budget_minutes", None)
    if budget is not None and not budget > 0:
        raise OptionError(f"--budget-minutes {budget:g} is not valid; expected a positive number")


def trial_overrides(args: argparse.Namespace, plugins: list[str]) -> dict:
    """The RunConfig overrides every trial shares: the flags, then --set (:func:`sandbox.config.command_overrides`);
    a budget ends each run (iters unbounded), the data root checked and absolute, ``--eval-sets all`` every
    benchmark of the task (unset, a trial evaluates the first one)."""
    from sandbox.config import command_overrides
    from sandbox.data import data_root

    overrides = command_overrides(args, sets=args.set, reserved=RESERVED)
    if overrides.get("budget_minutes") is not None:
        overrides["iters"] = 10**9  # the budget ends each run (and its learning-rate schedule)
    if overrides.get("data_root") is not None:
        overrides["data_root"] = str(data_root(overrides["data_root"]))
    if plugins:
        overrides["plugins"] = tuple(plugins)
    if "eval_sets" in overrides and overrides["eval_sets"] is None:
        overrides["eval_sets"] = all_benchmarks(overrides)
    return overrides


def all_benchmarks(overrides: dict) -> tuple[str, ...] | None:
    """Every benchmark of the task of ``overrides`` as an explicit list (a trial's ``eval_sets=None`` would mean the
    first one only); None without data (the embedded eval split)."""
    from sandbox.data import data_root
    from sandbox.engine import build_task_from
    from sandbox.sweep import check_overrides

    cfg = check_overrides(overrides, "command line")
    if data_root(cfg.data_root) is None:
        return None
    return tuple(build_task_from(cfg).benchmarks) or None


def preflight(spec, overrides: dict) -> None:
    """Check what every trial shares (task, network name, training options) on the first setting, so that a mistake
    on the command line is one error line before the study starts, not a failed trial per setting."""
    from sandbox.engine import build_task_from, check_config
    from sandbox.sweep import _merged, check_overrides

    check_not_varied(spec, overrides)
    first = spec.grid()[0] if spec.finite else {p.name: p.choices[0] if p.choices else p.low for p in spec.params}
    cfg = check_overrides(_merged(spec.overrides(first), overrides), f"{spec.path.name} ({spec.label(first)})")
    check_config(cfg)
    build_task_from(cfg)


def check_not_varied(spec, overrides: dict) -> None:
    """A command-line setting would override what a study parameter varies (``--mixer conv`` on a study of mixers:
    every trial the same network): refuse it in one line naming the flag and the parameter."""
    from sandbox.config import flag_fields, flag_of
    from sandbox.errors import OptionError

    varied: dict[str, str] = {}  # dotted RunConfig key -> the parameter that sets it
    for p in spec.params:
        keys = [k for overrides_ in p.settings.values() for k in _dotted_keys(overrides_)] if p.settings else [p.key]
        varied.update({k: p.name for k in keys if k and k not in varied})
    flags = {f.name for f in flag_fields()}
    for key in _dotted_keys(overrides):
        if key in varied and key != "plugins":
            given = f"{flag_of(key)} or --set {key}=..." if key in flags else f"--set {key}=..."
            raise OptionError(
                f"the command line sets {key} ({given}), which study parameter {varied[key]!r} varies; drop it, or "
                "sweep a study file without that parameter"
            )


def _dotted_keys(overrides: dict) -> list[str]:
    """The RunConfig keys an override mapping sets, ``arch_options`` by option (``arch_options.embed_dim``)."""
    keys = []
    for k, v in overrides.items():
        keys += [f"{k}.{o}" for o in v] if k == "arch_options" and isinstance(v, dict) else [k]
    return keys


def _spawn_workers(argv: list[str], k: int) -> int:
    """Run ``k`` copies of this command with ``--workers 1``, each with ``cores // k`` threads; return the worst exit
    code."""
    threads = str(max(1, (os.cpu_count() or 1) // k))
    base = [a for a in argv]
    if "--workers" in base:
        i = base.index("--workers")
        del base[i : i + 2]
    base = [a for a in base if not a.startswith("--workers=")]
    procs = []
    for i in range(k):
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            *base,
            "--workers",
            "1",
            "--no-progress",
            "--worker-tag",
            f"[worker {i}] ",
        ]
        procs.append(subprocess.Popen(cmd, env=env))
    codes = [p.wait() for p in procs]
    return max(codes, key=abs)


def main(argv=None) -> int:
    enable_huge_pages()  # first: PyTorch reads the setting at its first CPU allocation (sandbox/_alloc.py)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from sandbox.sweep import dashboard_command, prepare_study, run_worker, study_counts, write_reports

    spec, opts = options_from(args)
    if args.report:
        study, url = prepare_study(spec, opts, report=True)
    else:
        study, url = prepare_study(spec, opts)  # created (and its grid enqueued) once, before any worker starts
        c = study_counts(study)
        print(
            f"study {study.study_name!r} ({spec.path.name}): {c['done']} of {opts.trials} trials finished; "
            f"storage {url if url.startswith(('sqlite', 'journal')) else 'given by --storage'}; out {opts.out}"
        )
        if args.workers > 1:
            code = _spawn_workers(argv, args.workers)
            if code:
                print(f"a worker exited with code {code}; run the same command again to resume", file=sys.stderr)
        else:
            run_worker(spec, opts)
    if args.worker_tag:
        return 0  # the parent writes the reports
    study, url = prepare_study(spec, opts, report=True)
    paths = write_reports(study, spec, opts.out, url, baseline=opts.baseline)
    print()
    print((opts.out / "ablation.md").read_text())
    for key, path in paths.items():
        print(f"{key}: {path}")
    print(f"dashboard: {dashboard_command(url)}")
    return 0


if __name__ == "__main__":
    run_main(main)
