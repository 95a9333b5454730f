"""The design table of a pilot: how finely comparisons at each budget resolve, from finished compare.py folders.

    python experiments/pilot.py docs/results/pilot/denoise_600 docs/results/pilot/denoise_1800
    python experiments/pilot.py DIR1 DIR2 --target 0.1 --out docs/results/pilot/design.md
    python experiments/pilot.py --agreement SHORT_DIR FULL_DIR      # does a short budget rank like the full one?

For every compare.py output folder (one budget each) and every evaluation set, every pair of its mixers gives a
(seeds x images) table of paired PSNR differences; its two-way spread (``sandbox.stats.spread``) gives the
seed-to-seed and image-to-image standard deviations of the difference, the smallest difference the folder's design
resolves (paired t-test at alpha 0.05 with 80% power, ``sandbox.stats.resolvable_difference``), the same for 3, 5 and
10 seeds, the image floor (infinitely many seeds) and the seeds needed for ``--target`` dB. A row per mixer gives its
mean PSNR and its mean minutes per run (training and final evaluation). Everything is read from ``state.json`` and
the runs' ``per_image.csv`` files, so the table rebuilds from committed results alone.

``--agreement SHORT FULL``: two comparisons of the same mixers at two budgets. Per evaluation set, Spearman's rho
between the mixers' mean PSNRs at the two budgets, and every pair whose order flips, with its difference and whether
each budget resolves it (Holm-corrected over all pairs of that budget, as compare.py's rank groups).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a plain checkout
    sys.path.insert(0, str(ROOT))

from sandbox.cli import run_main  # noqa: E402

SEED_COUNTS = (3, 5, 10)  # designs the table reports the resolvable difference for


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", metavar="COMPARE_DIR", help="finished compare.py output folders")
    ap.add_argument(
        "--agreement", action="store_true", help="rank agreement of two folders (SHORT FULL) instead of the design"
    )
    ap.add_argument("--target", type=float, default=0.1, help="the difference (dB) to find the seeds for (0.1)")
    ap.add_argument("--out", default=None, help="also write the tables to this markdown file")
    return ap.parse_args(argv)


def finished_runs(folder: Path) -> tuple[dict, dict[str, dict[int, Path]], dict[str, list[float]]]:
    """(state, {mixer: {seed: per_image.csv}}, {mixer: [minutes per run]}) of a compare.py folder's finished runs."""
    from sandbox.errors import SandboxError

    path = folder / "state.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SandboxError(
            f"{str(folder)!r} is not a compare.py output folder: {path} could not be read ({e})"
        ) from None
    runs: dict[str, dict[int, Path]] = {}
    minutes: dict[str, list[float]] = {}
    for entry in state.get("mixers", []):
        record = entry.get("result") or {}
        per_image = folder / "runs" / entry["name"] / "per_image.csv"  # where the folder is now, not where it ran
        if entry.get("status") != "finished" or not record.get("final") or not per_image.is_file():
            continue
        runs.setdefault(entry["spec"], {})[int(entry["seed"])] = per_image
        minutes.setdefault(entry["spec"], []).append(_run_seconds(per_image.parent, record) / 60)
    return state, runs, minutes


def _run_seconds(run_dir: Path, record: dict) -> float:
    """Training plus final evaluation seconds of a run: from its results.json (the engine's full record), else the
    state's record (iterations / training speed when it has no wall time)."""
    try:
        record = {**record, **json.loads((run_dir / "results.json").read_text(encoding="utf-8"))}
    except (OSError, ValueError):
        pass
    train = record.get("wall")
    if train is None and record.get("train_iters_per_sec"):
        train = float(record.get("step") or 0) / float(record["train_iters_per_sec"])
    return float(train or 0.0) + float(record.get("eval_seconds") or 0.0)


def design_rows(folder: Path, target: float) -> tuple[str, list[str], list[str]]:
    """(title, mixer table lines, pair table lines) of one folder."""
    import numpy as np

    from sandbox.stats import image_floor, resolvable_difference, runs_table, seeds_needed

    state, runs, minutes = finished_runs(folder)
    complete = {m: by_seed for m, by_seed in runs.items() if len(by_seed) >= 2}
    iters = (state.get("base_config") or {}).get("iters", "?")
    title = f"{folder.name}: {iters} iterations, {len(complete)} mixers with 2+ finished seeds"
    if len(complete) < 2:
        return title, [], []
    sets = list(dict.fromkeys(s for m in complete.values() for p in m.values() for s in _sets(p)))
    mixer_lines, pair_lines = [], []
    for set_name in sets:
        scores, _, _ = runs_table(complete, set_name)
        for mixer, by_seed in scores.items():
            means = [np.mean(list(v.values())) for v in by_seed.values()]
            mixer_lines.append(
                f"| {set_name} | `{mixer}` | {len(means)} | {np.mean(means):.3f} | "
                f"{np.std(means, ddof=1):.3f} | {np.mean(minutes[mixer]):.1f} |"
            )
        for a, b in itertools.combinations(scores, 2):
            d = pair_difference(scores, a, b)
            sp = d.spread
            needed = seeds_needed(sp, target)
            resolves = " / ".join(f"{resolvable_difference(sp, n):.3f}" for n in SEED_COUNTS)
            pair_lines.append(
                f"| {set_name} | `{b}` − `{a}` | {d.delta:+.3f} | {len(d.seeds)} x {d.images} | "
                f"{_sd(sp.var_seed)} | {_sd(sp.var_image)} | {math.sqrt(sp.var_resid):.3f} | "
                f"{resolvable_difference(sp):.3f} | {resolves} | {image_floor(sp):.3f} | "
                f"{needed if needed is not None else 'more images'} |"
            )
    return title, mixer_lines, pair_lines


def pair_difference(scores: dict, a: str, b: str):
    """``b - a`` paired on the seeds both have and the images every one of those runs has."""
    import numpy as np

    from sandbox.stats import paired_difference

    seeds = sorted(set(scores[a]) & set(scores[b]))
    images = sorted(set.intersection(*(set(scores[m][k]) for m in (a, b) for k in seeds)))
    base = np.array([[scores[a][k][i] for i in images] for k in seeds])
    other = np.array([[scores[b][k][i] for i in images] for k in seeds])
    return paired_difference(base, other, names=(b, a), seeds=seeds)


def _sets(per_image: Path) -> list[str]:
    from sandbox.stats import read_set_names

    return read_set_names(per_image)


def _sd(var: float) -> str:
    return "n/a" if math.isnan(var) else f"{math.sqrt(var):.3f}"


def pair_table(folder: Path, set_name: str) -> tuple[dict[str, float], dict[tuple[str, str], tuple[float, bool]]]:
    """({mixer: mean PSNR}, {(a, b): (mean b - a, resolved)}) of one folder on one set, every pair of its mixers
    paired on seeds and images, resolved as in compare.py's rank groups (p < 0.05 after Holm over all pairs, the
    interval excluding 0)."""
    import numpy as np

    from sandbox.stats import holm, runs_table

    _, runs, _ = finished_runs(folder)
    scores, _, _ = runs_table({m: s for m, s in runs.items() if s}, set_name)
    means = {m: float(np.mean([np.mean(list(v.values())) for v in by_seed.values()])) for m, by_seed in scores.items()}
    diffs = {}
    for a, b in itertools.combinations(scores, 2):
        diffs[(a, b)] = pair_difference(scores, a, b)
    p_holm = dict(zip(diffs, holm([d.p for d in diffs.values()])))
    resolved = {k: (d.delta, p_holm[k] < 0.05 and not d.covers_zero and len(d.seeds) > 1) for k, d in diffs.items()}
    return means, resolved


def agreement_markdown(short: Path, full: Path) -> str:
    """Per evaluation set of both folders: Spearman's rho of the mixers' means and the pairs that flip."""
    from scipy.stats import spearmanr

    from sandbox.errors import OptionError

    _, short_runs, _ = finished_runs(short)
    _, full_runs, _ = finished_runs(full)
    mixers = [m for m in full_runs if m in short_runs]
    if len(mixers) < 3:
        raise OptionError(f"{short} and {full} share {len(mixers)} mixers with finished runs; a ranking needs 3")
    sets = [
        s
        for s in _sets(next(iter(full_runs[mixers[0]].values())))
        if s in _sets(next(iter(short_runs[mixers[0]].values())))
    ]
    lines = [f"# Rank agreement: {short.name} against {full.name}", ""]
    for set_name in sets:
        (ms, ds), (mf, df) = pair_table(short, set_name), pair_table(full, set_name)
        rho = spearmanr([ms[m] for m in mixers], [mf[m] for m in mixers]).statistic
        flips = []
        for (a, b), (delta_f, res_f) in df.items():
            if a not in mixers or b not in mixers:
                continue
            delta_s, res_s = ds[(a, b)] if (a, b) in ds else (-ds[(b, a)][0], ds[(b, a)][1])
            if delta_s * delta_f < 0:
                flips.append(
                    f"| `{b}` − `{a}` | {delta_s:+.3f} ({'resolved' if res_s else 'unresolved'}) | "
                    f"{delta_f:+.3f} ({'resolved' if res_f else 'unresolved'}) |"
                )
        order = lambda means: ", ".join(f"`{m}`" for m in sorted(mixers, key=lambda m: -means[m]))  # noqa: E731
        lines += [
            f"## {set_name}",
            "",
            f"Spearman's rho over {len(mixers)} mixers: **{rho:.3f}**.",
            "",
            f"- {short.name}: {order(ms)}",
            f"- {full.name}: {order(mf)}",
            "",
        ]
        if flips:
            lines += [f"| pair that flips | {short.name} | {full.name} |", "|---|---:|---:|", *flips, ""]
        else:
            lines += ["No pair flips.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from sandbox.errors import OptionError
    from sandbox.report import write_text

    args = parse_args(argv)
    if args.agreement:
        if len(args.folders) != 2:
            raise OptionError(f"--agreement takes two folders (SHORT FULL); got {len(args.folders)}")
        text = agreement_markdown(*map(Path, args.folders))
        print(text)
        if args.out:
            write_text(Path(args.out), text)
        return 0
    seeds = " / ".join(map(str, SEED_COUNTS))
    sections = [
        "# Pilot design table",
        "",
        f"Built by `python experiments/pilot.py {' '.join(args.folders)}` from the folders' state.json and "
        "per_image.csv files. Differences are paired on seeds and images; 'resolves' is the smallest true difference "
        "a paired t-test at alpha 0.05 finds with 80% power (`sandbox.stats`).",
    ]
    for folder in map(Path, args.folders):
        title, mixers, pairs = design_rows(folder, args.target)
        sections += ["", f"## {title}"]
        if not pairs:
            sections += ["", "Fewer than two mixers have two finished seeds: nothing to measure yet."]
            continue
        sections += [
            "",
            "| set | mixer | seeds | PSNR mean | seed-to-seed sd | minutes per run |",
            "|---|---|---:|---:|---:|---:|",
            *mixers,
            "",
            f"| set | difference | Δ dB | seeds x images | seed sd | image sd | residual sd | resolves now | "
            f"resolves with {seeds} seeds | image floor | seeds for {args.target:g} dB |",
            "|---|---|---:|---|---:|---:|---:|---:|---|---:|---:|",
            *pairs,
        ]
    text = "\n".join(sections) + "\n"
    print(text)
    if args.out:
        write_text(Path(args.out), text)
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
