"""Window (SwinIR) and global (CAFormer) attention mixers against naive, independently written references."""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn.functional as F

import operators.attention_window as aw
from sandbox.conformance import run_conformance
from sandbox.errors import OptionError
from sandbox.registry import build_mixer


def _randomise(m: torch.nn.Module, std: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Give every parameter N(0, std^2) values, the bias table N(0, 1), so biases and masks visibly matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            scale = 1.0 if name == "relative_position_bias_table" else std
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return m


# ------------------------------------------------------------------------------------------- naive references
def _swinir_region_labels(hp: int, wp: int, ws: int, s: int) -> torch.Tensor:
    """Region id of each position of the rolled (hp, wp) map, labelled with slices and a counter as SwinIR does."""
    img = torch.zeros(hp, wp, dtype=torch.long)
    bands = (slice(0, -ws), slice(-ws, -s), slice(-s, None)) if s else (slice(None),)
    cnt = 0
    for hs in bands:
        for wsl in bands:
            img[hs, wsl] = cnt
            cnt += 1
    return img


def naive_window_attention(m: aw.WindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Loop over windows of the padded, rolled map; only real tokens are keys; explicit softmax."""
    b, c, h, w = x.shape
    ws, s, nh = m.window_size, m.shift, m.num_heads
    d = c // nh
    hp, wp = math.ceil(h / ws) * ws, math.ceil(w / ws) * ws
    region = _swinir_region_labels(hp, wp, ws, s)
    table = m.relative_position_bias_table
    xl = x.permute(0, 2, 3, 1)  # (B, H, W, C)
    qkv = F.linear(xl, m.qkv.weight, m.qkv.bias)  # (B, H, W, 3C), channels (3, nH, d)
    q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
    out = torch.zeros(b, h, w, c)
    for wy in range(hp // ws):
        for wx in range(wp // ws):
            toks = []  # (row in window, col in window, original row, original col, region)
            for i in range(ws):
                for j in range(ws):
                    ry, rx = wy * ws + i, wx * ws + j  # position in the rolled frame
                    oy, ox = (ry + s) % hp, (rx + s) % wp  # torch.roll(-s): rolled[p] = padded[p + s]
                    if oy < h and ox < w:
                        toks.append((i, j, oy, ox, int(region[ry, rx])))
            rows = torch.tensor([t[2] for t in toks])
            cols = torch.tensor([t[3] for t in toks])
            n = len(toks)
            qw = q[:, rows, cols].reshape(b, n, nh, d)
            kw = k[:, rows, cols].reshape(b, n, nh, d)
            vw = v[:, rows, cols].reshape(b, n, nh, d)
            logits = torch.einsum("bihd,bjhd->bhij", qw, kw) * d**-0.5
            bias = torch.empty(nh, n, n)
            extra = torch.zeros(n, n)
            for a, ta in enumerate(toks):
                for bb, tb in enumerate(toks):
                    idx = (ta[0] - tb[0] + ws - 1) * (2 * ws - 1) + (ta[1] - tb[1] + ws - 1)
                    bias[:, a, bb] = table[idx]
                    if ta[4] != tb[4]:
                        extra[a, bb] = -100.0
            attn = torch.softmax(logits + bias + extra, dim=-1)
            ow = torch.einsum("bhij,bjhd->bihd", attn, vw).reshape(b, n, c)
            out[:, rows, cols] = ow
    y = F.linear(out, m.proj.weight, m.proj.bias)  # (B, H, W, C)
    return y.permute(0, 3, 1, 2)


def naive_global_attention(m, x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    nh, d = m.num_heads, m.head_dim
    t = x.reshape(b, c, h * w).transpose(1, 2)  # (B, N, C)
    qkv = F.linear(t, m.qkv.weight, m.qkv.bias)  # (B, N, 3 nH d)
    q, k, v = qkv.split(nh * d, dim=-1)
    outs = []
    for i in range(nh):
        sl = slice(i * d, (i + 1) * d)
        attn = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(d), dim=-1)
        outs.append(attn @ v[..., sl])
    y = F.linear(torch.cat(outs, -1), m.proj.weight, m.proj.bias)  # (B, N, C)
    return y.transpose(1, 2).reshape(b, c, h, w)


# ----------------------------------------------------------------------------------------------- window tests
WINDOW_CASES = [
    # (H, W, ws, shift, dim, heads)
    (16, 16, 4, 0, 12, 3),
    (16, 16, 4, 2, 12, 3),
    (16, 16, 8, 0, 8, 2),
    (16, 16, 8, 4, 8, 2),
    (13, 10, 4, 0, 12, 3),
    (13, 10, 4, 2, 12, 3),  # padding >= shift: wrapped rows share windows only with padding
    (15, 11, 4, 2, 12, 3),  # padding < window - shift: the -100 mask separates real tokens
    (7, 9, 4, 1, 8, 2),
    (5, 3, 4, 3, 8, 1),  # smaller than a window, odd shift
]


@pytest.mark.parametrize("h,w,ws,shift,dim,heads", WINDOW_CASES)
def test_window_matches_naive_loop(h, w, ws, shift, dim, heads):
    torch.manual_seed(0)
    m = _randomise(aw.WindowAttention(dim, window_size=ws, shift=shift, num_heads=heads))
    x = torch.randn(2, dim, h, w)
    with torch.no_grad():
        y = m(x)
        ref = naive_window_attention(m, x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("h,w,ws,shift,dim,heads", [WINDOW_CASES[i] for i in (1, 3, 6, 8)])
def test_window_gradients_match_naive_loop(h, w, ws, shift, dim, heads):
    """Gradients w.r.t. the input and every parameter (the bias table included) equal autograd through the loop."""
    torch.manual_seed(0)
    m = _randomise(aw.WindowAttention(dim, window_size=ws, shift=shift, num_heads=heads))
    x = torch.randn(2, dim, h, w)
    g = torch.randn(2, dim, h, w)
    grads = []
    for fn in (m, lambda t: naive_window_attention(m, t)):
        xi = x.clone().requires_grad_(True)
        fn(xi).backward(g)
        grads.append([xi.grad] + [p.grad.clone() for p in m.parameters()])
        m.zero_grad(set_to_none=True)
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("nh", [1, 2])
@pytest.mark.parametrize("masked,nw", [(False, 3), (True, 3), (True, 1)])  # one window with a mask: (1, N, N)
def test_window_attention_cpu_core_matches_sdpa(masked, nw, nh):
    """The head-by-head CPU node equals scaled_dot_product_attention (the path off the CPU): values and gradients
    of qkv and the relative bias, with and without a per-window mask (-inf keys included), in float64."""
    torch.manual_seed(0)
    b, n, d = 2, 16, 4
    qkv = torch.randn(b * nw, n, 3 * nh * d, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(nh, n, n, dtype=torch.float64, requires_grad=True)
    mask = None
    if masked:
        mask = torch.randn(nw, n, n, dtype=torch.float64)
        mask[..., -3:] = float("-inf")  # padded keys
    g = torch.randn(b * nw, n, nh * d, dtype=torch.float64)
    results = []
    for fn in (aw.window_attention, aw.window_attention_sdpa):
        out = fn(qkv, bias, mask, nh)
        grads = torch.autograd.grad(out, (qkv, bias), g)
        results.append((out, *grads))
    for ours, ref in zip(*results):
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(lambda *t: aw.window_attention(*t, mask, nh), (qkv, bias))


@pytest.mark.parametrize("shift", [0, 3])
def test_window_order_is_roll_then_partition(shift):
    """to_windows equals SwinIR's roll + window_partition; from_windows inverts it; both backward as permutations."""
    b, c, hp, wp, ws = 2, 5, 12, 8, 4
    x = torch.randn(b, c, hp, wp, dtype=torch.float64, requires_grad=True)
    rolled = torch.roll(x, shifts=(-shift, -shift), dims=(2, 3)).permute(0, 2, 3, 1)  # (B, Hp, Wp, C)
    ref = rolled.reshape(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, c)
    t = aw.to_windows(x, ws, shift)
    torch.testing.assert_close(t, ref, rtol=0, atol=0)
    torch.testing.assert_close(aw.from_windows(t, ws, shift, hp, wp), x, rtol=0, atol=0)
    assert torch.autograd.gradcheck(lambda v: aw.to_windows(v, ws, shift), (x,))
    tok = ref.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: aw.from_windows(v, ws, shift, hp, wp), (tok,))


def test_window_output_ignores_pad_content(monkeypatch):
    """Fill the internal padding with huge random values: real outputs must not move."""
    torch.manual_seed(0)
    m = _randomise(aw.WindowAttention(12, window_size=4, shift=2, num_heads=3))
    x = torch.randn(2, 12, 13, 10)
    with torch.no_grad():
        y = m(x)

    def garbage_pad(t, pad, mode="constant", value=None):
        out = F.pad(t, pad)
        noise = torch.randn(out.shape) * 1e3
        keep = F.pad(torch.ones_like(t), pad).bool()
        return torch.where(keep, out, noise)

    shim = types.SimpleNamespace(**{**{k: getattr(F, k) for k in dir(F) if not k.startswith("_")}, "pad": garbage_pad})
    monkeypatch.setattr(aw, "F", shim)
    with torch.no_grad():
        y2 = m(x)
    torch.testing.assert_close(y2, y, rtol=0, atol=1e-6)


def test_pad_key_mask_marks_exactly_the_padding():
    h, w, ws, s = 13, 10, 4, 2
    mask = aw.pad_key_mask(h, w, ws, s)  # (nW, 1, N)
    hp, wp = 16, 12
    assert mask.shape == ((hp // ws) * (wp // ws), 1, ws * ws)
    for wi in range(mask.shape[0]):
        wy, wx = divmod(wi, wp // ws)
        for t in range(ws * ws):
            i, j = divmod(t, ws)
            oy, ox = (wy * ws + i + s) % hp, (wx * ws + j + s) % wp
            expected = 0.0 if (oy < h and ox < w) else float("-inf")
            assert mask[wi, 0, t].item() == expected
    # every window keeps a real key, so no softmax row is entirely -inf
    assert torch.isfinite(mask).any(-1).all()


def test_relative_position_index_corners():
    ws = 5
    idx = aw.relative_position_index(ws)
    n = ws * ws
    assert idx.shape == (n, n)
    assert idx[0, n - 1] == 0  # (0,0) vs (ws-1,ws-1): both offsets -(ws-1)
    assert idx[n - 1, 0] == (2 * ws - 1) ** 2 - 1
    assert idx.diagonal().eq((ws - 1) * (2 * ws - 1) + ws - 1).all()  # zero offset: centre of the table


def test_shift_region_mask_matches_swinir_labels():
    hp, wp, ws, s = 16, 12, 4, 2
    mask = aw.shift_region_mask(hp, wp, ws, s)  # (nW, N, N)
    labels = _swinir_region_labels(hp, wp, ws, s)
    win = labels.view(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1, ws * ws)
    expected = (win[:, :, None] != win[:, None, :]).float() * -100.0
    torch.testing.assert_close(mask, expected, rtol=0, atol=0)
    assert aw.shift_region_mask(hp, wp, ws, 0).eq(0).all()


def test_window_state_dict_is_swinir_layout():
    m = aw.WindowAttention(180, window_size=8, shift=4)
    assert m.num_heads == 6
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {
        "qkv.weight": (540, 180),
        "qkv.bias": (540,),
        "proj.weight": (180, 180),
        "proj.bias": (180,),
        "relative_position_bias_table": (225, 6),
    }
    assert list(m.buffers()) == []
    m(torch.randn(1, 180, 9, 9))
    assert "relative_position_index" not in m.state_dict() and list(m.buffers()) == []


@pytest.mark.parametrize("dim,heads", [(180, 6), (96, 3), (64, 2), (16, 1), (1, 1), (7, 1), (100, 2)])
def test_default_window_heads(dim, heads):
    assert aw.default_window_heads(dim) == heads
    assert dim % heads == 0


def test_window_bf16_autocast_backward():
    torch.manual_seed(0)
    m = aw.WindowAttention(16, window_size=4, shift=2)
    x = torch.randn(2, 16, 13, 10, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.float().square().mean().backward()
    assert torch.isfinite(x.grad).all()
    assert m.relative_position_bias_table.grad.abs().max() > 0


# ----------------------------------------------------------------------------------------------- global tests
@pytest.mark.parametrize("dim,head_dim,heads", [(64, 32, None), (16, 32, None), (24, 8, 2)])
def test_global_matches_naive(dim, head_dim, heads):
    torch.manual_seed(0)
    spec = {"name": "attention_global", "head_dim": head_dim, "num_heads": heads}
    m = _randomise(build_mixer(spec, dim), std=0.15)
    assert m.num_heads == (heads or max(1, dim // head_dim))
    x = torch.randn(2, dim, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(m(x), naive_global_attention(m, x), rtol=1e-5, atol=1e-5)


def test_global_state_dict_is_caformer_layout():
    m = build_mixer("attention_global", 64)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"qkv.weight": (192, 64), "proj.weight": (64, 64)}


# ------------------------------------------------------------------------------------------ contract, options
@pytest.mark.parametrize(
    "spec",
    [
        "attention_window",
        {"name": "attention_window", "shift": 4},
        {"name": "attention_window", "window_size": 7, "shift": 3},
        "attention_global",
    ],
    ids=str,
)
def test_conformance(spec):
    results = run_conformance(spec)
    assert all(v is None for v in results.values()), results


@pytest.mark.parametrize(
    "spec,dim,needle",
    [
        ({"name": "attention_window", "window_size": 0}, 16, "window_size=0"),
        ({"name": "attention_window", "window_size": 4, "shift": 4}, 16, "shift=4"),
        ({"name": "attention_window", "shift": -1}, 16, "shift=-1"),
        ({"name": "attention_window", "num_heads": 3}, 16, "num_heads=3"),
        ({"name": "attention_window", "num_heads": 0}, 16, "num_heads=0"),
        ({"name": "attention_window", "window_size": 2.5}, 16, "window_size=2.5"),
        ({"name": "attention_global", "head_dim": 0}, 16, "head_dim=0"),
        ({"name": "attention_global", "num_heads": 0}, 16, "num_heads=0"),
    ],
)
def test_bad_options_raise(spec, dim, needle):
    with pytest.raises(OptionError, match=needle) as info:
        build_mixer(spec, dim)
    assert "\n" not in str(info.value)
