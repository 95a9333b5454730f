"""Reports over several training runs: leaderboard tables, curves, and side-by-side restored crops.

The pieces of ``experiments/compare.py``, reusable by sweeps and notebooks::

    from sandbox.report import leaderboard_rows, write_leaderboard, plot_curves, plot_params, crops_grid

    rows = leaderboard_rows(results)                 # RunResult objects (sandbox.engine) or their JSON records
    md_path, csv_path = write_leaderboard(rows, out_dir)
    plot_curves(results, out_dir)                    # psnr_vs_time.png, psnr_vs_iters.png
    plot_params(results, out_dir)                    # psnr_vs_params.png
    crops_grid([("clean", gt), ("noisy", lq), ("hco", out)], out_dir / "crops_grid.png")

A result is anything with the fields of ``sandbox.engine.RunResult`` (``run_dir``, ``config``, ``step``, ``final``,
``history``, ``params``, ``macs_per_mpx``, ``train_iters_per_sec``, ``infer_ms_per_mpx``, ...), or the plain dict
:func:`result_record` makes of one (what ``compare.py`` keeps in its ``state.json``). Every file is written
atomically (a temporary file, then ``os.replace``). matplotlib is imported only by the plotting functions.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import SandboxError
from .utils import atomic_path, human, plain
from .utils import write_text_atomic as write_text  # the name report's callers import

__all__ = [
    "RESULT_FIELDS",
    "result_record",
    "mixer_label",
    "leaderboard_rows",
    "leaderboard_columns",
    "leaderboard_markdown",
    "write_leaderboard",
    "plot_curves",
    "plot_params",
    "crops_grid",
    "restored_crops",
    "new_figure",
    "save_figure",
    "palette",
    "write_text",
]

RESULT_FIELDS = (
    "run_dir",
    "config",
    "step",
    "best_psnr",
    "final",
    "history",
    "params",
    "macs_per_mpx",
    "train_iters_per_sec",
    "infer_ms_per_mpx",
    "stopped",
)


# ----------------------------------------------------------------------------------------------------- records
def result_record(result: Any) -> dict[str, Any]:
    """A JSON-serialisable dict of a run's result (``RunResult`` or an existing record), config included."""
    if isinstance(result, Mapping):
        get = result.get
    else:

        def get(name: str, default: Any = None) -> Any:
            return getattr(result, name, default)

    record = {name: plain(get(name)) for name in RESULT_FIELDS}
    record["final"] = record["final"] or {}
    record["history"] = record["history"] or []
    record["config"] = record["config"] or {}
    if "label" in (result if isinstance(result, Mapping) else {}):
        record["label"] = result["label"]
    else:
        record["label"] = mixer_label(record["config"].get("mixer"))
    return record


def mixer_label(spec: Any) -> str:
    """A short label for a mixer spec: ``"hco"``, ``"conv:kernel_size=5"``, ``"[conv, hco]"``."""
    if spec is None:
        return "?"
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        opts = ",".join(f"{k}={v}" for k, v in spec.items() if k != "name")
        return f"{spec.get('name', '?')}:{opts}" if opts else str(spec.get("name", "?"))
    if isinstance(spec, (list, tuple)):
        return "[" + ", ".join(mixer_label(s) for s in spec) + "]"
    return str(spec)


def _records(results: Sequence[Any]) -> list[dict[str, Any]]:
    return [result_record(r) for r in results]


def _eval_sets(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The evaluation sets in the order of the first result that has any, then any others."""
    sets: list[str] = []
    for r in records:
        for s in r["final"]:
            if s not in sets:
                sets.append(s)
    return sets


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


# --------------------------------------------------------------------------------------------------- leaderboard
def leaderboard_columns(sets: Sequence[str]) -> list[str]:
    """The CSV columns of a leaderboard over evaluation ``sets``."""
    per_set = [f"{s}_{m}" for s in sets for m in ("psnr", "ssim")]
    return ["mixer", *per_set, "params", "macs_g_per_mpx", "train_it_per_s", "infer_ms_per_mpx", "iters", "run_dir"]


def leaderboard_rows(results: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per result, best first by the first evaluation set's PSNR (results without it last).

    Keys (see :func:`leaderboard_columns`): ``mixer``, ``<set>_psnr`` and ``<set>_ssim`` per evaluation set,
    ``params``, ``macs_g_per_mpx`` (multiply-adds per megapixel, in G), ``train_it_per_s``, ``infer_ms_per_mpx``,
    ``iters`` (iterations done) and ``run_dir``. Values are numbers (NaN where a result lacks one).
    """
    records = _records(results)
    sets = _eval_sets(records)
    rows = []
    for r in records:
        row: dict[str, Any] = {"mixer": r["label"]}
        for s in sets:
            metrics = r["final"].get(s) or {}
            row[f"{s}_psnr"] = _num(metrics.get("psnr"))
            row[f"{s}_ssim"] = _num(metrics.get("ssim"))
        macs = _num(r.get("macs_per_mpx"))
        row["params"] = int(r["params"]) if r.get("params") is not None else None
        row["macs_g_per_mpx"] = macs / 1e9
        row["train_it_per_s"] = _num(r.get("train_iters_per_sec"))
        row["infer_ms_per_mpx"] = _num(r.get("infer_ms_per_mpx"))
        row["iters"] = int(r["step"]) if r.get("step") is not None else None
        row["run_dir"] = str(r.get("run_dir") or "")
        rows.append(row)
    if sets:
        key = f"{sets[0]}_psnr"
        rows.sort(key=lambda row: (math.isnan(row[key]), -row[key] if not math.isnan(row[key]) else 0.0))
    return rows


def _sets_of_rows(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    sets: list[str] = []
    for row in rows:
        for k in row:
            if k.endswith("_psnr") and k[: -len("_psnr")] not in sets:
                sets.append(k[: -len("_psnr")])
    return sets


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _rel(path: str, base: Path | None) -> str:
    if not path or base is None:
        return path
    try:
        return os.path.relpath(Path(path).resolve(), base.resolve())
    except ValueError:  # another drive (Windows)
        return path


def leaderboard_markdown(rows: Sequence[Mapping[str, Any]], base: str | os.PathLike | None = None) -> str:
    """The leaderboard as a Markdown table (run dirs relative to ``base`` when given)."""
    from .cli import markdown_table

    sets = _sets_of_rows(rows)
    header = ["#", "mixer"]
    for s in sets:
        header += [f"{s} PSNR", f"{s} SSIM"]
    header += ["params", "MACs/Mpx (G)", "train it/s", "infer ms/Mpx", "iters", "run dir"]
    base = Path(base) if base is not None else None
    body = []
    for i, row in enumerate(rows, 1):
        cells: list[Any] = [i, f"`{row['mixer']}`"]
        for s in sets:
            cells += [_fmt(row.get(f"{s}_psnr"), 2), _fmt(row.get(f"{s}_ssim"), 4)]
        cells += [
            human(row.get("params")),
            _fmt(row.get("macs_g_per_mpx"), 2),
            _fmt(row.get("train_it_per_s"), 2),
            _fmt(row.get("infer_ms_per_mpx"), 1),
            row.get("iters") if row.get("iters") is not None else "-",
            _rel(row.get("run_dir", ""), base),
        ]
        body.append(cells)
    align = "rl" + "rr" * len(sets) + "rrrrrl"
    return markdown_table(header, body, align=align)


_GENERAL = ("macs_g_per_mpx", "train_it_per_s", "infer_ms_per_mpx", "iters", "train_minutes")  # CSV: 6 digits


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> Path:
    """``rows`` as CSV with ``columns``: NaN and None empty, floats with 6 decimals (6 digits for ``_GENERAL``)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out = {}
        for k in columns:
            v = row.get(k)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                out[k] = ""
            elif isinstance(v, float):
                out[k] = f"{v:.6g}" if k in _GENERAL else f"{v:.6f}"
            else:
                out[k] = v
        writer.writerow(out)
    return write_text(path, buf.getvalue())


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON at ``path``, atomically."""
    return write_text(Path(path), json.dumps(plain(obj), indent=2, allow_nan=True) + "\n")


def write_leaderboard(
    rows: Sequence[Mapping[str, Any]],
    out_dir: str | os.PathLike,
    title: str = "",
    notes: str = "",
    stem: str = "leaderboard",
) -> tuple[Path, Path]:
    """Write ``<stem>.md`` (``title``, ``notes``, the table) and ``<stem>.csv`` (raw numbers) in ``out_dir``.

    Returns (markdown path, CSV path).
    """
    out_dir = Path(out_dir)
    csv_path = _write_csv(out_dir / f"{stem}.csv", rows, leaderboard_columns(_sets_of_rows(rows)))
    parts = [f"# {title}" if title else "# Leaderboard", notes.strip(), leaderboard_markdown(rows, out_dir)]
    md_path = write_text(out_dir / f"{stem}.md", "\n\n".join(p for p in parts if p) + "\n")
    return md_path, csv_path


# ----------------------------------------------------------------------------------------------------------- plots
def new_figure(figsize: tuple[float, float]):
    """A matplotlib Figure drawn by the Agg canvas (no pyplot, no global backend state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise SandboxError("plots need matplotlib, which is not installed: pip install matplotlib") from None
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: Path, dpi: int = 130) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def palette(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def plot_curves(results: Sequence[Any], out_dir: str | os.PathLike) -> list[Path]:
    """``psnr_vs_time.png`` (validation PSNR against training wall time) and ``psnr_vs_iters.png`` in ``out_dir``.

    One line per result, from its ``history`` (points with ``step``, ``wall`` in seconds, ``psnr``); results with the
    same label (one setting's seeds) share a colour and one legend entry.
    """
    records = _records(results)
    labels = list(dict.fromkeys(r["label"] for r in records))
    by_label = dict(zip(labels, palette(len(labels))))
    colors = [by_label[r["label"]] for r in records]
    longest = max((_num(p.get("wall")) for r in records for p in r["history"]), default=0.0)
    minutes = not math.isnan(longest) and longest > 120
    paths = []
    for name, key, xlabel in (
        ("psnr_vs_time.png", "wall", "training time (min)" if minutes else "training time (s)"),
        ("psnr_vs_iters.png", "step", "iterations"),
    ):
        fig = new_figure((7.0, 4.5))
        ax = fig.add_subplot()
        shown = set()
        for r, color in zip(records, colors):
            points = [(_num(p.get(key)), _num(p.get("psnr"))) for p in r["history"]]
            points = [(x, y) for x, y in points if not (math.isnan(x) or math.isnan(y))]
            if not points:
                continue
            xs, ys = zip(*sorted(points))
            if key == "wall" and minutes:
                xs = [x / 60.0 for x in xs]
            label = None if r["label"] in shown else r["label"]
            shown.add(r["label"])
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, color=color, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("validation PSNR (dB)")
        ax.set_title(f"validation PSNR against {'training time' if key == 'wall' else 'iterations'}")
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="best")
        paths.append(save_figure(fig, Path(out_dir) / name))
    return paths


def plot_params(results: Sequence[Any], out_dir: str | os.PathLike) -> Path:
    """``psnr_vs_params.png``: final PSNR on the first evaluation set against parameters (log x, labelled points)."""
    records = _records(results)
    sets = _eval_sets(records)
    colors = palette(len(records))
    fig = new_figure((7.0, 4.5))
    ax = fig.add_subplot()
    for r, color in zip(records, colors):
        params = _num(r.get("params"))
        psnr = _num((r["final"].get(sets[0]) or {}).get("psnr")) if sets else math.nan
        if math.isnan(params) or math.isnan(psnr) or params <= 0:
            continue
        ax.scatter([params], [psnr], color=color, s=36, zorder=3)
        ax.annotate(r["label"], (params, psnr), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    def minor(v: float, _pos: Any) -> str:  # label 2x and 5x of each decade only: no overlapping labels
        lead = v / 10 ** math.floor(math.log10(v)) if v > 0 else 0
        return human(v, digits=0) if round(lead) in (2, 5) and abs(lead - round(lead)) < 1e-6 else ""

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: human(v, digits=0)))
    ax.xaxis.set_minor_formatter(FuncFormatter(minor))
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"PSNR (dB){' on ' + sets[0] if sets else ''}")
    ax.set_title("final PSNR against parameters")
    ax.grid(True, which="both", alpha=0.3)
    ax.margins(x=0.15, y=0.15)
    return save_figure(fig, Path(out_dir) / "psnr_vs_params.png")


def crops_grid(images: Sequence[tuple[str, np.ndarray]], path: str | os.PathLike, title: str = "") -> Path:
    """One row of labelled image panels (``(label, image)``: uint8 (H, W) gray or (H, W, 3) RGB) as a PNG."""
    if not images:
        raise SandboxError("crops_grid needs at least one (label, image) pair")
    n = len(images)
    fig = new_figure((2.4 * n, 2.9 if title else 2.7))
    for i, (label, img) in enumerate(images):
        img = np.asarray(img)
        if img.dtype != np.uint8:
            img = np.clip(np.round(np.clip(img.astype(np.float64), 0, 1) * 255), 0, 255).astype(np.uint8)
        ax = fig.add_subplot(1, n, i + 1)
        if img.ndim == 2:
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, Path(path), dpi=150)


# --------------------------------------------------------------------------------------------------- crops
def _detail_window(gt: np.ndarray, size: int) -> tuple[int, int]:
    """Top-left corner of the ``size`` x ``size`` window with the most gradient energy (deterministic)."""
    g = gt.astype(np.float64)
    if g.ndim == 3:
        g = g.mean(axis=2)
    h, w = g.shape
    if h <= size and w <= size:
        return 0, 0
    energy = np.zeros_like(g)
    energy[:, 1:] += np.abs(np.diff(g, axis=1))
    energy[1:, :] += np.abs(np.diff(g, axis=0))
    integral = np.pad(energy.cumsum(0).cumsum(1), ((1, 0), (1, 0)))  # (h + 1, w + 1)
    sh, sw = min(size, h), min(size, w)
    sums = (
        integral[sh:, sw:]
        - integral[: h - sh + 1, sw:]
        - integral[sh:, : w - sw + 1]
        + integral[: h - sh + 1, : w - sw + 1]
    )  # (h - sh + 1, w - sw + 1): energy of the window at each top-left corner
    stride = max(1, size // 8)
    sub = sums[::stride, ::stride]
    iy, ix = np.unravel_index(int(np.argmax(sub)), sub.shape)
    return int(iy * stride), int(ix * stride)


def crop_file(set_name: str, image_name: str, y: int, x: int, h: int, w: int) -> str:
    """The name a run keeps its restored crop under: ``crop_<set>_<image>_<y>_<x>_<h>x<w>.png``."""
    from .utils import slug

    return f"crop_{slug(set_name)}_{slug(Path(image_name).stem)}_{y}_{x}_{h}x{w}.png"


def _read_png(path: Path, color: bool) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise SandboxError(f"could not read the kept crop {path}")
    return img[..., ::-1].copy() if color else img


def restored_crops(
    results: Sequence[Any],
    task: Any,
    data_root: str | os.PathLike | None = None,
    eval_sets: Sequence[str] | None = None,
    device: Any = "cpu",
    crop: int = 96,
    context: int = 32,
) -> tuple[list[tuple[str, np.ndarray]], str]:
    """The same crop, clean, degraded and restored by each result's best checkpoint: ([(label, uint8 image)], where).

    The image is the first of the first evaluation set (the embedded evaluation image without a data root), degraded
    by ``task.prepare_eval`` exactly as in the evaluation; the crop is the ``crop``-pixel window with the most detail.
    Each network is rebuilt from ``<run_dir>/checkpoints/best.pth`` and runs on the crop plus ``context`` pixels on
    every side (clipped to the image), so that any mixer fits in memory; the panel labels carry each crop's PSNR.
    Each restored crop is kept in its run directory as a small PNG named after the image and the window
    (:func:`crop_file`) and read from there when the checkpoint is gone, so a report rebuilds from committed result
    files alone. ``where`` names the image and the window. A result with neither is left out.
    """
    from .evaluate import _images, _save_png, load_network, network_restorer, to_uint8
    from .metrics import psnr

    root = Path(data_root) if data_root is not None else None
    set_name, image_name, load = _images(task, list(eval_sets) if eval_sets else None, root)[0]
    gt, degraded = task.prepare_eval(load())
    y, x = _detail_window(gt, crop)
    h, w = gt.shape[:2]
    ch, cw = min(crop, h), min(crop, w)
    y0, x0 = max(0, y - context), max(0, x - context)
    y1, x1 = min(h, y + ch + context), min(w, x + cw + context)
    gt_crop = gt[y : y + ch, x : x + cw]
    lq_crop = to_uint8(degraded[y : y + ch, x : x + cw])
    panels = [("clean", gt_crop), (f"degraded\n{psnr(lq_crop, gt_crop):.2f} dB", lq_crop)]
    for r in _records(results):
        if not r.get("run_dir"):
            continue
        run_dir = Path(str(r["run_dir"]))
        kept, best = run_dir / crop_file(set_name, image_name, y, x, ch, cw), run_dir / "checkpoints" / "best.pth"
        if best.is_file():
            net = load_network(None, str(best), task)
            out = to_uint8(network_restorer(net, device)(degraded[y0:y1, x0:x1]))
            out_crop = out[y - y0 : y - y0 + ch, x - x0 : x - x0 + cw]
            _save_png(kept, out_crop)
            del net
        elif kept.is_file():
            out_crop = _read_png(kept, color=gt_crop.ndim == 3)
        else:
            continue
        panels.append((f"{r['label']}\n{psnr(out_crop, gt_crop):.2f} dB", out_crop))
    where = f"{set_name}/{image_name} [{y}:{y + ch}, {x}:{x + cw}], {task.level}"
    return panels, where


# ----------------------------------------------------------------------------------------- settings x seeds
def setting_rows(records: Sequence[Any], comparisons: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per setting (its runs over seeds pooled), best first by the first set's mean PSNR.

    ``records`` are run results (as for :func:`leaderboard_rows`) whose ``label`` names the setting and whose
    ``config.seed`` the seed; ``comparisons`` maps an evaluation set to its :class:`sandbox.stats.Comparison`. Keys:
    ``mixer``, ``seeds``, per set ``<set>_psnr`` (mean over seeds), ``<set>_psnr_low/_high`` (95% interval across
    seeds), ``<set>_delta``, ``<set>_delta_low/_high``, ``<set>_p_holm``, ``<set>_resolved``, ``<set>_rank``,
    ``<set>_ssim``; then ``params``, ``macs_g_per_mpx``, ``train_it_per_s``, ``infer_ms_per_mpx``, ``iters`` (means)
    and ``run_dirs``.
    """
    records = _records(records)
    comparisons = comparisons or {}
    sets = _eval_sets(records)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["label"], []).append(r)
    mean = lambda xs: float(np.mean(xs)) if xs else math.nan  # noqa: E731
    stats = {s: {x["setting"]: x for x in comp.records()} for s, comp in comparisons.items()}  # set -> setting -> rec
    rows = []
    for label, runs in groups.items():
        scored = [r for r in runs if r["final"]]
        row: dict[str, Any] = {"mixer": label, "seeds": len(scored)}
        for s in sets:
            psnrs = [_num((r["final"].get(s) or {}).get("psnr")) for r in scored]
            row[f"{s}_psnr"] = mean([p for p in psnrs if not math.isnan(p)])
            row[f"{s}_ssim"] = mean([_num((r["final"].get(s) or {}).get("ssim")) for r in scored])
            rec = stats.get(s, {}).get(label)
            for key in ("psnr_low", "psnr_high", "delta", "delta_low", "delta_high", "p_holm"):
                row[f"{s}_{key}"] = math.nan
            row[f"{s}_resolved"], row[f"{s}_rank"] = None, None
            if rec is not None:
                row[f"{s}_psnr"] = rec["mean"]  # over the per-image results: equal to the runs' means
                row[f"{s}_psnr_low"], row[f"{s}_psnr_high"] = rec["ci_low"], rec["ci_high"]
                row[f"{s}_delta"], row[f"{s}_delta_low"], row[f"{s}_delta_high"] = (
                    rec["delta"],
                    rec["delta_low"],
                    rec["delta_high"],
                )
                row[f"{s}_p_holm"], row[f"{s}_resolved"], row[f"{s}_rank"] = rec["p_holm"], rec["resolved"], rec["rank"]
        first = scored[0] if scored else runs[0]
        row["params"] = int(first["params"]) if first.get("params") is not None else None
        row["macs_g_per_mpx"] = _num(first.get("macs_per_mpx")) / 1e9
        row["train_it_per_s"] = mean([_num(r.get("train_iters_per_sec")) for r in scored])
        row["infer_ms_per_mpx"] = mean([_num(r.get("infer_ms_per_mpx")) for r in scored])
        row["iters"] = mean([_num(r.get("step")) for r in scored])
        row["train_minutes"] = mean([_train_seconds(r) / 60 for r in scored])
        row["run_dirs"] = ";".join(str(r.get("run_dir") or "") for r in runs)
        rows.append(row)
    if sets:
        key = f"{sets[0]}_psnr"
        rows.sort(key=lambda row: (math.isnan(row[key]), -row[key] if not math.isnan(row[key]) else 0.0))
    return rows


def _train_seconds(record: Mapping[str, Any]) -> float:
    """A run's training wall time: its record's ``wall``, else the last logged event's (NaN without either)."""
    if record.get("wall") is not None:
        return _num(record["wall"])
    history = record.get("history") or []
    return _num(history[-1].get("wall")) if history else math.nan


def setting_columns(sets: Sequence[str]) -> list[str]:
    """The CSV columns of :func:`setting_rows` over evaluation ``sets``."""
    keys = ("psnr", "psnr_low", "psnr_high", "delta", "delta_low", "delta_high", "p_holm", "resolved", "rank", "ssim")
    per_set = [f"{s}_{k}" for s in sets for k in keys]
    return [
        "mixer",
        "seeds",
        *per_set,
        "params",
        "macs_g_per_mpx",
        "train_it_per_s",
        "infer_ms_per_mpx",
        "iters",
        "train_minutes",
        "run_dirs",
    ]


def setting_markdown(rows: Sequence[Mapping[str, Any]], set_name: str, comparison: Any | None = None) -> str:
    """The leaderboard of one evaluation set: rank group, setting, mean ± CI, Δ vs the baseline ± CI, Holm p, SSIM,
    size and speed; the comparison's footer (what is resolvable) under it."""
    from .cli import markdown_table

    header = ["rank", "mixer"]
    if comparison is not None:
        header += comparison.columns()[:3]
    else:
        header += [f"{set_name} PSNR"]
    header += ["SSIM", "seeds", "params", "MACs/Mpx (G)", "train it/s", "iters", "train min"]
    body = []
    for row in rows:
        name = row["mixer"]
        has = comparison is not None and any(s.name == name for s in comparison.settings)
        if has:
            c = comparison.cells(name)
            cells = [c["rank"], f"`{name}`", c["mean"], c["delta"], c["p"]]
        else:
            psnr = row.get(f"{set_name}_psnr")
            cells = ["-", f"`{name}`", _fmt(psnr, 3)]
            if comparison is not None:
                cells += ["-", "-"]
        cells += [
            _fmt(row.get(f"{set_name}_ssim"), 4),
            row.get("seeds", "-"),
            human(row.get("params")),
            _fmt(row.get("macs_g_per_mpx"), 2),
            _fmt(row.get("train_it_per_s"), 2),
            _fmt(row.get("iters"), 0),
            _fmt(row.get("train_minutes"), 1),
        ]
        body.append(cells)
    table = markdown_table(header, body, align="rl" + "r" * (len(header) - 2))
    if comparison is None:
        return table + "\n\nNo intervals: the runs have no per-image results (per_image.csv) to pair."
    return table + "\n\n" + comparison.footer()


def write_setting_csv(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """:func:`setting_rows` as CSV (raw numbers), atomically."""
    sets = list(dict.fromkeys(k[: -len("_psnr")] for r in rows for k in r if k.endswith("_psnr")))
    return _write_csv(Path(path), rows, setting_columns(sets))
