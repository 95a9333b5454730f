"""``python -m sandbox``: list mixers, networks and tasks; check a mixer; fetch and verify data.

python -m sandbox mixers [PATTERN ...] [--exclude PAT] [--options] [--plugin MODULE]
python -m sandbox archs [PATTERN ...] [--family F] [--params] [--macs] [--size S] [--plugin MODULE]
python -m sandbox tasks [PATTERN ...]
python -m sandbox check NAME_OR_SPEC [--device cpu] [--plugin MODULE]
python -m sandbox data fetch [--sets Set12,BSD68 | --sets all] [--dest DIR] [--mirror URL]
python -m sandbox data verify [--data-root DIR] [--sets ...]
python -m sandbox data list [--data-root DIR]
"""

from __future__ import annotations

import argparse
import inspect
import os
from pathlib import Path

from .cli import add_plugin_arg, markdown_table, run_main
from .data import ALL_SETS, WEIGHTS, data_root, fetch, set_files, verify
from .data_sources import DEFAULT_MIRROR, set_of
from .plugins import load_plugins
from .registry import ARCHS, MIXERS, build_arch, list_archs, list_mixers
from .utils import human


def _fmt_default(v) -> str:
    return "required" if v is inspect.Parameter.empty else repr(v)


def cmd_mixers(args) -> int:
    names = list_mixers(args.pattern or "*", args.exclude)
    rows = []
    for n in names:
        e = MIXERS.entry(n)
        opts = ", ".join(f"{k}={_fmt_default(v)}" for k, v in e.options(skip=1).items())
        row = [n, e.meta["family"], e.meta["complexity"], e.meta["sizes"], e.meta["paper"]]
        if args.options:
            row.append(opts or "-")
        if args.module:
            row.append(e.module)
        rows.append(row)
    header = ["mixer", "family", "complexity", "input sizes", "paper"]
    header += ["options"] * bool(args.options) + ["module"] * bool(args.module)
    print(markdown_table(header, rows))
    print(f"\n{len(names)} mixer(s). Build one with sandbox.build_mixer(name, dim) or a spec 'name:key=value,...'.")
    return 0


DEFAULT_SIZE = {"classification": 224, "restoration": 128, "reference": 128}
COUNTS_HINT = "`--params`, `--macs` or `python -m sandbox archs NAME` count them (building each network listed)"


def _wanted_counts(args) -> tuple[bool, bool]:
    """(count parameters, count MACs): asked with ``--params``/``--macs``, or every pattern is one network's exact name.

    The plain listing builds no network: it reads the registry's metadata only, so it answers at once.
    """
    exact = bool(args.pattern) and all(p in ARCHS for p in args.pattern)
    macs = (args.macs or exact) and not args.no_flops
    return args.params or macs or exact, macs


def _declared(meta, key: str) -> str:
    """A count declared at registration (``register_arch(..., params=..., macs=...)``), human-readable, else '-'."""
    value = meta.get(key)
    return human(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def _arch_row(name: str, args, want_params: bool, want_macs: bool) -> list:
    """One listing row; the network is built only when a count is wanted."""
    from .complexity import count_macs, count_params

    e = ARCHS.entry(name)
    family, options = e.meta["family"], e.options()
    size = args.size or DEFAULT_SIZE[family]
    in_chans = options.get("in_chans", 3)
    shape = (1, in_chans if isinstance(in_chans, int) else 3, size, size)
    params, macs = _declared(e.meta, "params"), _declared(e.meta, "macs") if not args.size else "-"
    if want_params:
        net = build_arch(name)
        shape = (1, int(getattr(net, "in_chans", shape[1])), size, size)
        params = human(count_params(net))
        macs = human(count_macs(net, shape)) if want_macs else macs
        del net
    preset = options.get("preset", "")
    return [name, family, preset if isinstance(preset, str) else "", params, macs, "x".join(map(str, shape)),
            e.meta.get("official", ""), e.meta["paper"]]  # fmt: skip


def cmd_archs(args) -> int:
    names = list_archs(args.pattern or "*", args.exclude, family=args.family)
    want_params, want_macs = _wanted_counts(args)
    rows = [_arch_row(n, args, want_params, want_macs) for n in names]
    header = ["network", "family", "preset", "params", "MACs", "input", "official (params/FLOPs at 224)", "paper"]
    print(markdown_table(header, rows, align="lllrrlll"))
    counts = (
        "MACs: multiply-adds of one forward pass at the input shown (one multiply-add counted once, as fvcore and the "
        "papers; FFTs not counted)."
    )
    if not want_params:
        counts = f"params and MACs: - where the registration declares none; {COUNTS_HINT}."
    print(f"\n{len(names)} network(s). {counts} Build one with sandbox.build_arch(name, **options).")
    return 0


def cmd_tasks(args) -> int:
    from .registry import TASKS, build_task, list_tasks

    rows = []
    for n in list_tasks(args.pattern or "*"):
        task = build_task(n)
        opts = ", ".join(f"{k}={v!r}" for k, v in TASKS.entry(n).options().items())
        rows.append([n, task.channels, ", ".join(task.benchmarks), ", ".join(task.metrics), opts])
    print(markdown_table(["task", "channels", "benchmarks", "metrics", "options (defaults)"], rows))
    print("\nBuild one with sandbox.build_task('denoise:sigma=50') or pass --task/--sigma/--quality to the scripts.")
    return 0


def cmd_check(args) -> int:
    from .conformance import run_conformance
    from .utils import resolve_device

    device = str(resolve_device(args.device))
    results = run_conformance(args.spec, device)
    rows = [[name, "ok" if msg is None else f"FAIL: {msg}"] for name, msg in results.items()]
    print(markdown_table(["check", "result"], rows))
    failed = sum(msg is not None for msg in results.values())
    print(f"\n{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _collapse(rels: list[str]) -> list[tuple[str, int]]:
    """(path or folder, file count): a set whose files are all listed becomes one ``folder/`` row."""
    by_set: dict[str, list[str]] = {}
    for rel in rels:
        by_set.setdefault(set_of(rel), []).append(rel)
    rows = []
    for name, files in by_set.items():
        total = len(set_files([name]))
        if len(files) == total and total > 1:
            rows.append((ALL_SETS[name].folder + "/" if name in ALL_SETS else "weights/", total))
        else:
            rows.extend((f, 1) for f in files)
    return rows


def cmd_data_fetch(args) -> int:
    dest = Path(args.dest or os.environ.get("SANDBOX_DATA") or "data")
    report = fetch(dest, args.sets, mirror=args.mirror, retries=args.retries, progress=not args.quiet)
    extra = [
        (report.replaced, "corrupt file(s) replaced"),
        (report.refetched, "downloaded again after a dropped connection or a checksum mismatch"),
    ]
    size = human(report.bytes, "B", digits=1, sep=" ")  # bytes in powers of 1000: '12.3 MB'
    print(
        f"{len(report.files)} files ok in {dest}: {len(report.downloaded)} downloaded ({size}), "
        f"{len(report.present)} already present" + "".join(f", {len(r)} {what}" for r, what in extra if r)
    )
    if not os.environ.get("SANDBOX_DATA") or Path(os.environ["SANDBOX_DATA"]).resolve() != dest.resolve():
        print(f"use it with: export SANDBOX_DATA={dest.resolve()}")
    return 0


def cmd_data_verify(args) -> int:
    root = data_root(args.data_root, required=True)
    report = verify(root, args.sets)
    if report.passed:
        print(f"{len(report.ok)} files ok in {root}")
        return 0
    rows = [[p, "missing", n] for p, n in _collapse(report.missing)]
    rows += [[p, "corrupt (wrong sha256)", n] for p, n in _collapse(report.corrupt)]
    print(markdown_table(["file", "problem", "files"], rows, align="llr"))
    bad = sorted({set_of(r) for r in report.missing + report.corrupt}, key=[*ALL_SETS, WEIGHTS].index)
    print(
        f"\n{len(report.ok)} ok, {len(report.missing)} missing, {len(report.corrupt)} corrupt in {root}; repair with "
        f"`python -m sandbox data fetch --sets {','.join(bad)} --dest {root}`"
    )
    return 1


def _presence(found: int, expected: int) -> str:
    return "yes" if found == expected else "no" if found == 0 else f"partial ({found}/{expected})"


def cmd_data_list(args) -> int:
    from .data import list_images
    from .errors import SandboxError

    root = data_root(args.data_root)
    rows = []
    for s in ALL_SETS.values():
        found = 0
        if root is not None:
            try:
                found = len(list_images(s.name, root))
            except SandboxError:
                found = 0
        rows.append(
            [s.name, "color" if s.color else "gray", s.count, _presence(found, s.count) if root else "-", s.use]
        )
    weights = set_files([WEIGHTS])
    found = sum((root / rel).is_file() for rel in weights) if root else 0
    rows.append([WEIGHTS, "-", f"{len(weights)} files", _presence(found, len(weights)) if root else "-",
                 "DnCNN/FFDNet reference weights, LPIPS linear layers"])  # fmt: skip
    print(markdown_table(["set", "kind", "images", "present", "task use"], rows, align="llrll"))
    if root is None:
        print("\npresent: - (no data root: set SANDBOX_DATA or pass --data-root)")
    else:
        print(f"\npresent: files found in {root}; `python -m sandbox data verify` checks their contents.")
    return 0


def add_data_parser(sub) -> None:
    """The ``data`` sub-command: fetch, verify, list."""
    p = sub.add_parser("data", help="fetch, verify and list benchmark sets, training sets and weights")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    sets_help = "comma-separated sets: " + ", ".join([*ALL_SETS, WEIGHTS]) + " or all (default: all)"
    q = dsub.add_parser("fetch", help="download into --dest (pooch), each file checked against its sha256")
    q.add_argument("--sets", default=None, help=sets_help)
    q.add_argument("--dest", default=None, help="data root to fill (default: $SANDBOX_DATA, else ./data)")
    q.add_argument("--mirror", default=None, help=f"URL prefix (default: $SANDBOX_DATA_MIRROR, else {DEFAULT_MIRROR})")
    q.add_argument(
        "--retries", type=int, default=3, help="retries per file after a dropped connection or bad checksum (default 3)"
    )
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    q.set_defaults(fn=cmd_data_fetch)
    q = dsub.add_parser("verify", help="check the files of a data root against the embedded sha256")
    q.add_argument("--data-root", default=None, help="data root (default: $SANDBOX_DATA)")
    q.add_argument("--sets", default=None, help=sets_help)
    q.set_defaults(fn=cmd_data_verify)
    q = dsub.add_parser("list", help="the sets: kind, image count, presence in the data root, task use")
    q.add_argument("--data-root", default=None, help="data root (default: $SANDBOX_DATA)")
    q.set_defaults(fn=cmd_data_list)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sandbox", description="mixer-sandbox command line")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("mixers", help="list registered mixers with their metadata")
    p.add_argument("pattern", nargs="*", help="fnmatch patterns, e.g. 'hyena*' (default: all)")
    p.add_argument("--exclude", action="append", default=[], help="fnmatch pattern to leave out; repeatable")
    p.add_argument("--options", action="store_true", help="also list each mixer's options and defaults")
    p.add_argument("--module", action="store_true", help="also show the module that registered each mixer")
    add_plugin_arg(p)
    p.set_defaults(fn=cmd_mixers)
    p = sub.add_parser("archs", help="list registered networks; parameters and MACs (multiply-adds) on request")
    p.add_argument("pattern", nargs="*", help="fnmatch patterns, e.g. 'vheat*' (default: all)")
    p.add_argument("--exclude", action="append", default=[], help="fnmatch pattern to leave out; repeatable")
    p.add_argument("--family", choices=["restoration", "classification", "reference"], default=None)
    p.add_argument("--params", action="store_true", help="count each listed network's parameters (builds it)")
    p.add_argument("--macs", action="store_true", help="count parameters and MACs of each listed network (builds it)")
    p.add_argument("--size", type=int, default=None, help="square input side for MACs (default 224 / 128)")
    p.add_argument("--no-flops", action="store_true", help="no MAC count, also for exact names (parameters only)")
    add_plugin_arg(p)
    p.set_defaults(fn=cmd_archs)
    p = sub.add_parser("tasks", help="list registered tasks with their benchmarks, metrics and options")
    p.add_argument("pattern", nargs="*", help="fnmatch patterns (default: all)")
    add_plugin_arg(p)
    p.set_defaults(fn=cmd_tasks)
    p = sub.add_parser("check", help="run the mixer conformance checks on one mixer (name or 'name:key=value,...')")
    p.add_argument("spec")
    p.add_argument("--device", default=None)
    add_plugin_arg(p)
    p.set_defaults(fn=cmd_check)
    add_data_parser(sub)
    args = ap.parse_args(argv)
    load_plugins(getattr(args, "plugin", []))
    return args.fn(args)


if __name__ == "__main__":
    run_main(main)
