"""experiments/reproduce.py: the DnCNN-3 rows and one of them reproduced (Classic5, JPEG q10, five images)."""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SANDBOX_DATA") or ROOT.parent / "shared" / "data")
needs_data = pytest.mark.skipif(not (DATA / "benchmarks").is_dir(), reason=f"no benchmark data at {DATA}")


def _load_reproduce():
    spec = importlib.util.spec_from_file_location("reproduce_script", ROOT / "experiments" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reproduce = _load_reproduce()

# (task spec, set) -> (PSNR, SSIM or None), the DnCNN repository README's DnCNN-3 table
DNCNN3_PUBLISHED = {
    ("jpeg:quality=10", "Classic5"): (29.40, 0.8026),
    ("jpeg:quality=20", "Classic5"): (31.63, 0.8610),
    ("jpeg:quality=30", "Classic5"): (32.91, 0.8861),
    ("jpeg:quality=40", "Classic5"): (33.77, 0.9003),
    ("jpeg:quality=10", "LIVE1"): (29.19, 0.8123),
    ("jpeg:quality=20", "LIVE1"): (31.59, 0.8802),
    ("jpeg:quality=30", "LIVE1"): (32.98, 0.9090),
    ("jpeg:quality=40", "LIVE1"): (33.96, 0.9247),
    ("denoise:sigma=15", "BSD68"): (31.46, None),
    ("denoise:sigma=25", "BSD68"): (29.02, None),
    ("denoise:sigma=50", "BSD68"): (26.10, None),
}


def test_rows_hold_the_published_dncnn3_table():
    rows = [r for r in reproduce.ROWS if r[0] == "DnCNN-3"]
    found = {(task, set_name): (psnr, ssim) for _, _, task, set_name, psnr, ssim, _ in rows}
    assert len(rows) == 11 and found == DNCNN3_PUBLISHED
    assert {r[1] for r in rows} == {"dncnn:variant=3"}


@needs_data
def test_dncnn3_classic5_q10_reproduces_the_published_psnr_and_ssim(tmp_path, capsys):
    out = tmp_path / "results.md"
    args = ["--only", "DnCNN-3", "--sets", "Classic5", "--qualities", "10", "--no-progress", "--out", str(out)]
    assert reproduce.main(["--data-root", str(DATA), *args]) == 0
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines()[2:]]
    assert len(rows) == 1, out.read_text()  # --qualities 10 with --sets Classic5: one row, no denoising row
    label, set_name, level, psnr, published, _, ssim, published_ssim, _ = (c.strip() for c in rows[0])
    assert (label, set_name, level, published, published_ssim) == ("DnCNN-3", "Classic5", "q=10", "29.40", "0.8026")
    printed = re.search(r"DnCNN-3 Classic5 q=10: PSNR (\S+) dB .*SSIM (\S+) ", capsys.readouterr().out)
    assert printed and abs(float(printed[1]) - float(psnr)) <= 0.0051 and printed[2] == ssim, printed  # = table
    psnr, ssim = float(printed[1]), float(ssim)  # PSNR with 3 decimals from the printed line
    assert abs(psnr - 29.40) <= 0.02, f"PSNR {psnr} dB, published 29.40"
    assert abs(ssim - 0.8026) <= 0.001, f"SSIM {ssim}, published 0.8026"
