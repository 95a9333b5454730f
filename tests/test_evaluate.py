"""The evaluator: protocol, outputs, reproduction of a published number, and one-line errors for bad input."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sandbox import build_arch
from sandbox.evaluate import classical_restorer, evaluate, network_restorer, to_uint8
from sandbox.registry import build_task

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SANDBOX_DATA") or ROOT.parent / "shared" / "data")
needs_data = pytest.mark.skipif(not (DATA / "benchmarks").is_dir(), reason=f"no benchmark data at {DATA}")


def run_eval(*args, env_data=True, **kw):
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_DATA"}
    if env_data:
        env["SANDBOX_DATA"] = str(DATA)
    return subprocess.run(
        [sys.executable, "experiments/evaluate.py", "--no-progress", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
        **kw,
    )


def test_to_uint8_is_the_protocol_quantisation():
    x = np.array([-0.2, 0.0, 0.5 / 255, 1.49 / 255, 1.0, 1.3], dtype=np.float32)
    assert to_uint8(x).tolist() == [0, 0, 0, 1, 255, 255]  # np.round: half to even, as SwinIR's script


def test_embedded_default_without_data_root(tmp_path):
    out = run_eval("--method", "noisy", "--task", "denoise", "--sigma", "25", "--out", str(tmp_path), env_data=False)
    assert out.returncode == 0, out.stderr
    assert "not comparable" in out.stdout.lower() and "| embedded |" in out.stdout
    rows = list(csv.DictReader((tmp_path / "per_image.csv").open()))
    assert rows and abs(float(rows[0]["psnr"]) - float(rows[0]["input_psnr"])) < 1e-9  # noisy: output = input


def test_self_ensemble_flag_labels_the_table(tmp_path):
    args = ("--arch", "ir:preset=tiny,in_chans=1,mixer=conv", "--sigma", "25", "--out", tmp_path)
    plain, x8 = run_eval(*args, env_data=False), run_eval(*args, "--self-ensemble", env_data=False)
    assert plain.returncode == 0 and x8.returncode == 0, plain.stderr + x8.stderr
    assert "+x8 on" in x8.stdout and "+x8" not in plain.stdout
    assert (tmp_path / "results.md").read_text().startswith("ir:preset=tiny,in_chans=1,mixer=conv+x8 on")


@needs_data
def test_network_and_noisy_on_set12_outputs(tmp_path):
    task = build_task("denoise:sigma=25")
    net = build_arch("dncnn:variant=s,sigma=25,weights=official", data_root=str(DATA))
    images = tmp_path / "images"
    res = evaluate(network_restorer(net), task, ["Set12"], DATA, save_images=images, progress=False)
    noisy = evaluate(classical_restorer("noisy", task), task, ["Set12"], DATA, progress=False)
    ours, base = res.summary()["Set12"], noisy.summary()["Set12"]
    assert ours["images"] == 12 and ours["psnr"] > base["psnr"] + 9 and ours["ssim"] > base["ssim"]
    assert len(list((images / "Set12").glob("*.png"))) == 12
    csv_path = res.write_csv(tmp_path / "per_image.csv")
    assert len(list(csv.DictReader(csv_path.open()))) == 12
    # tiled inference of a conv net (receptive radius 17 <= overlap / 4) gives the whole-image output
    _, degraded = task.prepare_eval(task.read(DATA / "benchmarks" / "Set12" / "08.png"))  # 512 x 512
    whole, tiled = network_restorer(net)(degraded), network_restorer(net, tile=128, tile_overlap=72)(degraded)
    assert np.abs(whole - tiled).max() < 1e-4


@needs_data
@pytest.mark.slow
def test_reproduces_published_dncnn_on_set12():
    """DnCNN-S, sigma 25, Set12: published 30.44 dB (Zhang et al., TIP 2017, Table III); ours within 0.05 dB."""
    out = run_eval("--arch", "dncnn:variant=s,sigma=25", "--weights", "official", "--sigma", "25", "--sets", "Set12")
    assert out.returncode == 0, out.stderr
    row = next(line for line in out.stdout.splitlines() if line.startswith("| Set12"))
    psnr = float(row.split("|")[3])
    assert abs(psnr - 30.44) <= 0.05, f"Set12 sigma 25: {psnr} dB, published 30.44"


@needs_data
def test_jpeg_task_reports_psnrb(tmp_path):
    out = run_eval("--method", "noisy", "--task", "jpeg", "--quality", "10", "--sets", "Classic5", "--out", tmp_path)
    assert out.returncode == 0, out.stderr
    assert "PSNR-B" in out.stdout
    row = next(line for line in out.stdout.splitlines() if line.startswith("| Classic5"))
    psnr, psnrb = float(row.split("|")[3]), float(row.split("|")[5])
    assert 27.0 < psnr < 28.5 and psnrb < psnr  # JPEG q10 input: ~27.8 dB, blocking lowers PSNR-B


def _one_line_error(out, *fragments):
    assert out.returncode != 0
    err = out.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for f in fragments:
        assert f in err, err


def test_bad_inputs_are_one_line_errors(tmp_path):
    _one_line_error(run_eval("--method", "noisy", "--sigma", "-5"), "sigma=-5")
    _one_line_error(run_eval("--method", "noisy", "--task", "jpeg", "--quality", "101"), "quality=101")
    _one_line_error(run_eval("--method", "noisy", "--sets", "Set13"), "Set13", "Set12")
    gray_net = run_eval("--arch", "ir:preset=tiny,in_chans=1", "--task", "denoise_color")
    _one_line_error(gray_net, "1 channel", "denoise_color")
    _one_line_error(run_eval("--method", "bm3d", "--task", "jpeg"), "bm3d")
    _one_line_error(run_eval("--method", "noisy", "--self-ensemble"), "--self-ensemble")
    other = tmp_path / "swinir.pth"
    torch.save({"params": build_arch("swinir", preset="tiny", in_chans=1).state_dict()}, other)
    _one_line_error(run_eval("--arch", "vheatir:preset=tiny,in_chans=1", "--weights", str(other)), "does not match")


@needs_data
def test_missing_set_and_corrupt_image_are_named(tmp_path):
    root = tmp_path / "data"
    (root / "benchmarks" / "Set12").mkdir(parents=True)
    for p in sorted((DATA / "benchmarks" / "Set12").iterdir())[:2]:
        shutil.copy(p, root / "benchmarks" / "Set12" / p.name)
    (root / "benchmarks" / "Set12" / "99.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = run_eval("--method", "noisy", "--data-root", str(root), "--sets", "Set12")
    _one_line_error(out, "99.png")
    out = run_eval("--method", "noisy", "--data-root", str(root), "--sets", "BSD68")
    _one_line_error(out, "BSD68", "data fetch")


@needs_data
def test_a_corrupt_image_stops_evaluation_before_it_starts(tmp_path):
    """Every image is read before the first is restored; the decoder's own stderr output (libpng) is discarded, and
    the error line is the last thing printed, after the progress bar."""
    root = tmp_path / "data"
    (root / "benchmarks" / "Set12").mkdir(parents=True)
    for p in sorted((DATA / "benchmarks" / "Set12").iterdir())[:2]:
        shutil.copy(p, root / "benchmarks" / "Set12" / p.name)
    bad = bytearray((DATA / "benchmarks" / "Set12" / "01.png").read_bytes())
    bad[200:260] = bytes(60)  # a broken row filter: libpng itself prints an error line for it
    (root / "benchmarks" / "Set12" / "99.png").write_bytes(bytes(bad))
    calls = []
    with pytest.raises(Exception, match="99.png.*could not be decoded"):
        evaluate(lambda x: calls.append(1) or x, build_task("denoise:sigma=25"), ["Set12"], root, progress=False)
    assert calls == []  # nothing was restored before the bad file was found
    env = {**os.environ, "SANDBOX_DATA": str(root)}
    cmd = [sys.executable, "experiments/evaluate.py", "--method", "noisy", "--sets", "Set12"]  # progress bar on
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 2 and "libpng" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error:") and "99.png" in out.stderr


@pytest.mark.parametrize("method", ["bm3d", "nlm"])
def test_classical_baselines_denoise(method):
    from skimage.data import camera

    task = build_task("denoise:sigma=25")
    gt, noisy = task.prepare_eval(np.ascontiguousarray(camera()[200:264, 200:264]))
    from sandbox.metrics import psnr

    before, after = psnr(to_uint8(noisy), gt), psnr(to_uint8(classical_restorer(method, task)(noisy)), gt)
    assert after > before + 3, f"{method}: {before:.2f} -> {after:.2f} dB"


# ------------------------------------------------------------------------------------------ paired comparisons
def _checkpoint(path: Path, mixer: str, seed: int) -> Path:
    torch.manual_seed(seed)
    net = build_arch("ir", mixer=mixer, preset="tiny", in_chans=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"arch_spec": net.arch_spec, "model": net.state_dict(), "config": {"seed": seed}}, path)
    return path


def test_several_checkpoints_give_one_paired_table(tmp_path):
    conv = [_checkpoint(tmp_path / f"conv{k}.pth", "conv", k) for k in (0, 1)]
    ident = [_checkpoint(tmp_path / f"id{k}.pth", "identity", k) for k in (0, 1)]
    out = run_eval(
        "--weights", f"conv={conv[0]},{conv[1]}", "--weights", f"identity={ident[0]},{ident[1]}",
        "--baseline", "identity", "--out", tmp_path / "paired", env_data=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "Δ vs identity [95% CI]" in out.stdout and "(n=2)" in out.stdout and "0.05 dB needs" in out.stdout
    for label, seed in (("conv", 0), ("conv", 1), ("identity", 0), ("identity", 1)):
        rows = list(csv.DictReader((tmp_path / "paired" / label / f"seed{seed}_per_image.csv").open()))
        assert rows and rows[0]["degradation"] == "denoise:sigma=25"
    assert (tmp_path / "paired" / "paired.md").is_file() and (tmp_path / "paired" / "forest.png").is_file()
    # the stored per-image results pair again without evaluating; one seed each says so
    again = run_eval(
        "--results", tmp_path / "paired" / "conv" / "seed0_per_image.csv",
        "--results", f"id={tmp_path / 'paired' / 'identity' / 'seed0_per_image.csv'}",
        "--out", tmp_path / "again", env_data=False,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "no interval: 1 seed" in again.stdout and "Δ vs seed0_per_image [95% CI]" in again.stdout


def test_pairing_bad_input_is_one_line(tmp_path):
    head = "set,image,degradation,psnr,ssim,input_psnr,seconds\n"
    (tmp_path / "a.csv").write_text(head + "Set12,01.png,denoise:sigma=25,30.0,0.8,20.1,0.1\n")
    (tmp_path / "b.csv").write_text(head + "Set12,01.png,denoise:sigma=50,27.0,0.7,14.2,0.1\n")
    (tmp_path / "c.csv").write_text(head + "BSD68,test001.png,denoise:sigma=25,29.0,0.8,20.2,0.1\n")
    cases = [
        (["--results", tmp_path / "a.csv", "--results", tmp_path / "b.csv"], "different degradations"),
        (["--results", tmp_path / "a.csv", "--results", tmp_path / "c.csv"], "has no results on 'Set12'"),
        (["--results", tmp_path / "a.csv", "--results", tmp_path / "b.csv", "--baseline", "z"], "--baseline 'z'"),
        (["--results", tmp_path / "a.csv"], "--results needs two or more results to pair"),
    ]
    for args, message in cases:
        out = run_eval(*args, "--out", tmp_path / "never", env_data=False)
        assert out.returncode == 2 and out.stderr.startswith("error: ") and message in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1 and not (tmp_path / "never").exists()
