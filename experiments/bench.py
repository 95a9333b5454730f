"""Benchmark token mixers and networks: latency, throughput, peak memory, FLOPs and parameters.

    python experiments/bench.py mixers [--mixers hco,conv,...] [--sizes 32,64,128,256] [--dim 64] [--batch 1]
    python experiments/bench.py archs [--sizes 128,256,512,1024] [--preset small] [--cls-size 224]
    python experiments/bench.py mixers --sizes 64,128,256 --mixers "hco;attention_window:window_size=8;hyena_pixel"

``mixers``: every mixer (default: all registered, plugins included) on a (batch, dim, S, S) input at each size S:
forward latency (eval mode, no_grad), forward+backward latency (train mode, gradient w.r.t. the input and every
parameter), throughput (tokens per second), peak memory of each, multiply-adds of one forward and parameters; then
the exponent p of time ~ tokens^p, fitted by least squares on log(time) against log(tokens) over ``--fit-sizes``
(default: all sizes), and a log-log plot of time against tokens.

``archs``: the restoration networks at one width and depth (``swinir``, ``vheatir`` and ``ir`` with each mixer, same
``--preset`` / ``--embed-dim`` / ``--depths``) at each size: inference latency and peak memory, training step
(forward, L1 loss, backward, Adam step) latency and peak memory, MACs, parameters; and the classification
configurations at ``--cls-size``: parameters, MACs and inference throughput at ``--cls-batch``.

Both write ``results.csv`` (raw numbers, one row per cell), ``results.md`` (the printed tables and the settings) and
the plots (``time_vs_tokens.png``) under ``--out`` (default ``outputs/bench/<kind>_<timestamp>``; an existing folder
is never overwritten).

How things are measured:

- Latency: after ``--warmup`` untimed calls (at least one: it builds the size caches), the median of ``--repeats``
  samples; a sample times as many back-to-back calls as fill 10 ms (at least one) and reports the time per call.
  CUDA is synchronised around every sample. ``--clock cpu`` uses the process CPU time instead of the wall clock
  (steadier on a shared machine; it adds up all threads, so it is not a latency). Take tables on a quiet machine:
  when another process holds the cores, PyTorch's OpenMP threads wait for each other (a tiny network's forward took
  100x longer with 2 threads on a busy 2-core machine than with ``--threads 1``).
- Peak memory, per cell: the peak of the bytes allocated during one call above what was allocated before it
  (inputs, parameters, optimizer state and size caches are not counted; activations, gradients and outputs are).
  CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU: the running sum of the
  allocations and frees that ``torch.profiler`` (``profile_memory=True``) records during one untimed call, so it is
  the CPU allocator's peak for that call alone, unaffected by earlier cells or by malloc keeping freed pages
  (process RSS would be); memory that libraries allocate outside PyTorch's allocator (oneDNN and pocketfft scratch)
  is not seen.
- MACs: multiply-adds of one inference forward per image (``sandbox.complexity.count_macs``: matmuls, convolutions,
  attention; FFTs and elementwise ops not counted).
- A cell that cannot run prints ``n/a (reason)`` and the run goes on: a size that is not a multiple of the mixer's
  ``size_multiple``, running out of memory, an error raised by the mixer, or a call predicted (from the previous size,
  time ~ tokens^2, memory ~ tokens with a 1.5x margin) or measured to take more than ``--max-seconds`` or more memory
  than ``--max-memory-gb``.
"""

from __future__ import annotations

import argparse
import csv
import gc
import io
import json
import math
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # runnable from a plain checkout
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from sandbox import enable_huge_pages  # noqa: E402
from sandbox.cli import add_plugin_arg, markdown_table, run_main, split_specs, stamped_dir  # noqa: E402
from sandbox.errors import OptionError  # noqa: E402
from sandbox.utils import human as _human  # noqa: E402  ('-' for None)
from sandbox.utils import stderr_silenced  # noqa: E402

MIN_SAMPLE_SECONDS = 0.01  # a timing sample repeats the call until it lasts this long (then reports per call)
MAX_CALLS_PER_SAMPLE = 1000
MiB = 2**20
# The guard's memory prediction is multiplied by this before the comparison: on CPU the peak it scales up is what the
# profiler sees (not oneDNN or pocketfft scratch, nor the allocator's rounding to huge pages), and a full `archs` run on
# the 24 GB development VM was OOM-killed at ir:sepconv 512 x 512 when the prediction alone was compared.
MEMORY_MARGIN = 1.5


class CellSkipped(Exception):
    """A cell that is not measured; the message is the reason shown as ``n/a (reason)``."""


# ---------------------------------------------------------------------------------------------------- parsing
def parse_sizes(text: str, flag: str = "--sizes") -> list[int]:
    """``"32,64,128"`` -> [32, 64, 128] (sorted, duplicates dropped); anything else is a one-line OptionError."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or not all(re.fullmatch(r"\d+", p) and int(p) >= 1 for p in parts):
        raise OptionError(f"{flag} {text!r} is not valid; expected comma-separated integers >= 1, e.g. 32,64,128")
    return sorted({int(p) for p in parts})


def fit_exponent(tokens: Sequence[float], seconds: Sequence[float]) -> float | None:
    """Least-squares slope p of log(seconds) against log(tokens), i.e. seconds ~ tokens^p; None for < 2 sizes."""
    pts = [(math.log(n), math.log(t)) for n, t in zip(tokens, seconds) if n > 0 and t is not None and t > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    x, y = np.array(pts).T
    return float(np.polyfit(x, y, 1)[0])


# ---------------------------------------------------------------------------------------------------- measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(name: str) -> Callable[[], float]:
    return time.process_time if name == "cpu" else time.perf_counter


def _warm_up(
    fn: Callable[[], Any], device: torch.device, warmup: int, now: Callable[[], float], max_seconds: float = math.inf
) -> int:
    """Run ``fn`` ``warmup`` times (at least once) untimed; return how many back-to-back calls fill a sample of
    :data:`MIN_SAMPLE_SECONDS` (from the last call). :class:`CellSkipped` when a call exceeds ``max_seconds``."""
    last = 0.0
    for _ in range(max(1, warmup)):
        _sync(device)
        t0 = now()
        fn()
        _sync(device)
        last = now() - t0
        if last > max_seconds:
            raise CellSkipped(f"one call took {last:.0f} s > --max-seconds {max_seconds:g}")
    return int(min(MAX_CALLS_PER_SAMPLE, max(1, math.ceil(MIN_SAMPLE_SECONDS / max(last, 1e-9)))))


def time_call(
    fn: Callable[[], Any],
    device: torch.device,
    repeats: int,
    warmup: int,
    clock: str = "wall",
    max_seconds: float = math.inf,
) -> float:
    """Median seconds per call of ``fn`` (see the module docstring); :class:`CellSkipped` past ``max_seconds``."""
    now = _clock(clock)
    number = _warm_up(fn, device, warmup, now, max_seconds)
    samples = []
    for _ in range(repeats):
        _sync(device)
        t0 = now()
        for _ in range(number):
            fn()
        _sync(device)
        samples.append((now() - t0) / number)
    return statistics.median(samples)


def _profiled_cpu_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes of the CPU allocator during one call of ``fn``, above what was allocated before it.

    ``torch.profiler`` with ``profile_memory=True`` records every allocation and free made while it runs (a free of
    memory allocated before is not recorded); their running sum in time order peaks at the call's own peak.
    """
    from torch.profiler import ProfilerActivity, profile

    with stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as f:
            events = json.load(f).get("traceEvents", [])
    deltas = [
        (float(e.get("ts", 0.0)), int(e["args"].get("Bytes", 0)))
        for e in events
        if e.get("name") == "[memory]" and int(e.get("args", {}).get("Device Type", 0)) == 0
    ]
    current = peak = 0
    for _, nbytes in sorted(deltas, key=lambda d: d[0]):
        current += nbytes
        peak = max(peak, current)
    return peak


def peak_memory(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated during one call of ``fn`` above what was allocated before it (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return max(0, torch.cuda.max_memory_allocated(device) - base)
    return _profiled_cpu_peak(fn)


def profile_ops(fn: Callable[[], Any], calls: int) -> dict[str, float]:
    """Self CPU time of each operator over ``calls`` calls of ``fn``, in ms per call (``torch.profiler``), with the
    sum of all operators under ``"(all operators)"``."""
    from torch.profiler import ProfilerActivity, profile

    with stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    ops = {e.key: e.self_cpu_time_total / 1e3 / calls for e in prof.key_averages()}
    ops["(all operators)"] = sum(ops.values())
    return ops


def _is_oom(e: BaseException) -> bool:
    msg = str(e).lower()
    return (
        isinstance(e, MemoryError)
        or type(e).__name__ == "OutOfMemoryError"
        or "out of memory" in msg
        or "can't allocate memory" in msg
        or "not enough memory" in msg
    )


def _reason(e: BaseException) -> str:
    if _is_oom(e):
        return "out of memory"
    if isinstance(e, CellSkipped):
        return str(e)
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}"[:160] if first else type(e).__name__


def _cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def available_memory(device: torch.device) -> int:
    """Bytes a cell may use by default: 90% of the GPU's memory, or 80% of the host's available memory."""
    if device.type == "cuda":
        return int(0.9 * torch.cuda.get_device_properties(device).total_memory)
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(0.8 * int(info["MemAvailable"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        return 1 << 62  # unknown: no guard


@dataclass
class Phase:
    """One measured phase of a cell (forward, forward+backward, training step)."""

    seconds: float | None = None
    peak_bytes: int | None = None
    status: str = "ok"  # "ok" or "n/a (reason)"

    @property
    def ok(self) -> bool:
        return self.seconds is not None


@dataclass
class Guard:
    """Predicts a phase's time and memory at the next size from the last size measured, and skips what won't fit."""

    max_seconds: float
    max_bytes: int
    last: dict[str, tuple[int, Phase]] = field(default_factory=dict)

    def check(self, phase: str, tokens: int) -> None:
        if phase not in self.last:
            return
        t0, prev = self.last[phase]
        ratio = tokens / t0
        if prev.seconds is not None and prev.seconds * ratio**2 > self.max_seconds:
            raise CellSkipped(
                f"predicted {prev.seconds * ratio**2:.0f} s per call from the previous size > "
                f"--max-seconds {self.max_seconds:g}"
            )
        if prev.peak_bytes is not None and prev.peak_bytes * ratio * MEMORY_MARGIN > self.max_bytes:
            raise CellSkipped(
                f"predicted {prev.peak_bytes * ratio / 2**30:.1f} GB from the previous size (x {MEMORY_MARGIN:g} "
                f"margin) > --max-memory-gb {self.max_bytes / 2**30:.1f}"
            )

    def record(self, phase: str, tokens: int, result: Phase) -> None:
        if result.ok:
            self.last[phase] = (tokens, result)


def measure(
    phase: str,
    fn: Callable[[], Any],
    tokens: int,
    device: torch.device,
    args: argparse.Namespace,
    guard: Guard,
) -> Phase:
    """Time and peak memory of ``fn``; never raises for a cell that cannot run (returns an ``n/a`` phase)."""
    try:
        guard.check(phase, tokens)
        seconds = time_call(fn, device, args.repeats, args.warmup, args.clock, args.max_seconds)
        result = Phase(seconds, peak_memory(fn, device))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # a cell that cannot run must not stop the run
        result = Phase(status=f"n/a ({_reason(e)})")
        _cleanup(device)
    guard.record(phase, tokens, result)
    return result


def _macs(model: torch.nn.Module, shape: tuple[int, ...], device: torch.device) -> int | None:
    from sandbox.complexity import count_macs

    try:
        return count_macs(model, shape, device, warm=False)  # warm already: the timed calls ran first
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception:
        _cleanup(device)
        return None


# ---------------------------------------------------------------------------------------------------- formatting
def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 0.1 else f"{ms:.3f}"


def fmt_mb(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / MiB:.1f}"


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def fmt_exp(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2f}"


def _cell(phase: Phase) -> str:
    return fmt_ms(phase.seconds) if phase.ok else phase.status


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> Path:
    from sandbox.report import write_text

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return write_text(path, buf.getvalue())


def _default_out(kind: str) -> Path:
    return stamped_dir(Path("outputs") / "bench", kind)


def _check_out(out: str | None, kind: str) -> Path:
    if out is None:
        return _default_out(kind)
    path = Path(out)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise OptionError(f"--out {out!r} already exists and is not empty; it is never overwritten")
    return path


def _progress(total: int, desc: str):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm comes with the restoration extra; without it, no bar

        class _NoBar:
            def update(self, n: int = 1) -> None: ...
            def set_postfix_str(self, s: str) -> None: ...
            def close(self) -> None: ...

        return _NoBar()
    return tqdm(total=total, desc=desc, unit="cell", dynamic_ncols=True, file=sys.stderr)


def _settings(args: argparse.Namespace, device: torch.device) -> str:
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return (
        f"device {device} ({name}), torch {torch.__version__}, {threads} CPU threads, "
        f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '0')} (huge pages for CPU tensors); "
        f"median of {args.repeats} after {max(1, args.warmup)} warm-up call(s), {args.clock} clock"
    )


def _plot_loglog(
    panels: Sequence[tuple[str, dict[str, list[tuple[int, float]]], dict[str, str]]],
    path: Path,
    xlabel: str,
) -> Path:
    """Side-by-side log-log panels of time (ms) against tokens, one line per series, with N and N^2 guides.

    ``panels``: (title, {series: [(tokens, seconds or None), ...]}, {series: legend label}) per panel.
    """
    from sandbox.report import new_figure, palette, save_figure

    series = list(dict.fromkeys(k for _, data, _ in panels for k in data))
    colors = dict(zip(series, palette(len(series))))
    fig = new_figure((8.0 * len(panels), 4.8))
    for i, (title, data, labels) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        first = []
        for name, pts in data.items():
            pts = sorted(p for p in pts if p[1] is not None and p[1] > 0)
            if not pts:
                continue
            xs, ys = zip(*pts)
            ax.plot(
                xs, [y * 1e3 for y in ys], marker="o", markersize=4, color=colors[name], label=labels.get(name, name)
            )
            first.append(pts[0])
        if first:  # guides through the geometric mean of the first points
            x0 = min(x for x, _ in first)
            y0 = math.exp(statistics.mean(math.log(y) for _, y in first)) * 1e3
            x1 = max(x for pts in data.values() for x, y in pts if y)
            for p, style, text in ((1, ":", "\u221d N"), (2, "--", "\u221d N\u00b2")):
                ax.plot([x0, x1], [y0, y0 * (x1 / x0) ** p], style, color="0.6", linewidth=1, label=text)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted({x for pts in data.values() for x, _ in pts})
        if ticks and all(math.isqrt(t) ** 2 == t for t in ticks):  # square sizes: label 64\u00b2, 128\u00b2, ...
            ax.set_xticks(ticks, [f"{math.isqrt(t)}\u00b2" for t in ticks])
            ax.set_xticks([], minor=True)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("time (ms)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # beside the panel: many lines meet at the small sizes
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------- mixers
MIXER_COLUMNS = [
    "mixer", "size", "tokens", "batch", "dim", "device",
    "fwd_ms", "fwd_mtok_s", "fwd_peak_mb", "fwd_status",
    "fwdbwd_ms", "fwdbwd_mtok_s", "fwdbwd_peak_mb", "fwdbwd_status",
    "macs", "params",
]  # fmt: skip
MIXER_TABLE = [
    "mixer", "size", "tokens", "fwd ms", "fwd+bwd ms", "fwd Mtok/s", "fwd+bwd Mtok/s",
    "fwd peak MB", "fwd+bwd peak MB", "MACs", "params",
]  # fmt: skip
EXPONENT_TABLE = ["mixer", "exponent fwd", "exponent fwd+bwd", "fitted over sizes"]


@dataclass
class MixerCell:
    mixer: str
    size: int
    tokens: int
    fwd: Phase
    train: Phase
    macs: int | None = None
    params: int | None = None


def _mtok_s(tokens: int, phase: Phase) -> float | None:
    return tokens / phase.seconds / 1e6 if phase.ok and phase.seconds > 0 else None


def bench_mixer(
    spec: str, sizes: Sequence[int], args: argparse.Namespace, device: torch.device, on_cell: Callable[[], None]
) -> list[MixerCell]:
    """Every size of one mixer, smallest first (so the guard can predict the next size)."""
    from sandbox import count_params
    from sandbox.registry import MIXERS, build_mixer, parse_spec

    torch.manual_seed(0)
    mixer = build_mixer(spec, args.dim).to(device)
    params = count_params(mixer)
    multiple = int(MIXERS.entry(parse_spec(spec, "mixer")[0]).meta.get("size_multiple", 1))
    guard = Guard(args.max_seconds, int(args.max_memory_gb * 2**30))
    cells = []
    for size in sizes:
        tokens = size * size
        cell = MixerCell(spec, size, tokens, Phase(), Phase(), params=params)
        if size % multiple:
            why = f"n/a (needs H, W multiples of {multiple})"
            cell.fwd, cell.train = Phase(status=why), Phase(status=why)
        else:
            cell.fwd, cell.train, cell.macs = _mixer_cell(mixer, size, args, device, guard)
        cells.append(cell)
        on_cell()
    del mixer
    _cleanup(device)
    return cells


def _mixer_cell(mixer, size: int, args, device, guard: Guard) -> tuple[Phase, Phase, int | None]:
    tokens = size * size
    try:
        x = torch.randn(args.batch, args.dim, size, size, device=device)
        gy = torch.randn_like(x)
    except Exception as e:
        why = Phase(status=f"n/a ({_reason(e)})")
        return why, why, None
    params = [p for p in mixer.parameters() if p.requires_grad]

    def forward() -> None:
        with torch.no_grad():
            mixer(x)

    mixer.eval()
    fwd = measure("fwd", forward, tokens, device, args, guard)
    macs = _macs(mixer, tuple(x.shape), device) if fwd.ok else None

    xg = x.clone().requires_grad_(True)

    def forward_backward() -> None:
        for p in params:
            p.grad = None
        xg.grad = None
        mixer(xg).backward(gy)

    mixer.train()
    if fwd.ok:
        train = measure("train", forward_backward, tokens, device, args, guard)
    else:
        train = Phase(status=fwd.status)
    for p in params:
        p.grad = None
    return fwd, train, macs


def mixer_rows(cells: Sequence[MixerCell], args, device) -> list[dict[str, Any]]:
    rows = []
    for c in cells:
        rows.append({
            "mixer": c.mixer, "size": c.size, "tokens": c.tokens, "batch": args.batch, "dim": args.dim,
            "device": str(device),
            "fwd_ms": None if not c.fwd.ok else f"{c.fwd.seconds * 1e3:.6g}",
            "fwd_mtok_s": None if not c.fwd.ok else f"{_mtok_s(c.tokens * args.batch, c.fwd):.6g}",
            "fwd_peak_mb": None if c.fwd.peak_bytes is None else f"{c.fwd.peak_bytes / MiB:.6g}",
            "fwd_status": c.fwd.status,
            "fwdbwd_ms": None if not c.train.ok else f"{c.train.seconds * 1e3:.6g}",
            "fwdbwd_mtok_s": None if not c.train.ok else f"{_mtok_s(c.tokens * args.batch, c.train):.6g}",
            "fwdbwd_peak_mb": None if c.train.peak_bytes is None else f"{c.train.peak_bytes / MiB:.6g}",
            "fwdbwd_status": c.train.status,
            "macs": c.macs, "params": c.params,
        })  # fmt: skip
    return rows


def exponents(cells: Sequence[MixerCell], fit_sizes: Sequence[int]) -> list[dict[str, Any]]:
    """Per mixer: fitted exponents of forward and forward+backward time against tokens over ``fit_sizes``."""
    out = []
    for name in dict.fromkeys(c.mixer for c in cells):
        mine = [c for c in cells if c.mixer == name and c.size in fit_sizes]
        row: dict[str, Any] = {"mixer": name}
        for key, attr in (("fwd", "fwd"), ("fwdbwd", "train")):
            ok = [c for c in mine if getattr(c, attr).ok]
            row[f"exponent_{key}"] = fit_exponent([c.tokens for c in ok], [getattr(c, attr).seconds for c in ok])
            row[f"sizes_{key}"] = [c.size for c in ok]
        out.append(row)
    return out


def _exponent_sizes(row: dict[str, Any]) -> str:
    a, b = row["sizes_fwd"], row["sizes_fwdbwd"]
    text = ",".join(map(str, a)) or "-"
    return text if a == b else f"{text} (fwd+bwd: {','.join(map(str, b)) or '-'})"


def mixers_markdown(cells: Sequence[MixerCell], exps: Sequence[dict[str, Any]], args, device) -> str:
    table = [
        [c.mixer, c.size, c.tokens * args.batch, _cell(c.fwd), _cell(c.train),
         fmt_rate(_mtok_s(c.tokens * args.batch, c.fwd)), fmt_rate(_mtok_s(c.tokens * args.batch, c.train)),
         fmt_mb(c.fwd.peak_bytes), fmt_mb(c.train.peak_bytes), _human(c.macs), _human(c.params)]
        for c in cells
    ]  # fmt: skip
    exp_rows = [
        [r["mixer"], fmt_exp(r["exponent_fwd"]), fmt_exp(r["exponent_fwdbwd"]), _exponent_sizes(r)] for r in exps
    ]
    notes = [
        f"Token mixers on a ({args.batch}, {args.dim}, S, S) input; {_settings(args, device)}.",
        "fwd: eval mode under no_grad; fwd+bwd: train mode, gradients w.r.t. the input and every parameter. "
        "Mtok/s: tokens (batch x S x S) per second. Peak MB: allocated during one call above what was allocated "
        f"before it ({'CUDA allocator peak' if device.type == 'cuda' else 'CPU allocator, from torch.profiler'}). "
        "MACs: multiply-adds of one forward (FFTs not counted).",
    ]
    parts = ["# Mixer benchmark", "\n\n".join(notes), markdown_table(MIXER_TABLE, table, "lrrrrrrrrrr")]
    parts += ["## Exponent p of time ~ tokens^p (least squares on log-log)", markdown_table(EXPONENT_TABLE, exp_rows)]
    targets = _mixer_targets(cells, exps)
    if targets:
        parts += ["## Targets (issue 7)", "\n".join(f"- {t}" for t in targets)]
    return "\n\n".join(parts) + "\n"


def _mixer_targets(cells: Sequence[MixerCell], exps: Sequence[dict[str, Any]]) -> list[str]:
    """The issue's performance targets that this run can check (forward+backward exponents; forward in brackets)."""
    by = {r["mixer"]: r for r in exps}
    lines = []
    for name, bound, how in (("hco", 1.5, "<="), ("hyena_pixel", 1.25, "<="), ("attention_global", 2.0, "about")):
        r = by.get(name)
        if r is None or r["exponent_fwdbwd"] is None:
            continue
        p = r["exponent_fwdbwd"]
        met = p <= bound + 1e-9 if how == "<=" else abs(p - bound) <= 0.25
        lines.append(
            f"{name}: exponent {p:.2f} (fwd {fmt_exp(r['exponent_fwd'])}) over {_exponent_sizes(r)}, target {how} "
            f"{bound:g}: {'met' if met else 'NOT met'}"
        )
    by_cell = {(c.mixer, c.size): c for c in cells if c.train.ok}
    for size in sorted({c.size for c in cells}):
        h, a = by_cell.get(("hco", size)), by_cell.get(("attention_window", size))
        if h and a:
            ratio = h.train.seconds / a.train.seconds
            target = f" (target <= 0.33: {'met' if ratio <= 1 / 3 else 'NOT met'})" if size == 256 else ""
            lines.append(f"hco / attention_window fwd+bwd time at {size}x{size}: {ratio:.2f}{_mac_ratio(h, a)}{target}")
    return lines


def _mac_ratio(a: MixerCell | ArchCell, b: MixerCell | ArchCell) -> str:
    """a's MACs over b's: the time ratio both would have at the same arithmetic rate (MAC/s); FFTs not counted."""
    if not a.macs or not b.macs:
        return ""
    return f" (MACs ratio {a.macs / b.macs:.2f}: the time ratio at equal MAC/s)"


def _time_panels(curves: dict[str, list], x_of, timings: list[tuple[str, str, dict]]) -> list[tuple[str, dict, dict]]:
    """Panels for :func:`_plot_loglog`: per (title, timing attribute, legend labels), each curve's (x, seconds)."""
    return [(title, {n: [(x_of(c), getattr(c, attr).seconds) for c in cs] for n, cs in curves.items()}, labels)
            for title, attr, labels in timings]  # fmt: skip


def cmd_mixers(args: argparse.Namespace) -> int:
    from sandbox import list_mixers, load_plugins
    from sandbox.registry import build_mixer
    from sandbox.report import write_text

    load_plugins(args.plugin)
    device = _setup(args)
    sizes = parse_sizes(args.sizes)
    fit_sizes = parse_sizes(args.fit_sizes, "--fit-sizes") if args.fit_sizes else sizes
    if not set(fit_sizes) <= set(sizes):
        raise OptionError(f"--fit-sizes {args.fit_sizes!r} must be a subset of --sizes {args.sizes!r}")
    _at_least(1, ("--dim", args.dim), ("--batch", args.batch))
    specs = [s for item in args.mixers for s in split_specs(item)] if args.mixers else list_mixers()
    if not specs:
        raise OptionError("--mixers is empty")
    for spec in specs:  # every spec builds before anything is measured or written
        build_mixer(spec, args.dim)
    out = _check_out(args.out, "mixers")

    bar = _progress(len(specs) * len(sizes), "mixers")
    cells: list[MixerCell] = []
    try:
        for spec in specs:
            bar.set_postfix_str(spec)
            cells += bench_mixer(spec, sizes, args, device, lambda: bar.update(1))
    finally:
        bar.close()

    exps = exponents(cells, fit_sizes)
    md = mixers_markdown(cells, exps, args, device)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "results.csv", mixer_rows(cells, args, device), MIXER_COLUMNS)
    exp_csv = [
        {"mixer": r["mixer"], "exponent_fwd": r["exponent_fwd"], "exponent_fwdbwd": r["exponent_fwdbwd"],
         "sizes_fwd": ",".join(map(str, r["sizes_fwd"])), "sizes_fwdbwd": ",".join(map(str, r["sizes_fwdbwd"]))}
        for r in exps
    ]  # fmt: skip
    _write_csv(out / "exponents.csv", exp_csv, list(exp_csv[0]) if exp_csv else ["mixer"])

    def labels(key: str) -> dict[str, str]:  # legend: the mixer and its fitted exponent
        return {r["mixer"]: f"{r['mixer']} (p = {fmt_exp(r[f'exponent_{key}'])})" for r in exps}

    curves = {s: [c for c in cells if c.mixer == s] for s in specs}
    timings = [("forward", "fwd", labels("fwd")), ("forward + backward", "train", labels("fwdbwd"))]
    panels = _time_panels(curves, lambda c: c.tokens, timings)
    plot = _plot_loglog(panels, out / "time_vs_tokens.png", "tokens (H x W)")
    write_text(out / "results.md", md + f"\n![time against tokens]({plot.name})\n")
    print(md)
    print(f"wrote {out / 'results.csv'}, {out / 'exponents.csv'}, {out / 'results.md'}, {plot}")
    return 0


def _at_least(minimum: int, *flags: tuple[str, int]) -> None:
    """One error line for the first ``(flag, value)`` below ``minimum``."""
    for flag, value in flags:
        if value < minimum:
            raise OptionError(f"{flag} {value} is not valid; expected an integer >= {minimum}")


def _setup(args: argparse.Namespace) -> torch.device:
    from sandbox import resolve_device

    device = resolve_device(args.device)
    if args.clock == "cpu" and device.type == "cuda":
        raise OptionError("--clock cpu measures host CPU time; use --clock wall on CUDA")
    if args.threads is not None:
        _at_least(1, ("--threads", args.threads))
        torch.set_num_threads(args.threads)
    _at_least(1, ("--repeats", args.repeats))
    _at_least(0, ("--warmup", args.warmup))
    if not args.max_seconds > 0:
        raise OptionError(f"--max-seconds {args.max_seconds} is not valid; expected a number > 0")
    if args.max_memory_gb is None:
        args.max_memory_gb = available_memory(device) / 2**30
    elif not args.max_memory_gb > 0:
        raise OptionError(f"--max-memory-gb {args.max_memory_gb} is not valid; expected a number > 0")
    return device


# ---------------------------------------------------------------------------------------------------- archs
ARCH_COLUMNS = [
    "family", "network", "size", "batch", "device", "params", "macs",
    "infer_ms", "infer_img_s", "infer_peak_mb", "infer_status",
    "train_ms", "train_peak_mb", "train_status",
]  # fmt: skip
RESTORATION_TABLE = [
    "network", "size", "params", "MACs", "infer ms", "infer peak MB", "train step ms", "train peak MB",
]  # fmt: skip
CLASSIFICATION_TABLE = ["network", "size", "params", "MACs", "batch", "infer ms/batch", "img/s", "infer peak MB"]


@dataclass
class ArchCell:
    family: str
    network: str
    size: int
    batch: int
    infer: Phase
    train: Phase
    macs: int | None = None
    params: int | None = None


def restoration_specs(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    """(label, spec) of the restoration networks: ``--archs`` as given, else swinir, vheatir and ir per mixer."""
    from sandbox import list_mixers
    from sandbox.registry import parse_spec

    common: dict[str, Any] = {"preset": args.preset, "in_chans": args.in_chans}
    if args.embed_dim is not None:
        common["embed_dim"] = args.embed_dim
    if args.depths is not None:
        if not re.fullmatch(r"\s*[1-9]\d*(\s*,\s*[1-9]\d*)*\s*", args.depths):
            raise OptionError(
                f"--depths {args.depths!r} is not valid; expected comma-separated integers >= 1, e.g. 4,4,4"
            )
        common["depths"] = tuple(int(d) for d in args.depths.split(","))
    if args.archs:
        out = []
        for text in args.archs:
            for spec in split_specs(text):
                name, options = parse_spec(spec, "network")
                out.append((spec, {"name": name, **common, **options}))
        return out
    mixers = [s for item in args.mixers for s in split_specs(item)] if args.mixers else list_mixers()
    out = [("swinir", {"name": "swinir", **common}), ("vheatir", {"name": "vheatir", **common})]
    out += [(f"ir:{m}", {"name": "ir", "mixer": m, **common}) for m in mixers if m != "attention_window"]
    return out


def classification_specs(args: argparse.Namespace) -> list[tuple[str, dict[str, Any]]]:
    from sandbox import list_archs
    from sandbox.registry import parse_spec

    if args.cls:
        specs = [s for item in args.cls for s in split_specs(item)]
    else:
        specs = [n for n in list_archs(family="classification") if n != "metaformer"]  # the bare skeleton
    out = []
    for spec in specs:
        name, options = parse_spec(spec, "network")
        out.append((spec, {"name": name, **options}))
    return out


def bench_restoration(
    label: str, spec: dict, sizes: Sequence[int], args, device, on_cell: Callable[[], None]
) -> list[ArchCell]:
    from sandbox import build_arch, count_params

    torch.manual_seed(0)
    net = build_arch(spec).to(device)
    in_chans = int(getattr(net, "in_chans", args.in_chans))
    params = count_params(net)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    guard = Guard(args.max_seconds, int(args.max_memory_gb * 2**30))
    cells = []
    for size in sizes:
        cell = ArchCell("restoration", label, size, 1, Phase(), Phase(), params=params)
        try:
            x = torch.rand(1, in_chans, size, size, device=device)
            target = torch.rand_like(x)
        except Exception as e:
            cell.infer = cell.train = Phase(status=f"n/a ({_reason(e)})")
            cells.append(cell)
            on_cell()
            continue

        net.eval()
        cell.infer = measure("infer", _inference(net, x), size * size, device, args, guard)
        if cell.infer.ok:
            cell.macs = _macs(net, tuple(x.shape), device)
            net.train()
            cell.train = measure("train", _train_step(net, opt, x, target), size * size, device, args, guard)
        else:
            cell.train = Phase(status=cell.infer.status)
        opt.zero_grad(set_to_none=True)
        cells.append(cell)
        on_cell()
    return cells


def _inference(net: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def infer() -> None:
        with torch.no_grad():
            net(x)

    return infer


def _train_step(net: torch.nn.Module, opt, x: torch.Tensor, target: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.l1_loss(net(x), target).backward()
        opt.step()

    return step


def bench_classification(label: str, spec: dict, args, device, on_cell: Callable[[], None]) -> ArchCell:
    from sandbox import build_arch, count_params

    torch.manual_seed(0)
    net = build_arch(spec).to(device).eval()
    in_chans = int(getattr(net, "in_chans", 3))
    size, batch = args.cls_size, args.cls_batch
    cell = ArchCell("classification", label, size, batch, Phase(), Phase(status="-"), params=count_params(net))
    guard = Guard(args.max_seconds, int(args.max_memory_gb * 2**30))
    try:
        x = torch.rand(batch, in_chans, size, size, device=device)
        cell.infer = measure("infer", _inference(net, x), size * size, device, args, guard)
        if cell.infer.ok:
            cell.macs = _macs(net, (1, in_chans, size, size), device)
    except Exception as e:
        cell.infer = Phase(status=f"n/a ({_reason(e)})")
    on_cell()
    return cell


def arch_rows(cells: Sequence[ArchCell], device) -> list[dict[str, Any]]:
    rows = []
    for c in cells:
        rows.append({
            "family": c.family, "network": c.network, "size": c.size, "batch": c.batch, "device": str(device),
            "params": c.params, "macs": c.macs,
            "infer_ms": None if not c.infer.ok else f"{c.infer.seconds * 1e3:.6g}",
            "infer_img_s": None if not c.infer.ok else f"{c.batch / c.infer.seconds:.6g}",
            "infer_peak_mb": None if c.infer.peak_bytes is None else f"{c.infer.peak_bytes / MiB:.6g}",
            "infer_status": c.infer.status,
            "train_ms": None if not c.train.ok else f"{c.train.seconds * 1e3:.6g}",
            "train_peak_mb": None if c.train.peak_bytes is None else f"{c.train.peak_bytes / MiB:.6g}",
            "train_status": c.train.status if c.family == "restoration" else "",
        })  # fmt: skip
    return rows


def archs_markdown(cells: Sequence[ArchCell], args, device, restoration_note: str) -> str:
    parts = ["# Network benchmark", f"{_settings(args, device)}."]
    rest = [c for c in cells if c.family == "restoration"]
    if rest:
        rows = [
            [c.network, c.size, _human(c.params), _human(c.macs), _cell(c.infer), fmt_mb(c.infer.peak_bytes),
             _cell(c.train), fmt_mb(c.train.peak_bytes)]
            for c in rest
        ]  # fmt: skip
        parts += [
            "## Restoration networks",
            f"{restoration_note} Batch 1, {args.in_chans}-channel S x S input. infer: eval mode under no_grad; train "
            "step: forward, L1 loss, backward, Adam step. Peak MB: allocated during one call above what was "
            "allocated before it. MACs: one forward.",
            markdown_table(RESTORATION_TABLE, rows, "lrrrrrrr"),
        ]
        speed = _speedups(rest)
        if speed:
            parts += ["\n".join(f"- {s}" for s in speed)]
    cls = [c for c in cells if c.family == "classification"]
    if cls:
        rows = [
            [c.network, c.size, _human(c.params), _human(c.macs), c.batch, _cell(c.infer),
             fmt_rate(c.batch / c.infer.seconds) if c.infer.ok else "-", fmt_mb(c.infer.peak_bytes)]
            for c in cls
        ]  # fmt: skip
        parts += [
            "## Classification configurations",
            f"Inference (eval, no_grad) on a ({args.cls_batch}, 3, {args.cls_size}, {args.cls_size}) input; MACs per "
            "image.",
            markdown_table(CLASSIFICATION_TABLE, rows, "lrrrrrrr"),
        ]
    return "\n\n".join(parts) + "\n"


def _speedups(cells: Sequence[ArchCell]) -> list[str]:
    """vheatir against swinir per size (the issue's target: at least 2x faster inference at 512)."""
    t = {(c.network, c.size): c for c in cells}
    lines = []
    for size in sorted({c.size for c in cells}):
        s, v = t.get(("swinir", size)), t.get(("vheatir", size))
        if s and v and s.infer.ok and v.infer.ok:
            x = s.infer.seconds / v.infer.seconds
            tr = f", training step {s.train.seconds / v.train.seconds:.2f}x" if s.train.ok and v.train.ok else ""
            target = f" (target >= 2x: {'met' if x >= 2 else 'NOT met'})" if size == 512 else ""
            lines.append(f"speed-up of vheatir over swinir at {size}x{size}: inference {x:.2f}x{target}{tr}")
            if s.macs and v.macs:
                ratio = s.macs / v.macs
                lines.append(f"swinir / vheatir MACs at {size}x{size}: {ratio:.2f}x (the speed-up at equal MAC/s)")
    return lines


def cmd_archs(args: argparse.Namespace) -> int:
    from sandbox import build_arch, load_plugins
    from sandbox.registry import ARCHS
    from sandbox.report import write_text

    load_plugins(args.plugin)
    device = _setup(args)
    sizes = parse_sizes(args.sizes)
    if args.cls_batch is None:
        args.cls_batch = 64 if device.type == "cuda" else 4
    _at_least(1, ("--cls-size", args.cls_size), ("--cls-batch", args.cls_batch), ("--in-chans", args.in_chans))
    if args.family not in ("all", "restoration", "classification"):
        raise OptionError(f"--family {args.family!r} is not one of 'all', 'restoration', 'classification'")
    rest = restoration_specs(args) if args.family in ("all", "restoration") else []
    cls = classification_specs(args) if args.family in ("all", "classification") else []
    for want, specs, flag in (("restoration", rest, "--archs"), ("classification", cls, "--cls")):
        for label, spec in specs:  # every network builds before anything is measured or written
            family = ARCHS.entry(spec["name"]).meta.get("family")
            if (family == "classification") != (want == "classification"):
                raise OptionError(f"{flag}: {label!r} is a {family} network, not a {want} one")
            build_arch(spec)
    out = _check_out(args.out, "archs")

    bar = _progress(len(rest) * len(sizes) + len(cls), "archs")
    cells: list[ArchCell] = []
    try:
        for label, spec in rest:
            bar.set_postfix_str(label)
            cells += bench_restoration(label, spec, sizes, args, device, lambda: bar.update(1))
            _cleanup(device)
        for label, spec in cls:
            bar.set_postfix_str(label)
            cells.append(bench_classification(label, spec, args, device, lambda: bar.update(1)))
            _cleanup(device)
    finally:
        bar.close()

    note = ""
    if rest:
        first = build_arch(rest[0][1])
        cfg = getattr(first, "cfg", None)
        if cfg is not None and hasattr(cfg, "embed_dim"):
            note = f"Every network at preset {args.preset!r}: embed_dim {cfg.embed_dim}, depths {tuple(cfg.depths)}."
        del first
    md = archs_markdown(cells, args, device, note)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "results.csv", arch_rows(cells, device), ARCH_COLUMNS)
    written = [out / "results.csv", out / "results.md"]
    extra = ""
    rest_cells = [c for c in cells if c.family == "restoration"]
    if rest_cells:
        curves = {n: [c for c in rest_cells if c.network == n] for n in dict.fromkeys(c.network for c in rest_cells)}
        timings = [("inference", "infer", {}), ("training step", "train", {})]
        panels = _time_panels(curves, lambda c: c.size * c.size, timings)
        plot = _plot_loglog(panels, out / "time_vs_tokens.png", "pixels (H x W)")
        written.append(plot)
        extra = f"\n![time against pixels]({plot.name})\n"
    write_text(out / "results.md", md + extra)
    print(md)
    print("wrote " + ", ".join(map(str, written)))
    return 0


# ---------------------------------------------------------------------------------------------------- official
OFFICIAL_COLUMNS = [
    "kind", "pair", "official", "size", "threads", "device", "mode", "official_ms", "ours_ms", "ratio",
    "ratio_q25", "ratio_q75", "rounds", "official_peak_mb", "ours_peak_mb", "max_abs_diff", "grad_max_abs_diff",
    "status",
]  # fmt: skip
PAIR_MODES = {  # mode -> (what the table calls it, module in train mode, gradients)
    "fwd": ("forward (eval, no_grad)", False, False),
    "fwd_uncached": ("forward (train mode, no_grad)", True, False),
    "fwd_bwd": ("forward+backward", True, True),
}
NET_MODES = {"infer": ("inference", False, False), "train": ("training step", True, True)}
# official / ours at least this much; fwd (eval) of a pair has no target: its caches are allowed to count there
OFFICIAL_TARGETS: dict[str, dict[str, float]] = {
    "hco": {"fwd_uncached": 1.5, "fwd_bwd": 2.0},
    "hyena_pixel": {"fwd_uncached": 1.5, "fwd_bwd": 2.0},
    "hyena_bi": {"fwd_uncached": 1.5, "fwd_bwd": 2.0},
    "gfnet": {"fwd_uncached": 1.5, "fwd_bwd": 1.5},
    "attention_window": {"fwd": 1.2, "fwd_uncached": 1.2, "fwd_bwd": 1.2},
    "swinir": {"infer": 1.2, "train": 1.2},
}
MEMORY_MODES = ("fwd_bwd", "train")  # peak memory is measured (and compared) for these


def interleaved(
    fns: Sequence[Callable[[], Any]], device: torch.device, rounds: int, warmup: int, clock: str = "wall"
) -> list[list[float]]:
    """Seconds per call of each of ``fns``, one sample each per round, the calls alternating.

    After ``warmup`` untimed calls of each (at least one), a sample of ``fns[i]`` times as many back-to-back calls
    as fill 10 ms and reports the time per call. Round r samples the functions in order, round r + 1 in reverse
    (ABBA), so a slow drift of the machine's speed weighs on every function alike.
    """
    now = _clock(clock)
    numbers = [_warm_up(fn, device, warmup, now) for fn in fns]
    samples: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        for i in range(len(fns)) if r % 2 == 0 else reversed(range(len(fns))):
            _sync(device)
            t0 = now()
            for _ in range(numbers[i]):
                fns[i]()
            _sync(device)
            samples[i].append((now() - t0) / numbers[i])
    return samples


def ratio_summary(official: Sequence[float], ours: Sequence[float]) -> tuple[float, float, float]:
    """(median official / median ours, 25th and 75th percentiles of the per-round ratios)."""
    ratios = sorted(a / b for a, b in zip(official, ours))
    q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else [ratios[0]] * 3
    return statistics.median(official) / statistics.median(ours), q[0], q[2]


def _pair_calls(side, x_cf: torch.Tensor, g_cf: torch.Tensor, mode: str):
    """The call timed for one side in one mode: eval/train forward under no_grad, or forward + backward(g)."""
    _, train, grad = {**PAIR_MODES, **NET_MODES}[mode]
    side.module.train(train)
    x = side.to_input(x_cf).detach()
    if not grad:

        def forward() -> None:
            with torch.no_grad():
                side.module(x)

        return forward
    x.requires_grad_(True)
    g = side.to_input(g_cf)  # outputs have the input's layout
    params = [p for p in side.module.parameters() if p.requires_grad]

    def forward_backward() -> None:
        x.grad = None
        for p in params:
            p.grad = None
        side.module(x).backward(g)

    return forward_backward


def _net_calls(side, x: torch.Tensor, target: torch.Tensor, mode: str):
    """The call timed for one network in one mode: inference, or a training step with an Adam of its own."""
    side.module.train(mode == "train")
    if mode != "train":
        return _inference(side.module, x)
    return _train_step(side.module, torch.optim.Adam(side.module.parameters(), lr=1e-4), x, target)


def _differences(off, ours, x_cf: torch.Tensor, g_cf: torch.Tensor, grads: bool) -> tuple[float, float | None]:
    """Max abs difference of the outputs (eval mode) and, for ``grads``, of the input gradients (train mode)."""
    outs = []
    for side in (off, ours):
        side.module.eval()
        with torch.no_grad():
            outs.append(side.to_cf(side.module(side.to_input(x_cf))).float())
    diff = (outs[0] - outs[1]).abs().max().item()
    if not grads:
        return diff, None
    gx = []
    for side in (off, ours):
        side.module.train()
        x = side.to_input(x_cf).detach().requires_grad_(True)
        side.module(x).backward(side.to_input(g_cf))
        gx.append(side.to_cf(x.grad).float())
        side.module.zero_grad(set_to_none=True)
    return diff, (gx[0] - gx[1]).abs().max().item()


def bench_official_pair(pair, root: Path, size: int, args, device, guard: Guard | None = None) -> list[dict[str, Any]]:
    """Every mode of one pair (or network) at one size and the current thread count: rows of OFFICIAL_COLUMNS.

    ``guard`` (one per pair and thread count, sizes ascending) skips a mode whose peak memory, predicted from the
    previous size (memory ~ pixels, 1.5x margin), exceeds ``--max-memory-gb``: its row says ``n/a (reason)``.
    """
    guard = guard or Guard(math.inf, 1 << 62)
    is_net = pair.name in _official().NETS
    torch.manual_seed(0)
    off, ours = pair.build(root, args.dim, size)
    off.module.to(device)
    ours.module.to(device)
    chans = 3 if is_net else args.dim
    x = torch.randn(args.batch, chans, size, size, device=device)
    g = torch.randn_like(x)
    if is_net:
        x = x.sigmoid()  # images in [0, 1]
    base = dict(
        kind="network" if is_net else "mixer", pair=pair.name, official=pair.official, size=size,
        threads=torch.get_num_threads() if device.type == "cpu" else "", device=str(device), rounds=args.rounds,
    )  # fmt: skip
    diff, gdiff = (None, None)
    if pair.equivalent:
        diff, gdiff = _differences(off, ours, x, g, grads=not is_net)
    rows = []
    for mode in NET_MODES if is_net else PAIR_MODES:
        try:
            guard.check(mode, size * size)
        except CellSkipped as e:
            rows.append(dict(base, mode=mode, status=f"n/a ({e})", max_abs_diff=diff, grad_max_abs_diff=gdiff))
            continue
        if is_net:
            fns = [_net_calls(s, x, g.sigmoid(), mode) for s in (off, ours)]
        else:
            fns = [_pair_calls(s, x, g, mode) for s in (off, ours)]
        t_off, t_ours = interleaved(fns, device, args.rounds, args.warmup, args.clock)
        ratio, q25, q75 = ratio_summary(t_off, t_ours)
        peaks = [peak_memory(fn, device) for fn in fns] if mode in MEMORY_MODES else [None, None]
        peak = max(peaks) if mode in MEMORY_MODES else None
        profiles = [profile_ops(fn, args.profile) for fn in fns] if args.profile and device.type == "cpu" else None
        guard.record(mode, size * size, Phase(statistics.median(t_ours), peak))
        rows.append(
            dict(
                base,
                mode=mode,
                official_ms=statistics.median(t_off) * 1e3,
                ours_ms=statistics.median(t_ours) * 1e3,
                ratio=ratio,
                ratio_q25=q25,
                ratio_q75=q75,
                official_peak_mb=None if peaks[0] is None else peaks[0] / MiB,
                ours_peak_mb=None if peaks[1] is None else peaks[1] / MiB,
                max_abs_diff=diff,
                grad_max_abs_diff=gdiff,
                profiles=profiles,
            )  # fmt: skip
        )
        for s in (off, ours):
            s.module.zero_grad(set_to_none=True)
    del off, ours
    _cleanup(device)
    return rows


def _fmt_ratio(row: dict[str, Any]) -> str:
    if row.get("status"):
        return row["status"]
    return f"{row['ratio']:.2f} [{row['ratio_q25']:.2f}, {row['ratio_q75']:.2f}]"


def _fmt_diff(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def official_markdown(rows: Sequence[dict[str, Any]], pairs, args, device) -> str:
    """Per thread count, a table of the mixer pairs and one of the networks; then the pairs' configurations and the
    targets, met or not."""
    o = _official()
    lines = [
        "# Ours against the official implementations",
        "",
        f"Settings: {_settings_official(args, device)}.",
        "",
        "Each cell: official time / our time (above 1: ours is faster), the median of each side over the rounds, "
        "and in brackets the 25th and 75th percentiles of the per-round ratios. Calls alternate official, ours, "
        "ours, official, ... in one process. Peak memory: forward+backward (networks: training step) above what was "
        "allocated before the call. max |diff|: outputs after copying the official weights onto ours (eval mode); "
        "grad: the input gradients (train mode).",
    ]
    threads = list(dict.fromkeys(r["threads"] for r in rows))
    for t in threads:
        sub = [r for r in rows if r["threads"] == t]
        for kind, modes, title in (("mixer", PAIR_MODES, "Mixers"), ("network", NET_MODES, "Networks")):
            part = [r for r in sub if r["kind"] == kind]
            if not part:
                continue
            mem_mode = "fwd_bwd" if kind == "mixer" else "train"
            header = ["pair", "size", "max |diff|", "grad"][: 4 if kind == "mixer" else 3]
            header += [label for label, _, _ in modes.values()] + ["peak MB official / ours"]
            table = []
            for name in dict.fromkeys(r["pair"] for r in part):
                for size in dict.fromkeys(r["size"] for r in part if r["pair"] == name):
                    cell = {r["mode"]: r for r in part if r["pair"] == name and r["size"] == size}
                    first = next(iter(cell.values()))
                    row = [f"{name} vs {first['official']}", str(size), _fmt_diff(first["max_abs_diff"])]
                    row += [_fmt_diff(first["grad_max_abs_diff"])] if kind == "mixer" else []
                    row += [_fmt_ratio(cell[m]) for m in modes]
                    mem = cell[mem_mode]
                    row.append(f"{fmt_mb(_mb(mem.get('official_peak_mb')))} / {fmt_mb(_mb(mem.get('ours_peak_mb')))}")
                    table.append(row)
            label = f"{t} thread{'s' if t != 1 else ''}" if t != "" else str(device)
            lines += ["", f"## {title}, {label}", "", markdown_table(header, table)]
    lines += ["", "## Configurations", ""]
    cfg_rows = [
        [f"{p.name} vs {p.official} ({o.REPOS[p.repo][0]} {o.REPOS[p.repo][1]})", p.config, p.differs] for p in pairs
    ]
    lines += [markdown_table(["pair", "configuration", "what differs"], cfg_rows)]
    lines += ["", "## Targets", ""] + official_targets(rows)
    return "\n".join(lines) + "\n"


def _mb(value: float | None) -> int | None:
    return None if value is None else int(value * MiB)


PROFILE_TOP = 12  # operators per side listed in profile.md
# The operators that do a cell's arithmetic: dense products, convolutions and FFTs (scipy's DCT runs inside our
# autograd node of that name). Our own time in them bounds what any rewrite of the rest can reach (see ceiling()).
PRODUCT_OPS = frozenset(
    {
        "aten::mm",
        "aten::bmm",
        "aten::addmm",
        "aten::baddbmm",
        "aten::mkldnn_convolution",
        "aten::convolution_backward",
        "aten::_slow_conv2d_forward",
        "aten::_slow_conv2d_backward",
        "aten::_fft_r2c",
        "aten::_fft_c2r",
        "aten::_fft_c2c",
        "_ScipyHeat",
        "_ScipyDCT2",
    }
)


def ceiling(off: dict[str, float], ours: dict[str, float]) -> tuple[float, float | None]:
    """(our ms in :data:`PRODUCT_OPS`, the ratio ceiling official total / that): the official / ours ratio this
    design could reach if everything but its products took no time. A target above the ceiling needs fewer or faster
    products (other algorithms or kernels), not less overhead."""
    products = sum(t for k, t in ours.items() if k in PRODUCT_OPS)
    return products, (off["(all operators)"] / products if products > 0 else None)


def _cell_title(row: dict[str, Any]) -> str:
    mode = PAIR_MODES.get(row["mode"], NET_MODES.get(row["mode"]))[0]
    return f"{row['pair']} vs {row['official']}, {row['size']} px, {row['threads']} thread(s), {mode}"


def profile_markdown(rows: Sequence[dict[str, Any]], calls: int) -> str:
    """``profile.md``: a summary of every cell's ratio, target and ceiling (:func:`ceiling`), then per pair, size,
    thread count and mode the operators with the most self CPU time on either side (ms per call, official and ours),
    so a ratio can be traced to the operators behind it."""
    rows = [r for r in rows if r.get("profiles")]
    lines = [
        "# Where the time goes: operators, official and ours",
        "",
        f"Self CPU time per call (ms) from `torch.profiler` over {calls} calls per side, after the timed rounds; the "
        f"{PROFILE_TOP} operators with the most time on either side, and all operators summed (the profiler adds "
        "its own overhead per operator, so the sums exceed the timed medians).",
        "",
        "**Ceiling**: the official operators' total divided by our time in products (matrix products, convolutions, "
        "FFTs: " + ", ".join(f"`{k}`" for k in sorted(PRODUCT_OPS)) + "). It is the ratio our design would reach if "
        "everything but its products took no time; a target above it cannot be met by removing overhead, only by "
        "fewer or faster products.",
        "",
        "| cell | ratio | target | our products ms | ours total ms | ceiling | target above ceiling |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        off, ours = row["profiles"]
        products, top_ratio = ceiling(off, ours)
        target = OFFICIAL_TARGETS.get(row["pair"], {}).get(row["mode"])
        above = "" if target is None or top_ratio is None else ("**yes**" if target > top_ratio else "no")
        lines.append(
            f"| {_cell_title(row)} | {row['ratio']:.2f} | {'' if target is None else f'{target:.1f}'} | "
            f"{products:.3f} | {ours['(all operators)']:.3f} | {'' if top_ratio is None else f'{top_ratio:.2f}'} | "
            f"{above} |"
        )
    for row in rows:
        off, ours = row["profiles"]
        top = sorted(set(off) | set(ours), key=lambda k: -max(off.get(k, 0.0), ours.get(k, 0.0)))
        top = [k for k in top if k != "(all operators)"][:PROFILE_TOP] + ["(all operators)"]
        lines += [
            "",
            f"## {_cell_title(row)} (ratio {row['ratio']:.2f})",
            "",
            "| operator | official ms | ours ms |",
            "|---|---:|---:|",
        ]
        lines += [f"| `{k}` | {off.get(k, 0.0):.3f} | {ours.get(k, 0.0):.3f} |" for k in top]
    return "\n".join(lines) + "\n"


def official_targets(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per pair and mode with a target: met where every size and thread count reaches it; and memory."""
    out = []
    for name, targets in OFFICIAL_TARGETS.items():
        for mode, target in targets.items():
            cells = [r for r in rows if r["pair"] == name and r["mode"] == mode and r.get("ratio") is not None]
            if not cells:
                continue
            worst = min(cells, key=lambda r: r["ratio"])
            verdict = "met" if worst["ratio"] >= target else "NOT met"
            label = {**PAIR_MODES, **NET_MODES}[mode][0]
            out.append(
                f"- {name} {label} >= {target:g}x: {verdict} (lowest {worst['ratio']:.2f} at {worst['size']} px, "
                f"{worst['threads']} thread(s))"
            )
    for r in rows:
        if r["mode"] in MEMORY_MODES and r.get("ours_peak_mb") is not None and r.get("official_peak_mb") is not None:
            if r["ours_peak_mb"] > r["official_peak_mb"]:
                out.append(
                    f"- {r['pair']} peak memory at {r['size']} px, {r['threads']} thread(s): ours "
                    f"{r['ours_peak_mb']:.1f} MB > official {r['official_peak_mb']:.1f} MB: NOT met"
                )
    if not any("memory" in line for line in out):
        out.append("- peak memory: ours at most the official's in every cell: met")
    return out


def _settings_official(args, device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return (
        f"device {device} ({name}), torch {torch.__version__}, fp32, dim {args.dim}, batch {args.batch}, "
        f"{args.rounds} rounds after {max(1, args.warmup)} warm-up call(s), {args.clock} clock"
    )


def _official():
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import official

    return official


def cmd_official(args: argparse.Namespace) -> int:
    from sandbox import resolve_device
    from sandbox.report import write_text

    o = _official()
    device = resolve_device(args.device)
    root = Path(args.official_dir)
    if not root.is_dir():
        raise OptionError(
            f"--official-dir {args.official_dir!r} is not a folder (expected <dir>/<Repo>/<path in repo>)"
        )
    if args.pairs is None:
        names = list(o.PAIRS)
    else:
        names = [] if args.pairs.strip() == "none" else [n.strip() for n in args.pairs.split(",") if n.strip()]
    for n in names:
        if n not in o.PAIRS:
            raise OptionError(f"--pairs: {n!r} is not one of {', '.join(o.PAIRS)} (or 'none')")
    pairs = [o.PAIRS[n] for n in names] + (list(o.NETS.values()) if args.nets else [])
    if not pairs:
        raise OptionError("nothing to run: --pairs none without --nets")
    sizes, net_sizes = parse_sizes(args.sizes), parse_sizes(args.net_sizes, "--net-sizes")
    threads = parse_sizes(args.threads, "--threads") if device.type == "cpu" else [torch.get_num_threads()]
    _at_least(1, ("--rounds", args.rounds), ("--dim", args.dim), ("--batch", args.batch))
    _at_least(0, ("--warmup", args.warmup), ("--profile", args.profile))
    for p in pairs:  # every official file loads and every pair builds before anything is measured
        p.build(root, args.dim, min(net_sizes if p.name in o.NETS else sizes))
    out = _check_out(args.out, "official")

    cells = [(p, s, t) for t in threads for p in pairs for s in (net_sizes if p.name in o.NETS else sizes)]
    bar = _progress(len(cells), "official")
    rows: list[dict[str, Any]] = []
    saved = torch.get_num_threads()
    max_bytes = int((args.max_memory_gb or available_memory(device) / 2**30) * 2**30)
    guards: dict[tuple[str, int], Guard] = {}
    try:
        for pair, size, t in cells:
            bar.set_postfix_str(f"{pair.name} {size} px, {t} thread(s)")
            if device.type == "cpu":
                torch.set_num_threads(t)
            guard = guards.setdefault((pair.name, t), Guard(math.inf, max_bytes))
            rows += bench_official_pair(pair, root, size, args, device, guard)
            bar.update(1)
    finally:
        bar.close()
        torch.set_num_threads(saved)
    md = official_markdown(rows, pairs, args, device)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "results.csv", rows, OFFICIAL_COLUMNS)
    write_text(out / "results.md", md)
    print(md)
    written = [out / "results.csv", out / "results.md"]
    if args.profile and any(r.get("profiles") for r in rows):
        written.append(write_text(out / "profile.md", profile_markdown(rows, args.profile)))
    print("wrote " + ", ".join(str(w) for w in written))
    return 0


# ---------------------------------------------------------------------------------------------------- CLI
def _common_args(p: argparse.ArgumentParser, sizes: str) -> None:
    p.add_argument("--sizes", default=sizes, help=f"square sizes S in pixels, comma-separated (default {sizes})")
    p.add_argument("--repeats", type=int, default=5, help="timed samples per cell; the median is reported (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing, at least 1 (default 2)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when available; $SANDBOX_DEVICE)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall clock (default) or process CPU time")
    p.add_argument("--max-seconds", type=float, default=60.0, help="skip a cell whose call takes longer (default 60)")
    p.add_argument(
        "--max-memory-gb", type=float, default=None, help="skip a cell predicted to need more (default: 80%% of free)"
    )
    p.add_argument("--out", default=None, help="output folder (default outputs/bench/<kind>_<timestamp>)")
    add_plugin_arg(p)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="kind", required=True)
    p = sub.add_parser("mixers", help="token mixers: latency, throughput, memory, MACs, params, exponent, plot")
    p.add_argument(
        "--mixers",
        action="append",
        default=[],
        metavar="LIST",
        help="mixer specs separated by commas, or by ';' when a spec has options (default: every registered mixer)",
    )
    p.add_argument("--dim", type=int, default=64, help="channels (default 64)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--fit-sizes", default=None, help="sizes the exponent is fitted over (default: all --sizes)")
    _common_args(p, "32,64,128,256")
    p.set_defaults(fn=cmd_mixers)

    p = sub.add_parser("archs", help="restoration networks per size, classification configurations at one size")
    p.add_argument("--family", default="all", help="all (default), restoration or classification")
    p.add_argument(
        "--archs",
        action="append",
        default=[],
        metavar="LIST",
        help="restoration network specs, ';'-separated (default: swinir, vheatir, and ir with each of --mixers)",
    )
    p.add_argument("--mixers", action="append", default=[], metavar="LIST", help="mixers of the ir networks")
    p.add_argument("--preset", default="small", help="preset of every restoration network (default small)")
    p.add_argument("--embed-dim", type=int, default=None, help="width of every restoration network")
    p.add_argument("--depths", default=None, help="blocks per group of every restoration network, e.g. 4,4,4")
    p.add_argument("--in-chans", type=int, default=3, help="image channels of the restoration networks (default 3)")
    p.add_argument(
        "--cls",
        action="append",
        default=[],
        metavar="LIST",
        help="classification specs, ';'-separated (default: every registered configuration but 'metaformer')",
    )
    p.add_argument("--cls-size", type=int, default=224, help="classification input size (default 224)")
    p.add_argument("--cls-batch", type=int, default=None, help="classification batch (default 64 on CUDA, 4 on CPU)")
    _common_args(p, "128,256,512,1024")
    p.set_defaults(fn=cmd_archs)

    p = sub.add_parser("official", help="ours against the official implementations: equivalence, speed, memory")
    p.add_argument("--official-dir", required=True, help="folder holding the official code as <Repo>/<path in repo>")
    p.add_argument("--pairs", default=None, help="pairs, comma-separated, or none (default: all; see official.py)")
    p.add_argument("--nets", action="store_true", help="also SwinIR against our swinir and vheatir (--net-sizes)")
    p.add_argument("--sizes", default="64,128,256", help="mixer pair sizes (default 64,128,256)")
    p.add_argument("--net-sizes", default="256,512", help="network sizes (default 256,512)")
    p.add_argument("--threads", default="1,2", help="CPU thread counts, comma-separated (default 1,2)")
    p.add_argument("--dim", type=int, default=64, help="channels of the mixer pairs (default 64)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--rounds", type=int, default=15, help="timed rounds, each one sample per side (default 15)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per side before timing (default 2)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall clock (default) or process CPU time")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when available; $SANDBOX_DEVICE)")
    p.add_argument(
        "--max-memory-gb", type=float, default=None, help="skip a mode predicted to need more (default: 80%% of free)"
    )
    p.add_argument(
        "--profile", type=int, default=0, metavar="CALLS",
        help="CPU: also profile CALLS calls per side of every cell, top operators in profile.md (default 0: off)",
    )  # fmt: skip
    p.add_argument("--out", default=None, help="output folder (default outputs/bench/official_<timestamp>)")
    p.set_defaults(fn=cmd_official)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    enable_huge_pages()  # first: PyTorch reads the setting at its first CPU allocation (sandbox/_alloc.py)
    args = parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    run_main(main)
