"""The README's commands are the ones CI runs, and its mixer list names every built-in mixer."""

import re
from pathlib import Path

from sandbox import MIXERS, list_mixers

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if line.startswith("python3 -m venv"))
    assert command in readme, f"README does not contain the CI test command: {command}"


def test_readme_lists_every_builtin_mixer():
    readme = (ROOT / "README.md").read_text()
    listed = set(re.findall(r"^\| `([a-z0-9_]+)` \|", readme, flags=re.M))
    builtin = {n for n in list_mixers() if MIXERS.entry(n).module.startswith("operators.")}
    assert builtin <= listed, f"README mixer table misses {sorted(builtin - listed)}"
