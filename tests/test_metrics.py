"""Metrics (``sandbox/metrics.py``): PSNR/SSIM through basicsr cross-checked with scikit-image, PSNR-B, LPIPS."""

from __future__ import annotations

import math
import socket
import sys
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from sandbox import OptionError, SandboxError, UnknownNameError
from sandbox.compat import install_torchvision_shim
from sandbox.metrics import (
    LPIPS_BACKBONES,
    METRICS,
    blocking_effect_factor,
    compute_metrics,
    lpips_distance,
    psnr,
    psnrb,
    ssim,
)


def _noisy(img: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.clip(img + noise, 0, 255).round().astype(np.uint8)


def _jpeg(img: np.ndarray, q: int) -> np.ndarray:
    """JPEG round trip; (H, W) gray or (H, W, 3) RGB (encoded as BGR)."""
    x = img if img.ndim == 2 else np.ascontiguousarray(img[..., ::-1])
    out = cv2.imdecode(cv2.imencode(".jpg", x, [int(cv2.IMWRITE_JPEG_QUALITY), q])[1], cv2.IMREAD_UNCHANGED)
    return out if img.ndim == 2 else np.ascontiguousarray(out[..., ::-1])


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return skdata.astronaut()[100:228, 150:310]  # (128, 160, 3) RGB uint8


@pytest.fixture(scope="module")
def gray() -> np.ndarray:
    return skdata.camera()[200:328, 100:260]  # (128, 160) uint8


# -------------------------------------------------------------------------------------------------------- PSNR/SSIM
def test_psnr_matches_skimage(rgb, gray):
    for ref in (rgb, gray):
        img = _noisy(ref, 12)
        expected = peak_signal_noise_ratio(ref, img, data_range=255)
        assert psnr(img, ref) == pytest.approx(expected, rel=1e-12)
        assert psnr(img[..., None] if img.ndim == 2 else img, ref[..., None] if ref.ndim == 2 else ref) == psnr(
            img, ref
        )
    assert psnr(gray, gray) == math.inf
    # crop_border drops pixels at each edge
    img = _noisy(rgb, 12)
    assert psnr(img, rgb, crop_border=4) == pytest.approx(
        peak_signal_noise_ratio(rgb[4:-4, 4:-4], img[4:-4, 4:-4], data_range=255), rel=1e-12
    )
    # uint8-valued floats are accepted as such
    assert psnr(img.astype(np.float64), rgb.astype(np.float32)) == pytest.approx(psnr(img, rgb), rel=1e-12)


def test_ssim_matches_skimage(rgb, gray):
    """skimage with a Gaussian window (sigma 1.5, truncated to 11x11) and population covariances is the same SSIM.

    What differs: basicsr filters with cv2.filter2D (reflect-101 border) and keeps the 5-px 'valid' interior; skimage
    filters with scipy.ndimage (reflect border) and also averages the map over the interior cropped by
    (win_size - 1) // 2 = 5 px. The borders never enter either mean, so the values agree up to float rounding.
    """
    for ref, axis in ((rgb, -1), (gray, None)):
        img = _noisy(ref, 20, seed=1)
        expected = structural_similarity(
            ref,
            img,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=axis,
        )
        assert ssim(img, ref) == pytest.approx(expected, abs=1e-9)  # measured: equal to ~1e-14
    assert ssim(gray, gray) == pytest.approx(1.0)
    with pytest.raises(SandboxError, match=r"^ssim needs images of at least 11x11 pixels after crop_border; got 10x"):
        ssim(gray[:10], gray[:10])


def test_y_channel_flips_rgb_for_basicsr(rgb):
    install_torchvision_shim()  # basicsr 1.4.2 needs it before import
    from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim

    img = _jpeg(rgb, 20)
    bgr_img, bgr_ref = img[..., ::-1].copy(), rgb[..., ::-1].copy()
    assert psnr(img, rgb, y_channel=True) == calculate_psnr(bgr_img, bgr_ref, 0, "HWC", test_y_channel=True)
    assert ssim(img, rgb, y_channel=True) == pytest.approx(
        calculate_ssim(bgr_img, bgr_ref, 0, "HWC", test_y_channel=True), abs=1e-12
    )
    # basicsr fed RGB would weight R and B the wrong way round
    assert psnr(img, rgb, y_channel=True) != pytest.approx(
        calculate_psnr(img, rgb, 0, "HWC", test_y_channel=True), abs=1e-6
    )

    # an independent BT.601 Y (float, 16..235) on RGB gives the same PSNR
    def y(x):
        x = x.astype(np.float64) / 255
        return 16 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]

    mse = np.mean((y(img) - y(rgb)) ** 2)
    assert psnr(img, rgb, y_channel=True) == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-4)


def test_gray_y_channel_is_a_no_op(gray):
    img = _noisy(gray, 10)
    assert psnr(img, gray, y_channel=True) == psnr(img, gray)
    assert ssim(img, gray, y_channel=True) == ssim(img, gray)


def test_input_errors(rgb, gray):
    with pytest.raises(SandboxError) as err:
        psnr(rgb, gray)
    assert str(err.value) == "psnr: image shapes differ: img (128, 160, 3) vs ref (128, 160)"
    with pytest.raises(SandboxError, match=r"^ssim: img \(float32, values 0\.\.1\) is not uint8-valued"):
        ssim((rgb / 255).astype(np.float32), rgb)
    with pytest.raises(SandboxError, match=r"^psnrb: images must be \(H, W\), \(H, W, 1\) or \(H, W, 3\) RGB"):
        psnrb(np.zeros((4, 32, 32), np.uint8), np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(OptionError, match=r"^crop_border=-1 is not valid"):
        psnr(gray, gray, crop_border=-1)
    with pytest.raises(SandboxError, match=r"must be a numpy array"):
        psnr(torch.zeros(8, 8), np.zeros((8, 8), np.uint8))


# ----------------------------------------------------------------------------------------------------------- PSNR-B
def _swinir_psnrb(img: np.ndarray, ref: np.ndarray) -> float:
    """Independent transcription of SwinIR/KAIR ``calculate_psnrb`` (torch, boundary index lists, per channel)."""
    a = torch.from_numpy(img.astype(np.float64).reshape(*img.shape[:2], -1)).permute(2, 0, 1)[None] / 255.0
    b = torch.from_numpy(ref.astype(np.float64).reshape(*ref.shape[:2], -1)).permute(2, 0, 1)[None] / 255.0
    total = 0.0
    for c in range(a.shape[1]):
        im = a[:, c : c + 1]
        h, w = im.shape[2], im.shape[3]
        hb, vb = torch.arange(7, w - 1, 8), torch.arange(7, h - 1, 8)
        hn = torch.tensor(np.setdiff1d(np.arange(w - 1), hb.numpy()))
        vn = torch.tensor(np.setdiff1d(np.arange(h - 1), vb.numpy()))
        d_hb = ((im[..., hb] - im[..., hb + 1]) ** 2).sum()
        d_vb = ((im[..., vb, :] - im[..., vb + 1, :]) ** 2).sum()
        d_hn = ((im[..., hn] - im[..., hn + 1]) ** 2).sum()
        d_vn = ((im[..., vn, :] - im[..., vn + 1, :]) ** 2).sum()
        nb = h * (w // 8 - 1) + w * (h // 8 - 1)
        nn = h * (w - 1) + w * (h - 1) - nb
        db, dbc = (d_hb + d_vb) / nb, (d_hn + d_vn) / nn
        bef = float(np.log2(8) / np.log2(min(h, w)) * (db - dbc)) if db > dbc else 0.0
        mse = float(((a[:, c] - b[:, c]) ** 2).mean())
        total += 10 * math.log10(1 / (mse + bef))
    return total / a.shape[1]


def test_psnrb_hand_computed_example():
    # 16x16: left half 0, right half 51 (0.2 on [0, 1]); reference all 0
    img = np.zeros((16, 16), np.uint8)
    img[:, 8:] = 51
    ref = np.zeros_like(img)
    # boundary pairs: column 7|8 (16 rows, each 0.2^2) and row 7|8 (0); N_B = 16 * 1 + 16 * 1 = 32 -> D_B = 0.02
    # non-boundary pairs all equal -> D_Bc = 0; eta = log2(8) / log2(16) = 0.75 -> BEF = 0.015; MSE = 0.02
    assert blocking_effect_factor(img / 255.0) == pytest.approx(0.015, rel=1e-12)
    assert psnrb(img, ref) == pytest.approx(10 * math.log10(1 / 0.035), rel=1e-12)  # 14.559 dB
    assert psnr(img, ref) == pytest.approx(10 * math.log10(1 / 0.02), rel=1e-12)  # 16.990 dB
    assert psnrb(img, ref) == pytest.approx(_swinir_psnrb(img, ref), rel=1e-12)
    assert blocking_effect_factor(img.T / 255.0) == pytest.approx(0.015, rel=1e-12)  # vertical boundaries alike


def test_psnrb_equals_psnr_without_blocking(rgb):
    # a ramp: every neighbouring difference is the same across block boundaries and inside blocks -> BEF = 0
    ramp = (np.add.outer(np.arange(64), np.arange(64)) + 40).astype(np.uint8)  # (64, 64)
    assert blocking_effect_factor(ramp / 255.0) == 0.0
    ref = _noisy(ramp, 5)
    assert psnrb(ramp, ref) == pytest.approx(psnr(ramp, ref), rel=1e-12)
    # color with the same error in every channel: the mean of per-channel dB equals the pooled PSNR
    ramp3 = np.repeat(ramp[..., None], 3, axis=2)
    ref3 = np.repeat(ref[..., None], 3, axis=2)
    assert psnrb(ramp3, ref3) == pytest.approx(psnr(ramp3, ref3), rel=1e-12)
    assert psnrb(ramp, ramp) == math.inf


def test_psnrb_penalises_jpeg_blocking(rgb, gray):
    for ref in (gray, rgb):
        img = _jpeg(ref, 10)
        assert psnrb(img, ref) < psnr(img, ref) - 0.05
        assert psnrb(img, ref) == pytest.approx(_swinir_psnrb(img, ref), rel=1e-9)
    # sizes that are not multiples of 8 (LIVE1 has 610x488...): the SwinIR normalisers are replicated
    ref = skdata.astronaut()[:61, :77]
    img = _jpeg(ref, 10)
    assert psnrb(img, ref) == pytest.approx(_swinir_psnrb(img, ref), rel=1e-9)
    # y_channel: PSNR-B of the BT.601 Y
    install_torchvision_shim()  # basicsr 1.4.2 needs it before import
    from basicsr.metrics.metric_util import to_y_channel

    img, ref = _jpeg(rgb, 10), rgb
    y_img = to_y_channel(img[..., ::-1].copy()).astype(np.float64)[..., 0]
    y_ref = to_y_channel(ref[..., ::-1].copy()).astype(np.float64)[..., 0]
    mse = np.mean((y_img / 255 - y_ref / 255) ** 2)
    expected = 10 * math.log10(1 / (mse + blocking_effect_factor(y_img / 255)))
    assert psnrb(img, ref, y_channel=True) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(SandboxError, match=r"psnrb needs \(H, W\) channels of at least 16x16 pixels"):
        psnrb(gray[:12, :12], gray[:12, :12])


# ----------------------------------------------------------------------------------------------------------- LPIPS
@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def hub_at(monkeypatch, tmp_path):
    """Point torch's hub cache at an empty tmp folder (TORCH_HOME, as a user would)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case someone called torch.hub.set_dir
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    return tmp_path / "hub" / "checkpoints"


def test_lpips_missing_backbone_names_file_and_folder(hub_at, no_network, rgb):
    with pytest.raises(SandboxError) as err:
        lpips_distance(rgb, rgb, device="cpu")
    msg = str(err.value)
    assert "alexnet-owt-7be5be79.pth" in msg and str(hub_at) in msg and "\n" not in msg
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in msg
    with pytest.raises(SandboxError, match="vgg16-397923af.pth"):
        lpips_distance(rgb, rgb, net="vgg", device="cpu")
    with pytest.raises(OptionError, match=r"^net='alexnet' is not one of 'alex', 'vgg', 'squeeze'"):
        lpips_distance(rgb, rgb, net="alexnet", device="cpu")
    assert not hub_at.exists() or not any(hub_at.iterdir())  # nothing was downloaded


def test_lpips_runs_with_a_backbone_file(hub_at, no_network, rgb):
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).state_dict()
    for k, v in state.items():  # the classifier is unused by LPIPS: store it as a stride-0 view (a tiny file)
        if k.startswith("classifier."):
            state[k] = torch.zeros(()).expand(v.shape)
    hub_at.mkdir(parents=True)
    torch.save(state, hub_at / LPIPS_BACKBONES["alex"])
    img = _noisy(rgb, 25)
    assert lpips_distance(rgb, rgb, device="cpu") == pytest.approx(0.0, abs=1e-7)
    d = lpips_distance(img, rgb, device="cpu")
    assert d > 0
    assert lpips_distance(img, rgb, device="cpu") == d  # cached model, deterministic
    gray = rgb[..., 1]
    assert lpips_distance(_noisy(gray, 25), gray, device="cpu") > 0  # gray repeated to 3 channels
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SANDBOX_DEVICE", "cpu")  # compute_metrics uses the default device
        assert compute_metrics(["psnr", "lpips"], img, rgb)["lpips"] == pytest.approx(d)


# ----------------------------------------------------------------------------------------------- compute_metrics
def test_compute_metrics(rgb):
    assert list(METRICS) == ["psnr", "ssim", "psnrb", "lpips"]
    img = _jpeg(rgb, 10)
    out = compute_metrics(("psnr", "ssim", "psnrb"), img, rgb)
    assert out == {"psnr": psnr(img, rgb), "ssim": ssim(img, rgb), "psnrb": psnrb(img, rgb)}
    assert compute_metrics("psnr", img, rgb, y_channel=True) == {"psnr": psnr(img, rgb, y_channel=True)}
    with pytest.raises(UnknownNameError) as err:
        compute_metrics(["psnr", "psnr_b"], img, rgb)
    assert str(err.value) == "unknown metric 'psnr_b'; did you mean 'psnrb'? metrics: psnr, ssim, psnrb, lpips"


def test_import_is_light():
    import subprocess

    code = "import sandbox.metrics, sandbox.tasks, sys; print('basicsr' in sys.modules, 'lpips' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.split() == ["False", "False"]
