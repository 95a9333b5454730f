"""The inference helpers live in the core (sandbox/inference.py): evaluation needs no network family to tile or
ensemble, and ``archs.restoration`` re-exports the same functions for existing imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_evaluate_and_inference_import_no_network_family():
    code = (
        "import sys, sandbox.evaluate, sandbox.inference; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('archs', 'operators')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_restoration_reexports_the_core_helpers():
    import archs.restoration as restoration
    import sandbox.inference as inference

    for name in ("blend_window", "self_ensemble", "tiled_forward"):
        assert getattr(restoration, name) is getattr(inference, name)
