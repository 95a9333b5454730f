"""Reference tests of the heat conduction operator against its formula (DCT vs scipy, cosine eigenmodes)."""

import copy
import math

import numpy as np
import pytest
import scipy.fft
import torch
from torch import nn

import operators.hco as hco_mod
from operators.hco import (
    FFT_MIN_SIZE,
    HeatConduction,
    _dct2_raw,
    _dct2_torch,
    _HeatNormGate,
    _idct2_torch,
    _PredictedDecay,
    dct2,
    frequency_sq,
    heat_conduction,
    idct2,
    pick_path,
    share_frequency_embedding,
)
from sandbox import OptionError, SandboxError, build_mixer

SHAPES = [(1, 1), (1, 6), (7, 9), (16, 16), (33, 17)]


@pytest.mark.parametrize("path", ["matrix", "fft"])
@pytest.mark.parametrize("hw", SHAPES)
def test_dct_matches_scipy(path, hw):
    x = np.random.default_rng(0).standard_normal((2, 3, *hw))
    ref = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))
    got = dct2(torch.from_numpy(x).float(), path).double().numpy()
    np.testing.assert_allclose(got, ref, atol=2e-5)
    inv = idct2(torch.from_numpy(ref).float(), path).double().numpy()
    np.testing.assert_allclose(inv, scipy.fft.idctn(ref, type=2, norm="ortho", axes=(-2, -1)), atol=2e-5)
    np.testing.assert_allclose(inv, x, atol=2e-5)


@pytest.mark.parametrize("hw", SHAPES + [(2, 5), (64, 48)])
def test_torch_fft_dct_matches_scipy(hw):
    """The FFT path of non-CPU devices (Makhoul's length-n FFT in torch), run here on the CPU."""
    x = np.random.default_rng(1).standard_normal((2, 3, *hw))
    ref = scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1))
    np.testing.assert_allclose(_dct2_torch(torch.from_numpy(x).float()).double().numpy(), ref, atol=2e-5)
    np.testing.assert_allclose(_idct2_torch(torch.from_numpy(ref).float()).double().numpy(), x, atol=2e-5)
    decay = torch.rand(3, *hw)
    xt = torch.from_numpy(x).float()
    heat = _idct2_torch(_dct2_torch(xt) * decay)  # what heat_conduction(..., "fft") computes off the CPU
    torch.testing.assert_close(heat, heat_conduction(xt, decay, "matrix"), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", ["scipy", "torch"])
def test_fft_heat_conduction_gradients(impl):
    """Gradients of both FFT implementations (scipy's on CPU: each transform's backward is the other one)."""
    decay = torch.rand(3, 9, 10, dtype=torch.float64, requires_grad=True)
    x = torch.randn(2, 3, 9, 10, dtype=torch.float64, requires_grad=True)
    fn = (
        (lambda a, d: heat_conduction(a, d, "fft"))
        if impl == "scipy"
        else lambda a, d: _idct2_torch(_dct2_torch(a) * d)
    )
    assert torch.autograd.gradcheck(fn, (x, decay), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("decay_shape", [(3, 9, 10), (9, 10)])
@pytest.mark.parametrize("grads", ["both", "x", "decay"])
def test_fused_scipy_heat_conduction_matches_unfused(decay_shape, grads):
    """The CPU FFT path runs DCT, decay and IDCT as one autograd node (in-place spectra, S kept only when the decay
    needs a gradient): its values and gradients equal the three-node composition for every requires_grad pattern."""
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 3, 9, 10, dtype=torch.float64, generator=gen)
    d0 = torch.rand(*decay_shape, dtype=torch.float64, generator=gen)
    g = torch.randn(2, 3, 9, 10, dtype=torch.float64, generator=gen)
    results = []
    for fn in (lambda a, d: heat_conduction(a, d, "fft"), lambda a, d: idct2(dct2(a, "fft") * d, "fft")):
        x = x0.clone().requires_grad_(grads in ("both", "x"))
        d = d0.clone().requires_grad_(grads in ("both", "decay"))
        y = fn(x, d)
        y.backward(g)
        results.append((y, x.grad, d.grad))
    (y1, gx1, gd1), (y2, gx2, gd2) = results
    torch.testing.assert_close(y1, y2)
    for a, b in ((gx1, gx2), (gd1, gd2)):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b)
    assert (gx1 is None) == (grads == "decay") and (gd1 is None) == (grads == "x")


def _mode(h, w, n, m):
    i = torch.arange(h, dtype=torch.float64)[:, None]
    j = torch.arange(w, dtype=torch.float64)[None, :]
    return (torch.cos(math.pi * n * (i + 0.5) / h) * torch.cos(math.pi * m * (j + 0.5) / w)).float()


@pytest.mark.parametrize("path", ["matrix", "fft"])
@pytest.mark.parametrize("h,w,n,m", [(16, 16, 1, 0), (16, 16, 3, 5), (12, 20, 11, 19), (9, 7, 4, 2)])
@pytest.mark.parametrize("k,t", [(1.0, 1.0), (0.3, 2.5)])
def test_cosine_mode_decays_by_exact_factor(path, h, w, n, m, k, t):
    layer = HeatConduction(4, k_mode="fixed", k=k, t=t, dct_path=path)
    x = _mode(h, w, n, m)[None, None].repeat(1, 4, 1, 1)
    y = heat_conduction(x, layer.decay(h, w, x.device), path)
    factor = math.exp(-k * t * ((n * math.pi / h) ** 2 + (m * math.pi / w) ** 2))
    torch.testing.assert_close(y, x * factor, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("path", ["matrix", "fft"])
def test_constant_image_unchanged(path):
    layer = HeatConduction(3, k_mode="fixed", k=5.0, t=3.0)
    x = torch.full((2, 3, 13, 21), 0.7)
    y = heat_conduction(x, layer.decay(13, 21, x.device), path)
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def test_fixed_k_is_heat_equation():
    """Small t: u(t) - u(0) ~ t * k * discrete Laplacian of a smooth field (Neumann boundary), to first order."""
    h, w, k, t = 32, 32, 1.0, 1e-3
    x = _mode(h, w, 2, 3) + 0.5 * _mode(h, w, 1, 1)
    layer = HeatConduction(1, k_mode="fixed", k=k, t=t)
    y = heat_conduction(x[None, None], layer.decay(h, w, x.device), "matrix")[0, 0]
    lap_eigen = -(((2 * math.pi / h) ** 2 + (3 * math.pi / w) ** 2) * _mode(h, w, 2, 3)) - 0.5 * (
        ((math.pi / h) ** 2 + (math.pi / w) ** 2) * _mode(h, w, 1, 1)
    )
    torch.testing.assert_close((y - x) / t, k * lap_eigen, atol=1e-3, rtol=1e-2)


@pytest.mark.parametrize("k_mode", ["fixed", "learnable", "predicted"])
def test_matrix_and_fft_paths_agree(k_mode):
    torch.manual_seed(0)
    a = HeatConduction(8, k_mode=k_mode, dct_path="matrix")
    b = HeatConduction(8, k_mode=k_mode, dct_path="fft")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 8, 23, 30)
    torch.testing.assert_close(b(x), a(x), atol=1e-5, rtol=1e-4)


def test_auto_path_follows_threshold():
    cpu = torch.device("cpu")
    t = FFT_MIN_SIZE["cpu"]
    assert pick_path(t - 1, t - 1, cpu) == "matrix"
    assert pick_path(t, 8, cpu) == "fft"
    assert pick_path(4096, 4096, torch.device("cuda")) == "matrix"


def test_k_modes_parameters():
    names = lambda m: {n for n, _ in m.named_parameters()}  # noqa: E731
    base = {f"{m}.{p}" for m in ("dwconv", "linear", "out_norm", "out_linear") for p in ("weight", "bias")}
    assert names(build_mixer("hco:k_mode=fixed", 8)) == base  # vHeat's Heat2D names, no k parameter
    assert "k_raw" in names(build_mixer("hco:k_mode=learnable,k=0.5", 8))
    assert {"to_k.0.weight", "freq_embed.weight"} <= names(build_mixer("hco", 8))
    learn = build_mixer("hco:k_mode=learnable,k=0.5", 8)
    assert learn.conductivity(4, 4).item() == pytest.approx(0.5, rel=1e-6)


def test_predicted_k_is_nonnegative_and_resampled():
    m = build_mixer({"name": "hco", "embed_size": 16}, 8)
    with torch.no_grad():
        m.to_k[0].bias.fill_(-0.01)
        k = m.conductivity(37, 11)
    assert k.shape == (8, 37, 11) and (k >= 0).all()
    assert m.freq_embed.weight.shape == (16, 16, 8)


def test_k_bias_starts_every_unit_alive():
    vheat = build_mixer({"name": "hco", "embed_size": 16}, 8).conductivity(16, 16)  # (C, 16, 16)
    layer = build_mixer({"name": "hco", "embed_size": 16, "k_bias": 0.5}, 8)
    nn.init.zeros_(layer.to_k[0].bias)  # a network's own init (SwinIR's: zero Linear biases) keeps the offset
    live = layer.conductivity(16, 16)
    assert vheat.abs().max() < 0.1 and (vheat == 0).float().mean() > 0.2  # vHeat's init: near identity, ReLU-dead units
    assert (live > 0).all() and (live - 0.5).abs().max() < 0.1


def test_zero_k_is_identity_filter():
    layer = HeatConduction(3, k_mode="fixed", k=0.0)
    x = torch.randn(1, 3, 9, 10)
    torch.testing.assert_close(heat_conduction(x, layer.decay(9, 10, x.device)), x, atol=1e-5, rtol=0)


class _Stage(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.blocks = nn.ModuleList(build_mixer("hco:k_mode=predicted_shared", dim) for _ in range(2))
        self.freq_embed = share_frequency_embedding(self, size=8)

    def forward(self, x):
        for b in self.blocks:
            x = x + b(x)
        return x


def test_predicted_shared_embedding_is_owned_by_the_stage():
    torch.manual_seed(0)
    stage = _Stage(8)
    keys = [k for k in stage.state_dict() if "freq_embed" in k]
    assert keys == ["freq_embed.weight"], keys  # stored once, at stage level
    x = torch.randn(2, 8, 12, 10)
    stage(x).square().mean().backward()
    assert stage.freq_embed.weight.grad is not None and stage.freq_embed.weight.grad.abs().max() > 0
    # both layers read the same tensor: changing it changes both layers' k
    twin = copy.deepcopy(stage)
    assert twin.blocks[0]._shared_embed is twin.freq_embed is twin.blocks[1]._shared_embed
    with torch.no_grad():
        twin.freq_embed.weight.add_(1.0)
    assert not torch.equal(twin.blocks[0].conductivity(4, 4), stage.blocks[0].conductivity(4, 4))
    # round trip through a fresh stage
    other = _Stage(8)
    other.load_state_dict(stage.state_dict())
    torch.testing.assert_close(other(x), stage(x))


def test_predicted_shared_unbound_is_a_clear_error():
    m = build_mixer("hco:k_mode=predicted_shared", 8)
    with pytest.raises(SandboxError, match="share_frequency_embedding"):
        m(torch.randn(1, 8, 4, 4))


def test_decay_stays_in_fp32_under_autocast():
    """Under bf16 autocast the spectra, the decay and the norm run in fp32; output and gradients keep their dtypes."""
    m = build_mixer("hco", 8)
    x = torch.randn(1, 8, 16, 16, requires_grad=True)
    seen = []
    orig = hco_mod._dct2_raw

    def spy(u, *args, **kwargs):
        seen.append(u.dtype)
        return orig(u, *args, **kwargs)

    hco_mod._dct2_raw = spy
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = m(x)
        assert seen == [torch.float32] * 2 and m.decay(16, 16, x.device).dtype == torch.float32
        y.float().square().mean().backward()
    finally:
        hco_mod._dct2_raw = orig
    assert seen == [torch.float32] * 4 and y.dtype == torch.bfloat16
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in m.parameters())


# ------------------------------------------------------------------------------------- fused nodes vs plain autograd
def _cos64(n):
    k = torch.arange(n, dtype=torch.float64)[:, None]
    c = torch.cos(math.pi * k * (torch.arange(n, dtype=torch.float64) + 0.5) / n) * math.sqrt(2.0 / n)
    c[0] /= math.sqrt(2.0)
    return c


def _plain_heat_norm_gate(xz, decay, weight, bias, eps=1e-5):
    """The unfused definition in float64 autograd: DCT by dense matrices, nn's LayerNorm, SiLU gate."""
    x, z = xz.chunk(2, dim=1)
    ch, cw = _cos64(x.shape[-2]), _cos64(x.shape[-1])
    u = ch.T @ ((ch @ x @ cw.T) * decay) @ cw
    y = torch.nn.functional.layer_norm(u.permute(0, 2, 3, 1), (u.shape[1],), weight, bias, eps).permute(0, 3, 1, 2)
    return y * torch.nn.functional.silu(z)


@pytest.mark.parametrize("path", ["matrix", "fft"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("decay_shape", ["chw", "hw"])
@pytest.mark.parametrize("decay_grad", [True, False])
def test_heat_norm_gate_matches_plain_autograd(path, batch, decay_shape, decay_grad):
    """HCO's fused node (buffers reused in place, x and z read as channel slices, dL/dxz written in halves) gives the
    plain composition's output and gradients for xz, decay, LN weight and bias; batches > 1 make the slices strided."""
    gen = torch.Generator().manual_seed(0)
    c, h, w = 4, 7, 10
    xz = torch.randn(batch, 2 * c, h, w, dtype=torch.float64, generator=gen)
    decay = torch.rand(*((c, h, w) if decay_shape == "chw" else (h, w)), dtype=torch.float64, generator=gen)
    weight, bias = (torch.randn(c, dtype=torch.float64, generator=gen) for _ in range(2))
    g = torch.randn(batch, c, h, w, dtype=torch.float64, generator=gen)
    results = []
    for fn in (lambda *a: _HeatNormGate.apply(*a, 1e-5, path), _plain_heat_norm_gate):
        leaves = [t.clone().requires_grad_(decay_grad or t is not decay) for t in (xz, decay, weight, bias)]
        y = fn(*leaves)
        y.backward(g)
        results.append((y, *(t.grad for t in leaves)))
    for got, ref in zip(*results):
        assert (got is None) == (ref is None)
        if ref is not None:
            torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("path", ["matrix", "fft"])
def test_heat_norm_gate_gradcheck(path):
    gen = torch.Generator().manual_seed(1)
    args = [
        torch.randn(2, 6, 5, 6, dtype=torch.float64, generator=gen),
        torch.rand(3, 5, 6, dtype=torch.float64, generator=gen),
        torch.randn(3, dtype=torch.float64, generator=gen),
        torch.randn(3, dtype=torch.float64, generator=gen),
    ]
    args = [t.requires_grad_() for t in args]
    assert torch.autograd.gradcheck(lambda *a: _HeatNormGate.apply(*a, 1e-5, path), args)


@pytest.mark.parametrize("path", ["matrix", "fft"])
def test_dct2_raw_buffers_in_place_and_channel_slices(path):
    """The raw transforms read a channel slice of a (B, 2C, H, W) tensor, write into a slice or in place, and use the
    scratch buffer; all equal scipy's orthonormal DCT-II / DCT-III."""
    gen = torch.Generator().manual_seed(2)
    big = torch.randn(2, 6, 9, 8, generator=gen)
    x = big[:, :3]  # (2, 3, 9, 8), batch-strided
    ref = scipy.fft.dctn(x.numpy(), type=2, norm="ortho", axes=(-2, -1))
    work = torch.full((2, 3, 9, 8), float("nan"))
    spec = _dct2_raw(x, False, path, work=work)
    np.testing.assert_allclose(spec.numpy(), ref, atol=2e-5)
    dst = torch.zeros(2, 6, 9, 8)
    _dct2_raw(spec, True, path, out=dst[:, 3:], work=work)  # inverse into a slice
    np.testing.assert_allclose(dst[:, 3:].numpy(), x.numpy(), atol=2e-5)
    assert (dst[:, :3] == 0).all()
    same = spec.clone()
    assert _dct2_raw(same, True, path, out=same, work=work).data_ptr() == same.data_ptr()  # in place
    np.testing.assert_allclose(same.numpy(), x.numpy(), atol=2e-5)


def _plain_predicted_decay(embed, weight, bias, a, k_bias, h, w):
    fve = embed.permute(2, 0, 1)[None]  # (1, C, h0, w0)
    if fve.shape[-2:] != (h, w):
        fve = torch.nn.functional.interpolate(fve, size=(h, w), mode="bicubic", align_corners=False)
    k = torch.nn.functional.linear(fve[0].permute(1, 2, 0), weight, bias) + k_bias  # vHeat's order: resample first
    return torch.exp(torch.relu(k.permute(2, 0, 1)) * a)


@pytest.mark.parametrize("size_in,size_out", [((6, 6), (6, 6)), ((6, 5), (9, 4))])
@pytest.mark.parametrize("k_bias", [0.0, 0.3])
def test_predicted_decay_matches_plain_autograd(size_in, size_out, k_bias):
    """The fused k -> decay node equals exp(ReLU(Linear(bicubic(FVE)) + k_bias) * a) in value and in the gradients
    of the FVE, the weight and the bias, with and without resampling; gradcheck in float64."""
    gen = torch.Generator().manual_seed(3)
    c = 4
    embed = torch.randn(*size_in, c, dtype=torch.float64, generator=gen)
    weight = torch.randn(c, c, dtype=torch.float64, generator=gen)
    bias = torch.randn(c, dtype=torch.float64, generator=gen)
    a = -frequency_sq(*size_out).double()
    g = torch.randn(c, *size_out, dtype=torch.float64, generator=gen)
    results = []
    for fn in (
        lambda e, wt, b: _PredictedDecay.apply(e, wt, b, a, k_bias),
        lambda e, wt, b: _plain_predicted_decay(e, wt, b, a, k_bias, *size_out),
    ):
        leaves = [t.clone().requires_grad_() for t in (embed, weight, bias)]
        y = fn(*leaves)
        y.backward(g)
        results.append((y, *(t.grad for t in leaves)))
    assert (results[1][0] == 1).any() and (results[1][0] < 1).any()  # the ReLU cuts somewhere, passes elsewhere
    for got, ref in zip(*results):
        torch.testing.assert_close(got, ref)
    leaves = [t.clone().requires_grad_() for t in (embed, weight, bias)]
    assert torch.autograd.gradcheck(lambda *t: _PredictedDecay.apply(*t, a, k_bias), leaves)


def test_decay_without_gradients_equals_decay_with_them():
    """Under no_grad the predicted decay is computed in place on k (no autograd node): same values."""
    m = build_mixer({"name": "hco", "embed_size": 16, "k_bias": 0.1}, 8)
    with torch.no_grad():
        m.freq_embed.weight.normal_()
        fast = m.decay(20, 12, torch.device("cpu"))
    slow = m.decay(20, 12, torch.device("cpu"))
    assert slow.requires_grad and not fast.requires_grad
    torch.testing.assert_close(fast, slow.detach())


def test_layer_matches_plain_autograd_reference():
    """The whole layer (dwconv, linear, fused node, predicted decay, out linear) against the same parameters run
    through plain autograd in float64."""
    torch.manual_seed(0)
    m = build_mixer({"name": "hco", "embed_size": 8}, 4).double()
    with torch.no_grad():
        m.freq_embed.weight.normal_()
        m.to_k[0].weight.normal_(0, 0.5)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 4, 8, 8, dtype=torch.float64)

    def plain(x):
        t = torch.nn.functional.conv2d(x, m.dwconv.weight, m.dwconv.bias, padding=1, groups=4)
        xz = m.linear(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        lin, a = m.to_k[0], -frequency_sq(8, 8).double()
        decay = _plain_predicted_decay(m.freq_embed.weight, lin.weight, lin.bias, a, 0.0, 8, 8)
        v = _plain_heat_norm_gate(xz, decay, m.out_norm.weight, m.out_norm.bias, m.out_norm.eps)
        return m.out_linear(v.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    grads = []
    for fn in (m, plain):
        m.zero_grad(set_to_none=True)
        x.grad = None
        y = fn(x)
        y.backward(g)
        grads.append((y, x.grad, *(p.grad for p in m.parameters())))
    for got, ref in zip(*grads):
        torch.testing.assert_close(got, ref)


@pytest.mark.parametrize(
    "spec",
    ["hco:k_mode=fix", "hco:dct_path=fast", "hco:k=-1", "hco:embed_size=0", "hco:t=-0.5", "hco:k_bias=-1"],
)
def test_bad_options(spec):
    with pytest.raises(OptionError):
        build_mixer(spec, 8)


def test_frequency_grid():
    w2 = frequency_sq(4, 2)
    assert (
        w2[0, 0] == 0
        and w2[1, 0] == pytest.approx((math.pi / 4) ** 2)
        and w2[0, 1] == pytest.approx((math.pi / 2) ** 2)
    )


@pytest.mark.parametrize("size_in, size_out", [((16, 16), (37, 11)), ((8, 12), (8, 5)), ((32, 32), (256, 256))])
def test_bicubic_matrices_equal_interpolate(size_in, size_out):
    """The fast path of the predicted k: two cached matmuls give F.interpolate's bicubic resize (up, down, one axis)."""
    from operators.hco import resample_bicubic

    x = torch.randn(3, *size_in)
    ref = torch.nn.functional.interpolate(x[None], size=size_out, mode="bicubic", align_corners=False)[0]
    torch.testing.assert_close(resample_bicubic(x, *size_out), ref, atol=1e-5, rtol=1e-5)


def test_predicted_k_is_relu_of_linear_of_the_resampled_embedding():
    """k computed as ReLU(resample(Linear(FVE))) equals vHeat's ReLU(Linear(resample(FVE))), value and gradient."""
    torch.manual_seed(0)
    m = build_mixer({"name": "hco", "embed_size": 16}, 8)
    with torch.no_grad():
        m.freq_embed.weight.normal_()
    fve = m.freq_embed.weight.permute(2, 0, 1)[None]  # (1, C, 16, 16)
    fve = torch.nn.functional.interpolate(fve, size=(37, 11), mode="bicubic", align_corners=False)[0]
    ref = m.to_k(fve.permute(1, 2, 0)).permute(2, 0, 1)  # (C, 37, 11)
    (ref_grad,) = torch.autograd.grad(ref.square().sum(), m.freq_embed.weight)
    k = m.conductivity(37, 11)
    assert (ref > 0).any() and (ref == 0).any()  # the ReLU is active somewhere and cuts somewhere
    torch.testing.assert_close(k, ref, atol=1e-5, rtol=1e-5)
    (grad,) = torch.autograd.grad(k.square().sum(), m.freq_embed.weight)
    torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-4)


def test_hco_runs_under_torch_compile():
    """torch.compile (the `compile` run option) handles the layer: the fused node runs eagerly behind a graph break,
    with the same values and gradients as without compile."""
    torch.manual_seed(0)
    m = HeatConduction(8, k_mode="predicted", embed_size=8)
    x = torch.randn(2, 8, 12, 12, requires_grad=True)
    y = m(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    compiled = torch.compile(m)
    x2 = x.detach().clone().requires_grad_(True)
    y2 = compiled(x2)
    (gx2,) = torch.autograd.grad(y2.square().sum(), x2)
    torch.testing.assert_close(y2, y, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx2, gx, rtol=1e-4, atol=1e-6)
