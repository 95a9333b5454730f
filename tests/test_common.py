"""Reference tests of the shared channels-first layers against their PyTorch definitions; the allocator setting."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import operators._common as common
from operators._common import (
    DepthwiseConv2d,
    LayerNormCF,
    compiler_disable,
    layer_norm_cf,
    layer_norm_cf_plain,
    linear_cf,
    ln_cf_backward,
    ln_cf_forward,
)


@pytest.mark.parametrize("weight,bias", [(True, True), (True, False), (False, True), (False, False)])
def test_layer_norm_cf_matches_layer_norm(weight, bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4, 3, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True) if weight else None
    b = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True) if bias else None
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (5,), w, b, 1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(layer_norm_cf(x, w, b, 1e-5), ref)
    inputs = tuple(t for t in (x, w, b) if t is not None)

    def fn(*args):
        it = iter(args)
        return layer_norm_cf(next(it), next(it) if weight else None, next(it) if bias else None, 1e-5)

    assert torch.autograd.gradcheck(fn, inputs)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


@pytest.mark.parametrize("weight,bias", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_layer_norm_cf_plain_path_matches_the_cpu_node(weight, bias, channels_last):
    """The off-CPU branch (F.layer_norm on a permuted view), run here on CPU, against the CPU autograd node."""
    g0 = torch.Generator().manual_seed(2)
    x = torch.randn(2, 6, 5, 7, generator=g0) * 2 + 1
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    w = torch.randn(6, generator=g0) if weight else None
    b = torch.randn(6, generator=g0) if bias else None
    g = torch.randn(2, 6, 5, 7, generator=g0)
    outs = []
    for fn in (layer_norm_cf, layer_norm_cf_plain):
        leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
        y = fn(*leaves, 1e-5)
        y.backward(g)
        assert y.shape == x.shape and y.is_contiguous(memory_format=_memory_format(x))
        outs.append([y.detach(), *(t.grad for t in leaves if t is not None)])
    for got, ref in zip(outs[1], outs[0]):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_layer_norm_cf_plain_path_keeps_dtype_under_autocast_and_bf16():
    torch.manual_seed(0)
    ln = LayerNormCF(16)
    x = torch.randn(2, 16, 4, 5) * 3 + 5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer_norm_cf_plain(x, ln.weight, ln.bias, ln.eps)
    assert y.dtype == torch.float32  # not cast by autocast, as the CPU node
    torch.testing.assert_close(y, layer_norm_cf(x, ln.weight, ln.bias, ln.eps), rtol=1e-5, atol=1e-5)
    xb = x.bfloat16().requires_grad_()
    yb = layer_norm_cf_plain(xb, ln.weight, ln.bias, ln.eps)
    yb.float().sum().backward()
    assert yb.dtype == xb.grad.dtype == torch.bfloat16 and ln.weight.grad.dtype == torch.float32
    torch.testing.assert_close(yb.float(), layer_norm_cf(xb.detach(), ln.weight, ln.bias, ln.eps).float(),
                               atol=5e-2, rtol=2e-2)  # fmt: skip


def test_layer_norm_cf_takes_the_custom_node_on_cpu_only(monkeypatch):
    calls = []

    def spy(*args):
        calls.append(args[0].device.type)
        return args[0]

    monkeypatch.setattr(common._LayerNormCF, "apply", spy)
    ln = LayerNormCF(4)
    ln(torch.randn(1, 4, 3, 3))
    y = ln.to("meta")(torch.randn(1, 4, 3, 3, device="meta"))  # any non-CPU device takes F.layer_norm
    assert calls == ["cpu"] and y.shape == (1, 4, 3, 3) and y.device.type == "meta"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_layer_norm_cf_on_cuda_matches_the_cpu_node(dtype):
    torch.manual_seed(0)
    ln = LayerNormCF(24)
    with torch.no_grad():
        ln.weight.normal_(), ln.bias.normal_()
    x = torch.randn(2, 24, 9, 11) * 2 + 1
    g = torch.randn(2, 24, 9, 11)
    outs = []
    for device in ("cpu", "cuda"):
        m = LayerNormCF(24).to(device)
        m.load_state_dict(ln.state_dict())
        xi = x.to(device, dtype).requires_grad_()
        y = m(xi)
        y.backward(g.to(device, dtype))
        assert y.dtype == dtype
        outs.append([t.float().cpu() for t in (y, xi.grad, m.weight.grad, m.bias.grad)])
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-1, "rtol": 5e-2}
    for got, ref in zip(outs[1], outs[0]):
        torch.testing.assert_close(got, ref, **tol)


@pytest.mark.parametrize("weight,bias", [(True, True), (True, False), (False, True), (False, False)])
@pytest.mark.parametrize("buffers", [False, True])
def test_ln_cf_helpers_match_layer_norm_with_and_without_buffers(weight, bias, buffers):
    """The raw forward and backward (used by HCO's fused node with caller-supplied buffers: in-place centring, one
    scratch buffer for the squares and y, one for g * xhat and dL/dx) equal F.layer_norm and its autograd."""
    g0 = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 12, dtype=torch.float64, generator=g0)
    w = torch.randn(5, dtype=torch.float64, generator=g0) if weight else None
    b = torch.randn(5, dtype=torch.float64, generator=g0) if bias else None
    g = torch.randn(2, 5, 12, dtype=torch.float64, generator=g0)
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    ref = F.layer_norm(leaves[0].transpose(1, 2), (5,), leaves[1], leaves[2], 1e-5).transpose(1, 2)
    ref.backward(g)
    kwargs = {"inplace": True, "out": torch.full_like(x, float("nan"))} if buffers else {}
    flat = x.clone()
    y, xhat, rstd = ln_cf_forward(flat, w, b, 1e-5, **kwargs)
    torch.testing.assert_close(y, ref.detach())
    assert (xhat.data_ptr() == flat.data_ptr()) == buffers and (y.data_ptr() == kwargs.get("out", y).data_ptr())
    out = torch.full_like(x, float("nan")) if buffers else None
    grad_x, grad_w, grad_b = ln_cf_backward(g, xhat, rstd, w, True, bias, out=out)
    torch.testing.assert_close(grad_x, leaves[0].grad)
    assert out is None or grad_x.data_ptr() == out.data_ptr()
    for got, leaf in ((grad_w, leaves[1]), (grad_b, leaves[2])):
        assert (got is None) == (leaf is None)
        if leaf is not None:
            torch.testing.assert_close(got, leaf.grad)


def test_layer_norm_cf_module_gradients_match_nn_layer_norm():
    torch.manual_seed(0)
    ln, ref = LayerNormCF(8), nn.LayerNorm(8)
    with torch.no_grad():
        ln.weight.normal_(), ln.bias.normal_()
        ref.load_state_dict(ln.state_dict())
    x = torch.randn(3, 8, 5, 6, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    g = torch.randn(3, 8, 5, 6)
    ln(x).backward(g)
    ref(x_ref.permute(0, 2, 3, 1)).backward(g.permute(0, 2, 3, 1))
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ln.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ln.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)


def test_layer_norm_cf_low_precision_keeps_dtype():
    x = torch.randn(2, 8, 5, 5).bfloat16().requires_grad_()
    y = LayerNormCF(8)(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16
    ref = F.layer_norm(x.detach().float().permute(0, 2, 3, 1), (8,)).permute(0, 3, 1, 2)
    torch.testing.assert_close(y.float(), ref, atol=2e-2, rtol=2e-2)


def test_layer_norm_cf_statistics_stay_fp32_under_autocast():
    torch.manual_seed(0)
    ln = LayerNormCF(32)
    x = (torch.randn(2, 32, 6, 7) * 3 + 5).requires_grad_()
    ref = F.layer_norm(x.detach().permute(0, 2, 3, 1), (32,)).permute(0, 3, 1, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ln(x)
        y.sum().backward()
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)  # bf16 statistics would be off by about 1e-2
    assert torch.isfinite(x.grad).all()


def _twin_convs(channels: int, kernel: int, bias: bool, dtype=torch.float64):
    """A DepthwiseConv2d and the plain nn.Conv2d it stands for, with the same weights."""
    torch.manual_seed(0)
    ours = DepthwiseConv2d(channels, kernel, bias=bias).to(dtype)
    ref = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=bias).to(dtype)
    ref.load_state_dict(ours.state_dict())  # same keys and shapes
    return ours, ref


@pytest.mark.parametrize(
    "batch,channels,hw,kernel",
    [(1, 3, (9, 7), 5), (3, 4, (6, 11), 5), (2, 2, (5, 5), 7), (2, 3, (4, 6), 9), (2, 3, (6, 5), 3)],
)
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_conv_matches_conv2d(batch, channels, hw, kernel, bias):
    """Values and all three gradients of the hand-written backward (kernels above 3 x 3) equal autograd's through
    nn.Conv2d (fp64); 3 x 3 keeps PyTorch's backward."""
    ours, ref = _twin_convs(channels, kernel, bias)
    x = torch.randn(batch, channels, *hw, dtype=torch.float64, requires_grad=True)
    g = torch.randn(batch, channels, *hw, dtype=torch.float64)
    grads = []
    for conv in (ours, ref):
        x.grad = None
        y = conv(x)
        y.backward(g)
        own = type(y.grad_fn).__name__ == "_DepthwiseConv2dBackward"
        assert own == (conv is ours and kernel > 3)
        grads.append((y, x.grad, *(p.grad for p in conv.parameters())))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda a, w: F.conv2d(a, w, padding=kernel // 2, groups=channels), (x, ours.weight))
    assert torch.autograd.gradcheck(ours, (x,))


def test_depthwise_conv_gradient_patterns_and_inference():
    """Only the gradients asked for are computed; inference (no_grad) and a frozen layer on a constant input take
    nn.Conv2d's own path with the same result."""
    ours, ref = _twin_convs(4, 5, True)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
    ours.weight.requires_grad_(False)
    ours.bias.requires_grad_(False)
    assert not ours(x).requires_grad
    xg = x.clone().requires_grad_(True)
    ours(xg).sum().backward()
    xr = x.clone().requires_grad_(True)
    ref(xr).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)
    assert ours.weight.grad is None


def test_depthwise_conv_under_bf16_autocast_keeps_dtypes():
    """Under CPU bf16 autocast the layer computes in bf16 like nn.Conv2d, and the gradients keep fp32 dtypes."""
    ours, ref = _twin_convs(8, 5, True, torch.float32)
    x = torch.randn(2, 8, 12, 12)
    outs = []
    for conv in (ours, ref):
        xi = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = conv(xi)
        y.float().square().mean().backward()
        outs.append((y, xi.grad, conv.weight.grad, conv.bias.grad))
    for a, b in zip(*outs):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.float(), b.float(), atol=3e-2, rtol=3e-2)
    assert outs[0][0].dtype == torch.bfloat16 and outs[0][2].dtype == torch.float32


@pytest.mark.parametrize("bias", [True, False])
def test_linear_cf_matches_linear(bias):
    layer = nn.Linear(6, 4, bias=bias)
    x = torch.randn(2, 6, 3, 5)
    ref = layer(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    torch.testing.assert_close(linear_cf(x, layer), ref)


THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
HUGE_PAGES_PROBE = """
import os, sys
sys.path.insert(0, os.getcwd())
import sandbox, torch, experiments.bench  # the imports of an entry script allocate no tensor
from sandbox import enable_huge_pages
on = enable_huge_pages()
assert enable_huge_pages() == on  # idempotent
x = torch.ones(64 << 18)  # 64 MB, the first allocation
huge = [int(l.split()[1]) for l in open('/proc/self/smaps_rollup') if l.startswith('AnonHugePages')][0]
print(os.environ['THP_MEM_ALLOC_ENABLE'], on, huge)
"""
ROOT = Path(__file__).resolve().parents[1]


def test_importing_sandbox_leaves_the_environment_unchanged():
    probe = (
        "import json, os; before = dict(os.environ); import sandbox, sandbox.__main__; "
        "sandbox.list_mixers(); sandbox.list_archs(); print(json.dumps([before, dict(os.environ)]))"
    )
    environ = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    out = subprocess.run([sys.executable, "-c", probe], env=environ, capture_output=True, text=True, cwd=ROOT)
    before, after = json.loads(out.stdout.splitlines()[-1])
    assert after == before


@pytest.mark.skipif(
    not THP_MODE.exists() or "[never]" in THP_MODE.read_text(), reason="the kernel has no transparent huge pages"
)
@pytest.mark.parametrize("env,huge", [(None, True), ("0", False)])
def test_enable_huge_pages_backs_large_cpu_tensors_with_huge_pages(env, huge):
    environ = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    if env is not None:
        environ["THP_MEM_ALLOC_ENABLE"] = env
    probe = [sys.executable, "-c", HUGE_PAGES_PROBE]
    out = subprocess.run(probe, env=environ, capture_output=True, text=True, cwd=ROOT)
    flag, on, kb = out.stdout.split()
    assert flag == (env or "1") and on == str(huge)
    assert (int(kb) >= 32 * 1024) == huge, out.stdout


def test_compiler_disable_imports_no_dynamo_and_breaks_the_graph():
    probe = (  # the module alone: the operators package imports hco, which imports torch._dynamo until it uses this
        "import importlib.util, sys; spec = importlib.util.spec_from_file_location('c', 'operators/_common.py'); "
        "c = importlib.util.module_from_spec(spec); spec.loader.exec_module(c); f = c.compiler_disable(abs); "
        "print('torch._dynamo' in sys.modules, f(-2))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "2"], out.stderr
    compiling = []

    @compiler_disable
    def eager_only(x):
        """doc"""
        compiling.append(torch.compiler.is_compiling())
        return x.add_(1) * 2  # in place on an intermediate

    def f(x):
        return eager_only(x.sin()).cos()

    x = torch.randn(5)
    torch.testing.assert_close(torch.compile(f, backend="eager")(x), f(x))
    assert compiling == [False, False] and eager_only.__doc__ == "doc"
