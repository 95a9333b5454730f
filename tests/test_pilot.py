"""experiments/pilot.py: the design table of finished compare.py folders, from state.json and per_image.csv alone."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sandbox.errors import SandboxError

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("pilot_cli", ROOT / "experiments" / "pilot.py")
pilot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pilot)


def _fake_comparison(out: Path, iters: int, effects: dict[str, float], seed_sd: float, image_sd: float):
    """A compare.py folder: per mixer and seed 0..3 a per_image.csv on 20 images; b's gain over the first mixer is
    effect + a seed shift (sd ``seed_sd``) + a fixed per-image part (sd ``image_sd``). Returns the drawn seed shifts
    and per-image gains."""
    rng = np.random.default_rng(0)
    images = [f"{i:02d}.png" for i in range(20)]
    base = rng.normal(29.0, 1.5, len(images))
    per_image_gain = rng.normal(0.0, image_sd, len(images))
    entries, shifts = [], rng.normal(0.0, seed_sd, 4)
    for seed, shift in enumerate(shifts):
        for i, (mixer, effect) in enumerate(effects.items()):
            name = f"{i + 1:02d}_{mixer}_seed{seed}"
            scores = base + (effect + shift + per_image_gain if effect else 0.0)
            run = out / "runs" / name
            run.mkdir(parents=True)
            rows = ["set,image,degradation,psnr,ssim,input_psnr,seconds"]
            rows += [f"BSD68,{im},denoise:sigma=25,{v:.6f},0.8,20.0,0.1" for im, v in zip(images, scores)]
            (run / "per_image.csv").write_text("\n".join(rows) + "\n")
            record = {"final": {"BSD68": {"psnr": float(scores.mean())}}, "wall": 120.0, "eval_seconds": 30.0}
            entries.append({"name": name, "spec": mixer, "seed": seed, "status": "finished", "result": record})
    entries.append({"name": "09_late_seed0", "spec": "late", "seed": 0, "status": "running"})  # unfinished: ignored
    state = {"version": 2, "base_config": {"iters": iters}, "seeds": [0, 1, 2, 3], "mixers": entries}
    (out / "state.json").write_text(json.dumps(state))
    return shifts, per_image_gain


def test_design_table_measures_the_seed_and_image_spread(tmp_path, capsys):
    """A difference with a known seed spread and a fixed per-image part: the table finds both sds, and the designs
    with more seeds resolve finer differences down to the image floor."""
    folder = tmp_path / "denoise_600"
    shifts, gains = _fake_comparison(folder, 600, {"a": 0.0, "b": 0.3}, seed_sd=0.05, image_sd=0.2)
    out = tmp_path / "design.md"
    assert pilot.main([str(folder), "--out", str(out)]) == 0
    md = out.read_text()
    assert "denoise_600: 600 iterations, 2 mixers with 2+ finished seeds" in md
    row = next(line for line in md.splitlines() if line.startswith("| BSD68 | `b` − `a`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    delta, design, seed_sd, image_sd = float(cells[2]), cells[3], float(cells[4]), float(cells[5])
    assert design == "4 x 20" and delta == pytest.approx(0.3 + shifts.mean() + gains.mean(), abs=1e-3)
    # no seed x image interaction: the components are the sample sds of the drawn shifts and gains
    assert seed_sd == pytest.approx(np.std(shifts, ddof=1), abs=1e-3)
    assert image_sd == pytest.approx(np.std(gains, ddof=1), abs=1e-3)
    r3, r5, r10 = (float(v) for v in cells[8].split(" / "))
    assert r3 > r5 > r10 > float(cells[9]) > 0  # more seeds resolve finer, never below the image floor
    mixers = [line for line in md.splitlines() if line.startswith("| BSD68 | `") and " − " not in line]
    assert len(mixers) == 2 and all(line.rstrip(" |").endswith("2.5") for line in mixers)  # 150 s per run


def test_a_folder_with_one_mixer_says_so_and_a_missing_folder_is_one_line(tmp_path):
    folder = tmp_path / "one"
    _fake_comparison(folder, 100, {"a": 0.0}, seed_sd=0.1, image_sd=0.1)
    assert pilot.main([str(folder), "--out", str(tmp_path / "one.md")]) == 0
    assert "Fewer than two mixers have two finished seeds" in (tmp_path / "one.md").read_text()
    r = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "pilot.py"), str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is not a compare.py output folder" in r.stderr


def test_agreement_gives_spearman_and_the_pairs_that_flip(tmp_path):
    """Two budgets of three mixers where b and c swap places: rho 0.5 and the one flipped pair, resolved in both."""
    _fake_comparison(tmp_path / "short", 300, {"a": 0.0, "b": 0.6, "c": 0.2}, seed_sd=0.05, image_sd=0.1)
    _fake_comparison(tmp_path / "full", 1800, {"a": 0.0, "b": 0.3, "c": 0.5}, seed_sd=0.05, image_sd=0.1)
    out = tmp_path / "agreement.md"
    assert pilot.main(["--agreement", str(tmp_path / "short"), str(tmp_path / "full"), "--out", str(out)]) == 0
    md = out.read_text()
    assert "Spearman's rho over 3 mixers: **0.500**" in md
    flips = [line for line in md.splitlines() if line.startswith("| `")]
    assert flips == ["| `c` − `b` | -0.400 (resolved) | +0.200 (resolved) |"]
    with pytest.raises(SandboxError, match="takes two folders"):
        pilot.main(["--agreement", str(tmp_path / "short")])
