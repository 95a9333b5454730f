"""Tasks: the registry, training degradations and the SwinIR/KAIR evaluation protocol (``sandbox/tasks.py``)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from sandbox import TASKS, OptionError, SandboxError, UnknownNameError, build_task, list_tasks
from sandbox.compat import install_torchvision_shim
from sandbox.tasks import DenoiseTask, JPEGTask, Task, bgr_to_y_uint8, check_network_channels

DATA = Path(os.environ.get("SANDBOX_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
BENCH = DATA / "benchmarks"


def bench_image(folder: str, name: str) -> Path:
    path = BENCH / folder / name
    if not path.is_file():
        pytest.skip(f"benchmark image {path} is absent (set SANDBOX_DATA to the data root)")
    return path


# -------------------------------------------------------------------------------------------------------- registry
def test_builtin_tasks_and_attributes():
    assert list_tasks() == ["denoise", "denoise_color", "jpeg", "jpeg_color"]
    assert list_tasks("jpeg*") == ["jpeg", "jpeg_color"]
    expected = {
        "denoise": (1, ("Set12", "BSD68"), ("psnr", "ssim"), "sigma=25"),
        "denoise_color": (3, ("CBSD68", "Kodak24", "McMaster"), ("psnr", "ssim"), "sigma=25"),
        "jpeg": (1, ("Classic5", "LIVE1"), ("psnr", "ssim", "psnrb"), "q=10"),
        "jpeg_color": (3, ("LIVE1",), ("psnr", "ssim", "psnrb"), "q=10"),
    }
    for name, (channels, benchmarks, metrics, level) in expected.items():
        task = build_task(name)
        assert isinstance(task, Task) and task.name == name
        assert (task.channels, task.benchmarks, task.metrics, task.level) == (channels, benchmarks, metrics, level)
        assert task.color == (channels == 3)
        assert TASKS.entry(name).meta["description"]
        text = task.describe()
        assert name in text and level in text and "\n" not in text


def test_build_task_specs_and_round_trip():
    task = build_task("denoise:sigma=50,sigma_range=[0,55]")
    assert isinstance(task, DenoiseTask) and task.sigma == 50.0 and task.sigma_range == (0.0, 55.0)
    assert task.level == "sigma=50" and "[0, 55]" in task.describe()
    assert build_task(task.spec) == task
    assert build_task(task) is task
    assert build_task(task, sigma=15).sigma == 15.0
    jpeg = build_task({"name": "jpeg_color", "quality": 40}, quality_range=(10, 40))
    assert isinstance(jpeg, JPEGTask) and jpeg.quality == 40 and jpeg.quality_range == (10, 40)
    assert build_task("denoise", sigma=12.5).level == "sigma=12.5"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("denoise:sigma=-5", "sigma=-5 is not valid; expected a number >= 0 (noise std on the 0-255 scale)"),
        ("jpeg:quality=0", "quality=0 is not valid; expected an integer in 1..100"),
        ("jpeg_color:quality=101", "quality=101 is not valid; expected an integer in 1..100"),
        ("jpeg:quality=10.5", "quality=10.5 is not valid"),
        ("denoise:sigma_range=[10,5]", "sigma_range=[10, 5] is not valid; expected (low, high) with 0 <= low <= high"),
        ("jpeg:quality_range=[5,200]", "quality_range=[5, 200] is not valid"),
        ("denoise:quality=10", "task 'denoise' has no option 'quality'; it accepts: sigma, sigma_range"),
    ],
)
def test_bad_options_are_one_line(spec, message):
    with pytest.raises(OptionError) as err:
        build_task(spec)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_unknown_task_suggests_close_match():
    with pytest.raises(UnknownNameError) as err:
        build_task("denoize")
    msg = str(err.value)
    assert msg.startswith("unknown task 'denoize'; did you mean 'denoise'") and "list_tasks(" in msg
    assert "\n" not in msg


def test_check_network_channels():
    check_network_channels("denoise", 1)
    check_network_channels(build_task("jpeg_color"), 3)
    with pytest.raises(SandboxError) as err:
        check_network_channels("denoise_color", 1)
    assert str(err.value) == (
        "network takes 1 channel(s) but task 'denoise_color' has 3; use a color network (in_chans=3) or the gray "
        "task 'denoise'"
    )
    with pytest.raises(SandboxError, match=r"^network takes 3 channel\(s\) but task 'jpeg' has 1; use a gray network "):
        check_network_channels("jpeg", 3)


# ------------------------------------------------------------------------------------------- training degradations
def test_denoise_degrade_batch_deterministic_fresh_and_unclipped():
    task = build_task("denoise_color", sigma=25)
    clean = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    a = task.degrade_batch(clean, torch.Generator().manual_seed(0))
    b = task.degrade_batch(clean, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == clean.shape and a.dtype == clean.dtype
    g = torch.Generator().manual_seed(0)
    first, second = task.degrade_batch(clean, g), task.degrade_batch(clean, g)
    assert torch.equal(first, a) and not torch.equal(first, second)  # fresh noise on every call
    noise = (a - clean) * 255
    assert abs(noise.std().item() - 25) < 1.0 and abs(noise.mean().item()) < 1.0
    assert a.min() < 0 and a.max() > 1  # no clipping (KAIR)
    with pytest.raises(SandboxError, match=r"task 'denoise_color' degrades \(B, 3, H, W\) batches"):
        task.degrade_batch(clean[:, :1])


def test_denoise_blind_sigma_range_draws_per_image():
    task = build_task("denoise", sigma=25, sigma_range=(0, 50))
    clean = torch.zeros(8, 1, 96, 96)
    g = torch.Generator().manual_seed(3)
    stds = (task.degrade_batch(clean, g) * 255).flatten(1).std(dim=1)  # (8,)
    assert stds.min() >= -0.1 and stds.max() <= 50 * 1.05
    assert stds.max() - stds.min() > 10  # per image, not one sigma for the batch
    # the std of each image is the drawn sigma: reproduce the draw from the same seed
    sigmas = torch.rand((8, 1, 1, 1), generator=torch.Generator().manual_seed(3)).flatten() * 50
    assert torch.allclose(stds, sigmas, rtol=0.05, atol=0.3)
    assert task.level == "sigma=25"  # evaluation still at sigma


def _codec(img: np.ndarray, q: int, color: bool) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [int(cv2.IMWRITE_JPEG_QUALITY), q])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR if color else cv2.IMREAD_GRAYSCALE)


def test_jpeg_degrade_batch_matches_cv2_gray_and_color():
    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 1, 24, 40, generator=gen)
    out = build_task("jpeg", quality=10).degrade_batch(clean)
    for i in range(2):
        u8 = (clean[i, 0] * 255).round().to(torch.uint8).numpy()
        assert np.array_equal((out[i, 0] * 255).round().to(torch.uint8).numpy(), _codec(u8, 10, False))
    rgb = torch.rand(2, 3, 24, 40, generator=gen)
    out = build_task("jpeg_color", quality=20).degrade_batch(rgb)
    for i in range(2):
        bgr = np.ascontiguousarray((rgb[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()[..., ::-1])
        expected = _codec(bgr, 20, True)[..., ::-1]  # encoded as BGR, back to RGB
        got = (out[i] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(got, expected)
    assert out.min() >= 0 and out.max() <= 1


def test_jpeg_blind_quality_range_deterministic():
    task = build_task("jpeg", quality_range=(5, 95))
    clean = torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    a = task.degrade_batch(clean, torch.Generator().manual_seed(7))
    b = task.degrade_batch(clean, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    qualities = torch.randint(5, 96, (6,), generator=torch.Generator().manual_seed(7)).tolist()
    assert len(set(qualities)) > 1
    for i, q in enumerate(qualities):  # each image at its own quality, drawn from the generator
        u8 = (clean[i, 0] * 255).round().to(torch.uint8).numpy()
        assert np.array_equal((a[i, 0] * 255).round().to(torch.uint8).numpy(), _codec(u8, q, False))


# --------------------------------------------------------------------------------------------- evaluation protocol
def test_denoise_prepare_eval_matches_swinir_gray():
    img = build_task("denoise").read(bench_image("Set12", "01.png"))
    assert img.ndim == 2 and img.dtype == np.uint8
    state = np.random.get_state()
    gt, lq = build_task("denoise", sigma=25).prepare_eval(img)
    assert np.array_equal(np.random.get_state()[1], state[1])  # numpy's global generator untouched
    # main_test_swinir.py, gray_dn
    img_gt = img.astype(np.float32) / 255.0
    np.random.seed(seed=0)
    ref = (img_gt + np.random.normal(0, 25 / 255.0, img_gt.shape)).astype(np.float32)
    np.random.set_state(state)
    assert np.array_equal(gt, img) and gt.dtype == np.uint8
    assert lq.dtype == np.float32 and lq.shape == img.shape and np.array_equal(lq, ref)
    # the brief's float64 formulation agrees to float32 precision
    np.random.seed(0)
    ref64 = img / 255 + np.random.normal(0, 25 / 255, img.shape)
    np.random.set_state(state)
    assert np.allclose(lq, ref64, atol=1e-6)
    assert lq.min() < 0  # unclipped
    gt2, lq2 = build_task("denoise", sigma=25).prepare_eval(img)  # seed reset per image: deterministic
    assert np.array_equal(lq2, lq)


def test_denoise_prepare_eval_color_draws_on_bgr():
    task = build_task("denoise_color", sigma=15)
    bgr = task.read(bench_image("CBSD68", "101085.png"))
    assert bgr.ndim == 3 and bgr.shape[2] == 3
    gt, lq = task.prepare_eval(bgr)
    img_gt = bgr.astype(np.float32) / 255.0  # main_test_swinir.py, color_dn: noise on the HWC BGR array
    noise = np.random.RandomState(0).normal(0, 15 / 255.0, img_gt.shape)
    ref_bgr = (img_gt + noise).astype(np.float32)
    assert np.array_equal(gt, bgr[..., ::-1]) and gt.dtype == np.uint8  # RGB out
    assert np.array_equal(lq, ref_bgr[..., ::-1]) and lq.dtype == np.float32
    on_rgb = (bgr[..., ::-1].astype(np.float32) / 255.0 + noise).astype(np.float32)
    assert not np.array_equal(lq, on_rgb)  # the draw order matters: it is BGR
    with pytest.raises(SandboxError, match=r"evaluates \(H, W, 3\) BGR images; got shape \(\d+, \d+\)"):
        task.prepare_eval(bgr[..., 0])
    with pytest.raises(SandboxError, match=r"IMREAD_GRAYSCALE"):
        build_task("denoise").prepare_eval(bgr)


def test_jpeg_prepare_eval_matches_cv2():
    gray = build_task("jpeg").read(bench_image("Classic5", "barbara.bmp"))
    assert gray.ndim == 2
    gt, lq = build_task("jpeg", quality=10).prepare_eval(gray)
    assert np.array_equal(gt, gray) and lq.dtype == np.float32
    assert np.array_equal(lq, _codec(gray, 10, False).astype(np.float32) / 255.0)

    task = build_task("jpeg_color", quality=30)
    bgr = task.read(bench_image("LIVE1", "carnivaldolls.bmp"))
    gt, lq = task.prepare_eval(bgr)
    assert np.array_equal(gt, bgr[..., ::-1])
    assert np.array_equal(lq, (_codec(bgr, 30, True).astype(np.float32) / 255.0)[..., ::-1])


def test_gray_jpeg_of_color_source_uses_bt601_y():
    task = build_task("jpeg", quality=10)
    bgr = task.read(bench_image("LIVE1", "bikes.bmp"))
    assert bgr.ndim == 3  # IMREAD_UNCHANGED keeps LIVE1's color
    gt, lq = task.prepare_eval(bgr)
    assert gt.shape == bgr.shape[:2] and gt.dtype == np.uint8
    b, g, r = (float(v) / 255 for v in bgr[10, 20])
    assert gt[10, 20] == round(16 + 65.481 * r + 128.553 * g + 24.966 * b)  # BT.601 "MATLAB", by hand
    assert not np.array_equal(gt, cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))  # not OpenCV's full-range gray
    install_torchvision_shim()  # basicsr 1.4.2 needs it before import
    from basicsr.utils.color_util import bgr2ycbcr

    assert np.array_equal(gt, bgr2ycbcr(bgr, y_only=True))  # bit-identical to the converter SwinIR uses
    assert np.array_equal(bgr_to_y_uint8(bgr), gt)
    assert np.array_equal(lq, _codec(gt, 10, False).astype(np.float32) / 255.0)
