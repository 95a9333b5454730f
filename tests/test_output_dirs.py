"""Default output folders are relative to the working directory, never inside the repository."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_entry_script_writes_into_the_repository_by_default():
    for script in sorted((ROOT / "experiments").glob("*.py")):
        source = script.read_text()
        assert 'ROOT / "outputs"' not in source, f"{script.name} puts its default output under the repository"


def test_evaluate_writes_under_the_working_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_DATA"}  # the embedded photographs: quick
    cmd = [sys.executable, str(ROOT / "experiments" / "evaluate.py"), "--method", "noisy", "--no-progress"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert list((tmp_path / "outputs" / "eval").iterdir()), out.stdout
