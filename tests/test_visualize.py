"""experiments/visualize.py: ERF and heat against exact references, and every command end to end at tiny sizes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sandbox import build_arch
from sandbox.errors import OptionError, SandboxError

ROOT = Path(__file__).resolve().parents[1]


def _load_visualize():
    spec = importlib.util.spec_from_file_location("visualize_script", ROOT / "experiments" / "visualize.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


viz = _load_visualize()


@pytest.fixture(autouse=True)
def _no_data_root(monkeypatch):
    monkeypatch.delenv("SANDBOX_DATA", raising=False)  # images from skimage: the same on every machine


def _pngs(out: Path) -> list[Path]:
    return sorted(out.glob("*.png"))


# ---------------------------------------------------------------------------------------------------- ERF
def test_erf_of_one_3x3_conv_is_exactly_its_neighbourhood():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    images = torch.rand(3, 2, 9, 11)
    erf = viz.effective_receptive_field(conv, images)
    assert erf.shape == (9, 11)
    cy, cx = 4, 5  # the centre output pixel (h // 2, w // 2)
    expected = np.zeros((9, 11))
    # y[o, p] = sum_{i,a,b} w[o, i, a, b] x[i, p + (a - 1, b - 1)]: d(sum_o y[o, c]) / dx[i, c + (a - 1, b - 1)]
    w = conv.weight.detach().double().sum(0).abs().sum(0).numpy()  # (3, 3): sum_i |sum_o w[o, i, a, b]|
    expected[cy - 1 : cy + 2, cx - 1 : cx + 2] = w
    np.testing.assert_allclose(erf, expected, rtol=1e-6, atol=1e-12)
    assert (erf[cy - 1 : cy + 2, cx - 1 : cx + 2] > 0).all() and np.count_nonzero(erf) == 9


def test_erf_of_two_stacked_convs_is_5x5_and_of_a_layer_inside_is_3x3():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 1, 3, padding=1))
    images = torch.rand(2, 1, 12, 12)
    erf = viz.effective_receptive_field(net, images)
    assert np.count_nonzero(erf) == 25 and np.count_nonzero(erf[4:9, 4:9]) == 25
    fn, what = viz.feature_fn(net, "0")  # the first conv's output: the network stops there
    assert what == "module '0'"
    assert np.count_nonzero(viz.effective_receptive_field(fn, images)[5:8, 5:8]) == 9
    with pytest.raises(OptionError, match="is not a module"):
        viz.feature_fn(net, "2")


def test_area_ratios():
    erf = np.zeros((9, 9))
    erf[4, 4] = 1.0
    erf[0, 0] = 1.0  # half of the mass at the centre, half in a corner
    ratios = viz.area_ratios(erf, (0.5, 0.99))
    assert ratios[0.5] == pytest.approx(1 / 81) and ratios[0.99] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------- heat
def test_heat_with_fixed_k_zero_is_the_input():
    x = torch.randn(1, 3, 12, 10)
    for t in (1.0, 50.0):
        torch.testing.assert_close(viz.heat_response(x, 0.0, t), x, atol=1e-5, rtol=1e-5)


def test_heat_of_a_point_source_is_a_gaussian_of_variance_2kt():
    size, k, t = 65, 0.5, 4.0
    u = viz.heat_response(viz.point_source(size), k, t)[0, 0].double()
    assert u.sum().item() == pytest.approx(1.0, abs=1e-5)  # zero-flux boundaries conserve heat
    d = torch.arange(size, dtype=torch.float64) - size // 2
    var_y = (u.sum(1) * d**2).sum().item()
    var_x = (u.sum(0) * d**2).sum().item()
    # the discrete Laplacian's eigenvalues are below w^2, so the variance is 2kt up to the grid's O(1 / 12) term
    assert var_y == pytest.approx(2 * k * t, rel=0.05) and var_x == pytest.approx(var_y)
    with pytest.raises(OptionError, match="outside"):
        viz.point_source(8, at=(8, 0))


def test_heat_of_predicted_k_per_channel():
    net = build_arch("vheatir", preset="tiny", in_chans=1, embed_dim=8, depths=(1,))
    (_, layer), *_ = viz.hco_layers(net)
    k, what = viz.layer_conductivity(layer, 16, 16)
    assert k.shape == (8, 16, 16) and what.startswith("predicted_shared k")
    x0 = viz.point_source(16, 8)
    u = viz.heat_response(x0, k, 2.0)
    manual = torch.stack([viz.heat_response(x0[:, c : c + 1], k[c], 2.0)[0, 0] for c in range(8)])
    torch.testing.assert_close(u[0], manual, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------- commands
def test_erf_command(tmp_path, capsys):
    out = tmp_path / "erf"
    argv = ["erf", "--mixer", "conv", "--preset", "tiny", "--images", "2", "--size", "16", "--device", "cpu"]
    assert viz.main([*argv, "--out", str(out)]) == 0
    (png,) = _pngs(out)
    assert png.name.startswith("erf_ir") and png.stat().st_size > 1000
    erf = np.load(next(out.glob("*.npy")))
    assert erf.shape == (16, 16) and erf[8, 8] == erf.max()
    printed = capsys.readouterr().out
    assert "high-contribution area ratios" in printed and f"wrote {png}" in printed


def test_erf_command_from_a_run_directory_and_of_a_classifier(tmp_path):
    net = build_arch("ir", mixer="conv", preset="tiny", in_chans=1, embed_dim=8, depths=(1,))
    ckpt = tmp_path / "run" / "checkpoints" / "best.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save({"arch_spec": net.arch_spec, "model": net.state_dict(), "step": 1}, ckpt)
    out = tmp_path / "a"
    assert (
        viz.main(["erf", "--checkpoint", str(tmp_path / "run"), "--images", "1", "--size", "16", "--out", str(out)])
        == 0
    )
    (png,) = _pngs(out)
    assert "best.pth" in png.name
    cls = "metaformer:dims=[8,8,8,8],depths=[1,1,1,1],mixer=pool,num_classes=10"
    out = tmp_path / "b"
    assert viz.main(["erf", "--arch", cls, "--images", "1", "--size", "64", "--out", str(out)]) == 0
    assert np.load(next(out.glob("*.npy"))).shape == (64, 64)
    with pytest.raises(SandboxError, match="without checkpoints/best.pth"):
        viz.main(["erf", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "c")])


def test_heat_command(tmp_path, capsys):
    out = tmp_path / "heat"
    argv = ["heat", "--k", "0,1", "--times", "1,4", "--size", "16", "--arch", "vheatir", "--preset", "tiny"]
    assert viz.main([*argv, "--in-chans", "1", "--max-layers", "2", "--out", str(out)]) == 0
    assert [p.name for p in _pngs(out)] == ["heat.png"]
    printed = capsys.readouterr().out
    assert "| fixed k = 0 | 1 | 1 |" in printed and "group 1 block 1: predicted_shared k" in printed
    out = tmp_path / "fresh"
    assert viz.main(["heat", "--mixer", "hco:k_mode=learnable,k=0.5", "--size", "8", "--out", str(out)]) == 0
    assert "learnable k = 0.5" in capsys.readouterr().out
    with pytest.raises(OptionError, match="--times"):
        viz.main(["heat", "--times", "1,x", "--out", str(tmp_path / "x")])


def test_filters_command(tmp_path):
    out = tmp_path / "f"
    assert viz.main(["filters", "--mixer", "hyena_pixel", "--dim", "4", "--size", "8", "--out", str(out)]) == 0
    assert len(_pngs(out)) == 1
    out = tmp_path / "g"
    argv = ["filters", "--arch", "ir", "--mixer", "hyena_bi", "--preset", "tiny", "--size", "8", "--layers", "0,3"]
    assert viz.main([*argv, "--out", str(out)]) == 0
    assert [p.name[:11] for p in _pngs(out)] == ["filters_00_", "filters_01_"]
    with pytest.raises(SandboxError, match="no Hyena"):
        viz.main(["filters", "--mixer", "conv", "--out", str(tmp_path / "h")])


def test_k_command(tmp_path, capsys):
    out = tmp_path / "k"
    assert viz.main(["k", "--arch", "vheatir", "--preset", "tiny", "--size", "16", "--out", str(out)]) == 0
    assert len(_pngs(out)) == 1
    printed = capsys.readouterr().out
    assert "| group 0 | layers.0.residual_group.blocks.0.attn | 16x16 |" in printed
    assert "| group 1 | layers.1.residual_group.blocks.1.attn | 16x16 |" in printed
    with pytest.raises(SandboxError, match="k_mode 'fixed'"):
        viz.main(["k", "--arch", "ir", "--mixer", "hco:k_mode=fixed", "--preset", "tiny", "--out", str(tmp_path / "x")])
