"""Reference tests of the baseline mixers: GFNet (circular convolution), pooling, ConvFormer SepConv."""

import pytest
import torch
import torch.nn.functional as F

from operators.gfnet import resample_complex_weight
from sandbox import OptionError, build_mixer


def circular_conv(x, k):
    """y[i, j] = sum_{a, b} x[(i - a) % H, (j - b) % W] k[a, b], per channel, by explicit shifts."""
    y = torch.zeros_like(x)
    h, w = x.shape[-2:]
    for a in range(h):
        for b in range(w):
            y += torch.roll(x, shifts=(a, b), dims=(-2, -1)) * k[:, a, b][None, :, None, None]
    return y


@pytest.mark.parametrize("h,w", [(8, 8), (6, 9), (1, 5)])
def test_gfnet_is_circular_convolution(h, w):
    torch.manual_seed(0)
    m = build_mixer({"name": "gfnet", "size": h}, 3)
    if (h, w // 2 + 1) != tuple(m.complex_weight.shape[:2]):  # non-square: define the filter at the exact size
        m.complex_weight.data = torch.randn(h, w // 2 + 1, 3, 2) * 0.1
    weight = torch.view_as_complex(m.complex_weight.detach()).permute(2, 0, 1)  # (C, H, W//2+1)
    kernel = torch.fft.irfft2(weight, s=(h, w))  # (C, H, W): the spatial filter
    x = torch.randn(2, 3, h, w)
    torch.testing.assert_close(m(x), circular_conv(x, kernel), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("chunk_bytes", [1 << 20, 64])  # 64: every spectrum inverted channel by channel
@pytest.mark.parametrize("b,c,h,w", [(2, 3, 6, 8), (1, 2, 5, 7), (2, 1, 4, 5), (1, 3, 1, 1), (2, 2, 3, 2)])
def test_gfnet_cpu_filter_gradients_match_autograd(b, c, h, w, chunk_bytes, monkeypatch):
    """The hand-written backward of the CPU global filter equals autograd through rfft2 * W -> irfft2 (the DC and
    Nyquist columns of the half spectrum count once, the others twice), float64, and passes gradcheck; with the
    inverse transform whole and in channel chunks."""
    from operators import gfnet
    from operators.gfnet import _GlobalFilterCPU

    monkeypatch.setattr(gfnet, "CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    x = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(h, w // 2 + 1, c, 2, dtype=torch.float64, requires_grad=True)
    g = torch.randn(b, c, h, w, dtype=torch.float64)

    def composite(x, weight):
        spec = torch.fft.rfft2(x, dim=(-2, -1), norm="ortho")
        wc = torch.view_as_complex(weight.contiguous()).permute(2, 0, 1)
        return torch.fft.irfft2(spec * wc, s=(h, w), dim=(-2, -1), norm="ortho")

    y = _GlobalFilterCPU.apply(x, weight)
    torch.testing.assert_close(y, composite(x, weight))
    got = torch.autograd.grad(y, (x, weight), g)
    ref = torch.autograd.grad(composite(x, weight), (x, weight), g)
    for a, r in zip(got, ref):
        torch.testing.assert_close(a, r)
    assert torch.autograd.gradcheck(_GlobalFilterCPU.apply, (x, weight))


def test_gfnet_paths_agree():
    """Training (hand-written backward), inference (in-place spectrum) and resampled weights give the same output."""
    torch.manual_seed(0)
    m = build_mixer({"name": "gfnet", "size": 8}, 3)
    for shape in ((2, 3, 8, 8), (1, 3, 6, 10)):
        x = torch.randn(*shape, requires_grad=True)
        y = m(x)
        with torch.no_grad():
            torch.testing.assert_close(m(x), y)
        y.square().sum().backward()
        assert x.grad is not None and m.complex_weight.grad is not None
        m.complex_weight.grad = None


def test_gfnet_weight_resampling():
    w = torch.randn(8, 5, 3, 2)
    assert resample_complex_weight(w, 8, 5) is w
    const = torch.ones(8, 5, 3, 2)
    torch.testing.assert_close(resample_complex_weight(const, 13, 7), torch.ones(13, 7, 3, 2))
    r = resample_complex_weight(w, 15, 9)
    torch.testing.assert_close(r[0, 0], w[0, 0])  # align_corners=True keeps the corners (DC stays DC)
    torch.testing.assert_close(r[-1, -1], w[-1, -1])


def test_pool_matches_naive_average_of_existing_neighbours():
    x = torch.randn(1, 2, 5, 4)
    y = build_mixer("pool", 2)(x)
    ref = torch.zeros_like(x)
    for i in range(5):
        for j in range(4):
            patch = x[..., max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
            ref[..., i, j] = patch.mean(dim=(-2, -1)) - x[..., i, j]
    torch.testing.assert_close(y, ref)


def test_sepconv_matches_channels_last_formula():
    torch.manual_seed(0)
    m = build_mixer("sepconv", 8)
    x = torch.randn(2, 8, 9, 7)
    cl = x.permute(0, 2, 3, 1)  # official ConvFormer SepConv runs channels-last
    h = m.act(m.pwconv1(cl)).permute(0, 3, 1, 2)
    h = m.dwconv(h).permute(0, 2, 3, 1)
    ref = m.pwconv2(h).permute(0, 3, 1, 2)
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)
    a = torch.randn(10)
    torch.testing.assert_close(m.act(a), m.act.scale * F.relu(a) ** 2 + m.act.bias)


@pytest.mark.parametrize(
    "spec", ["conv:kernel_size=4", "conv:kernel_size=0", "pool:pool_size=2", "gfnet:size=0", "sepconv:kernel_size=2"]
)
def test_bad_options(spec):
    with pytest.raises(OptionError):
        build_mixer(spec, 4)
