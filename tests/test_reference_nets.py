"""DnCNN and FFDNet with the official weights (.pth and MatConvNet .mat), on the shared data folder."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from archs.matconvnet import read_matconvnet
from archs.reference import DnCNN, FFDNet, dncnn, ffdnet, official_weights
from sandbox import SandboxError, build_arch, load_checkpoint

DATA = Path(os.environ.get("SANDBOX_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
W = DATA / "weights"
needs_data = pytest.mark.skipif(not W.is_dir(), reason=f"no shared data folder at {DATA} (set SANDBOX_DATA)")

DNCNN_PTH = {  # file -> (in_chans, depth), and the official .mat holding the same weights
    "pytorch/kair_model_zoo/dncnn_25.pth": (1, 17, "dncnn_matconvnet/specifics_gray/sigma=25.mat"),
    "pytorch/kair_release_mirror/dncnn_gray_blind.pth": (1, 20, "dncnn_matconvnet/GD_Gray_Blind.mat"),
    "pytorch/kair_release_mirror/dncnn_color_blind.pth": (3, 20, "dncnn_matconvnet/GD_Color_Blind.mat"),
}
DNCNN_MAT = {
    "dncnn_matconvnet/specifics_gray/sigma=15.mat": (1, 17),
    "dncnn_matconvnet/specifics_gray/sigma=25.mat": (1, 17),
    "dncnn_matconvnet/specifics_gray/sigma=50.mat": (1, 17),
    "dncnn_matconvnet/GD_Gray_Blind.mat": (1, 20),
    "dncnn_matconvnet/GD_Color_Blind.mat": (3, 20),
    "dncnn_matconvnet/DnCNN3.mat": (1, 20),
}
FFDNET_MAT = {
    "ffdnet_matconvnet/FFDNet_gray.mat": 1,
    "ffdnet_matconvnet/FFDNet_Clip_gray.mat": 1,
    "ffdnet_matconvnet/FFDNet_color.mat": 3,
    "ffdnet_matconvnet/FFDNet_Clip_color.mat": 3,
}


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg
    return msg


def max_diff(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


@needs_data
@pytest.mark.parametrize("rel", sorted(DNCNN_PTH))
def test_dncnn_pth_loads_and_matches_mat(rel):
    chans, depth, mat = DNCNN_PTH[rel]
    net = load_checkpoint(DnCNN(chans, depth), W / rel, strict=True)
    ref = dncnn("s" if depth == 17 else "b", chans, 25 if depth == 17 else None, weights=str(W / mat))
    torch.manual_seed(0)
    assert max_diff(net, ref, torch.rand(1, chans, 40, 37)) < 1e-5


@needs_data
def test_ffdnet_pth_loads_and_matches_mat():
    net = load_checkpoint(FFDNet(3), W / "pytorch/kair_release_mirror/ffdnet_color.pth", strict=True)
    ref = ffdnet(3, weights=str(W / "ffdnet_matconvnet/FFDNet_color.mat"))
    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 37)
    assert max_diff(net, ref, x) < 1e-5
    # the permuted first / last layers are what makes them agree: without it the outputs differ
    raw = [torch.from_numpy(c["weight"]) for c in read_matconvnet(W / "ffdnet_matconvnet/FFDNet_color.mat")]
    assert not torch.equal(raw[0], net.model[0].weight) and torch.equal(raw[1], net.model[2].weight)
    types = [layer["type"] for layer in read_matconvnet(W / "ffdnet_matconvnet/FFDNet_color.mat", conv_only=False)]
    assert types[:3] == ["SubP", "concat", "conv"] and types[-1] == "SubP" and types.count("conv") == 12


@needs_data
@pytest.mark.parametrize("rel", sorted(DNCNN_MAT) + sorted(FFDNET_MAT))
def test_mat_files_load(rel):
    if rel in DNCNN_MAT:
        chans, depth = DNCNN_MAT[rel]
        net = dncnn("s" if depth == 17 else "b", chans, weights=str(W / rel))
    else:
        chans = FFDNET_MAT[rel]
        net = ffdnet(chans, weights=str(W / rel))
    layers = read_matconvnet(W / rel)
    assert len(layers) == sum(isinstance(m, torch.nn.Conv2d) for m in net.model)
    assert all(c["type"] == "conv" and c["stride"] == [1.0] and c["pad"] == [1.0] for c in layers)
    with torch.no_grad():
        assert torch.isfinite(net(torch.rand(1, chans, 12, 11))).all()


@needs_data
def test_pickled_module_is_refused():
    with pytest.raises(SandboxError) as e:
        dncnn(sigma=25, weights=str(W / "pytorch/dncnn_repo_sigma25/model.pth"))
    assert "refused" in one_line(e)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


@needs_data
def test_official_weights_denoise_set12():
    from skimage.io import imread

    clean = imread(DATA / "benchmarks/Set12/01.png").astype(np.float64)
    assert clean.ndim == 2
    np.random.seed(0)
    noisy = clean / 255 + np.random.normal(0, 25 / 255, clean.shape)
    x = torch.from_numpy(noisy).float()[None, None]
    to_u8 = lambda t: np.round(np.clip(t.squeeze().double().numpy(), 0, 1) * 255).astype(np.uint8)
    base = psnr(to_u8(x), clean)
    nets = {
        "dncnn s/25 (.pth)": dncnn(sigma=25, weights="official", data_root=str(DATA)),
        "ffdnet gray (.mat)": ffdnet(1, weights="official", data_root=str(DATA)),
    }
    assert official_weights("dncnn", "s", 1, 25, DATA).suffix == ".pth"
    assert official_weights("ffdnet", "awgn", 1, None, DATA).suffix == ".mat"
    print(f"\nSet12/01 sigma 25: noisy {base:.2f} dB")
    for name, net in nets.items():
        with torch.no_grad():
            value = psnr(to_u8(net(x)), clean)
        print(f"  {name}: {value:.2f} dB")
        assert value > 29.5 and value > base + 8, name


@needs_data
def test_official_resolution(monkeypatch):
    monkeypatch.setenv("SANDBOX_DATA", str(DATA))
    net = build_arch("dncnn:variant=b,in_chans=3,weights=official")
    assert isinstance(net, DnCNN) and net.in_chans == 3 and net.arch_spec["variant"] == "b"
    assert build_arch("dncnn:variant=3,weights=official").in_chans == 1  # "3" arrives as an int
    assert official_weights("dncnn", "s", 1, 50).name == "sigma=50.mat"
    assert official_weights("ffdnet", "clip", 3, None).name == "FFDNet_Clip_color.mat"
    assert isinstance(ffdnet(3, clip=True, weights="official"), FFDNet)


def test_shapes_odd_sizes():
    torch.manual_seed(0)
    with torch.no_grad():
        for chans, shape in ((1, (1, 1, 17, 23)), (3, (2, 3, 16, 9))):
            x = torch.rand(shape)
            for net in (dncnn(in_chans=chans), ffdnet(chans)):
                y = net(x)
                assert y.shape == x.shape and torch.isfinite(y).all()
        net = ffdnet(3)
        x = torch.rand(2, 3, 15, 9)
        per_sample = net(x, sigma=torch.tensor([15.0, 50.0]))
        assert per_sample.shape == x.shape and torch.isfinite(per_sample).all()
        assert torch.allclose(net(x, sigma=torch.full((2, 1, 1, 1), 50.0))[1], per_sample[1])
        assert torch.allclose(net(x[:1], sigma=15)[0], per_sample[0], atol=1e-6)
        assert torch.equal(net(x), net(x, sigma=25.0))


def test_bad_input(monkeypatch, tmp_path):
    with pytest.raises(SandboxError) as e:
        dncnn(variant="x")
    assert "'x'" in one_line(e) and "'b'" in str(e.value)
    with pytest.raises(SandboxError) as e:
        build_arch("dncnn:variant=s,sigma=35,weights=official", data_root=str(tmp_path))
    assert "sigma=35" in one_line(e) and "sigma=15" in str(e.value)
    with pytest.raises(SandboxError) as e:
        dncnn(in_chans=3, sigma=25, weights="official", data_root=str(tmp_path))
    assert "available" in one_line(e)
    with pytest.raises(SandboxError) as e:
        dncnn(sigma=25, weights=str(tmp_path / "nope.pth"))
    assert "nope.pth" in one_line(e)
    with pytest.raises(SandboxError) as e:
        ffdnet(weights=str(tmp_path / "nope.mat"))
    assert "nope.mat" in one_line(e)
    (tmp_path / "old.mat").write_bytes(b"MATLAB 5.0 MAT-file" + bytes(200))
    with pytest.raises(SandboxError) as e:
        read_matconvnet(tmp_path / "old.mat")
    assert "v7.3" in one_line(e)
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "plain.mat", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(SandboxError) as e:
        read_matconvnet(tmp_path / "plain.mat")
    assert "not a MatConvNet" in one_line(e)
    if W.is_dir():
        with pytest.raises(SandboxError) as e:
            ffdnet(weights=str(W / "dncnn_matconvnet/DnCNN3.mat"))
        assert "20 conv layers" in one_line(e)
    monkeypatch.delenv("SANDBOX_DATA", raising=False)
    with pytest.raises(SandboxError) as e:
        ffdnet(weights="official")
    assert "SANDBOX_DATA" in one_line(e) and "FFDNet_gray.mat" in str(e.value)
    with pytest.raises(SandboxError) as e:
        official_weights("dncnn", "b", 1, None, tmp_path)
    assert "dncnn_gray_blind.pth" in one_line(e)
    with pytest.raises(SandboxError) as e:
        ffdnet(sigma=-1)
    one_line(e)
    with pytest.raises(SandboxError) as e:
        ffdnet(3)(torch.rand(2, 3, 8, 8), sigma=torch.ones(3))
    assert "(3,)" in one_line(e)
