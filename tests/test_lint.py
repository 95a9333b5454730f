"""The lint rules of pyproject.toml, the complexity limit (C901, max 15) included, hold for the whole project."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_check_passes_with_the_complexity_limit():
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "sandbox", "experiments", "operators",
         "archs", "tests"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    config = (ROOT / "pyproject.toml").read_text()
    assert '"C901"' in config and "max-complexity = 15" in config
