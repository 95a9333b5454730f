"""Compare token mixers under identical training: same seed, data, budget and network; only the mixer differs.

    python experiments/compare.py --mixers hco,attention_window,hyena_pixel,mpfb,conv --task denoise --budget-minutes 5
    python experiments/compare.py --mixers "hco;conv:kernel_size=5" --preset tiny --iters 500
    python experiments/compare.py --mixer hco:k_mode=fixed,k=0.5 --mixer conv --set arch_options.embed_dim=32
    python experiments/compare.py --mixers hco,my_mixer --plugin my_pkg/my_mixers.py
    python experiments/compare.py --resume outputs/compare/denoise_20260101-120000

Every mixer is trained ``--seeds`` times (seeds ``seed``, ``seed + 1``, ...; default 3) by ``sandbox.engine.train``
with one RunConfig that differs only in ``mixer`` and ``seed`` (arch ``ir`` with the same preset, width and depths; same
data, iterations and wall-clock budget). Seed k gives every mixer the same training patches, noise draws and shared
initialisation, so the mixers are compared paired, seed by seed and image by image; the runs go seed by seed (every
mixer at seed 0 first), so an interrupted comparison already holds complete pairs. Every mixer spec is
checked (its network is built) before anything is trained or written. Writes under ``--out`` (default
``outputs/compare/<task>_<timestamp>`` in the working directory; an existing folder is never overwritten):

- ``leaderboard.md`` / ``leaderboard.csv``: one row per mixer, best first by the first evaluation set's mean PSNR
  over ``--seeds`` runs, per evaluation set: the mean with its 95% interval across seeds, the difference to the
  ``--baseline`` mixer paired on the same seeds and images with its 95% interval, the Holm-corrected p-value, the rank
  group (mixers share a rank until one is resolved from the group's leader), SSIM; then parameters, MACs per
  megapixel, training it/s, iterations. Under each table: what the design can resolve and how many seeds would
  resolve 0.05 and 0.1 dB (``sandbox.stats``). ``runs.csv``: one row per run (mixer, seed);
- ``forest.png`` (``forest_<set>.png`` for further sets): each mixer's difference to the baseline with its interval;
- ``psnr_vs_time.png``, ``psnr_vs_iters.png``: validation PSNR against training time and iterations;
- ``psnr_vs_params.png``: final PSNR against parameters;
- ``crops_grid.png``: one crop of the first evaluation image, clean, degraded and restored by each mixer's best
  checkpoint (re-run here, so the crop is identical for every mixer);
- ``runs/<i>_<mixer>[_seed<k>]/``: the run directories, each with its ``per_image.csv`` and its restored crop
  (``crop_*.png``, kept when the run finishes so the grid rebuilds without checkpoints); ``state.json``: progress,
  rewritten after each run, read by ``--resume OUT`` (finished runs are skipped, an interrupted one is resumed from
  its ``last.pth``; a finished comparison only rebuilds its report, e.g. with another ``--baseline``).

The run settings are RunConfig's: its flags (``--task``, ``--iters``, ``--lr``, ``--eval-sets``, ... as run.py's,
from one declaration in ``sandbox/config.py``), ``--config FILE.yaml`` and ``--set key=value``, in the order
``--config``, flags, ``--set``; ``mixer``, ``name`` and ``out`` are set per run by compare.py. ``--eval-sets``
not given: every benchmark of the task.

A mixer whose training diverges (nan/inf) is listed without scores and the others still run; Ctrl-C stops the
current run at a checkpoint (exit code 130) and ``--resume OUT`` continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a plain checkout
    sys.path.insert(0, str(ROOT))

from sandbox import enable_huge_pages  # noqa: E402
from sandbox.cli import add_plugin_arg, add_set_flag, run_main, split_specs, stamped_dir  # noqa: E402
from sandbox.plugins import plugin_path  # noqa: E402
from sandbox.utils import slug  # noqa: E402

STATE_VERSION = 2  # 2: one entry per (mixer, seed); version 1 files (one seed) are still read
DEFAULT_SEEDS = 3
RESERVED_KEYS = ("mixer", "name", "out")  # set by compare.py per run
RESERVED_WHY = "compare.py sets mixer, name and out for each run itself (use --mixers / --out)"
# the flags of compare.py itself that define a comparison; --resume takes them (and the RunConfig flags) from
# OUT/state.json instead
SETTING_FLAGS = {
    "mixers": "--mixers",
    "mixer": "--mixer",
    "seeds": "--seeds",
    "set": "--set",
    "config": "--config",
    "out": "--out",
}
RESUME_MAY_CHANGE = ("device", "data_root")  # RunConfig flags that --resume accepts (the data may have moved)


def parse_args(argv=None) -> argparse.Namespace:
    from sandbox.config import add_config_flags

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    what = ap.add_argument_group("what to compare")
    what.add_argument(
        "--mixers",
        action="append",
        default=[],
        metavar="LIST",
        help="mixer specs separated by commas ('hco,conv,attention_window'), or by ';' when a spec has options\n"
        "('hco:k_mode=fixed,k=0.5;conv:kernel_size=5'); repeatable",
    )
    what.add_argument("--mixer", action="append", default=[], metavar="SPEC", help="one mixer spec; repeatable")
    what.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"runs per mixer, seeds seed .. seed + N - 1 (default {DEFAULT_SEEDS}); 1 gives no intervals",
    )
    add_config_flags(ap, exclude=RESERVED_KEYS)  # the run settings, identical for every mixer
    how = ap.add_argument_group("how")
    how.add_argument(
        "--config", metavar="FILE.yaml", help="YAML mapping of RunConfig fields, as run.py's (flags and --set win)"
    )
    add_set_flag(how, "run")
    add_plugin_arg(ap)
    ap.add_argument(
        "--out",
        default=None,
        help="output folder (default outputs/compare/<task>_<timestamp> in the working directory)",
    )
    ap.add_argument("--resume", default=None, metavar="OUT_DIR", help="continue an unfinished comparison")
    ap.add_argument(
        "--baseline", default=None, metavar="MIXER", help="the mixer the differences are taken to (default: the first)"
    )
    ap.add_argument("--crop", type=int, default=96, help="side of the crop in crops_grid.png (default 96)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="mixers trained at once, each in its own process (default 1). On CPU each gets cores/JOBS threads;\n"
        "on CUDA job j uses GPU j mod the number of GPUs. Logs: OUT/runs/<name>.log",
    )
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)  # a --jobs child: train this run name, no report
    return ap.parse_args(argv)


# ------------------------------------------------------------------------------------------------------ parsing
def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set key=value`` items as RunConfig overrides (:func:`sandbox.config.parse_set`; mixer, name and out are
    set by compare.py per run)."""
    from sandbox.config import parse_set as _parse_set

    return _parse_set(items, dict.fromkeys(RESERVED_KEYS, RESERVED_WHY))


# ------------------------------------------------------------------------------------------------- configuration
def base_config(args: argparse.Namespace):
    """The RunConfig every run shares (mixer, name and out are set per run): the defaults, then --config, then the
    flags, then --set (:func:`sandbox.config.command_overrides`); the data root checked and absolute."""
    from sandbox.config import RunConfig, apply_overrides, command_overrides
    from sandbox.data import data_root

    overrides = command_overrides(args, args.config, args.set, dict.fromkeys(RESERVED_KEYS, RESERVED_WHY))
    if overrides.get("data_root") is not None:
        overrides["data_root"] = str(data_root(overrides["data_root"]))  # checked, absolute
    cfg = apply_overrides(RunConfig(), overrides, "run config")
    plugins = tuple(dict.fromkeys(plugin_path(p) for p in [*cfg.plugins, *args.plugin]))
    return dataclasses.replace(cfg, plugins=plugins)


def check_mixer_names(specs: list[str]) -> None:
    """Raise a one-line SandboxError unless there are specs, none twice, each naming a registered mixer."""
    from sandbox.errors import OptionError
    from sandbox.registry import MIXERS, parse_spec

    if not specs:
        raise OptionError("no mixers given: pass --mixers hco,conv,... (or --mixer SPEC, repeatable)")
    seen = set()
    for spec in specs:
        if spec in seen:
            raise OptionError(f"mixer {spec!r} is given twice")
        seen.add(spec)
        MIXERS.entry(parse_spec(spec, "mixer")[0])  # unknown: one line with suggestions


def check_runs(configs: list, task) -> None:
    """Raise a one-line SandboxError unless every run's config is valid and its network builds (nothing trained)."""
    from sandbox.engine import build_network, check_config
    from sandbox.errors import OptionError, SandboxError
    from sandbox.registry import ARCHS, parse_spec

    arch_name = parse_spec(configs[0].arch, "network")[0]
    if "mixer" not in ARCHS.entry(arch_name).options():
        raise OptionError(f"network {arch_name!r} takes no mixer; compare mixers with a network such as 'ir'")
    if "mixer" in configs[0].arch_options or "mixer" in parse_spec(configs[0].arch, "network")[1]:
        raise OptionError("the network options set 'mixer'; compare.py sets the mixer of each run itself")
    for cfg in configs:
        try:
            check_config(cfg)
            net = build_network(cfg, task)
        except SandboxError as e:
            raise type(e)(f"mixer {cfg.mixer!r}: {e}") from None
        except Exception as e:  # a plugin's constructor failing in its own way
            raise SandboxError(f"mixer {cfg.mixer!r} does not build: {type(e).__name__}: {e}") from e
        del net


# --------------------------------------------------------------------------------------------------------- state
def _write_state(out: Path, state: dict) -> None:
    from sandbox.report import write_json

    if state.get("_child"):  # a --jobs child: the parent owns state.json; the child writes runs/<name>.entry.json
        entry = next(m for m in state["mixers"] if m["name"] == state["_child"])
        write_json(out / "runs" / f"{state['_child']}.entry.json", entry)
        return
    state["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
    write_json(out / "state.json", state)


def _load_state(out: Path) -> dict:
    from sandbox.errors import SandboxError

    path = out / "state.json"
    if not path.is_file():
        raise SandboxError(f"--resume {str(out)!r}: no state.json there (not a compare.py output folder?)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SandboxError(f"--resume: {str(path)!r} could not be read: {e}") from None
    if state.get("version") not in (1, STATE_VERSION) or not isinstance(state.get("mixers"), list):
        raise SandboxError(f"--resume: {str(path)!r} is not a state file of this compare.py (version {STATE_VERSION})")
    return state


def _default_out(task) -> Path:
    """``outputs/compare/<task>_<timestamp>`` under the working directory."""
    return stamped_dir(Path("outputs") / "compare", task.name)


def _resumable(run_dir: Path) -> bool:
    """Whether the engine can resume ``run_dir`` (it needs checkpoints/last.pth)."""
    return (run_dir / "checkpoints" / "last.pth").is_file()


def _finished_record(run_dir: Path) -> dict | None:
    """The engine's ``results.json`` of a run that finished (e.g. before a crash could update state.json)."""
    try:
        record = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("final") and record.get("stopped") else None


def _set_aside(run_dir: Path) -> Path:
    """Move a run dir that cannot be resumed out of the way (never deleted), so a fresh run can take its name."""
    i = 1
    while (target := run_dir.with_name(f"{run_dir.name}.incomplete{i}")).exists():
        i += 1
    shutil.move(str(run_dir), str(target))
    return target


def _interrupted(stopped: Any) -> bool:
    text = str(stopped or "").lower()
    return text.startswith("interrupt") or text in ("sigint", "sigterm", "signal", "killed")


# ---------------------------------------------------------------------------------------------------------- main
@dataclass
class Comparison:
    """What one compare.py command compares, from the flags or from ``OUT/state.json`` with ``--resume``."""

    specs: list[str]  # the mixer specs, in the order given
    seeds: list[int]
    baseline: str | None
    base: Any  # the RunConfig every run shares (mixer, name and out are set per run)
    out: Path | None  # None: not chosen yet (the default needs the task)
    state: dict | None  # None: a new comparison (state.json is written once everything checked out)
    task: Any = None
    root: Path | None = None  # the data root (None: the embedded images)
    device: Any = None
    plan: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)  # (spec, seed, run name) in run order
    configs: list = dataclasses.field(default_factory=list)  # the RunConfig of each run of ``plan``


def main(argv=None) -> int:
    enable_huge_pages()  # first: PyTorch reads the setting at its first CPU allocation (sandbox/_alloc.py)
    args = parse_args(argv)
    check_args(args)
    cmp = resumed_comparison(args) if args.resume else new_comparison(args)
    check_setting(cmp)
    plan_runs(cmp, args)
    if cmp.state is None:  # the output folder: created only now that everything checked out
        cmp.state = new_state(cmp, argv)
    print_header(cmp)
    if args.only:
        choose_child_run(cmp, args.only)
    elif args.jobs > 1:
        code = _run_jobs(args, cmp.out, cmp.state, cmp.device)
        if code:
            return code
    code = train_runs(cmp, args)
    if code or args.only:
        return code  # interrupted, or a --jobs child (the parent writes the report)
    write_report(cmp.out, cmp.state, cmp.base, cmp.task, cmp.root, cmp.device, cmp.baseline, crop=args.crop)
    return 0


def check_args(args: argparse.Namespace) -> None:
    """One-line errors for the command's own flags; with --resume, none of the flags that define a comparison."""
    from sandbox.config import flag_fields, flag_of
    from sandbox.errors import OptionError

    if args.crop < 8:
        raise OptionError(f"--crop {args.crop} is too small; expected at least 8 pixels")
    if args.jobs < 1:
        raise OptionError(f"--jobs {args.jobs} is not allowed; expected at least 1 (mixers trained at once)")
    if args.seeds is not None and args.seeds < 1:
        raise OptionError(f"--seeds {args.seeds} is not allowed; expected at least 1 (runs per mixer)")
    if args.only and not args.resume:
        raise OptionError("--only is for the processes --jobs starts; it needs --resume OUT")
    if args.resume:
        given = [flag for key, flag in SETTING_FLAGS.items() if getattr(args, key) not in (None, [])]
        given += [flag_of(f.name) for f in flag_fields(RESERVED_KEYS + RESUME_MAY_CHANGE) if hasattr(args, f.name)]
        if given:
            raise OptionError(
                f"--resume takes the comparison's settings from its state.json; drop {', '.join(given)} "
                "(only --device, --data-root, --plugin, --baseline, --crop and --no-progress may change)"
            )


def new_comparison(args: argparse.Namespace) -> Comparison:
    """The comparison the flags describe: the mixers, the shared RunConfig, the seeds and the baseline."""
    specs = [s for item in args.mixers for s in split_specs(item)] + [s.strip() for s in args.mixer if s.strip()]
    base = base_config(args)
    seeds = [base.seed + k for k in range(args.seeds or DEFAULT_SEEDS)]
    baseline = args.baseline or (specs[0] if specs else None)
    out = Path(args.out) if args.out else None
    return Comparison(specs, seeds, baseline, base, out, state=None)


def resumed_comparison(args: argparse.Namespace) -> Comparison:
    """The comparison of ``--resume OUT``, from its state.json (``--device``, ``--data-root`` and ``--plugin`` may
    change; the runs are still paired only on identical degraded inputs, which the report checks image by image)."""
    from sandbox.config import RunConfig, apply_overrides
    from sandbox.data import data_root

    out = Path(args.resume)
    state = _load_state(out)
    base = apply_overrides(RunConfig(), state["base_config"], "run config (state.json)")
    plugins = tuple(dict.fromkeys([*base.plugins, *(plugin_path(p) for p in args.plugin)]))
    base = dataclasses.replace(base, plugins=plugins, device=getattr(args, "device", None) or base.device)
    if getattr(args, "data_root", None):  # the data moved (another machine): record where, for the --jobs children
        state["base_config"]["data_root"] = str(data_root(args.data_root))
        base = dataclasses.replace(base, data_root=state["base_config"]["data_root"])
        _write_state(out, state)
    for m in state["mixers"]:
        m.setdefault("seed", base.seed)  # a version 1 state: one seed
    specs = list(dict.fromkeys(m["spec"] for m in state["mixers"]))
    seeds = list(dict.fromkeys(m["seed"] for m in state["mixers"]))
    baseline = args.baseline or state.get("baseline") or specs[0]
    return Comparison(specs, seeds, baseline, base, out, state)


def check_setting(cmp: Comparison) -> None:
    """Check the mixers, the baseline, the task, the data and the device (filling ``task``, ``root``, ``device``);
    a data root from $SANDBOX_DATA is pinned in the base config, so --resume reads the same data."""
    from sandbox.data import data_root, list_images
    from sandbox.engine import build_task_from
    from sandbox.errors import OptionError
    from sandbox.plugins import load_plugins
    from sandbox.utils import resolve_device

    load_plugins(list(cmp.base.plugins))
    check_mixer_names(cmp.specs)
    if cmp.baseline not in cmp.specs:
        compared = ", ".join(map(repr, cmp.specs))
        raise OptionError(f"--baseline {cmp.baseline!r} is not one of the mixers compared: {compared}")
    cmp.task = build_task_from(cmp.base)
    cmp.root = data_root(cmp.base.data_root)
    if cmp.root is not None and cmp.base.data_root is None:
        cmp.base = dataclasses.replace(cmp.base, data_root=str(cmp.root))
    if cmp.root is None and (cmp.base.eval_sets or cmp.base.train_sets):
        raise OptionError(
            "eval_sets/train_sets name benchmark sets, which need a data root (--data-root or SANDBOX_DATA); "
            "without one the embedded default is used: leave them unset"
        )
    if cmp.root is not None:
        for s in cmp.base.eval_sets or cmp.task.benchmarks:
            list_images(s, cmp.root)  # one-line error for a missing or empty set
    cmp.device = resolve_device(cmp.base.device)


def plan_runs(cmp: Comparison, args: argparse.Namespace) -> None:
    """The output folder (a new one must not exist or be empty), the runs in order and their configs; every
    network is built once here, so nothing is trained or written before a mistake is reported."""
    from sandbox.errors import OptionError

    if cmp.state is not None:
        cmp.plan = [(m["spec"], m["seed"], m["name"]) for m in cmp.state["mixers"]]
    else:
        if cmp.out is not None and cmp.out.exists() and (not cmp.out.is_dir() or any(cmp.out.iterdir())):
            raise OptionError(
                f"--out {str(cmp.out)!r} already exists and is not empty; it is never overwritten "
                f"(continue it with --resume {cmp.out}, or choose another --out)"
            )
        cmp.out = cmp.out or _default_out(cmp.task)
        # seed by seed: every mixer at the first seed, then the next seed, so that finished runs come in pairs
        n = len(cmp.seeds)
        cmp.plan = [(sp, seed, _run_name(i, sp, seed, n)) for seed in cmp.seeds for i, sp in enumerate(cmp.specs, 1)]
    runs = str(cmp.out / "runs")
    cmp.configs = [dataclasses.replace(cmp.base, mixer=sp, seed=seed, out=runs, name=nm) for sp, seed, nm in cmp.plan]
    check_runs(cmp.configs[: len(cmp.specs)], cmp.task)


def new_state(cmp: Comparison, argv) -> dict:
    """Create the output folder and its state.json: every (mixer, seed) pending."""
    from sandbox.config import config_dict

    cmp.out.mkdir(parents=True, exist_ok=True)
    base_dict = config_dict(cmp.base)
    state = {
        "version": STATE_VERSION,
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "argv": list(sys.argv[1:] if argv is None else argv),
        "task": cmp.task.describe(),
        "base_config": {k: v for k, v in base_dict.items() if k not in RESERVED_KEYS},
        "seeds": cmp.seeds,
        "baseline": cmp.baseline,
        "mixers": [
            {"spec": sp, "seed": seed, "name": nm, "status": "pending", "result": None} for sp, seed, nm in cmp.plan
        ],
    }
    _write_state(cmp.out, state)
    return state


def print_header(cmp: Comparison) -> None:
    base = cmp.base
    budget = f"{base.budget_minutes:g} min per run" if base.budget_minutes is not None else "none"
    print(
        f"comparing {len(cmp.specs)} mixer(s) x {len(cmp.seeds)} seed(s) ({', '.join(map(str, cmp.seeds))}) on "
        f"{cmp.task.name} {cmp.task.level}: arch {base.arch}, preset {base.preset}, iters {base.iters}, "
        f"budget {budget}, device {cmp.device}\noutput: {cmp.out}"
    )


def choose_child_run(cmp: Comparison, name: str) -> None:
    """A --jobs child trains the one run ``name`` and writes only its own state entry."""
    from sandbox.errors import OptionError

    names = [nm for _, _, nm in cmp.plan]
    if name not in names:
        raise OptionError(f"--only {name!r} is not a run of {cmp.out}; expected one of {', '.join(names)}")
    cmp.state["_child"] = name


def train_runs(cmp: Comparison, args: argparse.Namespace) -> int:
    """Train each (mixer, seed) in turn, skipping finished ones; 130 when a run was interrupted, else 0."""
    n = len(cmp.state["mixers"])
    for i, (entry, cfg) in enumerate(zip(cmp.state["mixers"], cmp.configs), 1):
        what = f"{entry['spec']} (seed {entry['seed']})"
        if args.only and entry["name"] != args.only:
            continue
        if entry["status"] in ("finished", "diverged") and entry.get("result"):
            print(f"[{i}/{n}] {what}: {entry['status']} earlier, skipped")
            continue
        record = train_one(cmp, args, entry, cfg, f"[{i}/{n}] {what}")
        if record is None:  # diverged: recorded without scores
            continue
        record["label"] = entry["spec"]
        entry["result"] = record
        if _interrupted(record.get("stopped")):
            entry["status"] = "interrupted"
            _write_state(cmp.out, cmp.state)
            print(_stopped_hint(what, cmp.out, f"was interrupted at iteration {record.get('step')}"), file=sys.stderr)
            return 130
        entry["status"] = "finished"
        _write_state(cmp.out, cmp.state)
        keep_crop(cmp, record, args.crop)
        first = next(iter(record["final"].items()), None)
        score = f"PSNR {first[1].get('psnr', float('nan')):.2f} dB on {first[0]}, " if first else ""
        print(f"[{i}/{n}] {what}: {score}{record.get('step')} iterations (stopped: {record.get('stopped')})")
    return 0


def keep_crop(cmp: Comparison, record: dict, crop: int) -> None:
    """Restore the crop grid's window with a finished run's best checkpoint and keep it in the run directory
    (:func:`sandbox.report.restored_crops`), so the grid rebuilds once the checkpoints are gone."""
    from sandbox.report import restored_crops

    if record.get("final"):
        restored_crops([record], cmp.task, cmp.root, cmp.base.eval_sets, cmp.device, crop=crop)


def train_one(cmp: Comparison, args: argparse.Namespace, entry: dict, cfg, prefix: str) -> dict | None:
    """The result record of one run: read back when its run directory finished earlier, else trained (resumed from
    its last.pth when there is one); None when training diverged (the entry is then marked so)."""
    import sandbox.engine as engine
    from sandbox.config import config_dict
    from sandbox.report import result_record

    run_dir = cmp.out / "runs" / entry["name"]
    done = _finished_record(run_dir) if run_dir.exists() else None
    if done is not None and done.get("stopped") != "interrupted":
        print(f"{prefix}: {run_dir} finished earlier (results.json), not trained again")
        return result_record(done)
    resume = None
    if run_dir.exists():
        if _resumable(run_dir):
            resume = run_dir
        else:
            moved = _set_aside(run_dir)
            print(f"{prefix}: {run_dir} has no checkpoint to resume; moved to {moved.name}")
    entry["status"] = "running"
    _write_state(cmp.out, cmp.state)
    print(f"\n{prefix}: {'resuming ' + str(run_dir) if resume else 'training'}", flush=True)
    what = f"{entry['spec']} (seed {entry['seed']})"
    try:
        return result_record(engine.train(cfg, resume=resume, progress=not args.no_progress))
    except engine.TrainingDiverged as e:
        print(f"{prefix}: diverged: {e}", file=sys.stderr)
        record = {"config": config_dict(cfg), "stopped": "nan", "run_dir": str(run_dir), "note": str(e)}
        entry.update(status="diverged", result=result_record(record))
        entry["result"]["label"] = entry["spec"]
        _write_state(cmp.out, cmp.state)
        return None
    except BaseException:
        print(_stopped_hint(what, cmp.out), file=sys.stderr)
        raise


def _run_name(i: int, spec: str, seed: int, n_seeds: int) -> str:
    """``<i>_<mixer>`` for one seed (as version 1 named them), ``<i>_<mixer>_seed<k>`` for several."""
    return f"{i:02d}_{slug(spec, max_len=60, empty='mixer')}" + (f"_seed{seed}" if n_seeds > 1 else "")


def write_report(out: Path, state: dict, base, task, root, device, baseline: str, crop: int = 96) -> None:
    """The leaderboard (one table per evaluation set, with intervals), ``runs.csv``, the plots and the crop grid,
    rebuilt from ``state.json``'s records and the runs' ``per_image.csv`` files alone."""
    from sandbox.data import EMBEDDED_NOTE
    from sandbox.report import (
        crops_grid,
        leaderboard_rows,
        plot_curves,
        plot_params,
        restored_crops,
        setting_markdown,
        setting_rows,
        write_leaderboard,
        write_setting_csv,
        write_text,
    )
    from sandbox.stats import compare, forest_plot, runs_table

    runs = out / "runs"
    records = []
    for m in state["mixers"]:
        if m["status"] in ("finished", "diverged") and m.get("result"):
            record, moved = m["result"], runs / m["name"]
            if not Path(str(record.get("run_dir") or "")).exists() and moved.exists():
                record["run_dir"] = str(moved)  # the output folder was moved since
            record["seed"] = m.get("seed", base.seed)
            records.append(record)
    # per evaluation set: the runs' per-image results, paired by (mixer, seed)
    groups: dict[str, dict[int, Path]] = {}
    missing = []
    for r in records:
        if not r.get("final"):
            continue  # diverged: no scores
        per_image = Path(str(r["run_dir"])) / "per_image.csv"
        if per_image.is_file():
            groups.setdefault(r["label"], {})[int(r["seed"])] = per_image
        else:
            missing.append(f"{r['label']} seed {r['seed']}")
    sets = list(dict.fromkeys(s for r in records for s in r.get("final") or {}))
    comparisons = {}
    missing_note = ""
    if groups and not missing:
        if baseline not in groups:  # it diverged: the differences go to the first mixer with results instead
            fallback = next(iter(groups))
            missing_note = f"- the baseline `{baseline}` has no scores (diverged); differences are to `{fallback}`"
            baseline = fallback
        ordered = {baseline: groups[baseline], **groups}
        for s in sets:
            scores, _, _ = runs_table(ordered, s)
            comparisons[s] = compare(scores, baseline=baseline)
    rows = setting_rows(records, comparisons)

    data_note = f"data root `{root}`" if root is not None else EMBEDDED_NOTE
    diverged = [f"{m['spec']} (seed {m.get('seed')})" for m in state["mixers"] if m["status"] == "diverged"]
    seeds = state.get("seeds") or [base.seed]
    budget = f"{base.budget_minutes:g} min per run" if base.budget_minutes is not None else "none"
    notes = [
        f"- task: {task.describe()}",
        f"- network: `{base.arch}` preset `{base.preset}`"
        + (f", arch_options `{base.arch_options}`" if base.arch_options else "")
        + "; only the mixer differs",
        f"- training: {base.iters} iterations, budget {budget}, batch {base.batch_size}, patch {base.patch_size}, "
        f"lr {base.lr:g}, seeds {', '.join(map(str, seeds))} (each seed: the same patches, noise and shared "
        f"initialisation for every mixer), device {device}",
        f"- data: {data_note}",
        *([f"- diverged (nan/inf, no scores): {', '.join(diverged)}"] if diverged else []),
        *([f"- no per-image results (no intervals): {', '.join(missing)}"] if missing else []),
        *([missing_note] if missing_note else []),
    ]
    title = f"Mixer comparison: {task.name} {task.level}"
    sections = [f"# {title}", "\n".join(notes)]
    printed = []
    for k, s in enumerate(sets):
        table = setting_markdown(rows, s, comparisons.get(s))
        plot = "forest.png" if k == 0 else f"forest_{s}.png"
        if s in comparisons and comparisons[s].differences:
            forest_plot(comparisons[s], out / plot, title=f"{task.name} {task.level} on {s}: difference to {baseline}")
            table += f"\n\n![difference to {baseline} on {s}]({plot})"
        sections.append(f"## {s}\n\n{table}")
        printed.append(f"## {s}\n\n{table}")
    sections.append(
        "![PSNR against training time](psnr_vs_time.png)\n![PSNR against iterations](psnr_vs_iters.png)\n"
        "![PSNR against parameters](psnr_vs_params.png)\n![crops](crops_grid.png)"
    )
    md_path = write_text(out / "leaderboard.md", "\n\n".join(sections) + "\n")
    csv_path = write_setting_csv(rows, out / "leaderboard.csv")
    write_leaderboard(leaderboard_rows(records), out, title=f"{title}: every run", stem="runs")  # runs.md / .csv
    plot_curves(records, out)
    plot_params([_mean_record(rows, sets, label) for label in dict.fromkeys(r["label"] for r in records)], out)
    first_seed = [r for r in records if r["seed"] == seeds[0] and r.get("final")] or records
    panels, where = restored_crops(first_seed, task, root, base.eval_sets, device, crop=crop)
    shown = {label.split("\n")[0] for label, _ in panels[2:]}  # after the clean and degraded panels
    if missing_crop := [r["label"] for r in first_seed if r["label"] not in shown]:
        print(f"crops_grid.png: no best checkpoint nor kept crop for {', '.join(missing_crop)}", file=sys.stderr)
    crops_grid(panels, out / "crops_grid.png", title=f"{where}, seed {seeds[0]}")
    print("\n" + "\n\n".join([f"# {title}", *printed]) + "\n")
    print(f"leaderboard: {md_path}, {csv_path.name} (per run: runs.csv)")
    print("plots: forest.png, psnr_vs_time.png, psnr_vs_iters.png, psnr_vs_params.png")
    print(f"crops: {out / 'crops_grid.png'} ({where})")


def _mean_record(rows: list[dict], sets: list[str], label: str) -> dict:
    """A result record of one setting's means (for the PSNR-against-parameters plot)."""
    row = next(r for r in rows if r["mixer"] == label)
    final = {s: {"psnr": row[f"{s}_psnr"], "ssim": row[f"{s}_ssim"]} for s in sets}
    return {"label": label, "config": {"mixer": label}, "final": final, "params": row["params"], "history": []}


def _run_jobs(args: argparse.Namespace, out: Path, state: dict, device) -> int:
    """Train the unfinished mixers ``args.jobs`` at a time, each by a child ``compare.py --resume OUT --only NAME``.

    CPU children get ``cores // jobs`` threads; on CUDA, job slot j uses GPU ``j % device_count``. Each child writes
    ``runs/<name>.entry.json`` (its state entry) and logs to ``runs/<name>.log``; the parent merges the entries into
    state.json. Returns 0 when every child finished, else the worst exit code (130 when interrupted).
    """
    import os
    import subprocess

    import torch

    pending = [m for m in state["mixers"] if not (m["status"] in ("finished", "diverged") and m.get("result"))]
    if not pending:
        return 0
    jobs = min(args.jobs, len(pending))
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    per_job = f"{threads} CPU thread(s) each" if device.type == "cpu" else f"{max(gpus, 1)} GPU(s) shared round-robin"
    print(f"{len(pending)} run(s), {jobs} at a time, {per_job}; logs in {runs}/<name>.log", flush=True)
    running: dict[int, tuple[subprocess.Popen, dict, Any]] = {}  # slot -> (process, entry, log file)
    codes = []

    def launch(slot: int, entry: dict) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--resume", str(out), "--only", entry["name"]]
        cmd += ["--no-progress", *(a for p in args.plugin for a in ("--plugin", p))]
        if gpus > 1:
            cmd += ["--device", f"cuda:{slot % gpus}"]
        elif getattr(args, "device", None):  # a RunConfig flag: absent when not given
            cmd += ["--device", args.device]
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        log = open(runs / f"{entry['name']}.log", "a", encoding="utf-8")  # noqa: SIM115 (closed when it exits)
        entry["status"] = "running"
        _write_state(out, state)
        running[slot] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), entry, log)
        print(f"  started {entry['spec']} ({entry['name']})", flush=True)

    def reap(slot: int) -> None:
        proc, entry, log = running.pop(slot)
        log.close()
        codes.append(proc.returncode)
        try:
            entry.update(json.loads((runs / f"{entry['name']}.entry.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            pass
        if proc.returncode and entry["status"] == "running":
            entry["status"] = "interrupted" if proc.returncode == 130 else "failed"
        _write_state(out, state)
        result = entry.get("result") or {}
        first = next(iter((result.get("final") or {}).items()), None)
        score = f": PSNR {first[1].get('psnr', float('nan')):.2f} dB on {first[0]}" if first else ""
        print(f"  {entry['status']} {entry['spec']}{score} (exit {proc.returncode})", flush=True)

    queue = list(pending)
    try:
        while queue or running:
            for slot in range(jobs):
                if slot not in running and queue:
                    launch(slot, queue.pop(0))
            time.sleep(0.5)
            for slot in [s for s, (p, _, _) in running.items() if p.poll() is not None]:
                reap(slot)
    except KeyboardInterrupt:  # the children got the same Ctrl-C: they stop at a checkpoint
        for slot in list(running):
            running[slot][0].wait()
            reap(slot)
        print(_stopped_hint("the comparison", out, "was interrupted"), file=sys.stderr)
        return 130
    bad = [c for c in codes if c]
    if bad:
        worst = 130 if 130 in bad else max(bad, key=abs)
        print(_stopped_hint("the comparison", out, f"had {len(bad)} run(s) fail (see runs/*.log)"), file=sys.stderr)
        return worst
    return 0


def _stopped_hint(spec: str, out: Path, what: str = "stopped while training") -> str:
    return (
        f"compare: {spec!r} {what}; finished mixers are kept. "
        f"Continue with: python experiments/compare.py --resume {out}"
    )


if __name__ == "__main__":
    run_main(main)
