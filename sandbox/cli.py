"""Shared command-line plumbing: one-line errors, the --plugin flag and Markdown tables."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from .errors import SandboxError


def run_main(main: Callable[[], object] | Callable[..., object], *args) -> None:
    """Run a command's ``main``; a :class:`SandboxError` becomes ``error: <message>`` on stderr and exit code 2."""
    try:
        code = main(*args)
    except SandboxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def add_plugin_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import a module (dotted name or .py path) that registers mixers; repeatable; also $SANDBOX_PLUGINS",
    )


def add_set_flag(parser, each: str = "run") -> None:
    """``--set KEY=VALUE`` (repeatable) of the multi-run commands (compare.py, sweep.py); their RunConfig flags come
    from :func:`sandbox.config.add_config_flags`."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"RunConfig override for every {each} (lr=1e-3, arch_options.embed_dim=32); repeatable; wins over all",
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    """A Markdown table; ``align`` has one of 'l'/'r' per column (default: left)."""
    align = align or "l" * len(header)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(sep) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def split_specs(text: str) -> list[str]:
    """Specs from one list value, as ``--mixers`` of compare.py and bench.py.

    With a ``;`` anywhere the list is split on ``;`` only; otherwise on the commas that start a new spec (not inside
    brackets, not followed by ``key=``): ``"hco:k_mode=fixed,k=0.5,conv"`` -> ``["hco:k_mode=fixed,k=0.5", "conv"]``.
    """
    if ";" in text:
        return [p.strip() for p in text.split(";") if p.strip()]
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0 and not re.match(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=", text[i + 1 :]):
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def stamped_dir(parent: str | Path, name: str) -> Path:
    """``parent/<name>_<YYYYmmdd-HHMMSS>`` that does not exist yet (``_2``, ``_3``, ... appended when taken); not
    created."""
    base = Path(parent) / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}"
    out, i = base, 2
    while out.exists():
        out, i = base.with_name(f"{base.name}_{i}"), i + 1
    return out
