"""``python -m sandbox``: list mixers and networks, run the conformance checks on one mixer.

python -m sandbox mixers [PATTERN ...] [--exclude PAT] [--options] [--plugin MODULE]
python -m sandbox archs [PATTERN ...] [--family F] [--size S] [--no-flops] [--plugin MODULE]
python -m sandbox check NAME_OR_SPEC [--device cpu] [--plugin MODULE]
"""

from __future__ import annotations

import argparse
import inspect

from .cli import add_plugin_arg, markdown_table, run_main
from .plugins import load_plugins
from .registry import ARCHS, MIXERS, build_arch, list_archs, list_mixers


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


def cmd_archs(args) -> int:
    from .complexity import count_macs, count_params, human

    names = list_archs(args.pattern or "*", args.exclude, family=args.family)
    rows = []
    for n in names:
        e = ARCHS.entry(n)
        family = e.meta["family"]
        net = build_arch(n)
        size = args.size or DEFAULT_SIZE[family]
        shape = (1, int(getattr(net, "in_chans", 3)), size, size)
        macs = "-" if args.no_flops else human(count_macs(net, shape))
        default = e.options().get("preset", "")
        rows.append([n, family, default if isinstance(default, str) else "", human(count_params(net)), macs,
                     "x".join(map(str, shape)), e.meta.get("official", ""), e.meta["paper"]])  # fmt: skip
        del net
    header = ["network", "family", "preset", "params", "MACs", "input", "official (params/FLOPs at 224)", "paper"]
    print(markdown_table(header, rows, align="lllrrlll"))
    print(
        f"\n{len(names)} network(s). MACs: multiply-adds of one forward pass at the input shown (one multiply-add "
        "counted once, as fvcore and the papers; FFTs not counted). Build one with sandbox.build_arch(name, **options)."
    )
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
    p = sub.add_parser("archs", help="list registered networks with parameters and FLOPs (multiply-adds)")
    p.add_argument("pattern", nargs="*", help="fnmatch patterns, e.g. 'vheat*' (default: all)")
    p.add_argument("--exclude", action="append", default=[], help="fnmatch pattern to leave out; repeatable")
    p.add_argument("--family", choices=["restoration", "classification", "reference"], default=None)
    p.add_argument("--size", type=int, default=None, help="square input side for FLOPs (default 224 / 128)")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count (fast listing)")
    add_plugin_arg(p)
    p.set_defaults(fn=cmd_archs)
    p = sub.add_parser("check", help="run the mixer conformance checks on one mixer (name or 'name:key=value,...')")
    p.add_argument("spec")
    p.add_argument("--device", default=None)
    add_plugin_arg(p)
    p.set_defaults(fn=cmd_check)
    args = ap.parse_args(argv)
    load_plugins(args.plugin)
    return args.fn(args)


if __name__ == "__main__":
    run_main(main)
