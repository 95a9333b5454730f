"""Reference tests for the Hyena family: FFT long convolutions, causality, receptive fields, size-independent
filters, bf16 autocast and the mixer contract for ``hyena``, ``hyena_bi`` and ``hyena_pixel``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from operators._fft import fft_size, fftconv1d, fftconv2d
from operators.hyena import HyenaMixer
from operators.hyena_bi import HyenaBiMixer
from operators.hyena_pixel import HyenaPixelMixer
from sandbox.conformance import run_conformance
from sandbox.errors import OptionError
from sandbox.registry import build_mixer

NAMES = ["hyena", "hyena_bi", "hyena_pixel"]


def _randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


# ----------------------------------------------------------------------------------------------------- FFT helpers
def _direct_causal(u, k):
    """y[i] = sum_m k[m] u[i - m] via conv1d (a cross-correlation) with the flipped kernel, float64."""
    c, taps = k.shape
    return F.conv1d(F.pad(u.double(), (taps - 1, 0)), k.double().flip(-1)[:, None], groups=c)


def _direct_centred(u, k):
    """y[i] = sum_m k[m] u[i - m + K // 2] via conv1d with the flipped kernel, float64."""
    c, taps = k.shape
    centre = taps // 2
    return F.conv1d(F.pad(u.double(), (taps - 1 - centre, centre)), k.double().flip(-1)[:, None], groups=c)


def _direct_2d(u, k):
    """y[i, j] = sum_ab k[a, b] u[i - a + Kh // 2, j - b + Kw // 2] via conv2d with the flipped kernel, float64."""
    c, kh, kw = k.shape
    ch, cw = kh // 2, kw // 2
    padded = F.pad(u.double(), (kw - 1 - cw, cw, kh - 1 - ch, ch))
    return F.conv2d(padded, k.double().flip(-2, -1)[:, None], groups=c)


def test_direct_references_match_the_definition():
    """The conv-based references above are the stated sums (checked with explicit numpy loops)."""
    u, k = _randn(1, 1, 6, seed=1), _randn(1, 4, seed=2)
    un, kn = u[0, 0].numpy().astype(np.float64), k[0].numpy().astype(np.float64)
    causal = [sum(kn[m] * un[i - m] for m in range(4) if 0 <= i - m) for i in range(6)]
    centred = [sum(kn[m] * un[i - m + 2] for m in range(4) if 0 <= i - m + 2 < 6) for i in range(6)]
    np.testing.assert_allclose(_direct_causal(u, k)[0, 0].numpy(), causal, atol=1e-12)
    np.testing.assert_allclose(_direct_centred(u, k)[0, 0].numpy(), centred, atol=1e-12)
    u2, k2 = _randn(1, 1, 4, 5, seed=3), _randn(1, 3, 5, seed=4)
    un2, kn2 = u2[0, 0].numpy().astype(np.float64), k2[0].numpy().astype(np.float64)
    ref = np.zeros((4, 5))
    for i in range(4):
        for j in range(5):
            for a in range(3):
                for b in range(5):
                    y, x = i - a + 1, j - b + 2
                    if 0 <= y < 4 and 0 <= x < 5:
                        ref[i, j] += kn2[a, b] * un2[y, x]
    np.testing.assert_allclose(_direct_2d(u2, k2)[0, 0].numpy(), ref, atol=1e-12)


def test_fft_size_is_smallest_5_smooth():
    def smooth(m):
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        return m == 1

    for n in range(1, 1200):
        s = fft_size(n)
        assert s >= n and smooth(s), (n, s)
        assert not any(smooth(m) for m in range(n, s)), f"fft_size({n}) = {s} is not the smallest"


@pytest.mark.parametrize("length", [1, 2, 7, 33, 100])
def test_fftconv1d_causal_matches_direct(length):
    u = _randn(2, 3, length, seed=length)
    for taps in sorted({1, 3, max(1, length // 2), length, 2 * length + 1}):  # short, global (L) and longer than L
        k = _randn(3, taps, seed=taps + 100)
        y = fftconv1d(u, k, "causal")
        assert y.shape == u.shape and y.dtype == torch.float32
        torch.testing.assert_close(y.double(), _direct_causal(u, k), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length", [1, 2, 7, 33, 100])
def test_fftconv1d_centred_matches_direct(length):
    u = _randn(2, 3, length, seed=length)
    for taps in sorted({1, 3, 5, 4, 2 * length - 1, 2 * length + 5}):  # odd, even, global (2L - 1), longer
        k = _randn(3, taps, seed=taps + 100)
        y = fftconv1d(u, k, "centred")
        assert y.shape == u.shape and y.dtype == torch.float32
        torch.testing.assert_close(y.double(), _direct_centred(u, k), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [(1, 1), (1, 6), (7, 9), (16, 5), (13, 17)])
def test_fftconv2d_matches_direct(size):
    h, w = size
    u = _randn(2, 3, h, w, seed=h * w)
    kernels = {(1, 1), (3, 3), (5, 7), (4, 2), (2 * h - 1, 2 * w - 1), (2 * h + 3, 3), (3, 2 * w + 5)}
    for kh, kw in sorted(kernels):
        k = _randn(3, kh, kw, seed=kh * 31 + kw)
        y = fftconv2d(u, k)
        assert y.shape == u.shape and y.dtype == torch.float32
        torch.testing.assert_close(y.double(), _direct_2d(u, k), atol=1e-5, rtol=1e-5)


def _grads(fn, u, k, g):
    u, k = u.clone().requires_grad_(), k.clone().requires_grad_()
    return torch.autograd.grad(fn(u, k), (u, k), g)


@pytest.mark.parametrize(
    "mode,u_shape,k_shape",
    [
        ("causal", (2, 3, 11), (3, 11)),
        ("causal", (3, 7), (3, 20)),  # no batch dim; taps beyond L dropped
        ("centred", (2, 3, 12), (3, 5)),
        ("centred", (2, 3, 5), (3, 30)),  # longer than 2L - 1: cropped
        ("2d", (2, 3, 7, 9), (3, 5, 4)),
        ("2d", (3, 6, 5), (3, 15, 11)),  # global-size kernel
    ],
)
def test_fftconv_gradients_match_direct_convolution(mode, u_shape, k_shape):
    """The hand-written backward of the FFT convolutions (real FFTs only) equals autograd through direct conv."""
    u, k = _randn(*u_shape, seed=5), _randn(*k_shape, seed=6)
    fft = {"2d": fftconv2d}.get(mode) or (lambda a, b: fftconv1d(a, b, mode))
    direct = {"causal": _direct_causal, "centred": _direct_centred, "2d": _direct_2d}[mode]
    g = _randn(*u_shape, seed=7)
    du, dk = _grads(fft, u, k, g)
    du_ref, dk_ref = _grads(lambda a, b: direct(a, b), u.double(), k.double(), g.double())
    torch.testing.assert_close(du.double(), du_ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(dk.double(), dk_ref, atol=1e-4, rtol=1e-4)


def test_fftconv_torch_fft_path_matches_direct(monkeypatch):
    """The torch.fft branch that CUDA takes (pruned transforms, wrapped kernel), run here on the CPU."""
    import operators._fft as fft_mod

    monkeypatch.setattr(fft_mod, "_on_scipy", lambda x: False)
    u2, k2 = _randn(2, 3, 7, 9, seed=1), _randn(3, 13, 5, seed=2)
    u1, k1 = _randn(2, 3, 12, seed=3), _randn(3, 7, seed=4)
    cases = [(fftconv2d, _direct_2d, u2, k2)]
    cases += [
        (lambda a, b, m=m: fftconv1d(a, b, m), d, u1, k1)
        for m, d in (("causal", _direct_causal), ("centred", _direct_centred))
    ]
    for fft, direct, u, k in cases:
        torch.testing.assert_close(fft(u, k).double(), direct(u, k), atol=1e-5, rtol=1e-5)
        g = _randn(*u.shape, seed=7)
        for got, ref in zip(_grads(fft, u, k, g), _grads(direct, u.double(), k.double(), g.double())):
            torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=1e-4)


def test_fft_helpers_compute_in_fp32_under_bf16_autocast():
    u, k = _randn(1, 2, 5, 6).bfloat16(), _randn(2, 9, 11)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y2 = fftconv2d(u, k)
        y1 = fftconv1d(u.flatten(-2), k[:, 0], "centred")
    assert y2.dtype == y1.dtype == torch.float32
    torch.testing.assert_close(y2.double(), _direct_2d(u.float(), k), atol=1e-5, rtol=1e-5)


def test_fftconv_scipy_path_matches_direct(monkeypatch):
    """The scipy.fft branch (large 2D grids on the CPU), forced for small grids: values and gradients."""
    import operators._fft as fft_mod

    monkeypatch.setattr(fft_mod, "_SCIPY_MIN_GRID_2D", 1)
    u, k, g = _randn(2, 3, 7, 9, seed=1), _randn(3, 13, 5, seed=2), _randn(2, 3, 7, 9, seed=3)
    assert fft_mod._use_scipy(u, (8, 9))
    torch.testing.assert_close(fftconv2d(u, k).double(), _direct_2d(u, k), atol=1e-5, rtol=1e-5)
    for got, ref in zip(_grads(fftconv2d, u, k, g), _grads(_direct_2d, u.double(), k.double(), g.double())):
        torch.testing.assert_close(got.double(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("scipy_path", [False, True])
@pytest.mark.parametrize("u_shape,s", [((2, 3, 6), (11,)), ((3, 5), (8,)), ((2, 3, 4, 5), (7, 9))])
def test_cropped_fft_conv_with_skip_gradcheck(monkeypatch, scipy_path, u_shape, s):
    """The FFT convolution on a placed kernel with the skip term folded in (``fftconv_on_grid``), float64 gradcheck
    of its hand-written backward (u, grid kernel, skip), on both FFT back ends."""
    import operators._fft as fft_mod

    if scipy_path:
        monkeypatch.setattr(fft_mod, "_SCIPY_MIN_GRID_2D", 1)
        monkeypatch.setattr(fft_mod, "_use_scipy", lambda x, s: x.device.type == "cpu")
    c = u_shape[-len(s) - 1]
    u = _randn(*u_shape, seed=1, dtype=torch.float64).requires_grad_()
    k = _randn(c, *s, seed=2, dtype=torch.float64).requires_grad_()
    d = _randn(c, seed=3, dtype=torch.float64).requires_grad_()
    conv = fft_mod._CroppedFFTConv.apply
    assert torch.autograd.gradcheck(lambda u, k, d: conv(u, k, d), (u, k, d))
    assert torch.autograd.gradcheck(lambda u, k: conv(u, k, None), (u, k))
    # the value: circular convolution on the grid, cropped, plus D u
    padded = F.pad(u, [p for n, m in zip(reversed(s), reversed(u_shape)) for p in (0, n - m)])
    dims = tuple(range(-len(s), 0))
    circ = torch.fft.irfftn(torch.fft.rfftn(padded, dim=dims) * torch.fft.rfftn(k, dim=dims), s=s, dim=dims)
    ref = circ[(..., *(slice(0, m) for m in u_shape[-len(s) :]))] + d.view(-1, *([1] * len(s))) * u
    torch.testing.assert_close(conv(u, k, d), ref, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("taps,s,start", [((5,), (8,), (2,)), ((4,), (9,), (0,)), ((5, 3), (8, 6), (2, 1))])
def test_place_on_grid_and_take_taps(taps, s, start):
    """place_on_grid puts tap t at (t - start) mod s (times an optional constant scale), zeros elsewhere; its gradient
    (float64 gradcheck) and take_taps are the inverse placement."""
    from operators._fft import place_on_grid, take_taps

    k = _randn(2, *taps, seed=1, dtype=torch.float64).requires_grad_()
    scale = _randn(2, *taps, seed=2, dtype=torch.float64)
    ref = torch.zeros(2, *s, dtype=torch.float64)
    for idx in itertools.product(*(range(t) for t in taps)):
        ref[(slice(None), *((i - a) % n for i, a, n in zip(idx, start, s)))] = (k * scale)[(slice(None), *idx)]
    torch.testing.assert_close(place_on_grid(k, s, start, scale=scale), ref, atol=0, rtol=0)
    torch.testing.assert_close(take_taps(place_on_grid(k, s, start), taps, start), k, atol=0, rtol=0)
    assert torch.autograd.gradcheck(lambda k: place_on_grid(k, s, start, scale=scale), (k,))
    assert torch.autograd.gradcheck(lambda k: place_on_grid(k, s, start), (k,))


def test_modulated_kernel_on_grid_matches_composite():
    """HyenaPixel's fused decay-and-place equals the plain composite kernel() placed on the grid; float64 gradcheck
    of its backward (MLP output, rates, shift)."""
    from operators._fft import centred_grid, place_on_grid
    from operators.hyena_pixel import _ModulatedKernelOnGrid

    torch.manual_seed(0)
    for spec in ({}, {"filter_size": 5}, {"filter_size": 5, "learned_pos": True}):
        pix = HyenaPixelMixer(4, **spec).long_conv
        with torch.no_grad():
            pix.shift.normal_()
        s, start = centred_grid((6, 7), pix.kernel(6, 7, "cpu").shape[1:])
        torch.testing.assert_close(
            pix.kernel_on_grid(6, 7, "cpu"), place_on_grid(pix.kernel(6, 7, "cpu"), s, start), atol=1e-6, rtol=1e-6
        )
    h = _randn(3, 5, 3, seed=1, dtype=torch.float64).requires_grad_()
    dist = _randn(5, 3, seed=2, dtype=torch.float64).abs()
    rate = _randn(3, seed=3, dtype=torch.float64).abs().requires_grad_()
    shift = _randn(3, seed=4, dtype=torch.float64).requires_grad_()
    fn = lambda h, rate, shift: _ModulatedKernelOnGrid.apply(h, dist, rate, shift, (8, 4), (2, 1))  # noqa: E731
    ref = place_on_grid(h * (torch.exp(-dist * rate[:, None, None]) + shift[:, None, None]), (8, 4), (2, 1))
    torch.testing.assert_close(fn(h, rate, shift), ref)
    assert torch.autograd.gradcheck(fn, (h, rate, shift))


@pytest.mark.parametrize("taps,padding", [(3, 1), (3, 2), (5, 2), (4, 3), (1, 0), (7, 3)])
def test_short_conv1d_matches_conv1d(taps, padding):
    """The tap-by-tap depthwise short convolution equals nn.Conv1d cropped to L; float64 gradcheck of its backward."""
    from operators.hyena import _ShortConv1d, short_conv1d

    conv = torch.nn.Conv1d(4, 4, taps, padding=padding, groups=4).double()
    x = _randn(2, 4, 6, seed=1, dtype=torch.float64).requires_grad_()
    torch.testing.assert_close(short_conv1d(x, conv), conv(x)[..., :6])
    fn = lambda x, w, b: _ShortConv1d.apply(x, w, b, padding)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, conv.weight, conv.bias))
    assert torch.autograd.gradcheck(lambda x, w: _ShortConv1d.apply(x, w, None, padding), (x, conv.weight))


def test_sin_mlp_cf_matches_the_module():
    """The channels-first filter MLP (frequencies folded into the Linears) gives the module's values and gradients."""
    from operators.hyena import sin_mlp, sin_mlp_cf

    torch.manual_seed(0)
    mlp = sin_mlp(5, 8, 3, 2, 1.0).double()
    for layer in mlp:
        if hasattr(layer, "freq"):
            layer.freq.data.uniform_(0.5, 2.0)
    z = _randn(5, 11, seed=1, dtype=torch.float64)
    g = _randn(3, 11, seed=2, dtype=torch.float64)
    got = torch.autograd.grad(sin_mlp_cf(mlp, z), list(mlp.parameters()), g)
    ref = torch.autograd.grad(mlp(z.t()).t(), list(mlp.parameters()), g)
    torch.testing.assert_close(sin_mlp_cf(mlp, z), mlp(z.t()).t())
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)


# ------------------------------------------------------------------------------------------------ filter modules
def test_hyena_filter_modules_apply_their_kernel_with_skip():
    """HyenaFilter / HyenaPixelFilter = (FFT convolution with their generated kernel) + D u."""
    torch.manual_seed(0)
    u = _randn(2, 4, 21, seed=5)
    for centred, mixer in ((False, HyenaMixer(4)), (True, HyenaBiMixer(4))):
        filt = mixer.filter_fn
        k = filt.kernel(21, u.device)
        assert k.shape == (4, 21 if not centred else 41)
        direct = _direct_centred(u, k) if centred else _direct_causal(u, k)
        ref = direct + u.double() * filt.bias.double()[:, None]
        torch.testing.assert_close(filt(u).double(), ref, atol=1e-5, rtol=1e-5)
    pix = HyenaPixelMixer(4).long_conv
    u2 = _randn(2, 4, 6, 7, seed=6)
    k2 = pix.kernel(6, 7, u2.device)
    assert k2.shape == (4, 11, 13)
    ref = _direct_2d(u2, k2) + u2.double() * pix.bias.double()
    torch.testing.assert_close(pix(u2).double(), ref, atol=1e-5, rtol=1e-5)


def test_causal_integer_filter_is_fixed_and_global_filter_stretches():
    torch.manual_seed(0)
    fixed = HyenaMixer(4, filter_size=8).filter_fn
    with torch.no_grad():
        torch.testing.assert_close(fixed.kernel(5, "cpu"), fixed.kernel(50, "cpu")[:, :5], atol=1e-6, rtol=0)
        assert fixed.kernel(50, "cpu").shape == (4, 8)
        glob = HyenaMixer(4).filter_fn
        assert glob.kernel(50, "cpu").shape == (4, 50)
        # t is relative to the length: tap L - 1 sits at t = 1 for every L
        torch.testing.assert_close(glob.kernel(10, "cpu")[:, -1], glob.kernel(30, "cpu")[:, -1], atol=1e-6, rtol=0)


def test_hyena_pixel_filter_depends_on_pixel_offset_only():
    torch.manual_seed(0)
    for spec in ({}, {"filter_size": 9}):
        pix = HyenaPixelMixer(8, **spec).long_conv
        with torch.no_grad():
            k1 = pix.kernel(16, 16, torch.device("cpu"))
            k2 = pix.kernel(40, 24, torch.device("cpu"))
        if spec:
            assert k1.shape == k2.shape == (8, 9, 9)
        else:
            assert k1.shape == (8, 31, 31) and k2.shape == (8, 79, 47)
        ch, cw = k2.shape[1] // 2, k2.shape[2] // 2
        rh, rw = k1.shape[1] // 2, k1.shape[2] // 2
        crop = k2[:, ch - rh : ch + rh + 1, cw - rw : cw + rw + 1]  # the same offsets as k1
        torch.testing.assert_close(crop, k1, atol=1e-6, rtol=1e-6)
        assert k1.std() > 1e-3, "the filter should not be constant"


# ------------------------------------------------------------------------------------- causality / receptive field
def _raster_change(mixer, shape, positions, seed=0):
    """|y(x + perturbation at raster ``positions``) - y(x)| per raster position, max over batch and channels."""
    x = _randn(*shape, seed=seed)
    x2 = x.clone()
    flat = x2.view(shape[0], shape[1], -1)  # (B, C, L)
    flat[..., positions] += _randn(shape[0], shape[1], len(positions), seed=seed + 1) * 3
    with torch.no_grad():
        diff = (mixer(x2) - mixer(x)).abs()  # (B, C, H, W)
    return diff.flatten(2).amax(dim=(0, 1))  # (L,)


@pytest.mark.parametrize("filter_size", ["global", 6])
def test_hyena_is_causal_in_raster_order(filter_size):
    torch.manual_seed(0)
    mixer = HyenaMixer(8, filter_size=filter_size).eval()
    shape = (2, 8, 7, 9)
    for p in (0, 23, 62):
        change = _raster_change(mixer, shape, list(range(p, 63)), seed=p)
        assert change[:p].max() <= 1e-6 if p else True, f"outputs before {p} changed by {change[:p].max():.3g}"
        assert change[p:].min() > 1e-5, f"outputs at/after {p} did not all change (min {change[p:].min():.3g})"


def test_hyena_integer_filter_limits_the_past():
    """Output i depends on inputs i - (K - 1) - (short_filter_order - 1) .. i, nothing earlier."""
    torch.manual_seed(0)
    mixer = HyenaMixer(8, filter_size=6, short_filter_order=3).eval()
    reach = (6 - 1) + (3 - 1)
    i = 40
    assert _raster_change(mixer, (1, 8, 7, 9), [i - reach - 1])[i] <= 1e-6
    assert _raster_change(mixer, (1, 8, 7, 9), [i - reach])[i] > 1e-5


def test_hyena_bi_is_not_causal_and_global():
    torch.manual_seed(0)
    mixer = HyenaBiMixer(8).eval()
    change = _raster_change(mixer, (1, 8, 7, 9), [62])  # the last pixel
    assert change.min() > 1e-6, f"some outputs ignore the last pixel (min change {change.min():.3g})"
    change = _raster_change(mixer, (1, 8, 7, 9), [0])  # the first pixel reaches the last output too
    assert change[-1] > 1e-6


@pytest.mark.parametrize("k", [1, 5, 9])
def test_hyena_bi_integer_filter_limits_the_receptive_field(k):
    torch.manual_seed(0)
    mixer = HyenaBiMixer(8, filter_size=k, short_filter_order=3).eval()
    reach = k // 2 + 3 // 2  # long filter +-K//2 on x1 * v, whose short filter adds +-1
    shape, i = (1, 8, 7, 9), 31
    far = _raster_change(mixer, shape, [i - reach - 1, i + reach + 1])
    assert far[i] <= 1e-6, f"a pixel {reach + 1} steps away changed output {i} by {far[i]:.3g}"
    for j in (i - reach, i + reach):
        assert _raster_change(mixer, shape, [j])[i] > 1e-5, f"pixel {j} should reach output {i}"


def test_hyena_pixel_receptive_field():
    torch.manual_seed(0)
    shape = (1, 8, 15, 13)

    def change_at_centre(mixer, dy, dx):
        x = _randn(*shape, seed=3)
        x2 = x.clone()
        x2[:, :, 7 + dy, 6 + dx] += 3.0
        with torch.no_grad():
            return (mixer(x2) - mixer(x))[:, :, 7, 6].abs().max().item()

    glob = HyenaPixelMixer(8).eval()
    assert change_at_centre(glob, 7, 6) > 1e-6 and change_at_centre(glob, -7, -6) > 1e-6  # corners reach the centre
    local = HyenaPixelMixer(8, filter_size=5).eval()
    reach = 5 // 2 + 5 // 2  # long kernel +-2 on q * k, whose 5 x 5 depthwise conv adds +-2
    assert change_at_centre(local, reach + 1, 0) <= 1e-6
    assert change_at_centre(local, 0, -(reach + 1)) <= 1e-6
    assert change_at_centre(local, reach, reach) > 1e-6


# ------------------------------------------------------------------------------------------------- contract, bf16
@pytest.mark.parametrize(
    "spec",
    NAMES + ["hyena_bi:filter_size=7,use_layernorm=True", "hyena_pixel:filter_size=5,use_layernorm=False"],
)
def test_conformance(spec):
    results = run_conformance(spec)
    failed = {k: v for k, v in results.items() if v is not None}
    assert not failed, failed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_conformance_cuda(name):
    results = run_conformance(name, device="cuda")
    failed = {k: v for k, v in results.items() if v is not None}
    assert not failed, failed


@pytest.mark.parametrize("name", NAMES)
def test_bf16_autocast_close_to_fp32(name):
    torch.manual_seed(0)
    mixer = build_mixer(name, 16).eval()
    x = _randn(2, 16, 12, 10, seed=7)
    with torch.no_grad():
        ref = mixer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = mixer(x)
    assert y.shape == ref.shape and torch.isfinite(y).all()
    rel = ((y.float() - ref).norm() / ref.norm()).item()
    assert rel < 0.03, f"{name}: bf16 relative L2 error {rel:.4f}"


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (6, 1), (2, 3)])
@pytest.mark.parametrize("name", NAMES)
def test_tiny_sizes(name, size):
    torch.manual_seed(0)
    mixer = build_mixer(name, 4)
    x = _randn(1, 4, *size).requires_grad_(True)
    y = mixer(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all()


def test_state_dict_names():
    keys = {
        "hyena": {
            "in_proj.weight",
            "in_proj.bias",
            "short_filter.weight",
            "short_filter.bias",
            "filter_fn.bias",
            "out_proj.weight",
            "out_proj.bias",
        },
        "hyena_pixel": {
            "pointwise_conv.weight",
            "pointwise_conv.bias",
            "depthwise_conv.weight",
            "depthwise_conv.bias",
            "long_conv.deltas",
            "long_conv.shift",
            "long_conv.bias",
            "qk_norm.weight",
            "out_norm.weight",
            "out_proj.weight",
            "out_proj.bias",
        },
    }
    for name, expected in keys.items():
        sd = build_mixer(name, 8).state_dict()
        core = {k for k in sd if ".implicit_filter." not in k}
        assert core == expected, (name, sorted(core ^ expected))
        assert any(k.endswith("implicit_filter.1.freq") for k in sd)
    assert "qk_norm.0.weight" in build_mixer("hyena_bi:use_layernorm=True", 8).state_dict()
    assert build_mixer("hyena_pixel:filter_size=5", 8).long_conv.decay_scale == 5.0


# ------------------------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [0, -3, "big", 2.5, True, None])
def test_invalid_filter_size(name, bad):
    with pytest.raises(OptionError, match="filter_size"):
        build_mixer(name, 8, filter_size=bad)


@pytest.mark.parametrize("name", ["hyena_bi", "hyena_pixel"])
def test_even_filter_size_rejected_for_centred(name):
    with pytest.raises(OptionError, match=r"filter_size=4 .*odd"):
        build_mixer(name, 8, filter_size=4)
    build_mixer(name, 8, filter_size=5)


def test_other_invalid_options():
    build_mixer("hyena", 8, filter_size=4)  # causal: any positive K
    bad = [
        ("hyena", {"emb_dim": 4}),
        ("hyena", {"emb_dim": 1}),
        ("hyena_bi", {"short_filter_order": 2}),
        ("hyena", {"filter_order": 0}),
        ("hyena_pixel", {"emb_dim": 30}),
        ("hyena_pixel", {"decay_scale": -1.0}),
        ("hyena_pixel", {"short_kernel_size": 4}),
        ("hyena", {"sin_freq": 0}),
    ]
    for name, opts in bad:
        with pytest.raises(OptionError, match=next(iter(opts))):
            build_mixer(name, 8, **opts)


# ------------------------------------------------------------------------------------- learned positional features
def test_hyena_pixel_learned_pos_matches_derived_at_init():
    """``learned_pos`` stores z as the official (1, E, K, K) Parameter with the derived features as its init."""
    torch.manual_seed(0)
    derived = HyenaPixelMixer(8, filter_size=9, emb_dim=12, filter_order=16).eval()
    learned = HyenaPixelMixer(8, filter_size=9, emb_dim=12, filter_order=16, learned_pos=True).eval()
    missing, unexpected = learned.load_state_dict(derived.state_dict(), strict=False)
    assert missing == ["long_conv.z"] and not unexpected, (missing, unexpected)
    assert learned.long_conv.z.shape == (1, 12, 9, 9) and learned.long_conv.z.requires_grad
    for size in [(6, 5), (13, 11), (1, 1)]:  # smaller than the kernel (centre crop of z), larger, tiny
        x = _randn(2, 8, *size, seed=5)
        with torch.no_grad():
            torch.testing.assert_close(learned(x), derived(x), atol=1e-6, rtol=1e-5)
    n_z = 12 * 9 * 9
    assert sum(p.numel() for p in learned.parameters()) == sum(p.numel() for p in derived.parameters()) + n_z


def test_hyena_pixel_learned_pos_gets_a_gradient():
    torch.manual_seed(0)
    mixer = build_mixer("hyena_pixel:filter_size=7,learned_pos=True", 8)
    mixer(_randn(1, 8, 10, 9, seed=2)).square().sum().backward()
    grad = mixer.long_conv.z.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 0
    # a 3 x 2 input reaches offsets +-2 x +-1 only (the centre crop of z); the rest of z gets no gradient
    mixer.zero_grad(set_to_none=True)
    mixer(_randn(1, 8, 3, 2, seed=2)).square().sum().backward()
    grad = mixer.long_conv.z.grad[0].abs().sum(0)  # (7, 7)
    inside = torch.zeros(7, 7, dtype=torch.bool)
    inside[1:6, 2:5] = True
    assert grad[inside].min() > 0 and grad[~inside].max() == 0


def test_hyena_pixel_learned_pos_needs_an_integer_filter_size():
    with pytest.raises(OptionError, match="learned_pos") as info:
        build_mixer("hyena_pixel:learned_pos=True", 8)
    assert "\n" not in str(info.value)
    with pytest.raises(OptionError, match="learned_pos"):
        build_mixer("hyena_pixel:filter_size=5", 8, learned_pos="yes")


def test_hyena_pixel_learned_pos_conformance():
    results = run_conformance("hyena_pixel:filter_size=5,learned_pos=True")
    failed = {k: v for k, v in results.items() if v is not None}
    assert not failed, failed


@pytest.mark.parametrize("name", NAMES)
def test_inference_reuses_the_kernel_until_a_parameter_changes(name):
    """Eval mode without gradients caches the kernel per size (the fast path); the output never changes by it."""
    torch.manual_seed(0)
    m = build_mixer(name, 8).eval()
    f = m.long_conv if name == "hyena_pixel" else m.filter_fn
    x = _randn(2, 8, 6, 5)
    with torch.no_grad():
        y0 = m(x)
        calls = []
        real = f.kernel_on_grid
        f.kernel_on_grid = lambda *a: calls.append(a) or real(*a)  # count kernel builds
        torch.testing.assert_close(m(x), y0, rtol=0, atol=0)
        torch.testing.assert_close(m(x), y0, rtol=0, atol=0)
        assert calls == [], "the cached kernel is reused"
        m(_randn(1, 8, 7, 5))  # another size: one build
        assert len(calls) == 1
        f.implicit_filter[0].weight.mul_(1.5)  # a parameter update (optimizer step, load_state_dict)
        y1 = m(x)
        assert len(calls) == 2 and not torch.allclose(y1, y0)
    m.train()
    with torch.no_grad():
        m(x)
    assert len(calls) == 3, "training mode builds the kernel every time"
    y = m.eval()(x)  # eval with gradients on: built with autograd, so the filter parameters get gradients
    y.square().mean().backward()
    assert len(calls) == 4 and f.implicit_filter[0].weight.grad is not None
